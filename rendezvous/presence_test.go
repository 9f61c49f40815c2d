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

// onlyPresence asserts that out holds exactly one datagram to n, a
// Presence, and returns it.
func onlyPresence(t *testing.T, out []packet, n *node) *wire.Presence {
	t.Helper()
	return onlyAt[*wire.Presence](t, out, n, n.addr)
}

// checkPresence checks a Presence carrying one change.
func checkPresence(t *testing.T, p *wire.Presence, seq uint32, kind wire.PresenceKind, reason wire.LeaveReason, about *node) {
	t.Helper()
	if p.Seq != seq || len(p.Changes) != 1 {
		t.Fatalf("presence seq %d with %d changes, want seq %d with one", p.Seq, len(p.Changes), seq)
	}
	checkChange(t, p.Changes[0], kind, reason, about)
}

func checkChange(t *testing.T, c wire.Change, kind wire.PresenceKind, reason wire.LeaveReason, about *node) {
	t.Helper()
	if c.Kind != kind || c.Reason != reason || c.Key != about.key || c.Name != about.name {
		t.Errorf("change %+v, want kind %d reason %v about %s", c, kind, reason, about.name)
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

// snapshot asks for n's snapshot and returns its parts.
func (h *harness) snapshot(n *node) []*wire.Peers {
	h.t.Helper()
	var parts []*wire.Peers
	for _, m := range n.msgs(h.t, h.sealed(n, &wire.PeersRequest{}, n.addr)) {
		p, ok := m.(*wire.Peers)
		if !ok {
			h.t.Fatalf("%s asked for peers and got %s", n.name, describeMsg(m))
		}
		parts = append(parts, p)
	}
	return parts
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
	if out := h.flush(); len(out) != 0 {
		t.Errorf("alice's join went to %s", describe(out))
	}

	_, parts, out = h.register(b)
	samePeers(t, snapshotPeers(parts), a)
	if len(out) != 2 {
		t.Errorf("bob's registration sent %s before the flush", describe(out))
	}
	out = h.flush()
	checkPresence(t, onlyPresence(t, out, a), 1, wire.PresenceJoin, wire.ReasonNone, b)
	if len(out) != 1 {
		t.Errorf("bob's join went to %s", describe(out))
	}

	res, parts, _ := h.register(c)
	samePeers(t, snapshotPeers(parts), a, b)
	if res.PresenceSeq != 0 || parts[0].Seq != 0 {
		t.Errorf("carol: registered seq %d, snapshot seq %d, want 0", res.PresenceSeq, parts[0].Seq)
	}
	out = h.flush()
	checkPresence(t, onlyPresence(t, out, a), 2, wire.PresenceJoin, wire.ReasonNone, c)
	checkPresence(t, onlyPresence(t, out, b), 1, wire.PresenceJoin, wire.ReasonNone, c)
	if len(out) != 2 {
		t.Errorf("carol's join went to %s", describe(out))
	}

	// The ack carries each recipient's own latest seq.
	for n, want := range map[*node]uint32{a: 2, b: 1, c: 0} {
		if ack := h.heartbeat(n); ack.PresenceSeq != want {
			t.Errorf("%s: ack seq %d, want %d", n.name, ack.PresenceSeq, want)
		}
	}

	// carol quits.
	if out := h.sealed(c, &wire.Leave{}, c.addr); len(out) != 0 {
		t.Errorf("leave answered: %s", describe(out))
	}
	out = h.flush()
	checkPresence(t, onlyPresence(t, out, a), 3, wire.PresenceLeft, wire.ReasonQuit, c)
	checkPresence(t, onlyPresence(t, out, b), 2, wire.PresenceLeft, wire.ReasonQuit, c)
	if len(out) != 2 {
		t.Errorf("carol's leave sent %s", describe(out))
	}
	req := c.seal(&wire.Heartbeat{})
	onlyError(t, h.handle(req, c.addr), c.addr, wire.CodeNotRegistered, len(req))

	// alice heartbeats, bob falls silent.
	h.clock.Step(testExpiry / 2)
	h.heartbeat(a)
	h.clock.Step(testExpiry/2 + time.Second)
	out = h.sweep()
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
	if out := h.sweep(); len(out) != 0 {
		t.Errorf("second sweep sent %s", describe(out))
	}

	if ack := h.heartbeat(a); ack.PresenceSeq != 4 {
		t.Errorf("alice ack seq %d, want 4", ack.PresenceSeq)
	}
	// A fresh snapshot says the same, at the same seq.
	ps := h.snapshot(a)
	if len(ps) != 1 || ps[0].Seq != 4 || ps[0].Parts != 1 || len(ps[0].Peers) != 0 {
		t.Errorf("snapshot %+v, want one empty part at seq 4", ps)
	}

	// Exactly Expiry of silence is tolerated; a millisecond more is not.
	h.clock.Step(testExpiry)
	h.sweep()
	if got := h.s.Online(); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("online %q at expiry", got)
	}
	h.clock.Step(time.Millisecond)
	h.sweep()
	if got := h.s.Online(); len(got) != 0 {
		t.Fatalf("online %q past expiry", got)
	}
}

// TestPresenceCoalesced: the changes gathered for a member between two
// flushes (PresenceDelay) go out together, in order, one datagram per
// receiver, split only past MaxChanges.
func TestPresenceCoalesced(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:1000")
	h.mustRegister(a)
	var joined []*node
	for i := range 3 {
		n := newNode(t, fmt.Sprintf("n%d", i), fmt.Sprintf("198.51.%d.1:1000", 10+i))
		h.register(n)
		joined = append(joined, n)
	}
	// n0 quits before the flush: its join and its leave both go out.
	h.sealed(joined[0], &wire.Leave{}, joined[0].addr)
	out := h.flush()
	p := onlyPresence(t, out, a)
	if p.Seq != 1 || len(p.Changes) != 4 {
		t.Fatalf("alice got seq %d with %d changes, want seq 1 with 4", p.Seq, len(p.Changes))
	}
	checkChange(t, p.Changes[0], wire.PresenceJoin, wire.ReasonNone, joined[0])
	checkChange(t, p.Changes[1], wire.PresenceJoin, wire.ReasonNone, joined[1])
	checkChange(t, p.Changes[2], wire.PresenceJoin, wire.ReasonNone, joined[2])
	checkChange(t, p.Changes[3], wire.PresenceLeft, wire.ReasonQuit, joined[0])
	p = onlyPresence(t, out, joined[1])
	if len(p.Changes) != 2 || p.Seq != 1 {
		t.Fatalf("n1 got %+v, want n2's join and n0's leave", p)
	}
	checkChange(t, p.Changes[0], wire.PresenceJoin, wire.ReasonNone, joined[2])
	checkChange(t, p.Changes[1], wire.PresenceLeft, wire.ReasonQuit, joined[0])
	checkPresence(t, onlyPresence(t, out, joined[2]), 1, wire.PresenceLeft, wire.ReasonQuit, joined[0])
	if len(out) != 3 {
		t.Errorf("flush sent %s, want one datagram each to alice, n1 and n2", describe(out))
	}

	// More than MaxChanges: several datagrams, consecutive seqs, all of
	// them in order.
	var many []*node
	for i := range wire.MaxChanges + 3 {
		n := newNode(t, fmt.Sprintf("m%02d", i), fmt.Sprintf("198.52.%d.1:1000", i))
		h.register(n)
		many = append(many, n)
	}
	ms := a.msgs(t, h.flush())
	if len(ms) != 2 {
		t.Fatalf("%d joins reached alice in %d datagrams, want 2", len(many), len(ms))
	}
	var changes []wire.Change
	for i, m := range ms {
		p := m.(*wire.Presence)
		if p.Seq != uint32(2+i) {
			t.Errorf("datagram %d: seq %d, want %d", i, p.Seq, 2+i)
		}
		if n := len(wire.Marshal(p)); n > 1200 {
			t.Errorf("presence of %d bytes", n)
		}
		changes = append(changes, p.Changes...)
	}
	if len(changes) != len(many) {
		t.Fatalf("%d changes, want %d", len(changes), len(many))
	}
	for i, c := range changes {
		checkChange(t, c, wire.PresenceJoin, wire.ReasonNone, many[i])
	}
	if ack := h.heartbeat(a); ack.PresenceSeq != 3 {
		t.Errorf("alice's ack seq %d, want 3", ack.PresenceSeq)
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
		h.register(n)
		out := h.flush()
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
		if out := h.flush(); len(out) != 0 {
			t.Errorf("%s's join sent %s", n.name, describe(out))
		}
	}
	h.sealed(nodes[2], &wire.Leave{}, nodes[2].addr)
	if out := h.flush(); len(out) != 0 {
		t.Errorf("leave sent %s", describe(out))
	}
	h.clock.Step(testExpiry + time.Second)
	if out := h.sweep(); len(out) != 0 {
		t.Errorf("sweep sent %s", describe(out))
	}
	if got := h.s.Online(); len(got) != 0 {
		t.Errorf("online %q", got)
	}
	// Who has no room to page.
	h.clock.Step(time.Second)
	a := nodes[0]
	h.register(a)
	sealedError(t, h.sealed(a, &wire.Who{TxID: 1, Room: "#lobby"}, a.addr), a, wire.CodeNotMember)
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
				nodes[i] = newNode(t, tc.name(i), fmt.Sprintf("10.%d.0.1:4000", i+1))
				if err := wire.ValidateName(nodes[i].name); err != nil {
					t.Fatal(err)
				}
				h.register(nodes[i])
			}
			h.flushInto(nodes...)
			late := newNode(t, "late", "10.200.0.1:1")
			_, parts, _ := h.register(late)
			checkParts(t, parts, nodes...)

			// The same through a PeersRequest.
			checkParts(t, h.snapshot(nodes[0]), append(slices.Clone(nodes[1:]), late)...)
		})
	}
}

// checkParts checks a split snapshot: several parts, numbered 0..n-1 once
// each, one seq, each ≤ 1200 bytes sealed, and the union is want.
func checkParts(t *testing.T, parts []*wire.Peers, want ...*node) {
	t.Helper()
	if len(parts) < 2 {
		t.Fatalf("snapshot of %d peers in %d part(s), want several", len(want), len(parts))
	}
	for i, p := range parts {
		if int(p.Part) != i || int(p.Parts) != len(parts) || p.Seq != parts[0].Seq {
			t.Errorf("part %d: %d of %d, seq %d", i, p.Part, p.Parts, p.Seq)
		}
		if n := wire.SealedHeaderLen + len(wire.AppendInner(nil, p)) + 16; n > 1200 {
			t.Errorf("part %d is %d bytes sealed", i, n)
		}
	}
	samePeers(t, snapshotPeers(parts), want...)
}

// TestBigRoom: in a room of more than BigRoom members, joins and leaves
// are not broadcast; members see who they talk with (looked up or
// signalled); crossing the threshold either way makes every member's
// presence seq skip one, which its next HeartbeatAck shows, and a fresh
// snapshot reflects the new view.
func TestBigRoom(t *testing.T) {
	const big = 5
	h := newHarness(t, func(o *rendezvous.Options) { o.BigRoom = big })
	var ns []*node
	for i := range big {
		ns = append(ns, newNode(t, fmt.Sprintf("n%d", i), fmt.Sprintf("198.51.%d.1:1000", i)))
	}
	h.mustRegister(ns...)
	seqs := make(map[*node]uint32)
	for _, n := range ns {
		seqs[n] = h.heartbeat(n).PresenceSeq
	}
	samePeers(t, snapshotPeers(h.snapshot(ns[0])), ns[1:]...)

	// The sixth member makes the room big: nobody hears of the join, and
	// every member's seq skips one.
	sixth := newNode(t, "sixth", "198.51.50.1:1000")
	_, parts, _ := h.register(sixth)
	samePeers(t, snapshotPeers(parts)) // sees nobody: nobody it talks with
	if out := h.flush(); len(out) != 0 {
		t.Errorf("a join into a big room went out: %s", describe(out))
	}
	for _, n := range ns {
		if ack := h.heartbeat(n); ack.PresenceSeq != seqs[n]+1 {
			t.Errorf("%s: ack seq %d after %d, want a skip to %d", n.name, ack.PresenceSeq, seqs[n], seqs[n]+1)
		} else {
			seqs[n] = ack.PresenceSeq
		}
	}
	// The resynchronised view: nobody.
	ps := h.snapshot(ns[0])
	samePeers(t, snapshotPeers(ps))
	if ps[0].Seq != seqs[ns[0]] {
		t.Errorf("snapshot seq %d, want %d", ps[0].Seq, seqs[ns[0]])
	}

	// Another join: still nothing to anyone.
	seventh := newNode(t, "seventh", "198.51.51.1:1000")
	h.register(seventh)
	if out := h.flush(); len(out) != 0 {
		t.Errorf("a join into a big room went out: %s", describe(out))
	}

	// n0 looks seventh up: it sees seventh from now on, joins and leaves.
	w := ns[0]
	r := onlyTo[*wire.LookupReply](t, h.sealed(w, &wire.Lookup{TxID: 1, Name: "seventh"}, w.addr), w)
	if r.Status != wire.LookupOnline {
		t.Fatalf("lookup %+v", r)
	}
	out := h.flush()
	p := onlyPresence(t, out, w)
	checkPresence(t, p, seqs[w]+1, wire.PresenceJoin, wire.ReasonNone, seventh)
	seqs[w] = p.Seq
	if len(out) != 1 {
		t.Errorf("the lookup's presence went to %s", describe(out))
	}
	samePeers(t, snapshotPeers(h.snapshot(w)), seventh)

	// n1 signals sixth: it watches sixth too.
	s := ns[1]
	out = h.sealed(s, &wire.Signal{Dst: sixth.key, Body: []byte{1}}, s.addr)
	if sig := onlyTo[*wire.Signaled](t, out, sixth); sig.Src != s.key {
		t.Errorf("signaled %+v", sig)
	}
	out = h.flush()
	checkPresence(t, onlyPresence(t, out, s), seqs[s]+1, wire.PresenceJoin, wire.ReasonNone, sixth)
	seqs[s]++
	if len(out) != 1 {
		t.Errorf("the signal's presence went to %s (the receiver does not watch the sender)", describe(out))
	}

	// seventh leaves: its watcher hears it, nobody else. The room is
	// still big (6).
	h.sealed(seventh, &wire.Leave{}, seventh.addr)
	out = h.flush()
	checkPresence(t, onlyPresence(t, out, w), seqs[w]+1, wire.PresenceLeft, wire.ReasonQuit, seventh)
	seqs[w]++
	if len(out) != 1 {
		t.Errorf("a leave from a big room went to %s", describe(out))
	}
	// It comes back: the watcher hears that too (it looked it up).
	h.clock.Step(time.Second)
	h.register(seventh)
	out = h.flush()
	checkPresence(t, onlyPresence(t, out, w), seqs[w]+1, wire.PresenceJoin, wire.ReasonNone, seventh)
	seqs[w]++
	if len(out) != 1 {
		t.Errorf("a rejoin into a big room went to %s", describe(out))
	}

	// seventh and sixth leave: the room is small again (5). Every member
	// resynchronises, and sees the room again.
	h.sealed(seventh, &wire.Leave{}, seventh.addr)
	h.flushInto(w)
	seqs[w]++
	h.sealed(sixth, &wire.Leave{}, sixth.addr)
	out = h.flush()
	// n1 hears of sixth's leave (it watches sixth) after the skip.
	p = onlyPresence(t, out, s)
	checkPresence(t, p, seqs[s]+2, wire.PresenceLeft, wire.ReasonQuit, sixth)
	seqs[s] = p.Seq - 1
	if len(out) != 1 {
		t.Errorf("a leave from a big room went to %s", describe(out))
	}
	for _, n := range ns {
		if ack := h.heartbeat(n); ack.PresenceSeq != seqs[n]+1 {
			t.Errorf("%s: ack seq %d after %d, want a skip to %d", n.name, ack.PresenceSeq, seqs[n], seqs[n]+1)
		} else {
			seqs[n] = ack.PresenceSeq
		}
	}
	samePeers(t, snapshotPeers(h.snapshot(ns[2])), ns[0], ns[1], ns[3], ns[4])
	// And leaves and joins are broadcast again.
	h.sealed(ns[4], &wire.Leave{}, ns[4].addr)
	out = h.flush()
	for _, n := range ns[:4] {
		checkPresence(t, onlyPresence(t, out, n), seqs[n]+1, wire.PresenceLeft, wire.ReasonQuit, ns[4])
		seqs[n]++
	}
	eighth := newNode(t, "eighth", "198.51.52.1:1000")
	h.register(eighth)
	out = h.flush()
	for _, n := range ns[:4] {
		checkPresence(t, onlyPresence(t, out, n), seqs[n]+1, wire.PresenceJoin, wire.ReasonNone, eighth)
	}
	if len(out) != 4 {
		t.Errorf("a join into a small room went to %s", describe(out))
	}
}

// TestBigRoomJoinCost: a join into a big room sends nothing however big
// the room, while a join into a small one reaches every member.
func TestBigRoomJoinCost(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.BigRoom = 10 })
	for i := range 40 {
		n := newNode(t, fmt.Sprintf("n%02d", i), fmt.Sprintf("10.%d.0.1:1000", i))
		h.register(n)
		out := h.flush()
		switch {
		case i < 10:
			// The room has i+1 ≤ 10 members: the other i hear the join.
			if len(out) != i {
				t.Errorf("join %d into a small room sent %d datagrams, want %d", i, len(out), i)
			}
		default:
			if len(out) != 0 {
				t.Errorf("join %d into a big room sent %s", i, describe(out))
			}
		}
	}
}

// TestDefaultRoomBigAndSmallAgain: the default room grown far past
// BigRoom (it then keeps no index of its members online) and shrunk back
// by leaves is small again: a leave reaches every member left, and a join
// every member.
func TestDefaultRoomBigAndSmallAgain(t *testing.T) {
	const big = 3
	h := newHarness(t, func(o *rendezvous.Options) { o.BigRoom = big })
	var ns []*node
	for i := range 4 * big {
		n := newNode(t, fmt.Sprintf("n%02d", i), fmt.Sprintf("10.%d.0.1:1000", i))
		h.register(n)
		ns = append(ns, n)
	}
	h.flush()
	for len(ns) > big+1 {
		h.sealed(ns[0], &wire.Leave{}, ns[0].addr)
		ns = ns[1:]
		if out := h.flush(); len(out) != 0 {
			t.Errorf("a leave from a big room sent %s", describe(out))
		}
	}
	// big+1 left: one more leave makes it small; the next is broadcast.
	h.sealed(ns[0], &wire.Leave{}, ns[0].addr)
	ns = ns[1:]
	h.flush()
	gone := ns[0]
	h.sealed(gone, &wire.Leave{}, gone.addr)
	ns = ns[1:]
	out := h.flush()
	for _, n := range ns {
		if p := onlyPresence(t, out, n); len(p.Changes) != 1 {
			t.Errorf("%s: %d changes, want the leave", n.name, len(p.Changes))
		} else {
			checkChange(t, p.Changes[0], wire.PresenceLeft, wire.ReasonQuit, gone)
		}
	}
	if len(out) != len(ns) {
		t.Errorf("the leave went to %s, want %d members", describe(out), len(ns))
	}
	n := newNode(t, "late", "10.99.0.1:1000")
	_, parts, _ := h.register(n)
	samePeers(t, snapshotPeers(parts), ns...)
	if out := h.flush(); len(out) != len(ns) {
		t.Errorf("a join into the small room again sent %s, want %d", describe(out), len(ns))
	}
}
