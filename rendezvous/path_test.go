package rendezvous_test

import (
	"net/netip"
	"testing"
	"time"

	"natchat/relay"
	"natchat/wire"
)

// relayTo relays a datagram from 'from' to 'to' and returns where it went.
func (h *harness) relayTo(from, to *node, payload string) []netip.AddrPort {
	h.t.Helper()
	var dst []netip.AddrPort
	for _, p := range h.handle(from.rv.Relay(to.key, []byte(payload)), from.addr) {
		r, ok := parse(h.t, p.b).(*wire.Relayed)
		if !ok || r.Src != from.key || string(r.Payload) != payload {
			h.t.Fatalf("relay answered with %s", describe([]packet{p}))
		}
		dst = append(dst, p.to)
	}
	return dst
}

// TestPathValidation: a node's NAT rebinds. An authenticated message from
// the new address gets a path challenge there, and the answer goes to the
// old one; the session (relay destination, replies) moves only when the
// challenge is echoed from the new address.
func TestPathValidation(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	h.mustRegister(a, b)
	old := a.addr
	moved := netip.MustParseAddrPort("203.0.113.1:1234")
	third := netip.MustParseAddrPort("203.0.113.2:1234")

	req := a.seal(&wire.Heartbeat{})
	out := h.handle(req, moved)
	ch := onlyAt[*wire.PathChallenge](t, out, a, moved)
	if n := bytesTo(out, moved); n > len(req) {
		t.Errorf("%d bytes to the new address for a %d-byte request", n, len(req))
	}
	if ack := onlyAt[*wire.HeartbeatAck](t, out, a, old); ack.Observed != old {
		t.Errorf("ack observed %v, want the validated %v", ack.Observed, old)
	}
	if len(out) != 2 {
		t.Errorf("heartbeat from the new address: %s", describe(out))
	}

	// Until validated: relayed packets, snapshots and presence go to the
	// old address.
	if got := h.relayTo(b, a, "to the old one"); len(got) != 1 || got[0] != old {
		t.Errorf("relay to alice went to %v, want %v", got, old)
	}
	out = h.sealed(a, &wire.PeersRequest{}, moved)
	if n := bytesTo(out, moved); n > wire.SealedMinLen {
		t.Errorf("%d bytes to the new address for a peers request", n)
	}
	onlyAt[*wire.Peers](t, out, a, old)
	// Relay from the unvalidated address is refused.
	before := h.metric(dropped(relay.DropUnvalidated))
	out = h.handle(a.rv.Relay(b.key, []byte("from the new one")), moved)
	for _, p := range out {
		if p.to == b.addr {
			t.Errorf("relay from an unvalidated address forwarded")
		}
	}
	if got := h.metric(dropped(relay.DropUnvalidated)); got != before+1 {
		t.Errorf("unvalidated drops %v, want %v", got, before+1)
	}

	// A wrong answer from the new address, and the right one from a third
	// address, move nothing.
	wrong := ch.Data
	wrong[0] ^= 1
	out = h.sealed(a, &wire.PathResponse{Data: wrong}, moved)
	a.msgs(t, out) // perhaps a new challenge (rate limited), never more than the request
	out = h.sealed(a, &wire.PathResponse{Data: ch.Data}, third)
	if n := bytesTo(out, third); n > wire.SealedMinLen {
		t.Errorf("%d bytes to a third address", n)
	}
	if got := h.relayTo(b, a, "still old"); len(got) != 1 || got[0] != old {
		t.Errorf("after wrong answers relay to alice went to %v, want %v", got, old)
	}
	if got := h.metric("natchat_rendezvous_roams_total"); got != 0 {
		t.Errorf("roams %v, want 0", got)
	}
	if ack := onlyAt[*wire.HeartbeatAck](t, h.sealed(a, &wire.Heartbeat{}, old), a, old); ack.Observed != old {
		t.Errorf("observed %v", ack.Observed)
	}

	// The right answer from the new address: the session moves.
	if out := h.sealed(a, &wire.PathResponse{Data: ch.Data}, moved); len(out) != 0 {
		t.Errorf("path response answered: %s", describe(out))
	}
	a.addr = moved
	if got := h.metric("natchat_rendezvous_roams_total"); got != 1 {
		t.Errorf("roams %v, want 1", got)
	}
	if ack := h.heartbeat(a); ack.Observed != moved {
		t.Errorf("observed %v, want %v", ack.Observed, moved)
	}
	if got := h.relayTo(b, a, "to the new one"); len(got) != 1 || got[0] != moved {
		t.Errorf("relay to alice went to %v, want %v", got, moved)
	}
	if got := h.relayTo(a, b, "from the new one"); len(got) != 1 || got[0] != b.addr {
		t.Errorf("relay from alice's new address went to %v", got)
	}
	// Presence goes to the new address.
	h.sealed(b, &wire.Leave{}, b.addr)
	checkPresence(t, onlyPresence(t, h.flush(), a), 2, wire.PresenceLeft, wire.ReasonQuit, b)
	h.clock.Step(time.Second)
	h.register(b)
	h.flushInto(a)

	// After the move, the old address is refused for relay like any other.
	h.clock.Step(time.Second)
	before = h.metric(dropped(relay.DropUnvalidated))
	req = a.rv.Relay(b.key, []byte("from the old one"))
	out = h.handle(req, old)
	for _, m := range a.msgsAt(t, out, old) {
		if _, ok := m.(*wire.PathChallenge); !ok {
			t.Errorf("the old address got %s", describeMsg(m))
		}
	}
	if bytesTo(out, old) > len(req) || bytesTo(out, b.addr) != 0 || bytesTo(out, moved) != 0 {
		t.Errorf("relay from the old address: %s", describe(out))
	}
	if got := h.metric(dropped(relay.DropUnvalidated)); got != before+1 {
		t.Errorf("unvalidated drops %v, want %v", got, before+1)
	}
	// And a challenge answered late (after the move) does not move it back.
	out = h.sealed(a, &wire.Heartbeat{}, old)
	onlyAt[*wire.HeartbeatAck](t, out, a, moved)
	for _, m := range a.msgsAt(t, out, old) {
		if _, ok := m.(*wire.PathChallenge); !ok {
			t.Errorf("the old address got %s", describeMsg(m))
		}
	}
	if out := h.sealed(a, &wire.PathResponse{Data: ch.Data}, old); len(out) != 0 {
		t.Errorf("stale path response answered: %s", describe(out))
	}
	if ack := h.heartbeat(a); ack.Observed != moved {
		t.Errorf("a stale path response moved the session to %v", ack.Observed)
	}
}

// TestRebindingRecoversInOneHeartbeat: the node's next heartbeat from its
// new mapping, and its answer to the challenge, move the session.
func TestRebindingRecoversInOneHeartbeat(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	h.mustRegister(a, b)
	for i, to := range []string{"198.51.100.1:1001", "[2001:db8::1]:1234", "198.51.100.1:1000"} {
		h.roam(a, netip.MustParseAddrPort(to))
		if got := h.relayTo(b, a, "hi"); len(got) != 1 || got[0] != a.addr {
			t.Errorf("roam %d: relay went to %v, want %v", i, got, a.addr)
		}
		if ack := h.heartbeat(a); ack.Observed != a.addr {
			t.Errorf("roam %d: observed %v", i, ack.Observed)
		}
	}
	if got := h.metric("natchat_rendezvous_roams_total"); got != 3 {
		t.Errorf("roams %v, want 3", got)
	}
}

// TestRelayFromUnvalidatedAddress: relay datagrams with a registered
// session from any address but the session's validated one are dropped;
// the challenge they may cause is never larger than they are.
func TestRelayFromUnvalidatedAddress(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	h.mustRegister(a, b)
	spoofed := netip.MustParseAddrPort("203.0.113.50:4000")
	n := 0
	for _, size := range []int{0, 1, 10, 100, 1200} {
		h.clock.Step(time.Second)
		req := a.rv.Relay(b.key, make([]byte, size))
		out := h.handle(req, spoofed)
		for _, p := range out {
			if p.to != spoofed {
				t.Errorf("%d-byte payload: %s", size, describe(out))
			}
		}
		if got := bytesTo(out, spoofed); got > len(req) {
			t.Errorf("%d-byte relay from an unvalidated address: %d bytes back", len(req), got)
		}
		for _, m := range a.msgsAt(t, out, spoofed) {
			if _, ok := m.(*wire.PathChallenge); !ok {
				t.Errorf("got %s", describeMsg(m))
			}
		}
		n++
	}
	if got := h.metric(dropped(relay.DropUnvalidated)); got != float64(n) {
		t.Errorf("unvalidated drops %v, want %d", got, n)
	}
	if got := h.metric("natchat_rendezvous_relayed_packets_total"); got != 0 {
		t.Errorf("relayed %v", got)
	}
	// Nothing moved.
	if got := h.relayTo(b, a, "hi"); len(got) != 1 || got[0] != a.addr {
		t.Errorf("relay to alice went to %v", got)
	}
}

// TestSpoofedRelaysCannotBlockRoaming: an on-path attacker who saw
// alice's session ID in a Relay header sends Relays with it from its own
// address, before and right after alice's NAT rebinds: alice's sealed
// heartbeat from her new address is still challenged there, and her
// answer moves the session.
func TestSpoofedRelaysCannotBlockRoaming(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	h.mustRegister(a, b)
	attacker := netip.MustParseAddrPort("203.0.113.66:6666")
	spoof := func() { h.handle(a.rv.Relay(b.key, make([]byte, 100)), attacker) }
	moved := netip.MustParseAddrPort("198.51.100.1:1001")

	h.clock.Step(time.Second)
	spoof() // a challenge to the attacker, just now
	out := h.sealed(a, &wire.Heartbeat{}, moved)
	ch := onlyAt[*wire.PathChallenge](t, out, a, moved)
	h.clock.Step(300 * time.Millisecond)
	spoof() // must not replace alice's challenge
	if out := h.sealed(a, &wire.PathResponse{Data: ch.Data}, moved); len(out) != 0 {
		t.Fatalf("path response answered: %s", describe(out))
	}
	a.addr = moved
	if ack := h.heartbeat(a); ack.Observed != moved {
		t.Fatalf("after the answer alice is at %v, want %v", ack.Observed, moved)
	}
}
