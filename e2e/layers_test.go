package e2e

// Tests of the layered node's behaviour seen from outside: the headless
// one-liner, trust on first use against a lying rendezvous, a peer that
// quit, refusals, blank text, sent while the peer is unreachable, and the
// node's log lines. The helpers that stall_test.go and soak_test.go share
// are here too: nodes with a -state directory, a node whose stdout the
// test stops reading, goroutine dumps and full logs of failed runs.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"natchat/headless"
)

// --- helpers: nodes with state, stalled nodes, diagnostics ---

// stall holds back the reading of a process's stdout until resume.
type stall struct {
	gate chan struct{}
	once sync.Once
	pipe *os.File // the read end of the stdout pipe, set at start
}

func newStall() *stall { return &stall{gate: make(chan struct{})} }

// resume starts reading the stdout.
func (s *stall) resume() { s.once.Do(func() { close(s.gate) }) }

// queued returns how many bytes wait in the stdout pipe (FIONREAD, alias
// TIOCINQ on Linux).
func (s *stall) queued(t *testing.T) int {
	t.Helper()
	rc, err := s.pipe.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.TIOCINQ) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatalf("FIONREAD on a stdout pipe: %v", ierr)
	}
	return n
}

// sendTexts sends each of texts from→to with /msg and waits for their sent
// events; the batch it returns is for checkDelivered.
func sendTexts(t *testing.T, from, to *node, texts []string) *batch {
	t.Helper()
	b := &batch{from: from, to: to, mark: to.mark(), texts: texts}
	start := from.mark()
	want := make(map[string]bool, len(texts))
	for _, text := range texts {
		want[text] = true
		from.command(t, "/msg "+to.name+" "+text)
	}
	sent := from.waitEvents(t, start, len(texts), waitLong, fmt.Sprintf("%d sent events", len(texts)), func(e *event) bool {
		return e.Type == "sent" && e.To == to.name && want[e.Text]
	})
	for i, e := range sent[:len(texts)] {
		if e.Text != texts[i] || e.ID == "" {
			t.Fatalf("%s: sent event %d is %v, want text %q and an id", from.label, i, e, texts[i])
		}
		b.ids = append(b.ids, e.ID)
	}
	return b
}

// ask sends line and waits for the event that answers it.
func (n *node) ask(t *testing.T, line, what string, pred func(*event) bool) *event {
	t.Helper()
	mark := n.mark()
	n.command(t, line)
	e, _ := n.waitEventFrom(t, mark, waitLong, what, pred)
	return e
}

// selfFingerprint returns the node's own fingerprint, from /fingerprint.
func (n *node) selfFingerprint(t *testing.T) string {
	t.Helper()
	e := n.ask(t, "/fingerprint", "own fingerprint", func(e *event) bool { return e.Type == "fingerprint" && e.Self })
	if e.Fingerprint == "" || e.Name != n.name {
		t.Fatalf("%s: /fingerprint answered %v, want its name and a fingerprint", n.label, e)
	}
	return e.Fingerprint
}

// noEvent checks that no event at position ≥ from satisfies pred within d:
// a bounded negative wait.
func (n *node) noEvent(t *testing.T, from int, d time.Duration, what string, pred func(*event) bool) {
	t.Helper()
	if e, _, ok := n.out.waitFor(from, d, func(e entry) bool { return e.ev != nil && pred(e.ev) }); ok {
		t.Errorf("%s: %s: %v", n.label, what, e.ev)
	}
}

// saveLogs writes the whole stdout and stderr of each node to files in
// $NATCHAT_E2E_LOGDIR, when set (the failure logs keep only the last lines).
func saveLogs(t *testing.T, nodes ...*node) {
	dir := os.Getenv("NATCHAT_E2E_LOGDIR")
	if dir == "" {
		return
	}
	dir = filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Log(err)
		return
	}
	for _, n := range nodes {
		for _, s := range []struct {
			name string
			l    *lineLog
		}{{"stdout", n.out}, {"stderr", n.errs}} {
			es, _, _ := s.l.since(0)
			var b strings.Builder
			for _, e := range es {
				b.WriteString(e.at.Format("15:04:05.000000 "))
				b.WriteString(e.text)
				b.WriteByte('\n')
			}
			name := filepath.Join(dir, strings.ReplaceAll(n.label, " ", "_")+"."+s.name)
			if err := os.WriteFile(name, []byte(b.String()), 0o644); err != nil {
				t.Log(err)
			}
		}
	}
	t.Logf("full logs in %s", dir)
}

// goroutineDump makes a running process print its goroutines (SIGQUIT:
// the Go runtime prints every goroutine's stack to stderr and exits) and
// logs those that run natchat code, to show where it is stuck.
func (p *proc) goroutineDump(t *testing.T) {
	t.Helper()
	if p.exited() {
		return
	}
	mark := p.errs.len()
	p.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Logf("%s: still running 10s after SIGQUIT", p.label)
		return
	}
	es, _, _ := p.errs.since(mark)
	var lines []string
	for _, e := range es {
		lines = append(lines, e.text)
	}
	var keep []string
	for _, g := range strings.Split(strings.Join(lines, "\n"), "\n\n") {
		if strings.Contains(g, "natchat/node") || strings.Contains(g, "natchat/internal") {
			keep = append(keep, g)
		}
	}
	t.Logf("%s: goroutines in natchat code at SIGQUIT (%d):\n%s", p.label, len(keep), strings.Join(keep, "\n\n"))
}

// --- the piped one-liner ---

// runResult is one finished run of a node.
type runResult struct {
	code   int
	events []headless.Event
	stdout string
	stderr string
	took   time.Duration
}

// runPiped runs the node to completion with stdin from in (nil:
// /dev/null) and the environment's home in home, within timeout.
func runPiped(t *testing.T, home string, in io.Reader, timeout time.Duration, args ...string) runResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.node, args...)
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_STATE_HOME="+home)
	cmd.Stdin = in
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := runResult{took: time.Since(start), stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("node %q did not exit within %v\nstdout:\n%s\nstderr (tail):\n%s", args, timeout, r.stdout, tail(r.stderr, 40))
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("node %q: %v", args, err)
	}
	for _, line := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
		if line == "" {
			continue
		}
		e, err := headless.Parse([]byte(line))
		if err != nil {
			t.Errorf("node %q: stdout line %q: %v", args, line, err)
			continue
		}
		r.events = append(r.events, e)
	}
	if bins.race && strings.Contains(r.stderr, "DATA RACE") {
		t.Errorf("node %q reported a data race:\n%s", args, r.stderr)
	}
	return r
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestPipedOneLiner: `printf '/msg bob hi\n' | node -name alice -rv ADDR
// -headless`, as docs/HEADLESS.md shows it, sends its message, reports
// sent then delivered, and exits 0, fifty times in a row against one
// running bob, who shows each message once. Then a node whose input is
// /dev/null exits 0 at once, twenty times in a row.
func TestPipedOneLiner(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{})
	bob := startNode(t, "bob", rv.addr, nodeOptions{})
	bob.waitRegistered(t)

	home := t.TempDir() // one user: the same config and state dirs each run
	key := filepath.Join(t.TempDir(), "alice.key")
	args := []string{"-name", "alice", "-rv", rv.addr, "-headless", "-identity", key, "-heartbeat", heartbeat.String()}
	const runs = 50
	var took []time.Duration
	for i := range runs {
		text := fmt.Sprintf("hi #%02d", i)
		r := runPiped(t, home, strings.NewReader("/msg bob "+text+"\n"), waitLong, args...)
		took = append(took, r.took)
		fail := func(format string, a ...any) {
			t.Fatalf("run %d: "+format+"\nstdout:\n%s\nstderr (tail):\n%s", append(append([]any{i}, a...), r.stdout, tail(r.stderr, 40))...)
		}
		if r.code != 0 {
			fail("exit %d, want 0", r.code)
		}
		sentAt, id := -1, ""
		for j, e := range r.events {
			if e.Type == "sent" && e.Text == text && e.To == "bob" {
				if sentAt >= 0 {
					fail("two sent events for %q", text)
				}
				sentAt, id = j, e.ID
			}
		}
		if sentAt < 0 || id == "" {
			fail("no sent event for %q", text)
		}
		var outcomes []headless.Event
		for _, e := range r.events[sentAt+1:] {
			if e.ID == id && (e.Type == "delivered" || e.Type == "error") {
				outcomes = append(outcomes, e)
			}
		}
		if len(outcomes) != 1 || outcomes[0].Type != "delivered" || outcomes[0].To != "bob" {
			fail("outcomes %+v after sent, want one delivered to bob", outcomes)
		}
		for _, e := range r.events {
			if e.Type == "error" {
				fail("error event %+v", e)
			}
		}
		// delivered means bob has shown it.
		bob.waitEvent(t, waitLong, "message "+text, func(e *event) bool { return e.Type == "message" && e.Text == text })
	}
	counts := make(map[string]int)
	for _, m := range bob.events(0, isType("message")) {
		if m.From != "alice" {
			t.Errorf("bob: message %v, want from alice", m)
		}
		counts[m.Text]++
	}
	for i := range runs {
		if text := fmt.Sprintf("hi #%02d", i); counts[text] != 1 {
			t.Errorf("bob showed %q %d times, want once", text, counts[text])
		}
	}
	t.Logf("one-liner runs: %s", durStats(took))

	took = took[:0]
	for i := range 20 {
		r := runPiped(t, home, nil, waitLong, args...)
		took = append(took, r.took)
		if r.code != 0 || r.took > 3*time.Second {
			t.Fatalf("run %d with stdin /dev/null: exit %d after %v, want 0 within 3s\nstdout:\n%s\nstderr (tail):\n%s",
				i, r.code, r.took.Round(time.Millisecond), r.stdout, tail(r.stderr, 40))
		}
		for _, e := range r.events {
			if e.Type == "error" {
				t.Errorf("run %d with stdin /dev/null: %+v", i, e)
			}
		}
	}
	t.Logf("/dev/null runs: %s", durStats(took))
}

// durStats describes a list of durations: median and maximum.
func durStats(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return "none"
	}
	return fmt.Sprintf("%d runs, median %v, max %v", len(s), s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}

// --- trust on first use ---

// TestKeyChanged: alice meets bob on one rendezvous and pins his key. On a
// second rendezvous, mallory has registered as "bob". alice, restarted
// there with her state, refuses to send to the new "bob": the message's
// outcome is key_changed naming both fingerprints, and mallory receives
// nothing. /fingerprint bob still shows the pinned key; after /trust bob
// (which names mallory's fingerprint) messages go to the new key.
func TestKeyChanged(t *testing.T) {
	t.Parallel()
	rv1 := startRendezvous(t, rvOptions{})
	aliceKey := filepath.Join(t.TempDir(), "alice.key")
	aliceState := t.TempDir()
	alice := startNode(t, "alice", rv1.addr, nodeOptions{identity: aliceKey, state: aliceState})
	bob := startNode(t, "bob", rv1.addr, nodeOptions{})
	alice.waitRegistered(t)
	bob.waitRegistered(t)
	alice.waitPeerJoined(t, "bob")
	chat(t, alice, bob, "met", 2)
	bobFP := bob.selfFingerprint(t)
	if e := alice.ask(t, "/fingerprint bob", "bob's fingerprint", isType("fingerprint")); e.Fingerprint != bobFP || !e.Pinned {
		t.Errorf("alice: /fingerprint bob on rv1 is %v, want %s pinned", e, bobFP)
	}
	alice.command(t, "/quit")
	if code := alice.exitCode(t, waitLong); code != 0 {
		t.Fatalf("alice: exit %d after /quit", code)
	}

	rv2 := startRendezvous(t, rvOptions{})
	mallory := startNode(t, "bob", rv2.addr, nodeOptions{label: "node mallory (as bob)"})
	mallory.waitRegistered(t)
	malloryFP := mallory.selfFingerprint(t)
	if malloryFP == bobFP {
		t.Fatal("mallory and bob have the same fingerprint")
	}
	alice = startNode(t, "alice", rv2.addr, nodeOptions{identity: aliceKey, state: aliceState, label: "node alice (on rv2)"})
	alice.waitRegistered(t)
	alice.waitPeerJoined(t, "bob")

	mark := alice.mark()
	alice.command(t, "/msg bob x")
	sent, _ := alice.waitEventFrom(t, mark, waitLong, "sent x", isType("sent"))
	if sent.Text != "x" || sent.To != "bob" {
		t.Fatalf("alice: %v, want sent x to bob", sent)
	}
	out, _ := alice.waitEventFrom(t, mark, waitLong, "outcome of x", func(e *event) bool {
		return (e.Type == "error" || e.Type == "delivered") && e.ID == sent.ID
	})
	if out.Type != "error" || out.Code != "key_changed" || out.Peer != "bob" || out.To != "bob" ||
		out.Fingerprint != bobFP || out.NewFingerprint != malloryFP || out.Message == "" {
		t.Errorf("alice: outcome of x is %v,\nwant error key_changed, peer bob, to bob, fingerprint %s, new_fingerprint %s and a message",
			out, bobFP, malloryFP)
	}
	if e := alice.ask(t, "/fingerprint bob", "bob's fingerprint", isType("fingerprint")); e.Name != "bob" || e.Fingerprint != bobFP || !e.Pinned || e.Self {
		t.Errorf("alice: /fingerprint bob is %v, want the pinned %s", e, bobFP)
	}
	if e := alice.ask(t, "/trust bob", "trusted", func(e *event) bool { return e.Type == "trusted" || e.Type == "error" }); e.Type != "trusted" || e.Name != "bob" || e.Fingerprint != malloryFP {
		t.Errorf("alice: /trust bob answered %v, want trusted bob %s", e, malloryFP)
	}
	if e := alice.ask(t, "/fingerprint bob", "bob's fingerprint", isType("fingerprint")); e.Fingerprint != malloryFP || !e.Pinned {
		t.Errorf("alice: /fingerprint bob after /trust is %v, want the pinned %s", e, malloryFP)
	}
	b := sendTexts(t, alice, mallory, []string{"y"})
	b.mark = 0 // mallory must have shown y and nothing else, ever
	b.checkDelivered(t, waitLong)
	if ms := mallory.events(0, isType("message")); len(ms) != 1 {
		t.Errorf("mallory: messages %v, want only y", ms)
	}
	if errs := mallory.events(0, isType("error")); len(errs) > 0 {
		t.Errorf("mallory: %v", errs)
	}
}

// --- a peer who quit ---

// TestSendAfterQuit: after a peer quits and its peer_left arrives, a
// message to it is stored in its mailbox within 2 s (no wait for a
// session that cannot come), and no relay path to it comes back.
func TestSendAfterQuit(t *testing.T) {
	t.Parallel()
	for _, mode := range pathModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			rv := startRendezvous(t, rvOptions{})
			alice, bob := startPairMode(t, rv, mode.relay, nodeOptions{})
			chat(t, alice, bob, "before-quit", 3)
			if !mode.relay {
				waitPath(t, alice, "bob", "direct")
			}
			bob.command(t, "/quit")
			_, left := alice.waitEventFrom(t, 0, waitLong, "peer_left bob", func(e *event) bool { return e.Type == "peer_left" && e.Name == "bob" })
			if code := bob.exitCode(t, waitLong); code != 0 {
				t.Errorf("bob: exit %d after /quit", code)
			}

			mark := alice.mark()
			asked := time.Now()
			alice.command(t, "/msg bob again")
			sent, _ := alice.waitEventFrom(t, mark, waitLong, "sent again", isType("sent"))
			out, _ := alice.waitEventFrom(t, mark, waitLong, "outcome of again", func(e *event) bool {
				return (e.Type == "error" || e.Type == "delivered" || e.Type == "stored") && e.ID == sent.ID
			})
			took := out.at.Sub(asked)
			t.Logf("%s %v after /msg", out.Type, took.Round(time.Millisecond))
			if out.Type != "stored" || out.To != "bob" {
				t.Errorf("alice: outcome %v, want stored for bob", out)
			}
			if took > 2*time.Second {
				t.Errorf("alice: outcome %v after /msg, want within 2s", took.Round(time.Millisecond))
			}
			alice.noEvent(t, left, 3*time.Second, "relay path to bob after peer_left", func(e *event) bool {
				return e.Type == "path" && e.Peer == "bob" && e.Path == "relay"
			})
			if ds := alice.events(left, func(e *event) bool { return e.Type == "path" && e.Peer == "bob" && e.Path == "direct" }); len(ds) > 0 {
				t.Errorf("alice: direct path to bob after peer_left: %v", ds[0])
			}
		})
	}
}

// --- refusals ---

// TestRefusedOnce: a registration refusal is reported by exactly one error
// event, and the node exits 1: key_in_use for a key bound to another name
// (while that name is online, and after it quit), name_taken for a name
// bound to another key.
func TestRefusedOnce(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{})
	alice := startNode(t, "alice", rv.addr, nodeOptions{})
	alice.waitRegistered(t)

	refused := func(name, identity, code string) {
		t.Helper()
		n := startNode(t, name, rv.addr, nodeOptions{identity: identity})
		if exit := n.exitCode(t, waitLong); exit != 1 {
			t.Errorf("%s: exit %d, want 1 after %s", n.label, exit, code)
		}
		errs := n.events(0, isType("error"))
		if len(errs) != 1 || errs[0].Code != code {
			t.Errorf("%s: error events %v, want exactly one %s", n.label, errs, code)
		}
		if r := n.events(0, isType("registered")); len(r) > 0 {
			t.Errorf("%s: %v, want no registration", n.label, r[0])
		}
	}
	refused("carol", alice.identity, "key_in_use") // while alice is online
	refused("alice", "", "name_taken")
	alice.command(t, "/quit")
	if code := alice.exitCode(t, waitLong); code != 0 {
		t.Fatalf("alice: exit %d after /quit", code)
	}
	refused("carol", alice.identity, "key_in_use") // alice's key is still bound to her name
}

// --- blank text ---

// TestBlankText: text of only white space is refused with bad_text, both
// after /msg NAME and as a plain line in a conversation, and nothing is
// sent.
func TestBlankText(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{})
	alice, bob := startPair(t, rv.addr, nodeOptions{})
	bobMark := bob.mark()

	refused := func(line string) {
		t.Helper()
		mark := alice.mark()
		alice.command(t, line)
		e, _ := alice.waitEventFrom(t, mark, waitLong, fmt.Sprintf("answer to %q", line), func(e *event) bool {
			return e.Type == "error" || e.Type == "sent"
		})
		if e.Type != "error" || e.Code != "bad_text" {
			t.Errorf("alice: %q answered %v, want error bad_text", line, e)
		}
	}
	refused("/msg bob    ")
	refused("/msg bob \t \t")
	b := sendTexts(t, alice, bob, []string{"a conversation"})
	b.checkDelivered(t, waitLong)
	refused("    ")
	refused(" \t ")
	// A last message: bob shows it right after the first, so nothing was
	// sent in between.
	last := sendTexts(t, alice, bob, []string{"the end"})
	last.checkDelivered(t, waitLong)
	var texts []string
	for _, m := range bob.events(bobMark, isType("message")) {
		texts = append(texts, m.Text)
	}
	if want := []string{"a conversation", "the end"}; !slices.Equal(texts, want) {
		t.Errorf("bob showed %q, want %q", texts, want)
	}
	if sent := alice.events(0, isType("sent")); len(sent) != 2 {
		t.Errorf("alice: %d sent events, want 2: %v", len(sent), sent)
	}
}

// --- sent does not wait for the network ---

// TestSentWhilePeerUnreachable: a message is accepted (sent: stored in
// the outbox) at once, whatever the state of the conversation's
// connection. bob is killed (the rendezvous still lists him for a while)
// and alice sends him more than a QUIC flow-control window: every one of
// them is announced sent within a few seconds, not when the connection to
// the dead bob finally times out.
func TestSentWhilePeerUnreachable(t *testing.T) {
	t.Parallel()
	for _, mode := range pathModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			rv := startRendezvous(t, rvOptions{})
			alice, bob := startPairMode(t, rv, mode.relay, nodeOptions{delivery: 5 * time.Minute})
			chat(t, alice, bob, "before", 2)
			bob.kill(t)
			const count = 400 // ~800 KB
			pad := strings.Repeat("~", 2000)
			mark := alice.mark()
			start := time.Now()
			for i := range count {
				alice.command(t, fmt.Sprintf("/msg bob unreachable #%03d %s", i, pad))
			}
			const bound = 3 * time.Second
			sent, ok := alice.out.waitCount(mark, count, bound, func(e entry) bool { return e.ev != nil && e.ev.Type == "sent" })
			if !ok {
				t.Errorf("alice: %d of %d messages announced sent within %v of the /msg commands (bob was killed: the conversation's connection is dead)",
					len(sent), count, bound)
				alice.goroutineDump(t)
				return
			}
			t.Logf("all %d sent %v after the first /msg", count, sent[count-1].at.Sub(start).Round(time.Millisecond))
		})
	}
}

// --- logs ---

// TestNodeLogLines: with -headless, each line the node logs on stderr is
// one zerolog JSON object with level and message at its top level, as the
// rendezvous writes them (not a log line wrapped as the message of
// another).
func TestNodeLogLines(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{})
	n := startNode(t, "alice", rv.addr, nodeOptions{})
	n.waitRegistered(t)
	e := n.waitStderr(t, waitLong, "registered")
	var line struct {
		Level   string `json:"level"`
		Message string `json:"message"`
		Node    string `json:"node"`
	}
	if err := json.Unmarshal([]byte(e.text), &line); err != nil {
		t.Fatalf("stderr line %q: %v", e.text, err)
	}
	if line.Level != "info" || line.Message != "registered" || line.Node != "alice" {
		t.Errorf("stderr line %q: level %q, message %q, node %q; want info, registered, alice at the top level",
			e.text, line.Level, line.Message, line.Node)
	}
}
