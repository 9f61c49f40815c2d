package rendezvous_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

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
			if len(out[0].b) > len(hello) {
				t.Fatalf("cookie reply %d bytes > hello %d bytes", len(out[0].b), len(hello))
			}

			req := wire.Marshal(a.signedRegister(cr.Cookie, a.name))
			out = h.handle(req, a.addr)
			msgs := msgsTo(t, out, a.addr)
			if len(out) != 2 || len(msgs) != 2 {
				t.Fatalf("register: got %s, want Registered then Peers to the node", describe(out))
			}
			reg, ok := msgs[0].(*wire.Registered)
			if !ok {
				t.Fatalf("first reply %T, want Registered", msgs[0])
			}
			if reg.Session == (wire.SessionID{}) {
				t.Error("zero session ID")
			}
			if reg.Observed != a.addr {
				t.Errorf("observed %v, want %v", reg.Observed, a.addr)
			}
			// Heartbeat defaults to min(25 s, Expiry/2.4) = 12.5 s.
			if reg.HeartbeatMS != 12500 || reg.ExpiryMS != uint32(testExpiry/time.Millisecond) {
				t.Errorf("heartbeat %d ms, expiry %d ms; want 12500, %d", reg.HeartbeatMS, reg.ExpiryMS, testExpiry/time.Millisecond)
			}
			if reg.PresenceSeq != 0 {
				t.Errorf("presence seq %d, want 0", reg.PresenceSeq)
			}
			peers, ok := msgs[1].(*wire.Peers)
			if !ok {
				t.Fatalf("second reply %T, want Peers", msgs[1])
			}
			if peers.Part != 0 || peers.Parts != 1 || len(peers.Peers) != 0 || peers.Seq != 0 {
				t.Errorf("snapshot %+v, want one empty part at seq 0", peers)
			}
			if got := h.s.Online(); !slices.Equal(got, []string{"alice"}) {
				t.Errorf("Online() = %q", got)
			}
			a.session = reg.Session
			if ack := h.heartbeat(a, a.addr); ack.Observed != a.addr {
				t.Errorf("heartbeat ack observed %v, want %v", ack.Observed, a.addr)
			}
		})
	}
}

func TestHeartbeatOption(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.Expiry = 0; o.Heartbeat = 7 * time.Second })
	reg, _, _ := h.register(newNode(t, "alice", "198.51.100.1:1"))
	if reg.HeartbeatMS != 7000 || reg.ExpiryMS != 60000 {
		t.Errorf("heartbeat %d ms, expiry %d ms; want 7000, 60000", reg.HeartbeatMS, reg.ExpiryMS)
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
	cookie := h.cookie(src)
	var zero wire.Cookie

	withVersion := func(b []byte, v byte) []byte { b = slices.Clone(b); b[1] = v; return b }
	longName := strings.Repeat("x", 255) // over MaxNameLen; fits the wire's str
	cases := []struct {
		name string
		req  []byte
		want wire.Code // 0: a CookieReply
	}{
		{"hello", wire.Marshal(&wire.Hello{Nonce: 1}), 0},
		{"hello padded", append(wire.Marshal(&wire.Hello{Nonce: 1}), make([]byte, 500)...), 0},
		{"register no cookie", wire.Marshal(mallory.signedRegister(zero, "mallory")), wire.CodeBadCookie},
		{"register no cookie short name", wire.Marshal(mallory.signedRegister(zero, "")), wire.CodeBadCookie},
		{"register bad name", wire.Marshal(mallory.signedRegister(cookie, longName)), wire.CodeBadName},
		{"register empty name", wire.Marshal(mallory.signedRegister(cookie, "")), wire.CodeBadName},
		{"register bad signature", wire.Marshal(&wire.Register{Cookie: cookie, Key: mallory.key, Name: "m"}), wire.CodeBadSignature},
		{"register name taken", wire.Marshal(mallory.signedRegister(cookie, "BOB")), wire.CodeNameTaken},
		{"register name taken, long", wire.Marshal(mallory.signedRegister(cookie, strings.Repeat("É", 32))), wire.CodeNameTaken},
		{"register key in use", wire.Marshal(bob.signedRegister(cookie, "robert")), wire.CodeKeyInUse},
		{"heartbeat", wire.Marshal(&wire.Heartbeat{Session: wire.SessionID{1}}), wire.CodeNotRegistered},
		{"leave", wire.Marshal(&wire.Leave{Session: wire.SessionID{1}}), wire.CodeNotRegistered},
		{"peers", wire.Marshal(&wire.PeersRequest{Session: wire.SessionID{1}}), wire.CodeNotRegistered},
		{"lookup", wire.Marshal(&wire.Lookup{Session: wire.SessionID{1}, Name: "bob"}), wire.CodeNotRegistered},
		{"relay", wire.Marshal(&wire.Relay{Session: wire.SessionID{1}, Dst: bob.key}), wire.CodeNotRegistered},
		{"signal", wire.Marshal(&wire.Signal{Session: wire.SessionID{1}, Dst: bob.key}), wire.CodeNotRegistered},
		{"version hello", withVersion(wire.Marshal(&wire.Hello{}), 2), wire.CodeVersion},
		{"version heartbeat", withVersion(wire.Marshal(&wire.Heartbeat{}), 0), wire.CodeVersion},
		{"version register", withVersion(wire.Marshal(mallory.signedRegister(cookie, "m")), 9), wire.CodeVersion},
		{"version unknown type", []byte{wire.Magic, 2, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0}, wire.CodeVersion},
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

	// Requests too small for even an empty Error get no reply at all.
	for n := wire.HeaderLen; n < wire.HeaderLen+11; n++ {
		req := make([]byte, n)
		req[0], req[1], req[2] = wire.Magic, 2, byte(wire.TypeHeartbeat)
		for _, p := range h.handle(req, src) {
			if len(p.b) > n {
				t.Fatalf("%d-byte version mismatch: %d-byte reply", n, len(p.b))
			}
		}
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
	c := h.cookie(a.addr)
	req := wire.Marshal(a.signedRegister(c, a.name))
	for _, other := range []string{"198.51.100.2:4000", "198.51.100.1:4001", "[2001:db8::1]:4000"} {
		src := netip.MustParseAddrPort(other)
		onlyError(t, h.handle(req, src), src, wire.CodeBadCookie, len(req))
	}
	if got := h.s.Online(); len(got) != 0 {
		t.Fatalf("online %q after refused registrations", got)
	}
	if got := h.metric(dropped("bad_cookie")); got != 3 {
		t.Errorf("bad_cookie drops = %v, want 3", got)
	}
	// The cookie still works where it was issued.
	out := h.handle(req, a.addr)
	if _, ok := msgsTo(t, out, a.addr)[0].(*wire.Registered); !ok {
		t.Fatalf("registration at the cookie's own address: %s", describe(out))
	}
}

func TestCookieExpiry(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:4000")
	c := h.cookie(a.addr)
	h.clock.Step(rendezvous.CookieLifetime + time.Second)
	req := wire.Marshal(a.signedRegister(c, a.name))
	e := onlyError(t, h.handle(req, a.addr), a.addr, wire.CodeBadCookie, len(req))
	if e.Request != wire.TypeRegister {
		t.Errorf("error request type %v, want register", e.Request)
	}

	// A cookie just inside its lifetime is fine.
	c = h.cookie(a.addr)
	h.clock.Step(rendezvous.CookieLifetime - time.Second)
	out := h.handle(wire.Marshal(a.signedRegister(c, a.name)), a.addr)
	if _, ok := msgsTo(t, out, a.addr)[0].(*wire.Registered); !ok {
		t.Fatalf("registration with a 119 s old cookie: %s", describe(out))
	}
}

func TestBadSignature(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:4000")
	other := newNode(t, "other", "198.51.100.1:4000")
	c := h.cookie(a.addr)

	flipped := a.signedRegister(c, a.name)
	flipped.Sig[10] ^= 1
	wrongKey := other.signedRegister(c, a.name)
	wrongKey.Key = a.key
	wrongName := a.signedRegister(c, "alicia")
	wrongName.Name = a.name
	var oldCookie wire.Cookie
	oldCookie[0] = 1
	wrongCookie := a.signedRegister(oldCookie, a.name)
	wrongCookie.Cookie = c
	for _, m := range []*wire.Register{flipped, wrongKey, wrongName, wrongCookie, {Cookie: c, Key: a.key, Name: a.name}} {
		req := wire.Marshal(m)
		onlyError(t, h.handle(req, a.addr), a.addr, wire.CodeBadSignature, len(req))
	}
	if got := h.s.Online(); len(got) != 0 {
		t.Fatalf("online %q", got)
	}
	if got := h.metric(dropped("bad_signature")); got != 5 {
		t.Errorf("bad_signature drops = %v, want 5", got)
	}
}

func TestNameTaken(t *testing.T) {
	h := newHarness(t, nil)
	bob := newNode(t, "Bob", "198.51.100.1:4000")
	h.register(bob)
	for _, name := range []string{"Bob", "bob", "BOB", "bOb"} {
		imp := newNode(t, name, "198.51.100.9:4000")
		c := h.cookie(imp.addr)
		req := wire.Marshal(imp.signedRegister(c, name))
		e := onlyError(t, h.handle(req, imp.addr), imp.addr, wire.CodeNameTaken, len(req))
		if want := `name "` + name + `" is taken`; e.Message != want {
			t.Errorf("message %q, want %q", e.Message, want)
		}
	}
	// Taken for good: also after Bob leaves.
	h.send(&wire.Leave{Session: bob.session}, bob.addr)
	imp := newNode(t, "bob", "198.51.100.9:4000")
	req := wire.Marshal(imp.signedRegister(h.cookie(imp.addr), "bob"))
	onlyError(t, h.handle(req, imp.addr), imp.addr, wire.CodeNameTaken, len(req))
	if got := h.s.Online(); len(got) != 0 {
		t.Fatalf("online %q", got)
	}
}

func TestKeyInUse(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:4000")
	h.register(a)
	// First with the very cookie of alice's registration (same address,
	// same second: cookies are deterministic), then with a later one.
	for range 2 {
		c := h.cookie(a.addr)
		req := wire.Marshal(a.signedRegister(c, "carol"))
		e := onlyError(t, h.handle(req, a.addr), a.addr, wire.CodeKeyInUse, len(req))
		if !strings.Contains(e.Message, "another name") {
			t.Errorf("message %q", e.Message)
		}
		h.clock.Step(time.Second)
	}
	// The node keeps its registration and session; carol stays free.
	if got := h.s.Online(); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("online %q", got)
	}
	h.heartbeat(a, a.addr)
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
		req := wire.Marshal(n.signedRegister(h.cookie(n.addr), tc.name))
		e := onlyError(t, h.handle(req, n.addr), n.addr, wire.CodeBadName, len(req))
		if e.Message != tc.want {
			t.Errorf("name %q: message %q, want %q", tc.name, e.Message, tc.want)
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
	h.mustRegister(bob, a)
	regs := h.metric("natchat_rendezvous_registrations_total")

	for i := range 3 {
		out := h.handle(a.reg, a.addr)
		reg := only[*wire.Registered](t, out, a.addr)
		if reg.Session != a.session {
			t.Fatalf("retransmit %d: session %x, want %x", i, reg.Session, a.session)
		}
	}
	if got := h.metric("natchat_rendezvous_registrations_total"); got != regs {
		t.Errorf("registrations %v after retransmits, want %v", got, regs)
	}
	// bob saw exactly one join: his ack's seq is 1.
	if ack := h.heartbeat(bob, bob.addr); ack.PresenceSeq != 1 {
		t.Errorf("bob's presence seq %d, want 1", ack.PresenceSeq)
	}

	// A retransmit that arrives after the node roamed must not replace the
	// session either.
	roamed := netip.MustParseAddrPort("198.51.100.1:1001")
	h.heartbeat(a, roamed)
	out := h.handle(a.reg, a.addr)
	for _, m := range msgsTo(t, out, a.addr) {
		if r, ok := m.(*wire.Registered); ok && r.Session != a.session {
			t.Fatalf("late retransmit replaced the session")
		}
	}
	if ack := h.heartbeat(a, roamed); ack.Observed != roamed {
		t.Errorf("observed %v, want %v", ack.Observed, roamed)
	}
	if ack := h.heartbeat(bob, bob.addr); ack.PresenceSeq != 1 {
		t.Errorf("bob's presence seq %d, want 1", ack.PresenceSeq)
	}
}

func TestReregisterNewCookie(t *testing.T) {
	h := newHarness(t, nil)
	bob := newNode(t, "bob", "198.51.100.2:2000")
	a := newNode(t, "alice", "198.51.100.1:1000")
	h.mustRegister(bob, a)
	old := a.session
	// alice restarts behind a new mapping and registers again.
	a.addr = netip.MustParseAddrPort("198.51.100.1:1002")
	reg, parts, out := h.register(a)
	if reg.Session == old {
		t.Error("re-registration kept the old session")
	}
	if reg.Observed != a.addr {
		t.Errorf("observed %v", reg.Observed)
	}
	if len(parts) != 1 || len(parts[0].Peers) != 1 || parts[0].Peers[0].Key != bob.key {
		t.Errorf("snapshot %+v", parts)
	}
	if m := msgsTo(t, out, bob.addr); len(m) != 0 {
		t.Errorf("bob got %d messages on alice's re-registration, want none", len(m))
	}
	out = h.send(&wire.Heartbeat{Session: old}, a.addr)
	onlyError(t, out, a.addr, wire.CodeNotRegistered, wire.HeaderLen+8)
	if got := h.s.Online(); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Errorf("online %q", got)
	}

	// bob (who saw alice join: seq 1) re-registers: his presence seq is
	// kept, and alice hears nothing.
	bob.addr = netip.MustParseAddrPort("198.51.100.2:2001")
	reg, parts, out = h.register(bob)
	if reg.PresenceSeq != 1 || parts[0].Seq != 1 {
		t.Errorf("bob re-registered at seq %d, snapshot seq %d; want 1", reg.PresenceSeq, parts[0].Seq)
	}
	if m := msgsTo(t, out, a.addr); len(m) != 0 {
		t.Errorf("alice got %d messages on bob's re-registration, want none", len(m))
	}
}

func TestReplayAfterLeave(t *testing.T) {
	h := newHarness(t, nil)
	bob := newNode(t, "bob", "198.51.100.2:2000")
	a := newNode(t, "alice", "198.51.100.1:1000")
	h.mustRegister(bob, a)
	h.send(&wire.Leave{Session: a.session}, a.addr)

	out := h.handle(a.reg, a.addr)
	onlyError(t, out, a.addr, wire.CodeReplay, len(a.reg))
	if got := h.s.Online(); !slices.Equal(got, []string{"bob"}) {
		t.Fatalf("online %q after replay", got)
	}
	if got := h.metric(dropped("replay")); got != 1 {
		t.Errorf("replay drops %v, want 1", got)
	}
	// Still refused for as long as the cookie is valid, sweeps included:
	// the cookie was issued at a whole second and is valid until 121 s
	// later.
	now := h.clock.Step(rendezvous.CookieLifetime + 500*time.Millisecond)
	h.s.Sweep(now)
	out = h.handle(a.reg, a.addr)
	if len(out) != 1 {
		t.Fatalf("late replay: %s", describe(out))
	}
	if e, ok := parse(t, out[0].b).(*wire.Error); !ok || (e.Code != wire.CodeReplay && e.Code != wire.CodeBadCookie) {
		t.Fatalf("replay 120.5 s after leave: got %s, want a refusal", describe(out))
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

func TestReplayAfterTimeout(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:1000")
	h.register(a)
	h.s.Sweep(h.clock.Step(testExpiry + time.Second))
	if got := h.s.Online(); len(got) != 0 {
		t.Fatalf("online %q after expiry", got)
	}
	onlyError(t, h.handle(a.reg, a.addr), a.addr, wire.CodeReplay, len(a.reg))
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
	if got := h2.s.Online(); len(got) != 0 {
		t.Fatalf("new server starts with %q online", got)
	}
	imp := newNode(t, "bob", "198.51.100.9:2000")
	req := wire.Marshal(imp.signedRegister(h2.cookie(imp.addr), "bob"))
	onlyError(t, h2.handle(req, imp.addr), imp.addr, wire.CodeNameTaken, len(req))

	req = wire.Marshal(bob.signedRegister(h2.cookie(bob.addr), "robert"))
	onlyError(t, h2.handle(req, bob.addr), bob.addr, wire.CodeKeyInUse, len(req))

	// The original key registers, under any case, and keeps its spelling.
	bob.name = "BOB"
	h2.register(bob)
	if got := h2.s.Online(); !slices.Equal(got, []string{"Bob"}) {
		t.Fatalf("online %q, want the canonical spelling", got)
	}
}

// TestReplayOfReplacedRegistration: a node registers twice (a restart); a
// capture of the first registration, replayed while the node is online,
// must not reset its newer session.
func TestReplayOfReplacedRegistration(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:1000")
	h.register(a)
	first := a.reg
	h.clock.Step(time.Second)
	h.register(a) // re-registration: new cookie, new session
	current := a.session

	onlyError(t, h.handle(first, a.addr), a.addr, wire.CodeReplay, len(first))
	// The current session still works.
	if ack := h.heartbeat(a, a.addr); ack == nil {
		t.Fatal("current session lost after a replayed old registration")
	}
	if a.session != current {
		t.Fatal("session changed")
	}
}
