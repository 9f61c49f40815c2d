package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRestartSoak: alice sends bob 500 numbered messages in chunks while
// bob is killed (SIGKILL) and restarted five times and alice once, each
// with the same identity and -state, at random moments while messages are
// in flight. Across all runs bob shows every message exactly once, in
// order, and alice gets a receipt for every one (in whichever of her runs
// it came).
//
// One repeat is allowed, and only at a kill: the message a run wrote to
// stdout in the microseconds before its SIGKILL, before it could record it
// as shown, is shown again, with the same id, as the first message of a
// later run. No process writing to a pipe can close that window (it would
// have to write stdout and its record in one act); docs/HEADLESS.md says
// so, and scripts can drop a repeated id. Any other repeat fails.
//
// On the relay, and free to punch (every restart of bob then costs the
// direct path, which has to be found again).
func TestRestartSoak(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name     string
		noDirect bool
	}{{"relay", true}, {"direct", false}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			soak(t, mode.noDirect)
		})
	}
}

const (
	soakTotal    = 500
	soakChunk    = 50
	soakBobKills = 5
	// soakFinal bounds the wait, after the last chunk, for every message
	// to be shown and acknowledged.
	soakFinal = 2 * time.Minute
)

// soakPad makes each message ~2 KB, so that a chunk takes some
// milliseconds on its way, for kills to land in.
var soakPad = strings.Repeat("=", 2000)

func soakText(i int) string { return fmt.Sprintf("soak #%03d %s", i, soakPad) }

// short is a soak text without its padding, for logs.
func short(text string) string { return strings.TrimSuffix(text, " "+soakPad) }

func soak(t *testing.T, noDirect bool) {
	rng := newRand(t)
	began := time.Now()
	rv := startRendezvous(t, rvOptions{})
	dir := t.TempDir()
	opts := func(who string) nodeOptions {
		return nodeOptions{identity: filepath.Join(dir, who+".key"), delivery: 5 * time.Minute, noDirect: noDirect,
			state: filepath.Join(dir, who+"-state")}
	}
	var bobs, alices []*node
	startBob := func() *node {
		t.Helper()
		o := opts("bob")
		o.label = fmt.Sprintf("node bob#%d", len(bobs)+1)
		n := startNode(t, "bob", rv.addr, o)
		bobs = append(bobs, n)
		n.waitRegistered(t)
		return n
	}
	startAlice := func() *node {
		t.Helper()
		o := opts("alice")
		o.label = fmt.Sprintf("node alice#%d", len(alices)+1)
		n := startNode(t, "alice", rv.addr, o)
		alices = append(alices, n)
		n.waitRegistered(t)
		return n
	}
	bob := startBob()
	alice := startAlice()
	alice.waitPeerJoined(t, "bob")
	t.Cleanup(func() {
		if t.Failed() {
			saveLogs(t, append(append([]*node{}, alices...), bobs...)...)
		}
	})

	chunks := soakTotal / soakChunk
	killBob := make(map[int]bool)
	for _, c := range rng.Perm(chunks)[:soakBobKills] {
		killBob[c] = true
	}
	killAlice := chunks/2 - 1 + rng.IntN(2)
	// inFlight picks the moment of a kill in chunk c, while its messages
	// are in flight: a few milliseconds after they were written (some not
	// yet accepted, or on their way), or as soon as bob has shown a random
	// one of them (the rest on their way, receipts outstanding). The
	// sleep is the random moment, not a wait for anything.
	inFlight := func(c int) string {
		if rng.IntN(2) == 0 {
			d := time.Duration(rng.Int64N(int64(8 * time.Millisecond)))
			time.Sleep(d)
			return fmt.Sprintf("%v after the chunk was written", d.Round(time.Microsecond))
		}
		text := soakText(c*soakChunk + rng.IntN(soakChunk))
		if _, _, ok := bob.out.waitFor(0, waitLong, func(e entry) bool { return e.ev != nil && e.ev.Type == "message" && e.ev.Text == text }); !ok {
			alice.goroutineDump(t)
			t.Fatalf("%s: %s not shown within %v (%s)", bob.label, short(text), waitLong, bob.status())
		}
		return "as soon as bob showed " + short(text)
	}

	var written []string // texts written to alice's stdin, in order
	var slowestSent time.Duration
	for c := range chunks {
		mark := alice.mark()
		want := make(map[string]bool)
		for i := c * soakChunk; i < (c+1)*soakChunk; i++ {
			text := soakText(i)
			written = append(written, text)
			want[text] = true
			alice.command(t, "/msg bob "+text)
		}
		wrote := time.Now()
		if c == killAlice {
			when := inFlight(c)
			alice.kill(t)
			t.Logf("chunk %d: killed alice %s, with %d of %d sent events of the chunk", c, when,
				len(alice.events(mark, func(e *event) bool { return e.Type == "sent" && want[e.Text] })), soakChunk)
			alice = startAlice()
			resendLost(t, alices[0], alice, written)
		} else {
			sent, ok := alice.out.waitCount(mark, soakChunk, waitLong, func(e entry) bool {
				return e.ev != nil && e.ev.Type == "sent" && !e.ev.Resumed && want[e.ev.Text]
			})
			if !ok {
				alice.goroutineDump(t)
				t.Fatalf("%s: %d of %d sent events of chunk %d within %v", alice.label, len(sent), soakChunk, c, waitLong)
			}
			if d := sent[len(sent)-1].at.Sub(wrote); d > slowestSent {
				slowestSent = d
			}
		}
		if killBob[c] {
			when := inFlight(c)
			bob.kill(t)
			t.Logf("chunk %d: killed bob#%d %s; it showed %d messages", c, len(bobs), when, len(bob.events(0, isType("message"))))
			time.Sleep(time.Duration(rng.Int64N(int64(500 * time.Millisecond)))) // bob is down a random while
			bob = startBob()
		}
	}
	sentAll := time.Now()

	// Wait until bob has shown every text and alice has a receipt for
	// every text, across runs.
	shown := make(map[string]bool)
	for _, b := range bobs[:len(bobs)-1] {
		for _, m := range b.events(0, isType("message")) {
			shown[m.Text] = true
		}
	}
	if _, _, ok := bob.out.waitFor(0, soakFinal, func(e entry) bool {
		if e.ev != nil && e.ev.Type == "message" {
			shown[e.ev.Text] = true
		}
		return len(shown) >= soakTotal
	}); !ok {
		alice.goroutineDump(t)
		bob.goroutineDump(t)
		t.Fatalf("bob: %d of %d texts shown across %d runs within %v of the last chunk", len(shown), soakTotal, len(bobs), soakFinal)
	}
	textOf := make(map[string]string) // alice's message IDs → texts, over her runs
	for _, a := range alices {
		for _, e := range a.events(0, isType("sent")) {
			textOf[e.ID] = e.Text
		}
	}
	acked := make(map[string]bool) // texts
	for _, a := range alices[:len(alices)-1] {
		for _, e := range a.events(0, isType("delivered")) {
			acked[textOf[e.ID]] = true
		}
	}
	if _, _, ok := alice.out.waitFor(0, soakFinal, func(e entry) bool {
		if e.ev != nil && e.ev.Type == "delivered" {
			acked[textOf[e.ev.ID]] = true
		}
		return len(acked) >= soakTotal
	}); !ok {
		alice.goroutineDump(t)
		t.Errorf("alice: receipts for %d of %d texts within %v of the last chunk", len(acked), soakTotal, soakFinal)
	}
	t.Logf("%d messages, %d runs of bob, %d of alice: all chunks written %v after the start, all shown and acknowledged %v later; "+
		"slowest chunk's sent events %v after it was written",
		soakTotal, len(bobs), len(alices), sentAll.Sub(began).Round(time.Millisecond), time.Since(sentAll).Round(time.Millisecond),
		slowestSent.Round(time.Millisecond))

	// Bob: every text exactly once, in order, across his runs, each with
	// an ID alice sent it under.
	var got []shownMsg
	for i, b := range bobs {
		ms := b.events(0, isType("message"))
		for _, m := range ms {
			if m.From != "alice" {
				t.Errorf("%s: message %v, want from alice", b.label, m)
				continue
			}
			if textOf[m.ID] != m.Text {
				t.Errorf("%s: message %s (id %s): alice sent no such id with this text", b.label, short(m.Text), m.ID)
			}
			got = append(got, shownMsg{run: i + 1, id: m.ID, text: m.Text, lastOfRun: m == ms[len(ms)-1]})
		}
		t.Logf("bob#%d showed %d messages", i+1, len(ms))
	}
	checkSequence(t, got, soakTotal)

	// Alice: a receipt for every text (checked above); no failure; per
	// run, at most one outcome per ID, and in the last run exactly one
	// for every ID it announced.
	for text := range shown {
		if !acked[text] {
			t.Errorf("alice: no run reported %q delivered", short(text))
		}
	}
	for i, a := range alices {
		outcomes := make(map[string]int)
		for _, e := range a.events(0, func(e *event) bool { return e.Type == "delivered" || e.Type == "error" }) {
			if e.Type == "error" {
				t.Errorf("%s: %v", a.label, e)
			}
			if e.ID != "" {
				outcomes[e.ID]++
			}
		}
		for _, e := range a.events(0, isType("sent")) {
			n := outcomes[e.ID]
			if n > 1 || n == 0 && i == len(alices)-1 {
				t.Errorf("%s: %d outcomes for %s (id %s, resumed %v), want one", a.label, n, short(e.Text), e.ID, e.Resumed)
			}
		}
	}
}

// resendLost does alice's part after her kill: a message written to the
// killed run was accepted if that run announced it (sent), or if the new
// run resumed it (sent, resumed). The rest were lost with the process and
// are sent again, by the new run. They must be the last ones written.
func resendLost(t *testing.T, old, alice *node, written []string) {
	t.Helper()
	// The resumed sent events come before the answer to any command.
	alice.command(t, "/fingerprint")
	_, ready := alice.waitEventFrom(t, 0, waitLong, "own fingerprint", func(e *event) bool { return e.Type == "fingerprint" && e.Self })
	accepted := make(map[string]bool)
	var before, resumed int
	for _, e := range old.events(0, isType("sent")) {
		accepted[e.Text] = true
		before++
	}
	es, _, _ := alice.out.since(0)
	for _, e := range es[:ready] {
		if e.ev == nil || e.ev.Type != "sent" {
			continue
		}
		if !e.ev.Resumed {
			t.Errorf("%s: %v before any /msg, want only resumed messages", alice.label, e.ev)
		}
		accepted[e.ev.Text] = true
		resumed++
	}
	var lost []string
	for i, text := range written {
		if !accepted[text] {
			lost = append(lost, text)
		} else if len(lost) > 0 {
			t.Errorf("alice: %q was accepted but %q, written before it, was lost (message %d)", short(text), short(lost[0]), i)
		}
	}
	t.Logf("alice's kill: %d written, %d announced by the killed run, %d resumed by the new one, %d lost and sent again",
		len(written), before, resumed, len(lost))
	if len(lost) == 0 {
		return
	}
	mark := alice.mark()
	want := make(map[string]bool)
	for _, text := range lost {
		want[text] = true
		alice.command(t, "/msg bob "+text)
	}
	alice.waitEvents(t, mark, len(lost), waitLong, "sent events of the lost messages", func(e *event) bool {
		return e.Type == "sent" && !e.Resumed && want[e.Text]
	})
}

// shownMsg is a message one of bob's runs showed.
type shownMsg struct {
	run       int // 1, 2, ...
	id, text  string
	lastOfRun bool // the last message that run showed before it was killed
}

// checkSequence checks that got is soakText(0) … soakText(n-1), each once,
// in order, and describes each duplicate and the first difference.
func checkSequence(t *testing.T, got []shownMsg, n int) {
	t.Helper()
	byText := make(map[string][]shownMsg)
	for _, m := range got {
		byText[m.text] = append(byText[m.text], m)
	}
	// Drop the allowed repeats: the last message of a killed run shown
	// again, same id, first thing in the next run that shows anything.
	for i := 1; i < len(got); i++ {
		prev, m := got[i-1], got[i]
		if prev.lastOfRun && m.run > prev.run && m.id == prev.id {
			t.Logf("bob#%d showed %s again (id %s): it was being written when bob#%d was killed", m.run, short(m.text), m.id, prev.run)
			got = append(got[:i:i], got[i+1:]...)
			byText[m.text] = byText[m.text][:1]
		}
	}
	var missing []string
	for i := range n {
		ms := byText[soakText(i)]
		switch {
		case len(ms) == 0:
			missing = append(missing, short(soakText(i)))
		case len(ms) > 1:
			var where []string
			for _, m := range ms {
				s := fmt.Sprintf("bob#%d id %s", m.run, m.id)
				if m.lastOfRun {
					s += " (the last message that run showed before its SIGKILL)"
				}
				where = append(where, s)
			}
			t.Errorf("bob showed %s %d times: %s", short(soakText(i)), len(ms), strings.Join(where, "; "))
		}
	}
	if len(missing) > 0 {
		t.Errorf("bob never showed %d texts: %s", len(missing), strings.Join(missing[:min(len(missing), 20)], ", "))
	}
	for i := range min(len(got), n) {
		if got[i].text != soakText(i) {
			var around []string
			for _, m := range got[max(0, i-3):min(len(got), i+4)] {
				around = append(around, fmt.Sprintf("%s (bob#%d)", short(m.text), m.run))
			}
			t.Errorf("bob's message %d is %q, want %q; around it: %s", i, short(got[i].text), short(soakText(i)), strings.Join(around, ", "))
			break
		}
	}
	if len(got) != n {
		t.Errorf("bob showed %d messages, want %d", len(got), n)
	}
}
