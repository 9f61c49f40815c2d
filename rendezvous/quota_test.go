package rendezvous_test

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"natchat/relay"
	"natchat/rendezvous"
	"natchat/wire"
)

// TestNewNameQuota: at most NewNames new names per /24 (IPv4) or /56
// (IPv6) per hour; names already bound do not count.
func TestNewNameQuota(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.SourceRate = -1 })
	var ns []*node
	for i := range 30 { // the default quota
		n := newNode(t, fmt.Sprintf("n%02d", i), fmt.Sprintf("203.0.113.%d:%d", i+1, 1000+i))
		h.register(n)
		ns = append(ns, n)
	}
	extra := newNode(t, "extra", "203.0.113.250:1")
	res := h.refused(extra, extra.name)
	if res.Code != wire.CodeQuota {
		t.Fatalf("31st new name from one /24: refused with %v (%q), want quota", res.Code, res.Message)
	}
	if got := h.metric(dropped(relay.DropQuota)); got != 1 {
		t.Errorf("quota drops %v, want 1", got)
	}
	// The name is still free: another network takes it.
	other := newNode(t, "extra", "203.0.114.1:1")
	h.register(other)
	// Names already bound register again from the full network: a restart
	// behind another port, and under another case.
	h.clock.Step(time.Second)
	ns[0].addr = netip.MustParseAddrPort("203.0.113.1:2000")
	h.register(ns[0])
	h.sealed(ns[1], &wire.Leave{}, ns[1].addr)
	ns[1].name = "N01"
	h.register(ns[1])
	if got := h.metric(dropped(relay.DropQuota)); got != 1 {
		t.Errorf("quota drops %v, want 1", got)
	}
	if got := len(h.s.Online()); got != 31 {
		t.Errorf("%d online, want 31", got)
	}
	// An hour later the network has a new quota.
	h.clock.Step(time.Hour)
	again := newNode(t, "again", "203.0.113.250:1")
	h.register(again)
}

func TestNewNameQuotaIPv6(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.NewNames = 2 })
	h.register(newNode(t, "a", "[2001:db8:0:1::1]:1"))
	h.register(newNode(t, "b", "[2001:db8:0:ff::2]:1")) // the same /56
	if res := h.refused(newNode(t, "c", "[2001:db8:0:7::3]:1"), "c"); res.Code != wire.CodeQuota {
		t.Fatalf("third name from one /56: %v, want quota", res.Code)
	}
	h.register(newNode(t, "c", "[2001:db8:0:100::1]:1")) // the next /56
}

func TestNewNameQuotaUnlimited(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.NewNames = -1; o.SourceRate = -1 })
	for i := range 40 {
		h.register(newNode(t, fmt.Sprintf("n%02d", i), fmt.Sprintf("203.0.113.%d:1", i+1)))
	}
}

// TestLookupRate: each node has LookupRate lookups a second, twice that at
// once; beyond, a sealed rate_limited error naming the lookup.
func TestLookupRate(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.LookupRate = 5 })
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	h.mustRegister(a, b)
	lookups := func(n int, tx uint32) (answered int, limited []*wire.Error) {
		for i := range n {
			out := h.sealed(a, &wire.Lookup{TxID: tx + uint32(i), Name: "bob"}, a.addr)
			switch m := onlyTo[wire.Message](t, out, a).(type) {
			case *wire.LookupReply:
				answered++
			case *wire.Error:
				limited = append(limited, m)
			default:
				t.Fatalf("lookup answered with %s", describeMsg(m))
			}
		}
		return answered, limited
	}
	answered, limited := lookups(15, 100)
	if answered != 10 || len(limited) != 5 {
		t.Fatalf("%d answered, %d limited of 15; want 10 and 5", answered, len(limited))
	}
	for i, e := range limited {
		if e.Code != wire.CodeRateLimited || e.Request != wire.TypeLookup || e.TxID != uint32(110+i) {
			t.Errorf("refusal %+v, want rate_limited for lookup %d", e, 110+i)
		}
	}
	if got := h.metric(dropped(relay.DropQuota)); got != 5 {
		t.Errorf("quota drops %v, want 5", got)
	}
	// Per node: bob's budget is his own.
	out := h.sealed(b, &wire.Lookup{TxID: 1, Name: "alice"}, b.addr)
	onlyTo[*wire.LookupReply](t, out, b)
	// A second later, five more.
	h.clock.Step(time.Second)
	if answered, _ := lookups(8, 200); answered != 5 {
		t.Errorf("after a second %d answered, want 5", answered)
	}
	// Heartbeats are not limited.
	h.heartbeat(a)
}

// TestWhoSharesLookupRate: Who pages count against the lookup budget.
func TestWhoSharesLookupRate(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.LookupRate = 5 })
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	h.mustRegister(a, b)
	for i := range 5 {
		onlyTo[*wire.WhoReply](t, h.sealed(a, &wire.Who{TxID: uint32(i), Room: "#lobby"}, a.addr), a)
		onlyTo[*wire.LookupReply](t, h.sealed(a, &wire.Lookup{TxID: uint32(i), Name: "bob"}, a.addr), a)
	}
	e := sealedError(t, h.sealed(a, &wire.Who{TxID: 77, Room: "#lobby"}, a.addr), a, wire.CodeRateLimited)
	if e.Request != wire.TypeWho || e.TxID != 77 {
		t.Errorf("refusal %+v, want one for who 77", e)
	}
	e = sealedError(t, h.sealed(a, &wire.Lookup{TxID: 78, Name: "bob"}, a.addr), a, wire.CodeRateLimited)
	if e.Request != wire.TypeLookup || e.TxID != 78 {
		t.Errorf("refusal %+v, want one for lookup 78", e)
	}
	h.clock.Step(time.Second)
	onlyTo[*wire.WhoReply](t, h.sealed(a, &wire.Who{TxID: 79, Room: "#lobby"}, a.addr), a)
}

// TestIntroRate: signals to peers a node does not watch yet (introductions)
// are limited to IntroRate a second, twice that at once, and dropped
// beyond; signals to peers it watches (looked up, or already signalled)
// are not.
func TestIntroRate(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.IntroRate = 2 })
	a := newNode(t, "alice", "198.51.100.1:1000")
	h.mustRegister(a)
	var ps []*node
	for i := range 8 {
		p := newNode(t, fmt.Sprintf("p%d", i), fmt.Sprintf("198.51.%d.1:1000", 10+i))
		h.register(p)
		ps = append(ps, p)
	}
	h.flushInto(append(ps, a)...)
	signal := func(to *node) bool {
		t.Helper()
		out := h.sealed(a, &wire.Signal{Dst: to.key, Body: []byte("hello")}, a.addr)
		if len(out) == 0 {
			return false
		}
		if sig := onlyTo[*wire.Signaled](t, out, to); sig.Src != a.key {
			t.Fatalf("signaled %+v", sig)
		}
		return true
	}
	// p7 is looked up first: watched.
	onlyTo[*wire.LookupReply](t, h.sealed(a, &wire.Lookup{TxID: 1, Name: "p7"}, a.addr), a)
	var got []bool
	for _, p := range ps[:6] {
		got = append(got, signal(p))
	}
	if want := []bool{true, true, true, true, false, false}; !slices.Equal(got, want) {
		t.Fatalf("introductions to p0..p5 forwarded %v, want %v", got, want)
	}
	if got := h.metric(dropped(relay.DropQuota)); got != 2 {
		t.Errorf("quota drops %v, want 2", got)
	}
	// Watched peers: fine with the budget spent.
	for range 5 {
		if !signal(ps[7]) {
			t.Fatal("a signal to a looked-up peer was dropped")
		}
		if !signal(ps[0]) {
			t.Fatal("a signal to an already signalled peer was dropped")
		}
	}
	// A second later, two more introductions.
	h.clock.Step(time.Second)
	got = nil
	for _, p := range ps[4:7] {
		got = append(got, signal(p))
	}
	if want := []bool{true, true, false}; !slices.Equal(got, want) {
		t.Errorf("introductions to p4..p6 after a second forwarded %v, want %v", got, want)
	}
}

// TestBindingTTL: ReleaseUnused releases the names not used (registered)
// for BindingTTL, never the name of a node online now.
func TestBindingTTL(t *testing.T) {
	const ttl = 180 * 24 * time.Hour // the default
	h := newHarness(t, nil)
	alice := newNode(t, "alice", "198.51.100.1:1000")
	bob := newNode(t, "bob", "198.51.100.2:2000")
	carol := newNode(t, "carol", "198.51.100.3:3000")
	h.mustRegister(alice, bob, carol)
	h.sealed(bob, &wire.Leave{}, bob.addr)
	h.sealed(carol, &wire.Leave{}, carol.addr)

	// carol comes back after 100 days, and leaves again.
	h.clock.Step(100 * 24 * time.Hour)
	h.register(carol)
	h.sealed(carol, &wire.Leave{}, carol.addr)

	// Just under the TTL after bob's registration: nothing goes.
	h.clock.Step(ttl - 100*24*time.Hour - time.Minute)
	if got, err := h.s.ReleaseUnused(h.clock.Now()); err != nil || len(got) != 0 {
		t.Fatalf("released %q (%v) before the TTL", got, err)
	}
	// Past it: bob's name goes; alice is online (registered as long ago),
	// carol registered since.
	h.clock.Step(2 * time.Minute)
	got, err := h.s.ReleaseUnused(h.clock.Now())
	if err != nil || !slices.Equal(got, []string{"bob"}) {
		t.Fatalf("released %q (%v), want bob", got, err)
	}
	if h.store.Len() != 2 {
		t.Errorf("%d bindings left, want 2", h.store.Len())
	}
	// bob's name is free for anyone; alice's is not.
	if r := onlyTo[*wire.LookupReply](t, h.sealed(alice, &wire.Lookup{TxID: 1, Name: "bob"}, alice.addr), alice); r.Status != wire.LookupUnknown {
		t.Errorf("lookup of a released name: %+v", r)
	}
	thief := newNode(t, "alice", "198.51.100.9:1")
	if res := h.refused(thief, "alice"); res.Code != wire.CodeNameTaken {
		t.Errorf("alice's name: %v, want name_taken", res.Code)
	}
	newBob := newNode(t, "bob", "198.51.100.8:1")
	h.register(newBob)

	// alice leaves; her name is kept for the TTL from when she was last
	// online (the previous release saw her online), carol's for the TTL
	// from her return.
	h.sealed(alice, &wire.Leave{}, alice.addr)
	h.clock.Step(ttl - 2*time.Hour)
	got, err = h.s.ReleaseUnused(h.clock.Now())
	if err != nil || !slices.Equal(got, []string{"carol"}) {
		t.Fatalf("released %q (%v), want carol", got, err)
	}
	h.clock.Step(3 * time.Hour)
	got, err = h.s.ReleaseUnused(h.clock.Now())
	if err != nil || !slices.Contains(got, "alice") || slices.Contains(got, "bob") {
		t.Fatalf("released %q (%v), want alice and not the new bob (online)", got, err)
	}
}

func TestBindingTTLNever(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.BindingTTL = -1 })
	a := newNode(t, "alice", "198.51.100.1:1000")
	h.register(a)
	h.sealed(a, &wire.Leave{}, a.addr)
	h.clock.Step(10 * 365 * 24 * time.Hour)
	if got, err := h.s.ReleaseUnused(h.clock.Now()); err != nil || len(got) != 0 {
		t.Fatalf("released %q (%v) with BindingTTL < 0", got, err)
	}
	if h.store.Len() != 1 {
		t.Errorf("%d bindings", h.store.Len())
	}
}

// TestRegistrationFairness: a network that registers names by the dozen
// queues behind a network that registers its first. Forty handshakes from
// one /24 are queued before a newcomer's from another; the registrations
// run (one at a time, in queue order) with the newcomer's after at most
// the flooding network's fresh allowance.
func TestRegistrationFairness(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.SourceRate = -1; o.NewNames = -1 })
	queue := func(n *node) {
		t.Helper()
		cr := only[*wire.CookieReply](t, h.raw(wire.Marshal(&wire.Hello{Nonce: 1}), n.addr), n.addr)
		n.rv.Server = h.key.Public
		hs, err := n.rv.Handshake(cr.Cookie, n.name)
		if err != nil {
			t.Fatal(err)
		}
		if out := h.raw(hs, n.addr); len(out) != 0 {
			t.Fatalf("queued handshake answered at once: %s", describe(out))
		}
	}
	for i := range 40 {
		queue(newNode(t, fmt.Sprintf("f%02d", i), fmt.Sprintf("203.0.113.%d:%d", i+1, 1000+i)))
	}
	newcomer := newNode(t, "newcomer", "198.51.100.9:4000")
	queue(newcomer)

	if n := h.s.DrainRegistrations(); n != 41 {
		t.Fatalf("ran %d registrations, want 41", n)
	}
	// The order of the registrations is the order of their first replies.
	var order []netip.AddrPort
	for _, p := range h.conn.take() {
		if !slices.Contains(order, p.to) {
			order = append(order, p.to)
		}
	}
	at := slices.Index(order, newcomer.addr)
	if at < 0 {
		t.Fatal("the newcomer was never answered")
	}
	if at > 2 {
		t.Errorf("the newcomer's registration ran after %d of the flooding network's: want at most 2 (its fresh allowance)", at)
	}
	if got := len(h.s.Online()); got != 41 {
		t.Errorf("%d online, want all 41 (the flooding network is served too, later)", got)
	}
}
