package rendezvous_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"natchat/relay"
	"natchat/rendezvous"
	"natchat/wire"
)

// stunBinding returns a STUN Binding request with a fresh transaction ID.
func stunBinding(t testing.TB, extra ...stun.Setter) []byte {
	t.Helper()
	m, err := stun.Build(append([]stun.Setter{stun.TransactionID, stun.BindingRequest}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

// checkBindingSuccess decodes resp and checks it answers req for src.
func checkBindingSuccess(t *testing.T, req, resp []byte, src netip.AddrPort, software string) {
	t.Helper()
	q := &stun.Message{Raw: req}
	if err := q.Decode(); err != nil {
		t.Fatal(err)
	}
	m := &stun.Message{Raw: resp}
	if err := m.Decode(); err != nil {
		t.Fatalf("response does not decode: %v", err)
	}
	if m.Type != stun.BindingSuccess {
		t.Fatalf("response type %v, want binding success", m.Type)
	}
	if m.TransactionID != q.TransactionID {
		t.Errorf("transaction ID %x, want %x", m.TransactionID, q.TransactionID)
	}
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(m); err != nil {
		t.Fatalf("XOR-MAPPED-ADDRESS: %v", err)
	}
	ip, ok := netip.AddrFromSlice(xa.IP)
	if !ok {
		t.Fatalf("bad IP %v", xa.IP)
	}
	if got := netip.AddrPortFrom(ip, uint16(xa.Port)); got != src {
		t.Errorf("XOR-MAPPED-ADDRESS %v, want %v", got, src)
	}
	var sw stun.Software
	if err := sw.GetFrom(m); err != nil {
		t.Errorf("SOFTWARE: %v", err)
	} else if sw.String() != software {
		t.Errorf("SOFTWARE %q, want %q", sw, software)
	}
	if err := stun.Fingerprint.Check(m); err != nil {
		t.Errorf("FINGERPRINT: %v", err)
	}
}

func TestSTUNBinding(t *testing.T) {
	for _, tc := range []struct {
		src      string
		software string
		extra    []stun.Setter
	}{
		{"203.0.113.5:40000", "", nil},
		{"[2001:db8::5]:40001", "", nil},
		{"198.51.100.1:1", "test-sw", []stun.Setter{stun.NewSoftware("client"), stun.Fingerprint}},
	} {
		t.Run(tc.src, func(t *testing.T) {
			h := newHarness(t, func(o *rendezvous.Options) { o.Software = tc.software })
			src := netip.MustParseAddrPort(tc.src)
			req := stunBinding(t, tc.extra...)
			out := h.handle(req, src)
			if len(out) != 1 || out[0].to != src {
				t.Fatalf("got %d datagrams, want one to %v", len(out), src)
			}
			want := tc.software
			if want == "" {
				want = "natchat-rendezvous"
			}
			checkBindingSuccess(t, req, out[0].b, src, want)
			if got := h.metric("natchat_rendezvous_stun_responses_total"); got != 1 {
				t.Errorf("stun responses %v, want 1", got)
			}
		})
	}
}

func TestSTUNOtherDropped(t *testing.T) {
	h := newHarness(t, nil)
	src := netip.MustParseAddrPort("203.0.113.5:40000")
	for _, typ := range []stun.MessageType{
		stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.NewType(stun.MethodBinding, stun.ClassIndication),
		stun.BindingSuccess, // never answer an answer
		stun.BindingError,
	} {
		req := stun.MustBuild(stun.TransactionID, typ).Raw
		if out := h.handle(req, src); len(out) != 0 {
			t.Errorf("%v answered", typ)
		}
	}
	if got := h.metric(dropped(relay.DropNotSTUN)); got != 4 {
		t.Errorf("stun_other drops %v, want 4", got)
	}
	// A STUN-looking datagram that does not decode (wrong magic cookie,
	// attribute past the end) is malformed.
	bad := stunBinding(t)
	bad[4] ^= 0xff
	truncated := stunBinding(t, stun.NewSoftware("x"))
	truncated = truncated[:len(truncated)-4]
	for _, b := range [][]byte{bad, truncated} {
		if out := h.handle(b, src); len(out) != 0 {
			t.Errorf("malformed STUN answered")
		}
	}
	if got := h.metric(dropped(relay.DropMalformed)); got != 2 {
		t.Errorf("malformed drops %v, want 2", got)
	}
}

func TestSTUNSourceRateLimit(t *testing.T) {
	h := newHarness(t, nil) // default: 50/s, burst 100, per source IP
	const flood = 1000
	answered := 0
	for i := range flood {
		src := netip.MustParseAddrPort(fmt.Sprintf("203.0.113.5:%d", 1000+i)) // ports do not help
		answered += len(h.handle(stunBinding(t), src))
	}
	if answered == 0 || answered > 100 {
		t.Errorf("answered %d of %d requests from one IP, want 1..100", answered, flood)
	}
	// Another IP is answered meanwhile.
	other := netip.MustParseAddrPort("203.0.113.6:1000")
	if out := h.handle(stunBinding(t), other); len(out) != 1 {
		t.Errorf("another IP: %d answers, want 1", len(out))
	}
	text := h.scrape()
	if got := metric(t, text, dropped(relay.DropSourceLimited)); got != float64(flood-answered) {
		t.Errorf("source_limited drops %v, want %d", got, flood-answered)
	}
	if got := metric(t, text, "natchat_rendezvous_stun_responses_total"); got != float64(answered+1) {
		t.Errorf("stun responses %v, want %d", got, answered+1)
	}

	// One second later the flooding IP has a second's worth again, no more.
	h.clock.Step(time.Second)
	again := 0
	for range flood {
		again += len(h.handle(stunBinding(t), netip.MustParseAddrPort("203.0.113.5:1")))
	}
	if again == 0 || again > 50 {
		t.Errorf("after 1 s answered %d, want 1..50", again)
	}

	// Hellos share the budget: a Hello flood is bounded too.
	h.clock.Step(time.Minute)
	cookies := 0
	for range flood {
		cookies += len(h.handle(helloBytes(), netip.MustParseAddrPort("203.0.113.7:1")))
	}
	if cookies == 0 || cookies > 100 {
		t.Errorf("answered %d of %d hellos, want 1..100", cookies, flood)
	}
}

func TestSTUNUnlimited(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.SourceRate = -1 })
	src := netip.MustParseAddrPort("203.0.113.5:40000")
	for i := range 500 {
		if out := h.handle(stunBinding(t), src); len(out) != 1 {
			t.Fatalf("request %d not answered with SourceRate -1", i)
		}
	}
}

func TestErrorSourceRateLimit(t *testing.T) {
	h := newHarness(t, nil)
	req := wire.Marshal(&wire.Heartbeat{Session: wire.SessionID{7}})
	const flood = 1000
	errs := 0
	for i := range flood {
		errs += len(h.handle(req, netip.MustParseAddrPort(fmt.Sprintf("203.0.113.5:%d", 1000+i))))
	}
	if errs == 0 || errs > 100 {
		t.Errorf("answered %d of %d unknown-session heartbeats from one IP, want 1..100", errs, flood)
	}
	text := h.scrape()
	if got := metric(t, text, dropped(relay.DropNotRegistered)); got != flood {
		t.Errorf("not_registered drops %v, want %d", got, flood)
	}
	if got := metric(t, text, dropped(relay.DropSourceLimited)); got != float64(flood-errs) {
		t.Errorf("source_limited drops %v, want %d", got, flood-errs)
	}
}
