package rendezvous_test

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"natchat/relay"
	"natchat/rendezvous"
	"natchat/wire"
)

// captures returns, for a talking to b, one sealed request of each kind an
// observer could capture and replay.
func captures(a, b *node) []struct {
	name string
	m    wire.Message
} {
	return []struct {
		name string
		m    wire.Message
	}{
		{"heartbeat", &wire.Heartbeat{}},
		{"peers request", &wire.PeersRequest{}},
		{"lookup", &wire.Lookup{TxID: 9, Name: b.name}},
		{"signal", &wire.Signal{Dst: b.key, Body: []byte("offer")}},
		{"who", &wire.Who{TxID: 10, Room: "#lobby"}},
	}
}

// TestReplaySameAddress: a captured sealed datagram replayed from the
// address it came from is refused by the replay window: no answer, no
// effect, counted.
func TestReplaySameAddress(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	h.mustRegister(a, b)
	for _, c := range captures(a, b) {
		t.Run(c.name, func(t *testing.T) {
			d := a.seal(c.m)
			if out := h.handle(d, a.addr); len(out) == 0 {
				t.Fatalf("the original was not answered")
			} else {
				for _, n := range []*node{a, b} {
					n.msgs(t, out)
				}
			}
			h.flushInto(a, b)
			before := h.metric(dropped(relay.DropOpen))
			for range 3 {
				if out := h.handle(d, a.addr); len(out) != 0 {
					t.Errorf("replay answered: %s", describe(out))
				}
			}
			if got := h.metric(dropped(relay.DropOpen)); got != before+3 {
				t.Errorf("unauthentic drops %v, want %v", got, before+3)
			}
			if out := h.flush(); len(out) != 0 {
				t.Errorf("replay caused presence: %s", describe(out))
			}
			if got := h.s.Online(); !slices.Equal(got, []string{"alice", "bob"}) {
				t.Fatalf("online %q", got)
			}
			h.heartbeat(a)
		})
	}

	// A Leave the observer kept from the rendezvous (it never arrived) is
	// refused once the node's counter is past the window.
	leave := a.seal(&wire.Leave{})
	for range 70 {
		h.heartbeat(a)
	}
	before := h.metric(dropped(relay.DropOpen))
	if out := h.handle(leave, a.addr); len(out) != 0 {
		t.Errorf("old leave answered: %s", describe(out))
	}
	if got := h.metric(dropped(relay.DropOpen)); got != before+1 {
		t.Errorf("unauthentic drops %v, want %v", got, before+1)
	}
	if got := h.s.Online(); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("online %q after an old leave", got)
	}

	// A Leave that did arrive, replayed after the node registered again:
	// its session is gone.
	leave = a.seal(&wire.Leave{})
	h.handle(leave, a.addr)
	h.flushInto(b)
	h.clock.Step(time.Second)
	h.register(a)
	h.flushInto(b)
	onlyError(t, h.handle(leave, a.addr), a.addr, wire.CodeNotRegistered, len(leave))
	if out := h.flush(); len(out) != 0 {
		t.Errorf("replayed leave caused presence: %s", describe(out))
	}
	if got := h.s.Online(); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("online %q after a replayed leave", got)
	}
	h.heartbeat(a)
}

// TestReplayOtherAddress: a captured sealed datagram replayed from another
// address after the original arrived has no effect: nothing is sent there,
// the session stays where it is.
func TestReplayOtherAddress(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.SourceRate = -1 })
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	h.mustRegister(a, b)
	attacker := netip.MustParseAddrPort("203.0.113.66:6666")
	all := append(captures(a, b), struct {
		name string
		m    wire.Message
	}{"leave", &wire.Leave{}})
	for _, c := range all {
		t.Run(c.name, func(t *testing.T) {
			d := a.seal(c.m)
			if c.name != "leave" {
				out := h.handle(d, a.addr)
				a.msgs(t, out)
				b.msgs(t, out)
				h.flushInto(a, b)
			}
			h.clock.Step(time.Second) // past any challenge rate limit
			if c.name == "leave" {
				// Captured, and delivered, but from elsewhere first: see
				// TestReplayRace. Here the original arrives first.
				out := h.handle(d, a.addr)
				if len(out) != 0 {
					t.Fatalf("leave answered: %s", describe(out))
				}
				h.flushInto(b)
				h.register(a)
				h.flushInto(b)
			}
			for range 3 {
				out := h.handle(d, attacker)
				if c.name == "leave" {
					// The session it names is gone.
					onlyError(t, out, attacker, wire.CodeNotRegistered, len(d))
				} else if len(out) != 0 {
					t.Errorf("replay from another address answered: %s", describe(out))
				}
			}
			if got := h.relayTo(b, a, "where?"); len(got) != 1 || got[0] != a.addr {
				t.Errorf("relay to alice went to %v, want %v", got, a.addr)
			}
			if ack := h.heartbeat(a); ack.Observed != a.addr {
				t.Errorf("observed %v, want %v", ack.Observed, a.addr)
			}
			if got := h.s.Online(); !slices.Equal(got, []string{"alice", "bob"}) {
				t.Fatalf("online %q", got)
			}
		})
	}
	if got := h.metric("natchat_rendezvous_roams_total"); got != 0 {
		t.Errorf("roams %v, want 0", got)
	}
}

// TestReplayRace: an on-path attacker delivers a captured datagram from
// its own address before the original arrives. It is authentic and fresh,
// so it is acted on, but answered at the session's address; the attacker's
// address gets at most a challenge no larger than the datagram, and the
// session does not move. The original, arriving second, is a replay.
func TestReplayRace(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.SourceRate = -1 })
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	h.mustRegister(a, b)
	attacker := netip.MustParseAddrPort("203.0.113.66:6666")
	for _, c := range captures(a, b) {
		t.Run(c.name, func(t *testing.T) {
			h.clock.Step(time.Second)
			d := a.seal(c.m)
			out := h.handle(d, attacker)
			if n := bytesTo(out, attacker); n > len(d) {
				t.Errorf("%d bytes to the attacker for a %d-byte datagram", n, len(d))
			}
			for _, m := range a.msgsAt(t, out, attacker) {
				if _, ok := m.(*wire.PathChallenge); !ok {
					t.Errorf("the attacker's address got %s", describeMsg(m))
				}
			}
			a.msgs(t, out)
			b.msgs(t, out)
			h.flushInto(a, b)
			if out := h.handle(d, a.addr); len(out) != 0 {
				t.Errorf("the original after the race was answered: %s", describe(out))
			}
			if ack := h.heartbeat(a); ack.Observed != a.addr {
				t.Errorf("observed %v, want %v", ack.Observed, a.addr)
			}
		})
	}
	if got := h.relayTo(b, a, "where?"); len(got) != 1 || got[0] != a.addr {
		t.Errorf("relay to alice went to %v, want %v", got, a.addr)
	}
}
