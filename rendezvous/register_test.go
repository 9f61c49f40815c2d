package rendezvous_test

import (
	"bytes"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"natchat/ctrl"
	"natchat/relay"
	"natchat/rendezvous"
	"natchat/wire"
)

func TestRegisterHandshake(t *testing.T) {
	for _, addr := range []string{"198.51.100.1:40000", "[2001:db8::1]:40000"} {
		t.Run(addr, func(t *testing.T) {
			h := newHarness(t, nil)
			a := newNode(t, "alice", addr)

			hello := wire.Marshal(&wire.Hello{Nonce: 0xfeedface})
			out := h.handle(hello, a.addr)
			cr := only[*wire.CookieReply](t, out, a.addr)
			if cr.Nonce != 0xfeedface {
				t.Fatalf("nonce %x, want feedface", cr.Nonce)
			}
			if cr.ServerKey != h.key.Public {
				t.Fatalf("server key %x, want %x", cr.ServerKey, h.key.Public)
			}
			if len(out[0].b) > len(hello) {
				t.Fatalf("cookie reply %d bytes > hello %d bytes", len(out[0].b), len(hello))
			}

			// The node learns the key from the cookie (trust on first use).
			hs, err := a.rv.FromCookie(out[0].b)
			if err != nil {
				t.Fatal(err)
			}
			// The handshake is a worker's job: nothing is answered on the
			// packet path.
			if out := h.raw(hs, a.addr); len(out) != 0 {
				t.Fatalf("handshake answered before the workers ran: %s", describe(out))
			}
			if got := h.s.Online(); len(got) != 0 {
				t.Fatalf("online %q before the workers ran", got)
			}
			h.conn.take()
			if n := h.s.DrainRegistrations(); n != 1 {
				t.Fatalf("%d registrations ran, want 1", n)
			}
			out = h.conn.take()
			if len(out) != 2 || out[0].to != a.addr || out[1].to != a.addr {
				t.Fatalf("registration: got %s, want HandshakeReply then Peers to the node", describe(out))
			}
			res, err := a.rv.Finish(out[0].b)
			if err != nil {
				t.Fatal(err)
			}
			if res.Session == (wire.SessionID{}) {
				t.Error("zero session ID")
			}
			if res.Observed != a.addr {
				t.Errorf("observed %v, want %v", res.Observed, a.addr)
			}
			// Heartbeat defaults to min(25 s, Expiry/2.4) = 12.5 s.
			if res.HeartbeatMS != 12500 || res.ExpiryMS != uint32(testExpiry/time.Millisecond) {
				t.Errorf("heartbeat %d ms, expiry %d ms; want 12500, %d", res.HeartbeatMS, res.ExpiryMS, testExpiry/time.Millisecond)
			}
			if res.PresenceSeq != 0 {
				t.Errorf("presence seq %d, want 0", res.PresenceSeq)
			}
			a.session = res.Session
			// The snapshot is sealed with the session's keys.
			if _, err := wire.Parse(out[1].b); err != nil {
				t.Fatal(err)
			}
			if m, _ := wire.Parse(out[1].b); m.Type() != wire.TypeSealed {
				t.Fatalf("snapshot sent as %v, want sealed", m.Type())
			}
			peers, ok := a.open(t, out[1].b).(*wire.Peers)
			if !ok {
				t.Fatalf("second reply is not Peers")
			}
			if peers.Part != 0 || peers.Parts != 1 || len(peers.Peers) != 0 || peers.Seq != 0 {
				t.Errorf("snapshot %+v, want one empty part at seq 0", peers)
			}
			if got := h.s.Online(); !slices.Equal(got, []string{"alice"}) {
				t.Errorf("Online() = %q", got)
			}
			if ack := h.heartbeat(a); ack.Observed != a.addr {
				t.Errorf("heartbeat ack observed %v, want %v", ack.Observed, a.addr)
			}
		})
	}
}

func TestHeartbeatOption(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.Expiry = 0; o.Heartbeat = 7 * time.Second })
	res, _, _ := h.register(newNode(t, "alice", "198.51.100.1:1"))
	if res.HeartbeatMS != 7000 || res.ExpiryMS != 60000 {
		t.Errorf("heartbeat %d ms, expiry %d ms; want 7000, 60000", res.HeartbeatMS, res.ExpiryMS)
	}
}

// TestNoAmplification sends every request an unproven source can make and
// checks that no reply is larger than its request.
func TestNoAmplification(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.SourceRate = -1 })
	bob := newNode(t, "bob", "198.51.100.2:2000")
	long := newNode(t, strings.Repeat("é", 32), "198.51.100.3:2000")
	h.mustRegister(bob, long)
	src := netip.MustParseAddrPort("203.0.113.9:5555")
	mallory := newNode(t, "mallory", src.String())
	mallory.rv.Server = h.key.Public
	elsewhere := h.cookie(netip.MustParseAddrPort("203.0.113.10:5555"))
	hs := func(c wire.Cookie, name string) []byte {
		b, err := mallory.rv.Handshake(c, name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	withVersion := func(b []byte, v byte) []byte { b = slices.Clone(b); b[1] = v; return b }
	garbageNoise := wire.Marshal(&wire.Handshake{Cookie: h.cookie(src), Noise: make([]byte, 100)})
	cases := []struct {
		name string
		req  []byte
		want wire.Code // 0: a CookieReply
	}{
		{"hello", wire.Marshal(&wire.Hello{Nonce: 1}), 0},
		{"hello padded", append(wire.Marshal(&wire.Hello{Nonce: 1}), make([]byte, 500)...), 0},
		{"handshake no cookie", hs(wire.Cookie{}, "mallory"), wire.CodeBadCookie},
		{"handshake no cookie short name", hs(wire.Cookie{}, ""), wire.CodeBadCookie},
		{"handshake another address's cookie", hs(elsewhere, "m"), wire.CodeBadCookie},
		{"handshake minimal", wire.Marshal(&wire.Handshake{Noise: []byte{1}}), wire.CodeBadCookie},
		{"handshake garbage noise", garbageNoise, wire.CodeBadHandshake},
		{"sealed", wire.Marshal(&wire.Sealed{Session: wire.SessionID{1}, Box: make([]byte, 17)}), wire.CodeNotRegistered},
		{"sealed short", wire.Marshal(&wire.Sealed{Session: wire.SessionID{1}}), wire.CodeNotRegistered},
		{"relay", wire.Marshal(&wire.Relay{Session: wire.SessionID{1}, Dst: bob.key}), wire.CodeNotRegistered},
		{"relay with payload", wire.Marshal(&wire.Relay{Session: wire.SessionID{1}, Dst: bob.key, Payload: make([]byte, 1200)}), wire.CodeNotRegistered},
		{"version hello", withVersion(wire.Marshal(&wire.Hello{}), 1), wire.CodeVersion},
		{"version sealed", withVersion(wire.Marshal(&wire.Sealed{}), 0), wire.CodeVersion},
		{"version handshake", withVersion(hs(h.cookie(src), "m"), 9), wire.CodeVersion},
		{"version unknown type", []byte{wire.Magic, 1, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0}, wire.CodeVersion},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := h.handle(tc.req, src)
			if tc.want == 0 {
				only[*wire.CookieReply](t, out, src)
				if len(out[0].b) > len(tc.req) {
					t.Fatalf("cookie reply %d bytes > request %d", len(out[0].b), len(tc.req))
				}
				return
			}
			onlyError(t, out, src, tc.want, len(tc.req))
		})
	}

	// Refusals inside the handshake reply go to a source that proved it
	// receives (the cookie), and are still no larger than the handshake.
	for _, tc := range []struct {
		name string
		key  wire.Key
		code wire.Code
	}{
		{strings.Repeat("x", 255), mallory.key, wire.CodeBadName},
		{"", mallory.key, wire.CodeBadName},
		{"BOB", mallory.key, wire.CodeNameTaken},
		{strings.Repeat("É", 32), mallory.key, wire.CodeNameTaken},
		{"robert", bob.key, wire.CodeBadSignature}, // bob's key, mallory's handshake
	} {
		mallory.rv.Key = tc.key
		if res := h.refused(mallory, tc.name); res.Code != tc.code {
			t.Errorf("%.10q: refused with %v (%q), want %v", tc.name, res.Code, res.Message, tc.code)
		}
	}

	// Requests too small for even an empty Error get no reply at all.
	for n := wire.HeaderLen; n < wire.HeaderLen+11; n++ {
		req := make([]byte, n)
		req[0], req[1], req[2] = wire.Magic, 1, byte(wire.TypeHeartbeat)
		for _, p := range h.handle(req, src) {
			if len(p.b) > n {
				t.Fatalf("%d-byte version mismatch: %d-byte reply", n, len(p.b))
			}
		}
	}
	if got := h.s.Online(); len(got) != 2 {
		t.Errorf("online %q", got)
	}
}

func TestShortHelloIgnored(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.SourceRate = -1 })
	src := netip.MustParseAddrPort("198.51.100.1:1")
	full := wire.Marshal(&wire.Hello{Nonce: 3})
	if len(full) != wire.HelloMinLen {
		t.Fatalf("hello is %d bytes, want %d", len(full), wire.HelloMinLen)
	}
	for n := 0; n < wire.HelloMinLen; n++ {
		if out := h.handle(full[:n], src); len(out) != 0 {
			t.Fatalf("%d-byte hello answered: %s", n, describe(out))
		}
	}
	only[*wire.CookieReply](t, h.handle(full, src), src)
}

func TestCookieBoundToAddress(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:4000")
	req := h.handshake(a, a.name)
	for _, other := range []string{"198.51.100.2:4000", "198.51.100.1:4001", "[2001:db8::1]:4000"} {
		src := netip.MustParseAddrPort(other)
		e := onlyError(t, h.handle(req, src), src, wire.CodeBadCookie, len(req))
		if e.Request != wire.TypeHandshake {
			t.Errorf("error for request %v, want handshake", e.Request)
		}
	}
	if got := h.s.Online(); len(got) != 0 {
		t.Fatalf("online %q after refused registrations", got)
	}
	if got := h.metric(dropped(relay.DropBadCookie)); got != 3 {
		t.Errorf("bad_cookie drops = %v, want 3", got)
	}
	// The cookie still works where it was issued.
	out := h.handle(req, a.addr)
	if _, err := a.rv.Finish(out[0].b); err != nil {
		t.Fatalf("registration at the cookie's own address: %v (%s)", err, describe(out))
	}
}

func TestCookieExpiry(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:4000")
	req := h.handshake(a, a.name)
	h.clock.Step(rendezvous.CookieLifetime + time.Second)
	e := onlyError(t, h.handle(req, a.addr), a.addr, wire.CodeBadCookie, len(req))
	if e.Request != wire.TypeHandshake {
		t.Errorf("error request type %v, want handshake", e.Request)
	}

	// A cookie just inside its lifetime is fine.
	req = h.handshake(a, a.name)
	h.clock.Step(rendezvous.CookieLifetime - time.Second)
	out := h.handle(req, a.addr)
	if len(out) == 0 {
		t.Fatal("registration with a 119 s old cookie: no answer")
	}
	if _, err := a.rv.Finish(out[0].b); err != nil {
		t.Fatalf("registration with a 119 s old cookie: %v", err)
	}
}

// TestBadHandshake: a handshake that does not check out gets a clear
// bad_handshake error no larger than it; one whose identity key is not the
// key that ran the handshake is refused inside the authenticated reply.
func TestBadHandshake(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:4000")
	other, err := ctrl.NewServerKey()
	if err != nil {
		t.Fatal(err)
	}

	// The wrong rendezvous key (a node that pinned another rendezvous).
	a.rv.Server = other.Public
	wrongKey, err := a.rv.Handshake(h.cookie(a.addr), a.name)
	if err != nil {
		t.Fatal(err)
	}
	// A tampered first message.
	tampered := slices.Clone(h.handshake(a, a.name))
	tampered[len(tampered)-5] ^= 1
	// A first message moved to another cookie (the prologue binds it).
	moved := slices.Clone(h.handshake(a, a.name))
	c2 := h.cookie(a.addr)
	copy(moved[wire.HeaderLen:], c2[:])

	for name, req := range map[string][]byte{"wrong server key": wrongKey, "tampered": tampered, "moved to another cookie": moved} {
		e := onlyError(t, h.handle(req, a.addr), a.addr, wire.CodeBadHandshake, len(req))
		if e.Request != wire.TypeHandshake {
			t.Errorf("%s: error for request %v, want handshake", name, e.Request)
		}
	}
	if got := h.metric(dropped(relay.DropBadHandshake)); got != 3 {
		t.Errorf("bad_handshake drops %v, want 3", got)
	}

	// The identity in the payload is not the handshake's static key:
	// someone else's key, and a key that is no Ed25519 point.
	mallory := newNode(t, "mallory", "198.51.100.1:4000")
	var notAPoint wire.Key
	for i := range notAPoint {
		notAPoint[i] = 0xff
	}
	for _, k := range []wire.Key{a.key, notAPoint} {
		mallory.rv.Key = k
		res := h.refused(mallory, "mallory")
		if res.Code != wire.CodeBadSignature {
			t.Errorf("identity %s with mallory's handshake: refused with %v (%q), want bad_signature", k.Short(), res.Code, res.Message)
		}
	}
	if got := h.metric(dropped(relay.DropBadSignature)); got != 2 {
		t.Errorf("bad_signature drops %v, want 2", got)
	}
	if got := h.s.Online(); len(got) != 0 {
		t.Fatalf("online %q", got)
	}
	// alice's and mallory's names are still free: alice registers with
	// the right key.
	h.register(a)
	mallory.rv.Key = mallory.key
	h.register(mallory)
}

func TestNameTaken(t *testing.T) {
	h := newHarness(t, nil)
	bob := newNode(t, "Bob", "198.51.100.1:4000")
	h.register(bob)
	for _, name := range []string{"Bob", "bob", "BOB", "bOb"} {
		imp := newNode(t, name, "198.51.100.9:4000")
		res := h.refused(imp, name)
		if res.Code != wire.CodeNameTaken {
			t.Fatalf("%s: refused with %v, want name_taken", name, res.Code)
		}
		if want := `name "` + name + `" is taken`; res.Message != want {
			t.Errorf("message %q, want %q", res.Message, want)
		}
	}
	// Taken for good: also after Bob leaves.
	h.sealed(bob, &wire.Leave{}, bob.addr)
	imp := newNode(t, "bob", "198.51.100.9:4000")
	if res := h.refused(imp, "bob"); res.Code != wire.CodeNameTaken {
		t.Errorf("after leave: refused with %v, want name_taken", res.Code)
	}
	if got := h.s.Online(); len(got) != 0 {
		t.Fatalf("online %q", got)
	}
}

// TestConfusableName: a name that looks like a bound name (UTS #39
// skeleton) is refused as taken, with the reason; the holder of the name
// is not affected.
func TestConfusableName(t *testing.T) {
	h := newHarness(t, nil)
	bob := newNode(t, "bob", "198.51.100.1:4000")
	h.register(bob)
	const cyrillic = "b\u043eb" // bоb, a Cyrillic о
	imp := newNode(t, cyrillic, "198.51.100.9:4000")
	res := h.refused(imp, cyrillic)
	if res.Code != wire.CodeNameTaken {
		t.Fatalf("%q: refused with %v (%q), want name_taken", cyrillic, res.Code, res.Message)
	}
	if !strings.Contains(res.Message, `"bob"`) || !strings.Contains(res.Message, "taken") {
		t.Errorf("message %q does not say which name it looks like", res.Message)
	}
	if got := h.s.Online(); !slices.Equal(got, []string{"bob"}) {
		t.Fatalf("online %q", got)
	}
	// The same key registering bob again (a restart) is fine.
	h.clock.Step(time.Second)
	bob.addr = netip.MustParseAddrPort("198.51.100.1:4001")
	if res, _, _ := h.register(bob); res.Observed != bob.addr {
		t.Errorf("re-registered at %v", res.Observed)
	}
	// Nothing was bound to the look-alike.
	out := h.sealed(bob, &wire.Lookup{TxID: 1, Name: cyrillic}, bob.addr)
	if r := onlyTo[*wire.LookupReply](t, out, bob); r.Status != wire.LookupUnknown {
		t.Errorf("lookup of the look-alike: %+v", r)
	}
}

func TestKeyInUse(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:4000")
	h.register(a)
	session := a.session
	keys := a.rv.Keys
	for range 2 {
		res := h.refused(a, "carol")
		if res.Code != wire.CodeKeyInUse || !strings.Contains(res.Message, "another name") {
			t.Errorf("refused with %v (%q), want key_in_use", res.Code, res.Message)
		}
		h.clock.Step(time.Second)
	}
	// The node keeps its registration and session; carol stays free.
	if got := h.s.Online(); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("online %q", got)
	}
	a.rv.Keys, a.rv.Session = keys, session
	h.heartbeat(a)
	h.register(newNode(t, "carol", "198.51.100.3:1"))
}

func TestBadNames(t *testing.T) {
	h := newHarness(t, nil)
	for _, tc := range []struct{ name, want string }{
		{"", wire.ErrNameEmpty.Error()},
		{strings.Repeat("a", 33), wire.ErrNameTooLong.Error()},
		{strings.Repeat("é", 33), wire.ErrNameTooLong.Error()},
		{"a b", wire.ErrNameSpace.Error()},
		{"a\tb", wire.ErrNameSpace.Error()},
		{"#x", wire.ErrNameReserved.Error()},
		{"/x", wire.ErrNameReserved.Error()},
		{"@x", wire.ErrNameReserved.Error()},
		{"a\x00", wire.ErrNameNotPrint.Error()},
		{"\xff", wire.ErrNameUTF8.Error()},
	} {
		n := newNode(t, tc.name, "198.51.100.1:4000")
		res := h.refused(n, tc.name)
		if res.Code != wire.CodeBadName || res.Message != tc.want {
			t.Errorf("name %q: refused with %v %q, want bad_name %q", tc.name, res.Code, res.Message, tc.want)
		}
	}
	if got := h.s.Online(); len(got) != 0 {
		t.Fatalf("online %q", got)
	}
	// The longest names are fine.
	h.register(newNode(t, strings.Repeat("a", 32), "198.51.100.1:4000"))
	h.register(newNode(t, strings.Repeat("é", 32), "198.51.100.2:4000"))
}

func TestRegisterRetransmit(t *testing.T) {
	h := newHarness(t, nil)
	bob := newNode(t, "bob", "198.51.100.2:2000")
	a := newNode(t, "alice", "198.51.100.1:1000")
	h.mustRegister(bob)
	_, _, out := h.register(a)
	reply := out[0].b
	h.flushInto(a, bob)
	regs := h.metric("natchat_rendezvous_registrations_total")

	// A retransmission while registered gets the same reply, and nothing
	// else happens.
	for i := range 3 {
		out := h.handle(a.hs, a.addr)
		if len(out) != 1 || out[0].to != a.addr || !bytes.Equal(out[0].b, reply) {
			t.Fatalf("retransmit %d: got %s, want the same reply again", i, describe(out))
		}
	}
	if out := h.flush(); len(out) != 0 {
		t.Errorf("retransmits caused presence: %s", describe(out))
	}
	if got := h.metric("natchat_rendezvous_registrations_total"); got != regs {
		t.Errorf("registrations %v after retransmits, want %v", got, regs)
	}
	// bob saw exactly one join: his ack's seq is 1.
	if ack := h.heartbeat(bob); ack.PresenceSeq != 1 {
		t.Errorf("bob's presence seq %d, want 1", ack.PresenceSeq)
	}
	h.heartbeat(a) // the session is the one the node holds

	// A retransmission while a worker still has the handshake is dropped:
	// the reply is coming.
	c := newNode(t, "carol", "198.51.100.3:3000")
	hs := h.handshake(c, c.name)
	for range 3 {
		if out := h.raw(hs, c.addr); len(out) != 0 {
			t.Fatalf("handshake in flight answered: %s", describe(out))
		}
	}
	h.conn.take()
	if n := h.s.DrainRegistrations(); n != 1 {
		t.Fatalf("%d registrations ran for one handshake sent 3 times, want 1", n)
	}
	out = h.conn.take()
	if res, err := c.rv.Finish(out[0].b); err != nil {
		t.Fatalf("carol: %v", err)
	} else {
		c.session = res.Session
	}
	c.msgs(t, out[1:])
	h.flushInto(a, bob, c)

	// A retransmission that arrives after the node roamed must not replace
	// its session either.
	old := a.addr
	h.roam(a, netip.MustParseAddrPort("198.51.100.1:1001"))
	regs = h.metric("natchat_rendezvous_registrations_total")
	out = h.handle(a.hs, old)
	for _, p := range out {
		if len(p.b) > len(a.hs) {
			t.Errorf("late retransmit: %d-byte answer to the old address", len(p.b))
		}
	}
	if got := h.metric("natchat_rendezvous_registrations_total"); got != regs {
		t.Errorf("a late retransmit registered again (%v registrations, want %v)", got, regs)
	}
	if ack := h.heartbeat(a); ack.Observed != a.addr {
		t.Errorf("observed %v, want %v", ack.Observed, a.addr)
	}
	if out := h.flush(); len(out) != 0 {
		t.Errorf("late retransmit caused presence: %s", describe(out))
	}
	if ack := h.heartbeat(bob); ack.PresenceSeq != 2 {
		t.Errorf("bob's presence seq %d, want 2", ack.PresenceSeq)
	}
}

func TestReregisterNewCookie(t *testing.T) {
	h := newHarness(t, nil)
	bob := newNode(t, "bob", "198.51.100.2:2000")
	a := newNode(t, "alice", "198.51.100.1:1000")
	h.mustRegister(bob, a)
	old, oldKeys := a.session, a.rv.Keys
	// alice restarts behind a new mapping and registers again.
	h.clock.Step(time.Second)
	a.addr = netip.MustParseAddrPort("198.51.100.1:1002")
	res, parts, _ := h.register(a)
	if res.Session == old {
		t.Error("re-registration kept the old session")
	}
	if res.Observed != a.addr {
		t.Errorf("observed %v", res.Observed)
	}
	if len(parts) != 1 || len(parts[0].Peers) != 1 || parts[0].Peers[0].Key != bob.key {
		t.Errorf("snapshot %+v", parts)
	}
	if out := h.flush(); len(out) != 0 {
		t.Errorf("alice's re-registration sent presence: %s", describe(out))
	}
	// The old session is gone.
	req := oldKeys.Seal(nil, old, wire.AppendInner(make([]byte, 0, 64), &wire.Heartbeat{}))
	onlyError(t, h.handle(req, a.addr), a.addr, wire.CodeNotRegistered, len(req))
	if got := h.s.Online(); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Errorf("online %q", got)
	}
	h.heartbeat(a)

	// bob (who saw alice join: seq 1) re-registers: his presence seq is
	// kept, and alice hears nothing.
	bob.addr = netip.MustParseAddrPort("198.51.100.2:2001")
	res, parts, _ = h.register(bob)
	if res.PresenceSeq != 1 || parts[0].Seq != 1 {
		t.Errorf("bob re-registered at seq %d, snapshot seq %d; want 1", res.PresenceSeq, parts[0].Seq)
	}
	if out := h.flush(); len(out) != 0 {
		t.Errorf("bob's re-registration sent presence: %s", describe(out))
	}
}

// TestReplayAfterLeave: a captured Handshake replayed (same cookie, same
// address) after the node left is refused as a replay.
func TestReplayAfterLeave(t *testing.T) {
	h := newHarness(t, nil)
	bob := newNode(t, "bob", "198.51.100.2:2000")
	a := newNode(t, "alice", "198.51.100.1:1000")
	h.mustRegister(bob, a)
	h.sealed(a, &wire.Leave{}, a.addr)
	h.flushInto(bob)
	regs := h.metric("natchat_rendezvous_registrations_total")

	out := h.handle(a.hs, a.addr)
	if len(out) != 1 || out[0].to != a.addr {
		t.Fatalf("replay: %s, want one refusal", describe(out))
	}
	if m := parse(t, out[0].b); m.Type() != wire.TypeHandshakeReply || len(out[0].b) > len(a.hs) {
		t.Fatalf("replay answered with %s, want a handshake reply no larger than the handshake", describe(out))
	}
	if got := h.s.Online(); !slices.Equal(got, []string{"bob"}) {
		t.Fatalf("online %q after replay", got)
	}
	if got := h.metric(dropped(relay.DropReplay)); got != 1 {
		t.Errorf("replay drops %v, want 1", got)
	}
	if got := h.metric("natchat_rendezvous_registrations_total"); got != regs {
		t.Errorf("registrations %v, want %v", got, regs)
	}
	if out := h.flush(); len(out) != 0 {
		t.Errorf("replay caused presence: %s", describe(out))
	}
	// Still refused for as long as the cookie is valid, sweeps included:
	// the cookie was issued at a whole second and is valid until 121 s
	// later.
	h.clock.Step(rendezvous.CookieLifetime + 500*time.Millisecond)
	h.sweep()
	out = h.handle(a.hs, a.addr)
	if len(out) != 1 {
		t.Fatalf("late replay: %s", describe(out))
	}
	switch m := parse(t, out[0].b).(type) {
	case *wire.HandshakeReply:
		if got := h.metric(dropped(relay.DropReplay)); got != 2 {
			t.Errorf("replay drops %v, want 2", got)
		}
	case *wire.Error:
		if m.Code != wire.CodeBadCookie {
			t.Fatalf("late replay: %s", describe(out))
		}
	default:
		t.Fatalf("late replay: %s", describe(out))
	}
	if got := h.s.Online(); slices.Contains(got, "alice") { // bob expired meanwhile
		t.Fatalf("online %q after late replay", got)
	}
	// A fresh registration of the same key is accepted.
	h.register(a)
	if got := h.s.Online(); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("online %q", got)
	}
}

// TestReplayAfterTimeout: the refusal of a registration replayed after the
// node expired is authenticated and says replay.
func TestReplayAfterTimeout(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:1000")
	hs := h.handshake(a, a.name)
	if out := h.handle(hs, a.addr); len(out) != 2 {
		t.Fatalf("registration: %s", describe(out))
	}
	// The node never read the reply (it crashed); it expires.
	h.clock.Step(testExpiry + time.Second)
	h.sweep()
	if got := h.s.Online(); len(got) != 0 {
		t.Fatalf("online %q after expiry", got)
	}
	// The replay's refusal is for the initiator of that handshake.
	res := h.refusedHS(a, hs)
	if res.Code != wire.CodeReplay {
		t.Fatalf("replay refused with %v (%q), want replay", res.Code, res.Message)
	}
	if got := h.s.Online(); len(got) != 0 {
		t.Fatalf("online %q after replay", got)
	}
}

// TestReplayOfReplacedRegistration: a node registers twice (a restart); a
// capture of the first registration, replayed while the node is online,
// must not reset its newer session.
func TestReplayOfReplacedRegistration(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:1000")
	h.register(a)
	first := a.hs
	h.clock.Step(time.Second)
	h.register(a) // re-registration: new cookie, new session
	current := a.session

	out := h.handle(first, a.addr)
	if len(out) != 1 || parse(t, out[0].b).Type() != wire.TypeHandshakeReply || len(out[0].b) > len(first) {
		t.Fatalf("replay of the replaced registration: %s, want one refusal", describe(out))
	}
	if got := h.metric(dropped(relay.DropReplay)); got != 1 {
		t.Errorf("replay drops %v, want 1", got)
	}
	// The current session still works.
	if ack := h.heartbeat(a); ack.Observed != a.addr {
		t.Fatalf("ack %+v", ack)
	}
	if a.session != current {
		t.Fatal("session changed")
	}
}

func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	h := newHarnessIn(t, dir, nil)
	bob := newNode(t, "Bob", "198.51.100.2:2000")
	h.register(bob)
	if err := h.store.Close(); err != nil {
		t.Fatal(err)
	}

	h2 := newHarnessIn(t, dir, nil)
	if h2.key != h.key {
		t.Fatal("the rendezvous key changed across a restart")
	}
	if got := h2.s.Online(); len(got) != 0 {
		t.Fatalf("new server starts with %q online", got)
	}
	imp := newNode(t, "bob", "198.51.100.9:2000")
	if res := h2.refused(imp, "bob"); res.Code != wire.CodeNameTaken {
		t.Errorf("impostor refused with %v, want name_taken", res.Code)
	}
	if res := h2.refused(bob, "robert"); res.Code != wire.CodeKeyInUse {
		t.Errorf("bob as robert refused with %v, want key_in_use", res.Code)
	}

	// The original key registers, under any case, and keeps its spelling.
	bob.name = "BOB"
	h2.register(bob)
	if got := h2.s.Online(); !slices.Equal(got, []string{"Bob"}) {
		t.Fatalf("online %q, want the canonical spelling", got)
	}
}
