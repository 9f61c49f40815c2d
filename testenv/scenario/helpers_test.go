package scenario

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"natchat/testenv"
)

// Timing the scenarios run with unless they say otherwise. A loaded
// two-core machine (shared with builds and fuzzers) makes everything slow,
// so the waits are generous; they are upper bounds, never sleeps.
const (
	heartbeat = 5 * time.Second
	expiry    = 20 * time.Second
	// waitShort bounds a few round trips: registration, presence, one
	// message through a working path.
	waitShort = 20 * time.Second
	// waitDirect bounds how long hole punching may take to reach direct.
	waitDirect = 30 * time.Second
	// relayWindow is how long a pair that theory says cannot punch is
	// watched for a direct path that should not appear.
	relayWindow = 15 * time.Second
	// sendWait bounds the delivery of a batch of messages.
	sendWait = 45 * time.Second
)

// world is a lab with a running rendezvous.
type world struct {
	lab *testenv.Lab
	rv  *testenv.Rendezvous
}

// newWorld starts a lab with a rendezvous; 0 picks the scenarios' default
// expiry and heartbeat (which the rendezvous suggests to nodes).
func newWorld(t *testing.T, rvExpiry, rvHeartbeat time.Duration) *world {
	t.Helper()
	needBinaries(t)
	l := testenv.NewT(t, testenv.Options{})
	h, err := l.AddRendezvousHost()
	if err != nil {
		t.Fatal(err)
	}
	if rvExpiry == 0 {
		rvExpiry = expiry
	}
	if rvHeartbeat == 0 {
		rvHeartbeat = heartbeat
	}
	rv, err := l.StartRendezvous(h, testenv.RendezvousConfig{Bin: bins.Rendezvous, Expiry: rvExpiry, Heartbeat: rvHeartbeat})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- rendezvous log (tail):\n%s", tailLines(rv.Stderr(), 40))
		}
	})
	return &world{lab: l, rv: rv}
}

// node starts a node named after h on h; hb 0 means the default heartbeat
// of the scenarios, hb < 0 the binary's own default.
func (w *world) node(t *testing.T, h *testenv.Host, hb time.Duration) *testenv.Node {
	t.Helper()
	if hb == 0 {
		hb = heartbeat
	}
	if hb < 0 {
		hb = 0
	}
	n, err := w.lab.StartNode(h, testenv.NodeConfig{Bin: bins.Node, RV: w.rv.Addr, Heartbeat: hb})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(n.Dump())
		}
	})
	return n
}

// meet starts nodes on ha and hb and waits until both are registered and
// have seen each other join.
func (w *world) meet(t *testing.T, ha, hb *testenv.Host, heartbeat time.Duration) (*testenv.Node, *testenv.Node) {
	t.Helper()
	a, b := w.node(t, ha, heartbeat), w.node(t, hb, heartbeat)
	for _, n := range []*testenv.Node{a, b} {
		if _, err := n.Wait(waitShort, testenv.Registered()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Wait(waitShort, testenv.PeerJoined(b.Name)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Wait(waitShort, testenv.PeerJoined(a.Name)); err != nil {
		t.Fatal(err)
	}
	return a, b
}

// talk is the outcome of one converse.
type talk struct {
	sent, delivered int
	paths           map[string]int // message events by path
}

// converse sends n messages each way between a and b, interleaved, and
// checks that every message arrives exactly once, in order, and is
// acknowledged by a delivered event. tag makes the texts unique.
func converse(t *testing.T, a, b *testenv.Node, n int, tag string, within time.Duration) talk {
	t.Helper()
	c := newChat(a, b, tag)
	for i := 0; i < n; i++ {
		c.round(t)
	}
	return c.check(t, within)
}

// chat is a conversation between a and b in rounds: each round sends the
// next numbered message each way. check verifies everything sent so far.
type chat struct {
	a, b  *testenv.Node
	tag   string
	marks map[*testenv.Node]int
	sent  map[*testenv.Node][]testenv.Event // sent events by sender, in order
}

// newChat starts a conversation; tag makes its texts unique.
func newChat(a, b *testenv.Node, tag string) *chat {
	return &chat{a: a, b: b, tag: tag, marks: map[*testenv.Node]int{a: a.Mark(), b: b.Mark()},
		sent: map[*testenv.Node][]testenv.Event{}}
}

// directions are the chat's two directions, a to b first.
func (c *chat) directions() [][2]*testenv.Node { return [][2]*testenv.Node{{c.a, c.b}, {c.b, c.a}} }

// rounds is how many rounds have been sent.
func (c *chat) rounds() int { return len(c.sent[c.a]) }

// round sends the next message each way.
func (c *chat) round(t *testing.T) {
	t.Helper()
	i := c.rounds()
	for _, p := range c.directions() {
		from, to := p[0], p[1]
		ev, err := from.Send(to.Name, text(c.tag, from, to, i))
		if err != nil {
			t.Fatal(err)
		}
		c.sent[from] = append(c.sent[from], ev)
	}
}

// pump sends a round every pace until done holds (checked after each
// round) or within has passed, and reports whether done held.
func (c *chat) pump(t *testing.T, pace, within time.Duration, done func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(pace)
	defer tick.Stop()
	for {
		c.round(t)
		if done() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
}

// check waits up to within for every message sent so far to arrive and
// be acknowledged, and checks that each arrived exactly once, in order.
func (c *chat) check(t *testing.T, within time.Duration) talk {
	t.Helper()
	res := talk{paths: map[string]int{}}
	n := c.rounds()
	if n == 0 {
		return res
	}
	deadline := time.Now().Add(within)
	for _, p := range c.directions() {
		from, to := p[0], p[1]
		res.sent += n
		// The last message arriving means all should have, since
		// delivery is in order.
		last := text(c.tag, from, to, n-1)
		if _, err := to.WaitFrom(c.marks[to], time.Until(deadline), testenv.MessageFrom(from.Name, last)); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, ev := range c.received(from, to) {
			got = append(got, ev.Text)
			res.paths[ev.Path]++
		}
		var want []string
		for i := 0; i < n; i++ {
			want = append(want, text(c.tag, from, to, i))
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%s received from %s:\n  %s\nwant exactly once, in order:\n  %s",
				to.Name, from.Name, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
		for _, ev := range c.sent[from] {
			if _, err := from.WaitFrom(c.marks[from], time.Until(deadline), testenv.Delivered(ev.ID)); err != nil {
				t.Fatal(err)
			}
			res.delivered++
		}
	}
	return res
}

// received returns the chat's message events from -> to has seen so far.
func (c *chat) received(from, to *testenv.Node) []testenv.Event {
	var out []testenv.Event
	for _, ev := range to.Events()[c.marks[to]:] {
		if ev.Type == "message" && ev.From == from.Name && strings.HasPrefix(ev.Text, c.tag+" ") {
			out = append(out, ev)
		}
	}
	return out
}

// latencies returns, for every message of rounds [lo, hi) in both
// directions that has arrived, the time from the sender's sent event to
// the receiver's message event (both as the harness read them).
func (c *chat) latencies(lo, hi int) []time.Duration {
	var out []time.Duration
	for _, p := range c.directions() {
		from, to := p[0], p[1]
		at := map[string]time.Time{}
		for _, ev := range c.received(from, to) {
			if _, dup := at[ev.Text]; !dup {
				at[ev.Text] = ev.Recv
			}
		}
		for i := lo; i < hi && i < len(c.sent[from]); i++ {
			if r, ok := at[text(c.tag, from, to, i)]; ok {
				out = append(out, r.Sub(c.sent[from][i].Recv))
			}
		}
	}
	return out
}

func text(tag string, from, to *testenv.Node, i int) string {
	return fmt.Sprintf("%s %s->%s #%03d", tag, from.Name, to.Name, i)
}

// lastPath returns the latest path n reported for peer ("none" if none).
func lastPath(n *testenv.Node, peer string) string {
	if ev, ok := n.Last(testenv.PathIs(peer, "")); ok {
		return ev.Path
	}
	return "none"
}

// idle lets time pass with nothing sent: the passing of time is what the
// test is about here (mappings expiring), not a way to wait for an event.
func idle(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	<-t.C
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
