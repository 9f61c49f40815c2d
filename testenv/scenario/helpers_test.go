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
	marks := map[*testenv.Node]int{a: a.Mark(), b: b.Mark()}
	res := talk{paths: map[string]int{}}
	var ids = map[*testenv.Node][]string{}
	for i := 0; i < n; i++ {
		for _, p := range [][2]*testenv.Node{{a, b}, {b, a}} {
			from, to := p[0], p[1]
			ev, err := from.Send(to.Name, text(tag, from, to, i))
			if err != nil {
				t.Fatal(err)
			}
			ids[from] = append(ids[from], ev.ID)
			res.sent++
		}
	}
	deadline := time.Now().Add(within)
	for _, p := range [][2]*testenv.Node{{a, b}, {b, a}} {
		from, to := p[0], p[1]
		// The last message arriving means all should have, since
		// delivery is in order.
		last := text(tag, from, to, n-1)
		if _, err := to.WaitFrom(marks[to], time.Until(deadline), testenv.MessageFrom(from.Name, last)); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, ev := range to.Events()[marks[to]:] {
			if ev.Type == "message" && ev.From == from.Name && strings.HasPrefix(ev.Text, tag+" ") {
				got = append(got, ev.Text)
				res.paths[ev.Path]++
			}
		}
		var want []string
		for i := 0; i < n; i++ {
			want = append(want, text(tag, from, to, i))
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%s received from %s:\n  %s\nwant exactly once, in order:\n  %s",
				to.Name, from.Name, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
		for _, id := range ids[from] {
			if _, err := from.WaitFrom(marks[from], time.Until(deadline), testenv.Delivered(id)); err != nil {
				t.Fatal(err)
			}
			res.delivered++
		}
	}
	return res
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
