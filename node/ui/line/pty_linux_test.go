package line

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"natchat/node/api"
)

// openPTY returns a new pseudo-terminal's controller and terminal sides,
// the terminal 120×30. Closing the controller hangs the terminal up, which
// ends a read blocked on it.
func openPTY(t *testing.T) (ctl, tty *os.File) {
	t.Helper()
	ctl, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	var n int
	sc, err := ctl.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	// Control, not Fd: Fd would make the controller blocking, and a
	// blocking read would not end when the test closes it.
	sc.Control(func(fd uintptr) {
		if err = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); err == nil {
			n, err = unix.IoctlGetInt(int(fd), unix.TIOCGPTN)
		}
	})
	if err != nil {
		ctl.Close()
		t.Fatalf("unlock pty: %v", err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		ctl.Close()
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(int(tty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 30, Col: 120}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctl.Close()
		tty.Close()
	})
	return ctl, tty
}

func termios(t *testing.T, f *os.File) unix.Termios {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	return *tio
}

// ttyUI runs a UI on a pseudo-terminal; it returns the controller side
// (the keyboard), the screen as written so far, and Run's result.
func ttyUI(t *testing.T, ctx context.Context, n *fakeNode) (ctl *os.File, screen *output, restored func(), done chan error) {
	t.Helper()
	ctl, tty := openPTY(t)
	before := termios(t, tty)
	if before.Lflag&unix.ICANON == 0 {
		t.Fatal("a new pty is not in canonical mode")
	}
	screen = newOutput()
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 4096)
		for {
			n, err := ctl.Read(buf)
			screen.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { ctl.Close(); <-readDone })
	u := New(Options{Name: "bob", In: tty, Out: tty, Now: func() time.Time { return at }})
	done = make(chan error, 1)
	go func() { done <- u.Run(ctx, n) }()
	screen.waitFor(t, 0, "bob> ")
	during := termios(t, tty)
	if during.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) != 0 {
		t.Errorf("terminal not in raw mode while Run runs: lflag %#x", during.Lflag)
	}
	restored = func() {
		t.Helper()
		if after := termios(t, tty); after != before {
			t.Errorf("terminal mode not restored:\nbefore %+v\nafter  %+v", before, after)
		}
	}
	return ctl, screen, restored, done
}

func press(t *testing.T, ctl *os.File, keys string) {
	t.Helper()
	if _, err := ctl.WriteString(keys); err != nil {
		t.Fatal(err)
	}
}

// TestTerminal types on a pseudo-terminal: line editing and history, keys
// that must not be typed, events printed above a half-typed line, Ctrl-D
// then Ctrl-C, and the terminal's mode restored.
func TestTerminal(t *testing.T) {
	n := newFakeNode()
	ctl, screen, restored, done := ttyUI(t, context.Background(), n)

	press(t, ctl, "/msg alice helo"+
		"\x1b[D"+"\x1bOP"+"l"+"\x1b[C"+ // Left, F1, l, Right
		"\x1b[5~"+"\x1b[1;5D"+"\x1bOA"[:0]+"\x1b[15~"+"\r") // PgUp, Ctrl-Left, F5
	n.wantCmd(t, api.Send{To: "alice", Text: "hello"})
	press(t, ctl, "\x1b[A"+"!"+"\r") // Up: the last line again, edited
	n.wantCmd(t, api.Send{To: "alice", Text: "hello!"})
	press(t, ctl, "plain\r")
	n.wantCmd(t, api.Send{To: "alice", Text: "plain"})

	// Sent lines typed here are not repeated; outcomes are shown.
	n.bus.Publish(&api.Sent{ID: "1", To: "alice", Text: "hello"})
	n.bus.Publish(&api.Delivered{ID: "1", To: "alice"})
	pos := screen.waitFor(t, 0, "15:04 ✓ delivered to alice\r\n")
	if strings.Contains(screen.String(), "→ alice") {
		t.Errorf("sent line repeated in a terminal:\n%q", screen.String())
	}

	// A message arrives while a line is half typed: it is printed above
	// the prompt, which is drawn again with the half line.
	press(t, ctl, "half typ")
	pos = screen.waitFor(t, pos, "half typ")
	n.bus.PublishMessage(&api.Message{ID: "m", From: "alice", Text: "\x1b[2J\r<carol> hi\x1b]0;pwned\x07\a"}, nil)
	pos = screen.waitFor(t, pos, "15:04 <alice> ␛[2J␍<carol> hi␛]0;pwned␇␇\r\n")
	pos = screen.waitFor(t, pos, "bob> half typ")
	for _, bad := range []string{"\x1b[2J", "\x1b]", "\a", "\r<carol>"} {
		if strings.Contains(screen.String(), bad) {
			t.Errorf("the screen got %q:\n%q", bad, screen.String())
		}
	}
	press(t, ctl, "ed\r")
	n.wantCmd(t, api.Send{To: "alice", Text: "half typed"})

	// /help is printed here; nothing goes to the node.
	press(t, ctl, "/help\r")
	pos = screen.waitFor(t, pos, "15:04 commands:\r\n")
	n.noCmd(t)

	// Ctrl-D on a typed line deletes; on an empty one it leaves after
	// draining, and Ctrl-C then leaves at once.
	press(t, ctl, "x\x1b[D\x04\x04")
	n.wantCmd(t, api.Quit{Drain: true})
	pos = screen.waitFor(t, pos, "leaving once your messages are delivered")
	press(t, ctl, "\x04") // a second Ctrl-D does not ask again
	press(t, ctl, "\x03")
	n.wantCmd(t, api.Quit{})
	n.noCmd(t)
	n.bus.Publish(&api.PeerLeft{Name: "alice", Reason: api.ReasonQuit})
	screen.waitFor(t, pos, "15:04 *** alice left\r\n")
	n.bus.Close()
	waitRun(t, done)
	restored()
}

// TestTerminalCtrlC: Ctrl-C with a line half typed leaves at once and
// sends nothing of the line.
func TestTerminalCtrlC(t *testing.T) {
	n := newFakeNode()
	ctl, _, restored, done := ttyUI(t, context.Background(), n)
	press(t, ctl, "/msg alice not sent\x03")
	n.wantCmd(t, api.Quit{})
	n.noCmd(t)
	n.bus.Close()
	waitRun(t, done)
	restored()
}

// TestTerminalRestoredOnCancel: the terminal is restored when Run returns
// because ctx is done, and keys typed after it are not read as commands.
func TestTerminalRestoredOnCancel(t *testing.T) {
	n := newFakeNode()
	ctx, cancel := context.WithCancel(context.Background())
	ctl, _, restored, done := ttyUI(t, ctx, n)
	cancel()
	waitRun(t, done)
	restored()
	press(t, ctl, "/who\n") // a line for the reader left behind, now the terminal is cooked again
	waitGone(t, "line.(*UI).readTerminal")
	n.noCmd(t)
}

// TestTerminalHangUp: the terminal going away is end of input.
func TestTerminalHangUp(t *testing.T) {
	n := newFakeNode()
	ctl, _, _, done := ttyUI(t, context.Background(), n)
	ctl.Close()
	n.wantCmd(t, api.Quit{Drain: true})
	n.bus.Close()
	waitRun(t, done)
}
