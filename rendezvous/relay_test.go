package rendezvous_test

import (
	"bytes"
	"crypto/rand"
	"net/netip"
	"slices"
	"testing"
	"time"

	"natchat/relay"
	"natchat/rendezvous"
	"natchat/wire"
)

func TestSealedUnknownSession(t *testing.T) {
	h := newHarness(t, nil)
	src := netip.MustParseAddrPort("198.51.100.1:1")
	req := wire.Marshal(&wire.Sealed{Session: wire.SessionID{1, 2, 3}, Counter: 1, Box: make([]byte, 45)})
	e := onlyError(t, h.handle(req, src), src, wire.CodeNotRegistered, len(req))
	if e.Request != wire.TypeSealed {
		t.Errorf("error for request %v, want sealed", e.Request)
	}
	if got := h.metric(dropped(relay.DropNotRegistered)); got != 1 {
		t.Errorf("not_registered drops %v, want 1", got)
	}
}

// TestSealedForged: a datagram with a registered session that does not
// authenticate (forged, tampered, or sealed with another session's keys)
// is dropped without an answer and changes nothing.
func TestSealedForged(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	h.mustRegister(a, b)
	good := a.seal(&wire.Leave{})
	tampered := slices.Clone(good)
	tampered[len(tampered)-1] ^= 1
	header := slices.Clone(good)
	header[wire.SealedHeaderLen-1] ^= 1 // the counter: associated data
	// bob's keys under alice's session.
	other := b.rv.Keys.Seal(nil, a.session, wire.AppendInner(make([]byte, 0, 64), &wire.Leave{}))
	forged := wire.Marshal(&wire.Sealed{Session: a.session, Counter: 7, Box: make([]byte, 64)})
	for name, d := range map[string][]byte{"tampered box": tampered, "tampered counter": header, "other keys": other, "forged": forged} {
		for _, src := range []netip.AddrPort{a.addr, stranger} {
			if out := h.handle(d, src); len(out) != 0 {
				t.Errorf("%s from %v answered: %s", name, src, describe(out))
			}
		}
	}
	if got := h.metric(dropped(relay.DropOpen)); got != 8 {
		t.Errorf("unauthentic drops %v, want 8", got)
	}
	if out := h.flush(); len(out) != 0 {
		t.Errorf("forgeries caused presence: %s", describe(out))
	}
	if got := h.s.Online(); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("online %q", got)
	}
	h.heartbeat(a)
}

func TestLookup(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "Alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	h.mustRegister(a, b)
	stranger := newNode(t, "x", "198.51.100.3:1")

	lookup := func(m *wire.Lookup) *wire.LookupReply {
		t.Helper()
		r := onlyTo[*wire.LookupReply](t, h.sealed(b, m, b.addr), b)
		if r.TxID != m.TxID {
			t.Fatalf("txid %d, want %d", r.TxID, m.TxID)
		}
		return r
	}
	check := func(r *wire.LookupReply, status wire.LookupStatus, key wire.Key, name string) {
		t.Helper()
		if r.Status != status || r.Key != key || r.Name != name {
			t.Errorf("lookup reply %+v, want status %d key %s name %q", r, status, key.Short(), name)
		}
	}
	for i, name := range []string{"Alice", "alice", "ALICE", "aLiCe"} {
		check(lookup(&wire.Lookup{TxID: uint32(i + 1), Name: name}), wire.LookupOnline, a.key, "Alice")
	}
	check(lookup(&wire.Lookup{TxID: 10, Key: a.key}), wire.LookupOnline, a.key, "Alice")
	check(lookup(&wire.Lookup{TxID: 11, Key: b.key}), wire.LookupOnline, b.key, "bob")
	check(lookup(&wire.Lookup{TxID: 12, Name: "nobody"}), wire.LookupUnknown, wire.Key{}, "nobody")
	check(lookup(&wire.Lookup{TxID: 13, Key: stranger.key}), wire.LookupUnknown, stranger.key, "")
	check(lookup(&wire.Lookup{TxID: 14}), wire.LookupUnknown, wire.Key{}, "")

	h.sealed(a, &wire.Leave{}, a.addr)
	check(lookup(&wire.Lookup{TxID: 20, Name: "alice"}), wire.LookupOffline, a.key, "Alice")
	check(lookup(&wire.Lookup{TxID: 21, Key: a.key}), wire.LookupOffline, a.key, "Alice")
}

func TestRelay(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "[2001:db8::2]:2000")
	h.mustRegister(a, b)

	var total int
	for _, n := range []int{0, 1, 1000, 1400} {
		payload := make([]byte, n)
		rand.Read(payload)
		out := h.handle(a.rv.Relay(b.key, payload), a.addr)
		rel := only[*wire.Relayed](t, out, b.addr)
		if rel.Src != a.key || !bytes.Equal(rel.Payload, payload) {
			t.Fatalf("%d-byte payload: relayed src %s, %d bytes", n, rel.Src.Short(), len(rel.Payload))
		}
		if want := wire.Marshal(&wire.Relayed{Src: a.key, Payload: payload}); !bytes.Equal(out[0].b, want) {
			t.Fatalf("%d-byte payload: datagram differs from the encoding of Relayed", n)
		}
		total += n
	}
	// The other way.
	out := h.handle(b.rv.Relay(a.key, []byte("pong")), b.addr)
	if rel := only[*wire.Relayed](t, out, a.addr); rel.Src != b.key || string(rel.Payload) != "pong" {
		t.Errorf("relayed %+v", rel)
	}
	total += 4
	text := h.scrape()
	if got := metric(t, text, "natchat_rendezvous_relayed_packets_total"); got != 5 {
		t.Errorf("relayed packets %v, want 5", got)
	}
	if got := metric(t, text, "natchat_rendezvous_relayed_bytes_total"); got != float64(total) {
		t.Errorf("relayed bytes %v, want %d", got, total)
	}

	// To a key that is not online: dropped, counted, nothing sent.
	stranger := newNode(t, "x", "198.51.100.9:9")
	if out := h.handle(a.rv.Relay(stranger.key, []byte("?")), a.addr); len(out) != 0 {
		t.Errorf("relay to an unknown key sent %s", describe(out))
	}
	oldB := b.session
	h.sealed(b, &wire.Leave{}, b.addr)
	h.flushInto(a)
	if out := h.handle(a.rv.Relay(b.key, []byte("?")), a.addr); len(out) != 0 {
		t.Errorf("relay to an offline node sent %s", describe(out))
	}
	if got := h.metric(dropped(relay.DropOffline)); got != 2 {
		t.Errorf("peer_offline drops %v, want 2", got)
	}
	// From a session that is not registered (bob's old one): refused.
	h.clock.Step(time.Second)
	h.register(b)
	req := wire.Marshal(&wire.Relay{Session: oldB, Dst: a.key, Payload: []byte("spoof")})
	onlyError(t, h.handle(req, b.addr), b.addr, wire.CodeNotRegistered, len(req))
	if got := h.metric("natchat_rendezvous_relayed_packets_total"); got != 5 {
		t.Errorf("relayed packets %v, want 5", got)
	}
}

func TestRelayRateLimit(t *testing.T) {
	t.Run("packets", func(t *testing.T) {
		// 20 packets/s with 250 ms of burst: 5 at once.
		h := newHarness(t, func(o *rendezvous.Options) {
			o.Relay = relay.Limits{PacketsPerSec: 20, BytesPerSec: -1, Burst: 250 * time.Millisecond, SmallPacketsPerSec: -1}
		})
		a := newNode(t, "alice", "198.51.100.1:1000")
		b := newNode(t, "bob", "198.51.100.2:2000")
		h.mustRegister(a, b)
		burst := func(from, to *node) int {
			n := 0
			for range 20 {
				n += len(h.handle(from.rv.Relay(to.key, []byte("x")), from.addr))
			}
			return n
		}
		if n := burst(a, b); n != 5 {
			t.Errorf("alice relayed %d of 20, want 5", n)
		}
		// Per node: bob's budget is his own.
		if n := burst(b, a); n != 5 {
			t.Errorf("bob relayed %d of 20, want 5", n)
		}
		if got := h.metric(dropped(relay.DropRateLimited)); got != 30 {
			t.Errorf("rate_limited drops %v, want 30", got)
		}
		// 100 ms later two more tokens.
		h.clock.Step(100 * time.Millisecond)
		if n := burst(a, b); n != 2 {
			t.Errorf("after 100 ms alice relayed %d, want 2", n)
		}
		// Signals count against the same budget.
		h.clock.Step(time.Second)
		n := 0
		for range 20 {
			n += len(h.sealed(a, &wire.Signal{Dst: b.key, Body: []byte{1}}, a.addr))
		}
		if n != 5 {
			t.Errorf("alice signaled %d of 20, want 5", n)
		}
		// alice is still registered and heartbeats are not limited.
		for range 20 {
			h.heartbeat(a)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		h := newHarness(t, func(o *rendezvous.Options) {
			o.Relay = relay.Limits{PacketsPerSec: -1, BytesPerSec: 3000, Burst: time.Second, SmallPacketsPerSec: -1}
		})
		a := newNode(t, "alice", "198.51.100.1:1000")
		b := newNode(t, "bob", "198.51.100.2:2000")
		h.mustRegister(a, b)
		n := 0
		for range 10 {
			n += len(h.handle(a.rv.Relay(b.key, make([]byte, 1000)), a.addr))
		}
		if n != 3 {
			t.Errorf("relayed %d 1000-byte packets with 3000 bytes of burst, want 3", n)
		}
		if got := h.metric("natchat_rendezvous_relayed_bytes_total"); got != 3000 {
			t.Errorf("relayed bytes %v, want 3000", got)
		}
	})
}

func TestSignal(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "Alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	h.mustRegister(a, b)
	body := wire.AppendPeerSignal(nil, &wire.PeerSignal{
		Kind: wire.SignalOffer, Seq: 3, Generation: 1, Ufrag: "uf", Pwd: "pw",
		Candidates: []string{"candidate:1 1 udp 2130706431 198.51.100.1 1000 typ host"},
	})
	out := h.sealed(a, &wire.Signal{Dst: b.key, Body: body}, a.addr)
	sig := onlyTo[*wire.Signaled](t, out, b)
	if sig.Src != a.key || sig.Name != "Alice" || !bytes.Equal(sig.Body, body) {
		t.Errorf("signaled %+v", sig)
	}
	if _, err := wire.ParsePeerSignal(sig.Body); err != nil {
		t.Error(err)
	}
	// a node registered as "ALICE" is announced with the canonical spelling.
	h.sealed(a, &wire.Leave{}, a.addr)
	h.flushInto(b)
	a.name = "ALICE"
	h.clock.Step(time.Second) // a fresh cookie, not the left one
	h.register(a)
	h.flushInto(b)
	out = h.sealed(a, &wire.Signal{Dst: b.key}, a.addr)
	if sig := onlyTo[*wire.Signaled](t, out, b); sig.Name != "Alice" || len(sig.Body) != 0 {
		t.Errorf("signaled %+v", sig)
	}
	// To an offline key: dropped.
	if out := h.sealed(a, &wire.Signal{Dst: wire.Key{1}, Body: body}, a.addr); len(out) != 0 {
		t.Errorf("signal to an unknown key sent %s", describe(out))
	}
	text := h.scrape()
	if got := metric(t, text, "natchat_rendezvous_signals_total"); got != 2 {
		t.Errorf("signals %v, want 2", got)
	}
	if got := metric(t, text, "natchat_rendezvous_relayed_packets_total"); got != 0 {
		t.Errorf("relayed packets %v, want 0", got)
	}
}

func TestMetrics(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	h.mustRegister(a, b)
	h.handle(stunBinding(t), a.addr)
	h.handle(a.rv.Relay(b.key, make([]byte, 123)), a.addr)
	h.roam(a, netip.MustParseAddrPort("198.51.100.1:1001"))
	h.sealed(b, &wire.Leave{}, b.addr)
	text := h.scrape()
	for series, want := range map[string]float64{
		"natchat_rendezvous_registrations_total":   2,
		"natchat_rendezvous_online_nodes":          1,
		"natchat_rendezvous_stun_responses_total":  1,
		"natchat_rendezvous_relayed_packets_total": 1,
		"natchat_rendezvous_relayed_bytes_total":   123,
		"natchat_rendezvous_roams_total":           1,
		dropped(relay.DropMalformed):               0,
		dropped(relay.DropNotSTUN):                 0,
		dropped(relay.DropQuota):                   0,
		dropped(relay.DropUnvalidated):             0,
	} {
		if got := metric(t, text, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if got := h.s.Online(); !slices.Equal(got, []string{"alice"}) {
		t.Errorf("online %q", got)
	}
}
