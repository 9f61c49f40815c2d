package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTUI: two people chat in the full-screen client (nodes without
// -headless or -ui, in terminals: tmux panes of 120×40 with
// TERM=xterm-256color). A message typed on one screen appears on the
// other's; a message arriving while bob types leaves his half-typed line
// as it was, and Enter then sends it; Alt-2 puts another conversation on
// screen; logs go to the log file, never to the screen; Ctrl-C leaves at
// once (alice sees bob quit), exit status 0, and the terminal is back in
// the mode it was in.
func TestTUI(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{})
	alice := startTUINode(t, "alice", rv.addr)
	bob := startTUINode(t, "bob", rv.addr)
	for _, n := range []*tuiNode{alice, bob} {
		n.waitScreen(t, "the status line saying connected", func(s []string) bool {
			return strings.HasPrefix(s[0], " "+n.name+" · ") && strings.Contains(s[0], " · connected")
		})
		n.waitScreen(t, "the prompt", func(s []string) bool { return inputLine(s) == n.name+">" })
	}

	// alice writes to bob: it shows on bob's screen, in a conversation
	// with alice that comes on screen (it is his first), and alice sees
	// it delivered.
	alice.keys(t, "-l", "/msg bob hello from alice")
	alice.keys(t, "Enter")
	bob.waitScreen(t, "alice's message", func(s []string) bool {
		return anyLine(s, func(l string) bool { return strings.Contains(l, "<alice> hello from alice") }) &&
			strings.HasSuffix(s[0], "] alice")
	})
	alice.waitScreen(t, "the receipt", func(s []string) bool {
		return anyLine(s, func(l string) bool { return strings.Contains(l, "<alice> hello from alice  ✓ delivered") })
	})

	// bob types half a line; alice's next message arrives meanwhile: it is
	// shown, and the half-typed line is still there, as it was.
	bob.keys(t, "-l", "half typ")
	bob.waitScreen(t, "the half-typed line", func(s []string) bool { return inputLine(s) == "bob> half typ" })
	alice.keys(t, "-l", "are you there?")
	alice.keys(t, "Enter")
	bob.waitScreen(t, "alice's second message above the half-typed line", func(s []string) bool {
		return anyLine(s, func(l string) bool { return strings.Contains(l, "<alice> are you there?") }) &&
			inputLine(s) == "bob> half typ"
	})
	bob.keys(t, "-l", "ed")
	bob.keys(t, "Enter")
	alice.waitScreen(t, "bob's answer", func(s []string) bool {
		return anyLine(s, func(l string) bool { return strings.Contains(l, "<bob> half typed") })
	})
	bob.waitScreen(t, "bob's answer delivered and the input line empty", func(s []string) bool {
		return anyLine(s, func(l string) bool { return strings.Contains(l, "<bob> half typed  ✓ delivered") }) &&
			inputLine(s) == "bob>"
	})
	alice.keys(t, "-l", "/me waves")
	alice.keys(t, "Enter")
	bob.waitScreen(t, "alice's emote", func(s []string) bool {
		return anyLine(s, func(l string) bool { return strings.Contains(l, "* alice waves") })
	})

	// Alt-2: the second conversation of the list (#lobby, which everyone
	// is in) comes on screen: the status line and the people pane say so,
	// and alice's lines are gone from the middle.
	bob.keys(t, "M-2")
	bob.waitScreen(t, "#lobby on screen", func(s []string) bool {
		return strings.HasSuffix(strings.TrimRight(s[0], " "), "[2] #lobby") &&
			anyLine(s, func(l string) bool { return strings.Contains(l, "│ #lobby · ") }) &&
			!anyLine(s, func(l string) bool { return strings.Contains(l, "<alice>") })
	})
	// and back, by Ctrl-P.
	bob.keys(t, "C-p")
	bob.waitScreen(t, "status on screen", func(s []string) bool {
		return strings.HasSuffix(strings.TrimRight(s[0], " "), "[1] status")
	})
	bob.keys(t, "M-3")
	bob.waitScreen(t, "alice on screen again", func(s []string) bool {
		return strings.HasSuffix(strings.TrimRight(s[0], " "), "[3] alice") &&
			anyLine(s, func(l string) bool { return strings.Contains(l, "<alice> hello from alice") })
	})
	t.Logf("alice's screen:\n%s\nbob's screen:\n%s", strings.Join(alice.screen(t), "\n"), strings.Join(bob.screen(t), "\n"))

	// Nodes run with -log-level debug: the log is in the file, never on
	// the screen.
	for _, n := range []*tuiNode{alice, bob} {
		for _, l := range n.history(t) {
			if strings.Contains(l, `"level"`) || strings.Contains(l, " DBG ") || strings.Contains(l, " INF ") {
				t.Errorf("%s: a log line reached the screen: %q", n.name, l)
			}
		}
	}

	// Ctrl-C: bob leaves at once, cleanly, with the terminal restored.
	bob.keys(t, "C-c")
	alice.waitScreen(t, "bob leaving", func(s []string) bool {
		return anyLine(s, func(l string) bool { return strings.Contains(l, "*** bob left") })
	})
	bob.waitExit(t)
	log, err := os.ReadFile(filepath.Join(bob.home, "natchat", "bob.log"))
	if err != nil || !strings.Contains(string(log), `"level":"debug"`) {
		t.Errorf("bob's log file has no debug lines (%v): %.200q", err, log)
	}
	alice.keys(t, "C-c")
	alice.waitExit(t)
}

// inputLine returns the screen's last line, the input line, without the
// spaces at its end.
func inputLine(screen []string) string {
	if len(screen) == 0 {
		return ""
	}
	return strings.TrimRight(screen[len(screen)-1], " ")
}

// tuiNode is a node with its full-screen client in a tmux pane.
type tuiNode struct {
	*lineNode
	home string // its $HOME and $XDG_STATE_HOME
}

// startTUINode starts node name on the rendezvous rv in a detached tmux
// session of 120×40 with TERM=xterm-256color, without -ui: the node
// chooses the full-screen client because it is in a terminal. Its home
// (and state dir, where its log file goes) is n.home. The pane records the
// terminal's mode (stty -a) before and after the node, and its exit
// status. The tmux server is killed in t.Cleanup, after printing the pane
// when the test failed.
func startTUINode(t *testing.T, name, rv string) *tuiNode {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skipf("the full-screen client test needs tmux (apt-get install tmux; .ci/run installs it): %v", err)
	}
	// A short directory: a socket's path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "natchat-tui-")
	if err != nil {
		t.Fatal(err)
	}
	n := &tuiNode{lineNode: &lineNode{name: name, sock: filepath.Join(dir, "sock"), dir: dir}, home: t.TempDir()}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TMUX=") && !strings.HasPrefix(kv, "TMUX_PANE=") {
			n.env = append(n.env, kv)
		}
	}
	n.env = append(n.env, "HOME="+n.home, "XDG_CONFIG_HOME="+n.home, "XDG_STATE_HOME="+n.home, "LANG=C.UTF-8", "LC_ALL=C.UTF-8")
	conf := filepath.Join(dir, "tmux.conf")
	if err := os.WriteFile(conf, []byte("set -g remain-on-exit on\nset -g default-terminal xterm-256color\nset -g history-limit 10000\nset -g status off\nset -sg escape-time 10\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{bins.node, "-name", name, "-rv", rv, "-identity", filepath.Join(n.home, name+".key"),
		"-heartbeat", heartbeat.String(), "-log-level", "debug", "-listen", "127.0.0.1:0"}
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
			t.Logf("--- %s's screen:\n%s", name, strings.Join(n.screen(t), "\n"))
			if b, err := os.ReadFile(n.file("stderr")); err == nil && len(b) > 0 {
				t.Logf("--- %s's stderr:\n%s", name, b)
			}
			if b, err := os.ReadFile(filepath.Join(n.home, "natchat", name+".log")); err == nil {
				t.Logf("--- %s's log (last 4 KiB):\n%s", name, b[max(0, len(b)-4096):])
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
	n.tmux(t, "-f", conf, "new-session", "-d", "-x", "120", "-y", "40", "-s", name, script)
	return n
}
