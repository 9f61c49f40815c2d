package rendezvous_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"natchat/rendezvous"
	"natchat/wire"
)

// onlyPresence asserts that out holds exactly one Presence to n and returns it.
func onlyPresence(t *testing.T, out []packet, n *node) *wire.Presence {
	t.Helper()
	ms := msgsTo(t, out, n.addr)
	if len(ms) != 1 {
		t.Fatalf("%s got %d messages %s, want one Presence", n.name, len(ms), describe(out))
	}
	p, ok := ms[0].(*wire.Presence)
	if !ok {
		t.Fatalf("%s got %T, want Presence", n.name, ms[0])
	}
	return p
}

func checkPresence(t *testing.T, p *wire.Presence, seq uint32, kind wire.PresenceKind, reason wire.LeaveReason, about *node) {
	t.Helper()
	if p.Seq != seq || p.Kind != kind || p.Reason != reason || p.Key != about.key || p.Name != about.name {
		t.Errorf("presence %+v, want seq %d kind %d reason %v about %s", p, seq, kind, reason, about.name)
	}
}

func snapshotPeers(parts []*wire.Peers) []wire.Peer {
	var ps []wire.Peer
	for _, p := range parts {
		ps = append(ps, p.Peers...)
	}
	return ps
}

func samePeers(t *testing.T, got []wire.Peer, want ...*node) {
	t.Helper()
	g := make(map[wire.Key]string)
	for _, p := range got {
		if _, dup := g[p.Key]; dup {
			t.Errorf("peer %s listed twice", p.Name)
		}
		g[p.Key] = p.Name
	}
	if len(g) != len(want) {
		t.Errorf("snapshot has %d peers, want %d", len(g), len(want))
	}
	for _, n := range want {
		if name, ok := g[n.key]; !ok || name != n.name {
			t.Errorf("snapshot lacks %s (has %q)", n.name, name)
		}
	}
}

func TestPresence(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	c := newNode(t, "carol", "[2001:db8::3]:3000")

	_, parts, out := h.register(a)
	samePeers(t, snapshotPeers(parts))
	if len(out) != 2 {
		t.Errorf("alice's registration sent %s", describe(out))
	}

	_, parts, out = h.register(b)
	samePeers(t, snapshotPeers(parts), a)
	checkPresence(t, onlyPresence(t, out, a), 1, wire.PresenceJoin, wire.ReasonNone, b)

	reg, parts, out := h.register(c)
	samePeers(t, snapshotPeers(parts), a, b)
	if reg.PresenceSeq != 0 || parts[0].Seq != 0 {
		t.Errorf("carol: registered seq %d, snapshot seq %d, want 0", reg.PresenceSeq, parts[0].Seq)
	}
	checkPresence(t, onlyPresence(t, out, a), 2, wire.PresenceJoin, wire.ReasonNone, c)
	checkPresence(t, onlyPresence(t, out, b), 1, wire.PresenceJoin, wire.ReasonNone, c)
	if len(out) != 4 {
		t.Errorf("carol's registration sent %s", describe(out))
	}

	// The ack carries each recipient's own latest seq.
	for n, want := range map[*node]uint32{a: 2, b: 1, c: 0} {
		if ack := h.heartbeat(n, n.addr); ack.PresenceSeq != want {
			t.Errorf("%s: ack seq %d, want %d", n.name, ack.PresenceSeq, want)
		}
	}

	// carol quits.
	out = h.send(&wire.Leave{Session: c.session}, c.addr)
	checkPresence(t, onlyPresence(t, out, a), 3, wire.PresenceLeft, wire.ReasonQuit, c)
	checkPresence(t, onlyPresence(t, out, b), 2, wire.PresenceLeft, wire.ReasonQuit, c)
	if len(out) != 2 {
		t.Errorf("carol's leave sent %s", describe(out))
	}
	onlyError(t, h.send(&wire.Heartbeat{Session: c.session}, c.addr), c.addr, wire.CodeNotRegistered, wire.HeaderLen+8)

	// alice heartbeats, bob falls silent.
	h.clock.Step(testExpiry / 2)
	h.heartbeat(a, a.addr)
	now := h.clock.Step(testExpiry/2 + time.Second)
	h.conn.take()
	h.s.Sweep(now)
	out = h.conn.take()
	checkPresence(t, onlyPresence(t, out, a), 4, wire.PresenceLeft, wire.ReasonTimeout, b)
	if len(out) != 1 {
		t.Errorf("sweep sent %s", describe(out))
	}
	if got := h.s.Online(); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("online %q, want alice", got)
	}
	if got := h.metric("natchat_rendezvous_online_nodes"); got != 1 {
		t.Errorf("online gauge %v, want 1", got)
	}
	// Sweeping again at the same time changes nothing.
	h.s.Sweep(now)
	if out := h.conn.take(); len(out) != 0 {
		t.Errorf("second sweep sent %s", describe(out))
	}

	ack := h.heartbeat(a, a.addr)
	if ack.PresenceSeq != 4 {
		t.Errorf("alice ack seq %d, want 4", ack.PresenceSeq)
	}
	// A fresh snapshot says the same, at the same seq.
	out = h.send(&wire.PeersRequest{Session: a.session}, a.addr)
	p := only[*wire.Peers](t, out, a.addr)
	if p.Seq != 4 || p.Parts != 1 || len(p.Peers) != 0 {
		t.Errorf("snapshot %+v, want empty at seq 4", p)
	}

	// Exactly Expiry of silence is tolerated; a millisecond more is not.
	h.s.Sweep(h.clock.Step(testExpiry))
	if got := h.s.Online(); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("online %q at expiry", got)
	}
	h.s.Sweep(h.clock.Step(time.Millisecond))
	if got := h.s.Online(); len(got) != 0 {
		t.Fatalf("online %q past expiry", got)
	}
}

func TestPresenceSeqPerRecipient(t *testing.T) {
	h := newHarness(t, nil)
	nodes := make([]*node, 6)
	for i := range nodes {
		nodes[i] = newNode(t, fmt.Sprintf("n%d", i), fmt.Sprintf("198.51.100.%d:1000", i+1))
	}
	last := make(map[*node]uint32)
	for i, n := range nodes {
		_, _, out := h.register(n)
		for _, o := range nodes[:i] {
			p := onlyPresence(t, out, o)
			if p.Seq != last[o]+1 {
				t.Errorf("%s: seq %d after %d", o.name, p.Seq, last[o])
			}
			last[o] = p.Seq
		}
	}
	for i, n := range nodes {
		if want := uint32(len(nodes) - 1 - i); last[n] != want {
			t.Errorf("%s: last seq %d, want %d", n.name, last[n], want)
		}
	}
}

func TestNoDefaultRoom(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.DefaultRoom = "" })
	nodes := []*node{
		newNode(t, "alice", "198.51.100.1:1"),
		newNode(t, "bob", "198.51.100.2:1"),
		newNode(t, "carol", "198.51.100.3:1"),
	}
	for _, n := range nodes {
		_, parts, out := h.register(n)
		samePeers(t, snapshotPeers(parts))
		if len(out) != 2 {
			t.Errorf("%s's registration sent %s", n.name, describe(out))
		}
	}
	out := h.send(&wire.Leave{Session: nodes[2].session}, nodes[2].addr)
	if len(out) != 0 {
		t.Errorf("leave sent %s", describe(out))
	}
	h.clock.Step(testExpiry + time.Second)
	h.conn.take()
	h.s.Sweep(h.clock.Now())
	if out := h.conn.take(); len(out) != 0 {
		t.Errorf("sweep sent %s", describe(out))
	}
	if got := h.s.Online(); len(got) != 0 {
		t.Errorf("online %q", got)
	}
}

func TestSnapshotSplit(t *testing.T) {
	for _, tc := range []struct {
		desc string
		n    int
		name func(i int) string
	}{
		{"60 nodes, 32 ASCII characters", 60, func(i int) string { return fmt.Sprintf("%032d", i) }},
		{"40 nodes, 32 four-byte characters", 40, func(i int) string {
			return strings.Repeat("😀", 29) + string(rune('a'+i/26)) + string(rune('a'+i%26)) + "x"
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			h := newHarness(t, nil)
			nodes := make([]*node, tc.n)
			for i := range nodes {
				nodes[i] = newNode(t, tc.name(i), fmt.Sprintf("10.0.%d.%d:4000", i/200, i%200+1))
				if err := wire.ValidateName(nodes[i].name); err != nil {
					t.Fatal(err)
				}
				h.register(nodes[i])
			}
			late := newNode(t, "late", "10.1.0.1:1")
			_, parts, _ := h.register(late)
			checkParts(t, parts, nodes...)

			// The same through a PeersRequest.
			out := h.send(&wire.PeersRequest{Session: nodes[0].session}, nodes[0].addr)
			var req []*wire.Peers
			for _, p := range out {
				if len(p.b) > 1200 {
					t.Errorf("part of %d bytes", len(p.b))
				}
				req = append(req, only[*wire.Peers](t, []packet{p}, nodes[0].addr))
			}
			checkParts(t, req, append(slices.Clone(nodes[1:]), late)...)
		})
	}
}

// checkParts checks a split snapshot: several parts, numbered 0..n-1 once
// each, one seq, each datagram ≤ 1200 bytes, and the union is want.
func checkParts(t *testing.T, parts []*wire.Peers, want ...*node) {
	t.Helper()
	if len(parts) < 2 {
		t.Fatalf("snapshot of %d peers in %d part(s), want several", len(want), len(parts))
	}
	for i, p := range parts {
		if int(p.Part) != i || int(p.Parts) != len(parts) || p.Seq != parts[0].Seq {
			t.Errorf("part %d: %d of %d, seq %d", i, p.Part, p.Parts, p.Seq)
		}
		if n := len(wire.Marshal(p)); n > 1200 {
			t.Errorf("part %d is %d bytes", i, n)
		}
	}
	samePeers(t, snapshotPeers(parts), want...)
}
