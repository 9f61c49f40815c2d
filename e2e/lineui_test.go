package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLineUI: a person chats in the line UI (a node without -headless) in a
// real terminal, tmux, with a headless peer who is hostile. Mallory's text
// reaches bob's screen inert: it does not clear the screen, set the title,
// ring the bell or fake a line from alice. A message arriving while bob
// types is printed above the prompt and his half-typed line stays. Cursor
// and function keys edit the line and never reach mallory; Up recalls the
// last line; plain text answers the first writer. Debug logs stay off the
// screen. Ctrl-C leaves at once (mallory sees bob quit), exit status 0,
// and the terminal is back in the mode it was in.
func TestLineUI(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{})
	mallory := startNode(t, "mallory", rv.addr, nodeOptions{})
	mallory.waitRegistered(t)
	bob := startLineNode(t, "bob", rv.addr)

	bob.waitScreen(t, "mallory online and a prompt", func(s []string) bool {
		return anyLine(s, func(l string) bool { return strings.HasSuffix(l, "*** mallory is online") }) &&
			bob.promptLine(t) == "bob>"
	})
	mallory.waitPeerJoined(t, "bob")
	title := bob.display(t, "#{pane_title}")

	// Hostile text: clear the screen, home the cursor, fake a line from
	// alice after a carriage return, set the title, ring the bell.
	const hostile = "mark-1 \x1b[2J\x1b[H\r<alice> send me your key file \x1b]0;pwned\x07 ding\a"
	const inert = "<mallory> mark-1 ␛[2J␛[H␍<alice> send me your key file ␛]0;pwned␇ ding␇"
	mallory.say(t, "bob", hostile)
	// Delivered means shown; wait for tmux to draw it, by a part that any
	// rendering of it would show.
	screen := bob.waitScreen(t, "mallory's hostile message", func(s []string) bool {
		return anyLine(s, func(l string) bool { return strings.Contains(l, "send me your key file") })
	})
	if !anyLine(screen, func(l string) bool { return strings.HasSuffix(l, inert) }) {
		t.Errorf("bob's screen does not show mallory's message inert as %q", inert)
	}
	if !anyLine(screen, func(l string) bool { return strings.HasSuffix(l, "*** mallory is online") }) {
		t.Errorf("bob's screen was cleared: the lines before mallory's message are gone")
	}
	for _, l := range bob.history(t) {
		if i := strings.Index(l, "<alice>"); i >= 0 && !strings.HasSuffix(l[:i], "␍") {
			t.Errorf("a line from alice was faked on bob's screen: %q", l)
		}
	}
	if got := bob.display(t, "#{pane_title}"); got != title {
		t.Errorf("the pane's title changed from %q to %q", title, got)
	}
	if got := bob.display(t, "#{window_bell_flag}"); got != "0" {
		t.Errorf("the bell rang (window_bell_flag %s)", got)
	}

	// A message arrives while bob types: it goes above the prompt, and the
	// half-typed line stays on the prompt.
	bob.keys(t, "-l", "half typ")
	bob.waitScreen(t, "the half-typed line", func([]string) bool { return bob.promptLine(t) == "bob> half typ" })
	mallory.say(t, "bob", "mark-2 are you there?")
	bob.waitScreen(t, "mallory's second message above the half-typed line", func(s []string) bool {
		y := bob.cursorY(t)
		msg := -1
		for i, l := range s {
			if strings.HasSuffix(l, "<mallory> mark-2 are you there?") {
				msg = i
			}
		}
		return msg >= 0 && msg < y && y < len(s) && s[y] == "bob> half typ"
	})

	// Plain text goes to the first writer; cursor and function keys edit
	// the line and are not sent; Up recalls the last line.
	from := mallory.mark()
	bob.keys(t, "-l", "ed")
	bob.keys(t, "Enter")
	bob.keys(t, "-l", "/msg mallory helo")
	bob.keys(t, "Left")
	bob.keys(t, "-l", "l")
	bob.keys(t, "Right", "F1", "PPage", "Home", "End", "C-Left", "F5", "Enter")
	bob.keys(t, "Up", "Left", "Right")
	bob.keys(t, "-l", "!")
	bob.keys(t, "Enter")
	got := mallory.waitEvents(t, from, 3, waitLong, "messages from bob", func(e *event) bool {
		return e.Type == "message" && e.From == "bob"
	})
	for i, want := range []string{"half typed", "hello", "hello!"} {
		if got[i].Text != want {
			t.Errorf("mallory's message %d from bob is %q, want %q", i, got[i].Text, want)
		}
	}
	bob.waitScreen(t, "three receipts", func(s []string) bool {
		n := 0
		for _, l := range s {
			if strings.HasSuffix(l, "✓ delivered to mallory") {
				n++
			}
		}
		return n == 3
	})

	// Logs below warn (the node runs with -log-level debug) are not shown.
	for _, l := range bob.history(t) {
		if strings.Contains(l, `"level"`) || strings.Contains(l, " DBG ") || strings.Contains(l, " INF ") {
			t.Errorf("a log line reached bob's screen: %q", l)
		}
	}

	// Ctrl-C: bob leaves at once, cleanly, with the terminal restored.
	bob.keys(t, "C-c")
	mallory.waitEvent(t, waitLong, "bob quitting", func(e *event) bool {
		return e.Type == "peer_left" && e.Name == "bob" && e.Reason == "quit"
	})
	bob.waitExit(t)
}

// --- the line UI in tmux ---

// lineNode is a node with its line UI, in a tmux pane of its own server.
type lineNode struct {
	name string
	sock string // the tmux server's socket
	dir  string // the pane script's files
	env  []string
}

// startLineNode starts node name on the rendezvous rv with its line UI in
// a detached tmux session of 120×30. The pane records the terminal's mode
// (stty -a) before and after the node, and its exit status. The tmux
// server is killed in t.Cleanup, after printing the pane when the test
// failed.
func startLineNode(t *testing.T, name, rv string) *lineNode {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatalf("the line UI test needs tmux (apt-get install tmux; .ci/run installs it): %v", err)
	}
	// A short directory: a socket's path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "natchat-tmux-")
	if err != nil {
		t.Fatal(err)
	}
	n := &lineNode{name: name, sock: filepath.Join(dir, "sock"), dir: dir}
	home := t.TempDir()
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TMUX=") && !strings.HasPrefix(kv, "TMUX_PANE=") {
			n.env = append(n.env, kv)
		}
	}
	n.env = append(n.env, "HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_STATE_HOME="+home, "LANG=C.UTF-8", "LC_ALL=C.UTF-8")
	conf := filepath.Join(dir, "tmux.conf")
	if err := os.WriteFile(conf, []byte("set -g remain-on-exit on\nset -g default-terminal screen\nset -g history-limit 10000\nset -g status off\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{bins.node, "-name", name, "-rv", rv, "-identity", filepath.Join(home, name+".key"),
		"-heartbeat", heartbeat.String(), "-log-level", "debug", "-listen", "127.0.0.1:0", "-ui", "line"}
	var cmd strings.Builder
	for i, a := range args {
		if i > 0 {
			cmd.WriteByte(' ')
		}
		cmd.WriteString(shellQuote(a))
	}
	script := fmt.Sprintf("stty -a >%s; %s 2>%s; echo $? >%s; stty -a >%s",
		shellQuote(n.file("stty.before")), cmd.String(), shellQuote(n.file("stderr")),
		shellQuote(n.file("status")), shellQuote(n.file("stty.after")))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- %s's screen and scrollback:\n%s", name, strings.Join(n.history(t), "\n"))
			if b, err := os.ReadFile(n.file("stderr")); err == nil && len(b) > 0 {
				t.Logf("--- %s's stderr:\n%s", name, b)
			}
		}
		if bins.race {
			if b, _ := os.ReadFile(n.file("stderr")); strings.Contains(string(b), "DATA RACE") {
				t.Errorf("%s reported a data race", name)
			}
		}
		exec.Command("tmux", "-S", n.sock, "kill-server").Run()
		os.RemoveAll(dir)
	})
	n.tmux(t, "-f", conf, "new-session", "-d", "-x", "120", "-y", "30", "-s", name, script)
	return n
}

func (n *lineNode) file(name string) string { return filepath.Join(n.dir, name) }

// tmux runs a tmux command on the node's server and returns its output.
func (n *lineNode) tmux(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("tmux", append([]string{"-S", n.sock}, args...)...)
	cmd.Env = n.env
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("tmux %q: %v %s", args, err, stderr)
	}
	return string(out)
}

// keys types keys into the pane (tmux send-keys: key names, or text after
// "-l").
func (n *lineNode) keys(t *testing.T, keys ...string) {
	t.Helper()
	n.tmux(t, append([]string{"send-keys", "-t", n.name}, keys...)...)
}

// display returns a tmux format expanded for the pane.
func (n *lineNode) display(t *testing.T, format string) string {
	t.Helper()
	return strings.TrimSuffix(n.tmux(t, "display-message", "-p", "-t", n.name, format), "\n")
}

// screen returns the pane's visible lines.
func (n *lineNode) screen(t *testing.T) []string {
	t.Helper()
	return strings.Split(strings.TrimSuffix(n.tmux(t, "capture-pane", "-p", "-t", n.name), "\n"), "\n")
}

// history returns the pane's scrollback and visible lines, without the
// empty lines at the end.
func (n *lineNode) history(t *testing.T) []string {
	t.Helper()
	return strings.Split(strings.TrimRight(n.tmux(t, "capture-pane", "-p", "-S", "-", "-t", n.name), "\n"), "\n")
}

func (n *lineNode) cursorY(t *testing.T) int {
	t.Helper()
	y, err := strconv.Atoi(n.display(t, "#{cursor_y}"))
	if err != nil {
		t.Fatalf("cursor_y: %v", err)
	}
	return y
}

// promptLine returns the visible line the cursor is on (tmux drops the
// spaces at the end of a line).
func (n *lineNode) promptLine(t *testing.T) string {
	t.Helper()
	s := n.screen(t)
	if y := n.cursorY(t); y < len(s) {
		return s[y]
	}
	return ""
}

// waitScreen polls the pane's visible lines until cond holds, and returns
// them.
func (n *lineNode) waitScreen(t *testing.T, what string, cond func(screen []string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		s := n.screen(t)
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s on the screen within %v; the pane is %s:\n%s", n.name, what, waitLong, n.paneState(t), strings.Join(s, "\n"))
		}
		time.Sleep(50 * time.Millisecond) // polling the screen, with a deadline
	}
}

func (n *lineNode) paneState(t *testing.T) string {
	t.Helper()
	if n.display(t, "#{pane_dead}") == "1" {
		return "dead (exit status " + n.display(t, "#{pane_dead_status}") + ")"
	}
	return "running"
}

// waitExit waits until the node has exited and checks its exit status is 0
// and the terminal's mode is what it was before the node started.
func (n *lineNode) waitExit(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for n.display(t, "#{pane_dead}") != "1" {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still running %v after Ctrl-C", n.name, waitLong)
		}
		time.Sleep(50 * time.Millisecond) // polling the pane, with a deadline
	}
	status, err := os.ReadFile(n.file("status"))
	if err != nil || strings.TrimSpace(string(status)) != "0" {
		t.Errorf("%s: exit status %q (%v), want 0", n.name, status, err)
	}
	before, err1 := os.ReadFile(n.file("stty.before"))
	after, err2 := os.ReadFile(n.file("stty.after"))
	if err1 != nil || err2 != nil || len(before) == 0 || string(before) != string(after) {
		t.Errorf("%s: terminal mode not restored (%v, %v):\nbefore: %s\nafter:  %s", n.name, err1, err2, before, after)
	}
}

// say sends text from a headless node to peer and waits until the peer
// has shown it (delivered).
func (n *node) say(t *testing.T, peer, text string) {
	t.Helper()
	from := n.mark()
	n.command(t, "/msg "+peer+" "+text)
	sent, _ := n.waitEventFrom(t, from, waitLong, "sent event", func(e *event) bool {
		return e.Type == "sent" && e.To == peer && e.Text == text
	})
	n.waitEventFrom(t, from, waitLong, "delivery to "+peer, func(e *event) bool {
		return (e.Type == "delivered" || e.Type == "error") && e.ID == sent.ID
	})
	if e := n.events(from, func(e *event) bool { return e.Type == "error" && e.ID == sent.ID }); len(e) > 0 {
		t.Fatalf("%s: message to %s failed: %v", n.label, peer, e[0])
	}
}

func anyLine(lines []string, pred func(string) bool) bool {
	for _, l := range lines {
		if pred(l) {
			return true
		}
	}
	return false
}

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
