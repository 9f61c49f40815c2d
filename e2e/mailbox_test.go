package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// mailboxText is the i-th message of a mailbox test: unique, so that the
// rendezvous's database can be searched for it.
func mailboxText(tag string, i int) string {
	return fmt.Sprintf("%s mailbox plaintext #%03d ✓", tag, i)
}

// identity is a node's key file and state directory, kept across runs.
type identity struct{ key, state string }

func newIdentity(t *testing.T) identity {
	d := t.TempDir()
	return identity{key: filepath.Join(d, "node.key"), state: filepath.Join(d, "state")}
}

func (id identity) options(label string) nodeOptions {
	return nodeOptions{identity: id.key, state: id.state, label: label}
}

// bindAndLeave registers name once (binding it to its key at the
// rendezvous) and leaves: a name that exists but is offline.
func bindAndLeave(t *testing.T, rv, name string, id identity) {
	t.Helper()
	n := startNode(t, name, rv, id.options(name+"#0"))
	n.waitRegistered(t)
	n.stdin.Close() // end of input: a notified leave
	if code := n.exitCode(t, waitLong); code != 0 {
		t.Fatalf("%s: exit code %d at end of input", n.label, code)
	}
}

// deposit has from send count messages to the offline node `to` and waits
// for each to be stored. It returns the batch (ids and texts in order).
func deposit(t *testing.T, from *node, to string, tag string, count int) *batch {
	t.Helper()
	b := &batch{from: from}
	start := from.mark()
	for i := range count {
		b.texts = append(b.texts, mailboxText(tag, i))
		from.command(t, "/msg "+to+" "+b.texts[i])
	}
	sent := from.waitEvents(t, start, count, waitLong, "sent events", func(e *event) bool { return e.Type == "sent" && e.To == to })
	for i, e := range sent[:count] {
		if e.Text != b.texts[i] {
			t.Fatalf("%s: sent event %d is %v, want %q", from.label, i, e, b.texts[i])
		}
		b.ids = append(b.ids, e.ID)
	}
	want := make(map[string]bool)
	for _, id := range b.ids {
		want[id] = true
	}
	from.waitEvents(t, start, count, waitLong, "stored events", func(e *event) bool { return e.Type == "stored" && want[e.ID] && e.To == to })
	if errs := from.events(start, isType("error")); len(errs) > 0 {
		t.Fatalf("%s: errors while depositing: %v", from.label, errs)
	}
	return b
}

// checkMailboxDelivery checks that the shown messages (across runs of the
// receiver) are b's, each once, in order, from the mailbox with their
// original send times, allowing only the documented repeat at a kill
// (lastOfRun: the id of the last message a killed run showed), and that the
// sender got one delivered outcome per message.
func checkMailboxDelivery(t *testing.T, b *batch, shown []*event, lastOfRun map[string]bool) {
	t.Helper()
	var got []*event
	for i, e := range shown {
		if i > 0 && lastOfRun[shown[i-1].ID] && e.ID == shown[i-1].ID {
			t.Logf("%s shown again after its run was killed (the stdout boundary)", e.ID)
			continue
		}
		got = append(got, e)
	}
	if len(got) != len(b.ids) {
		t.Errorf("%d messages shown, want %d", len(got), len(b.ids))
	}
	sentAt := make(map[string]time.Time)
	for _, e := range b.from.events(0, isType("sent")) {
		sentAt[e.ID] = e.TS
	}
	for i, e := range got {
		if i >= len(b.ids) {
			break
		}
		if e.ID != b.ids[i] || e.Text != b.texts[i] || e.From != b.from.name {
			t.Errorf("message %d is %v, want id %s text %q", i, e, b.ids[i], b.texts[i])
			continue
		}
		if e.Via != "mailbox" {
			t.Errorf("message %d came via %q, want mailbox", i, e.Via)
		}
		if d := e.SentTS.Sub(sentAt[e.ID]); d < -2*time.Second || d > 2*time.Second {
			t.Errorf("message %d: sent_ts %v, but the sender sent it at %v", i, e.SentTS, sentAt[e.ID])
		}
	}
	want := make(map[string]bool)
	for _, id := range b.ids {
		want[id] = true
	}
	count := make(map[string]int)
	for _, e := range b.from.events(0, func(e *event) bool { return want[e.ID] && isOutcome(e) }) {
		count[e.ID]++
		if e.Type != "delivered" {
			t.Errorf("%s: outcome %v, want delivered", b.from.label, e)
		}
	}
	for id, n := range count {
		if n != 1 {
			t.Errorf("%s: message %s has %d outcomes, want 1", b.from.label, id, n)
		}
	}
}

func isOutcome(e *event) bool {
	return e.Type == "delivered" || e.Type == "error" || e.Type == "expired"
}

// waitOutcomes waits until the sender has an outcome for every message of b.
func waitOutcomes(t *testing.T, b *batch, timeout time.Duration) {
	t.Helper()
	want := make(map[string]bool)
	for _, id := range b.ids {
		want[id] = true
	}
	b.from.waitEvents(t, 0, len(b.ids), timeout, "an outcome for every message", func(e *event) bool { return want[e.ID] && isOutcome(e) })
}

// TestMailbox: bob is offline, alice sends him 100 messages, each stored;
// bob comes back and is shown all 100, once each, in order, from the
// mailbox, with their original send times, and alice gets a receipt for
// every one. Variants kill the rendezvous or bob at the moments the issue
// names. The rendezvous's database never holds a message's text.
func TestMailbox(t *testing.T) {
	t.Parallel()
	const n = 100
	for _, tc := range []struct {
		name string
		// during runs while bob (run 1) is fetching; it returns true if
		// it killed bob.
		beforeReturn func(t *testing.T, rv *rendezvous) *rendezvous
		during       func(t *testing.T, rv *rendezvous, bob *node) (*rendezvous, bool)
	}{
		{name: "offline then back"},
		{
			name: "rendezvous killed before bob returns",
			beforeReturn: func(t *testing.T, rv *rendezvous) *rendezvous {
				rv.kill(t)
				return rv.restart(t)
			},
		},
		{
			name: "rendezvous killed while bob takes his mail",
			during: func(t *testing.T, rv *rendezvous, bob *node) (*rendezvous, bool) {
				bob.waitEvents(t, 0, 20, waitLong, "20 messages", isType("message"))
				rv.kill(t)
				return rv.restart(t), false
			},
		},
		{
			name: "bob killed while he takes his mail",
			during: func(t *testing.T, rv *rendezvous, bob *node) (*rendezvous, bool) {
				bob.waitEvents(t, 0, 30, waitLong, "30 messages", isType("message"))
				bob.kill(t)
				return rv, true
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rv := startRendezvous(t, rvOptions{metrics: true})
			bobID := newIdentity(t)
			bindAndLeave(t, rv.addr, "bob", bobID)
			alice := startNode(t, "alice", rv.addr, nodeOptions{})
			alice.waitRegistered(t)
			b := deposit(t, alice, "bob", "m", n)

			// What the rendezvous holds is sealed.
			db, err := os.ReadFile(filepath.Join(rv.data, dbFile(t, rv.data)))
			if err != nil {
				t.Fatal(err)
			}
			for _, text := range b.texts {
				if bytes.Contains(db, []byte(strings.TrimSuffix(text, " ✓"))) {
					t.Fatalf("the rendezvous's database holds the text %q", text)
				}
			}
			if tc.beforeReturn != nil {
				rv = tc.beforeReturn(t, rv)
			}

			var shown []*event
			lastOfRun := make(map[string]bool)
			bob := startNode(t, "bob", rv.addr, bobID.options("bob#1"))
			if e := bob.waitEvent(t, waitLong, "mailbox event", isType("mailbox")); e.Count != n {
				t.Errorf("mailbox count %d, want %d", e.Count, n)
			}
			killed := false
			if tc.during != nil {
				rv, killed = tc.during(t, rv, bob)
			}
			if killed {
				run := bob.events(0, isType("message"))
				if len(run) > 0 {
					lastOfRun[run[len(run)-1].ID] = true
				}
				shown = append(shown, run...)
				bob = startNode(t, "bob", rv.addr, bobID.options("bob#2"))
				bob.waitRegistered(t)
			}
			// Delivered means shown and recorded: once every receipt is
			// in, every message bob will show is on his stdout.
			waitOutcomes(t, b, 2*waitLong)
			shown = append(shown, bob.events(0, isType("message"))...)
			checkMailboxDelivery(t, b, shown, lastOfRun)
			if t.Failed() {
				return
			}
			m := rv.scrape(t)
			if m["natchat_rendezvous_mailbox_messages"] != 0 {
				t.Errorf("the mailbox still holds %v messages after all were taken", m["natchat_rendezvous_mailbox_messages"])
			}
		})
	}
}

// dbFile returns the name of the rendezvous's bbolt file in dir.
func dbFile(t *testing.T, dir string) string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if strings.HasSuffix(e.Name(), ".db") {
			return e.Name()
		}
	}
	t.Fatalf("no .db file in %s", dir)
	return ""
}

// TestMailboxFlapping: bob goes offline (/dereg) and online (/reg) five
// times while alice keeps writing, then stays; every message is shown
// once, in the order sent: those sent while he was away from the mailbox,
// the last ones live, after them.
func TestMailboxFlapping(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{})
	alice, bob := startPair(t, rv.addr, nodeOptions{})
	var texts, ids []string
	send := func(round, count int) map[string]bool {
		start := alice.mark()
		for i := range count {
			text := fmt.Sprintf("flap r%d #%02d", round, i)
			texts = append(texts, text)
			alice.command(t, "/msg bob "+text)
		}
		these := make(map[string]bool)
		for _, e := range alice.waitEvents(t, start, count, waitLong, "sent events", isType("sent")) {
			ids = append(ids, e.ID)
			these[e.ID] = true
		}
		return these
	}
	// Each round: five messages while bob is online (bob leaves at once,
	// so some of them may be stored rather than delivered live), five
	// while he is away (all stored), and bob back.
	for round := range 5 {
		send(round*2, 5)
		m, am := bob.mark(), alice.mark()
		bob.command(t, "/dereg")
		bob.waitEventFrom(t, m, waitLong, "deregistered", isType("deregistered"))
		alice.waitEventFrom(t, am, waitLong, "bob left", func(e *event) bool { return e.Type == "peer_left" && e.Name == "bob" })
		away := send(round*2+1, 5)
		alice.waitEvents(t, am, 5, waitLong, "these stored", func(e *event) bool { return e.Type == "stored" && away[e.ID] })
		m = bob.mark()
		bob.command(t, "/reg")
		bob.waitEventFrom(t, m, waitLong, "registered", isType("registered"))
	}
	// Bob stays: these go live, after his mail.
	live := send(10, 5)
	msgs := bob.waitEvents(t, 0, len(ids), 2*waitLong, "every message", isType("message"))
	if len(msgs) != len(ids) {
		t.Fatalf("%d messages shown, want %d", len(msgs), len(ids))
	}
	vias := map[string]int{}
	for i, e := range msgs {
		if e.ID != ids[i] || e.Text != texts[i] {
			t.Errorf("message %d is %q (%s), want %q (%s)", i, e.Text, e.ID, texts[i], ids[i])
		}
		vias[e.Via]++
	}
	if vias["mailbox"] < 25 {
		t.Errorf("messages by way: %v; want at least the 25 sent while bob was away from the mailbox", vias)
	}
	for _, e := range msgs {
		if live[e.ID] && e.Via != "" {
			t.Errorf("message %q, sent while bob stayed online, came via %q", e.Text, e.Via)
		}
	}
	t.Logf("messages by way: %v", vias)
	want := make(map[string]bool)
	for _, id := range ids {
		want[id] = true
	}
	alice.waitEvents(t, 0, len(ids), waitLong, "delivered", func(e *event) bool { return e.Type == "delivered" && want[e.ID] })
}

// TestMailboxFull: past the recipient's mailbox limit the sender gets a
// mailbox_full error for each message that did not fit; nothing is lost
// silently.
func TestMailboxFull(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{extra: []string{"-mailbox-count", "5", "-mailbox-share", "100"}})
	bindAndLeave(t, rv.addr, "bob", newIdentity(t))
	alice := startNode(t, "alice", rv.addr, nodeOptions{})
	alice.waitRegistered(t)
	start := alice.mark()
	for i := range 7 {
		alice.command(t, fmt.Sprintf("/msg bob full #%d", i))
	}
	outs := alice.waitEvents(t, start, 7, waitLong, "outcomes", func(e *event) bool {
		return e.Type == "stored" || e.Type == "error"
	})
	stored, full := 0, 0
	for _, e := range outs {
		switch {
		case e.Type == "stored":
			stored++
		case e.Code == "mailbox_full" && e.ID != "" && e.To == "bob" && e.Message != "":
			full++
		default:
			t.Errorf("unexpected outcome %v", e)
		}
	}
	if stored != 5 || full != 2 {
		t.Errorf("%d stored and %d mailbox_full, want 5 and 2", stored, full)
	}
}
