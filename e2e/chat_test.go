package e2e

import (
	"testing"
	"time"
)

// Path modes the chat tests run in. On loopback two nodes punch a direct
// path within milliseconds; with -no-direct they stay on the rendezvous
// relay. (Signalling is sealed since protocol v2: a proxy can no longer
// pick it out to drop it.)
var pathModes = []struct {
	name  string
	relay bool // -no-direct: the relay is the only path
}{
	{"relay", true},
	{"direct", false},
}

// startPairMode starts alice and bob on rv, with -no-direct when
// relayOnly.
func startPairMode(t *testing.T, rv *rendezvous, relayOnly bool, o nodeOptions) (alice, bob *node) {
	t.Helper()
	if relayOnly {
		o.noDirect = true
	}
	return startPair(t, rv.addr, o)
}

// waitPath waits until n reports path kind for peer.
func waitPath(t *testing.T, n *node, peer, kind string) {
	t.Helper()
	n.waitEvent(t, waitLong, "path "+kind+" to "+peer, func(e *event) bool {
		return e.Type == "path" && e.Peer == peer && e.Path == kind
	})
}

// checkWho runs /who on n and checks that it lists exactly peer, online,
// on path kind.
func checkWho(t *testing.T, n *node, peer, kind string) {
	t.Helper()
	mark := n.mark()
	n.command(t, "/who")
	who, _ := n.waitEventFrom(t, mark, waitLong, "peers event", isType("peers"))
	if len(who.Peers) != 1 {
		t.Fatalf("%s: /who lists %+v, want only %s", n.label, who.Peers, peer)
	}
	if p := who.Peers[0]; p.Name != peer || p.Path != kind || !p.Online {
		t.Errorf("%s: /who row %+v, want %s online on path %s", n.label, p, peer, kind)
	}
}

// TestChat: two nodes register, see each other join, and exchange 50
// numbered messages each way at once. Every message is delivered with the
// ID of its sent event, shown once, intact and in order; /who shows the
// peer online on the path the node reported.
func TestChat(t *testing.T) {
	t.Parallel()
	for _, mode := range pathModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			rv := startRendezvous(t, rvOptions{})
			alice, bob := startPairMode(t, rv, mode.relay, nodeOptions{})
			for _, n := range []*node{alice, bob} {
				r := n.waitRegistered(t)
				if r.Name != n.name {
					t.Errorf("%s: registered as %q", n.label, r.Name)
				}
				if ap := mustAddrPort(t, r.Public); !ap.Addr().IsLoopback() || ap.Port() == 0 {
					t.Errorf("%s: public address %s, want a loopback address", n.label, r.Public)
				}
			}
			chat(t, alice, bob, "hello", 50)

			kind := "direct"
			if mode.relay {
				kind = "relay"
			}
			for _, pair := range [][2]*node{{alice, bob}, {bob, alice}} {
				n, peer := pair[0], pair[1]
				waitPath(t, n, peer.name, kind)
				checkWho(t, n, peer.name, kind)
				for _, m := range n.events(0, isType("message")) {
					if m.Path != kind && m.Path != "relay" {
						t.Errorf("%s: message %q came on path %q, want relay or %s", n.label, m.Text, m.Path, kind)
					}
				}
			}
			if mode.relay {
				for _, n := range []*node{alice, bob} {
					if d := n.events(0, func(e *event) bool { return e.Type == "path" && e.Path != "relay" }); len(d) > 0 {
						t.Errorf("%s: %v, but it runs with -no-direct", n.label, d[0])
					}
				}
			}
		})
	}
}

// TestRendezvousRestart: the rendezvous is killed and started again on the
// same port and data directory. Messages sent while it is down are
// delivered (on the relay: once it is back); both nodes register again by
// themselves within a heartbeat, and chat on.
func TestRendezvousRestart(t *testing.T) {
	t.Parallel()
	for _, mode := range pathModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			rv := startRendezvous(t, rvOptions{})
			alice, bob := startPairMode(t, rv, mode.relay, nodeOptions{delivery: 45 * time.Second})
			chat(t, alice, bob, "before", 3)
			if !mode.relay {
				waitPath(t, alice, "bob", "direct")
				waitPath(t, bob, "alice", "direct")
			}

			rv.kill(t)
			marks := map[*node]int{alice: alice.mark(), bob: bob.mark()}
			down := []*batch{
				sendBatch(t, alice, bob, "down-ab", 5),
				sendBatch(t, bob, alice, "down-ba", 5),
			}

			rv2 := rv.restart(t)
			for _, n := range []*node{alice, bob} {
				// Up to one heartbeat until the node learns that the
				// rendezvous forgot it, then a Hello/Register round trip.
				const slack = 1500 * time.Millisecond
				r, _ := n.waitEventFrom(t, marks[n], waitLong, "registered event after the restart", isType("registered"))
				d := r.at.Sub(rv2.ready)
				if d > heartbeat+slack {
					t.Errorf("%s: registered again %v after the restart, want within %v",
						n.label, d.Round(time.Millisecond), heartbeat+slack)
				}
				t.Logf("%s registered again %v after the restart", n.name, d.Round(time.Millisecond))
			}
			for _, b := range down {
				b.checkDelivered(t, 45*time.Second)
			}
			chat(t, alice, bob, "after", 5)

			for _, pair := range [][2]*node{{alice, bob}, {bob, alice}} {
				if left := pair[0].events(0, isType("peer_left")); len(left) > 0 {
					t.Errorf("%s: %v during a rendezvous restart, want no peer_left for %s", pair[0].label, left[0], pair[1].name)
				}
			}
		})
	}
}

// TestNoDirect: with -no-direct on both sides the nodes never punch: every
// message comes over the relay, /who says relay, and no direct path event
// appears, though loopback would allow one in milliseconds.
func TestNoDirect(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{})
	alice, bob := startPair(t, rv.addr, nodeOptions{noDirect: true})
	chat(t, alice, bob, "nd", 5)
	checkWho(t, alice, "bob", "relay")
	checkWho(t, bob, "alice", "relay")
	for _, n := range []*node{alice, bob} {
		if ds := n.events(0, func(e *event) bool { return e.Type == "path" && e.Path == "direct" }); len(ds) != 0 {
			t.Errorf("%s: direct path events with -no-direct: %v", n.label, ds)
		}
		for _, m := range n.events(0, isType("message")) {
			if m.Path != "relay" {
				t.Errorf("%s: message came on path %q, want relay", n.label, m.Path)
			}
		}
	}
}

// TestPlainReply: plain text (no command) answers the first peer who
// wrote, before any /msg of one's own; with no one to answer it is
// refused with no_target.
func TestPlainReply(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{})
	alice, bob := startPair(t, rv.addr, nodeOptions{})
	mark := bob.mark()
	bob.command(t, "hello?")
	bob.waitEventFrom(t, mark, waitLong, "no_target error", func(e *event) bool {
		return e.Type == "error" && e.Code == "no_target"
	})
	alice.command(t, "/msg bob hi bob")
	bob.waitEvent(t, waitLong, "alice's message", func(e *event) bool { return e.Type == "message" && e.From == "alice" })
	bob.command(t, "hi alice, plain reply")
	alice.waitEvent(t, waitLong, "bob's plain reply", func(e *event) bool {
		return e.Type == "message" && e.From == "bob" && e.Text == "hi alice, plain reply"
	})
}
