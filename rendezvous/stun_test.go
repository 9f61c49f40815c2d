package rendezvous_test

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
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
		{"198.51.100.2:2", "", []stun.Setter{stun.Fingerprint}}, // what rvclient sends
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
	// Other networks (limits are per /24) are answered meanwhile, but
	// for one whose bucket collides with the flooded one's (1 in 4096,
	// sourcelimit.go): of 8, two refused would be a bug.
	refused := 0
	for i := range 8 {
		other := netip.MustParseAddrPort(fmt.Sprintf("198.51.%d.6:1000", 100+i))
		if out := h.handle(stunBinding(t), other); len(out) != 1 {
			refused++
		}
	}
	if refused > 1 {
		t.Errorf("%d of 8 other networks were not answered while one network was limited", refused)
	}
	text := h.scrape()
	if got := metric(t, text, dropped(relay.DropSourceLimited)); got != float64(flood-answered+refused) {
		t.Errorf("source_limited drops %v, want %d", got, flood-answered+refused)
	}
	if got := metric(t, text, "natchat_rendezvous_stun_responses_total"); got != float64(answered+8-refused) {
		t.Errorf("stun responses %v, want %d", got, answered+8-refused)
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
	// A sealed datagram for a session the server never issued.
	req := append(wire.AppendSealedHeader(nil, wire.SessionID{7}, 1), make([]byte, 48)...)
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

// rawAttr is a Setter that adds any attribute, known to pion or not.
type rawAttr struct {
	typ stun.AttrType
	v   []byte
}

func (a rawAttr) AddTo(m *stun.Message) error {
	m.Add(a.typ, a.v)
	return nil
}

// checkUnknownAttribute decodes resp and checks it is the 420 answer to req
// listing want in UNKNOWN-ATTRIBUTES.
func checkUnknownAttribute(t *testing.T, req, resp []byte, want []stun.AttrType) {
	t.Helper()
	q := &stun.Message{Raw: req}
	if err := q.Decode(); err != nil {
		t.Fatal(err)
	}
	m := &stun.Message{Raw: resp}
	if err := m.Decode(); err != nil {
		t.Fatalf("response does not decode: %v", err)
	}
	if m.Type != stun.BindingError {
		t.Fatalf("response type %v, want binding error", m.Type)
	}
	if m.TransactionID != q.TransactionID {
		t.Errorf("transaction ID %x, want %x", m.TransactionID, q.TransactionID)
	}
	var ec stun.ErrorCodeAttribute
	if err := ec.GetFrom(m); err != nil {
		t.Fatalf("ERROR-CODE: %v", err)
	}
	if ec.Code != stun.CodeUnknownAttribute {
		t.Errorf("error code %d %q, want 420", ec.Code, ec.Reason)
	}
	// RFC 8489 §14.9: a list of 16-bit types (pion's UnknownAttributes
	// decoder expects 32 bits per type, so it is read here by hand).
	v, err := m.Get(stun.AttrUnknownAttributes)
	if err != nil {
		t.Fatalf("UNKNOWN-ATTRIBUTES: %v", err)
	}
	if len(v)%2 != 0 {
		t.Fatalf("UNKNOWN-ATTRIBUTES of %d bytes", len(v))
	}
	var got []stun.AttrType
	for i := 0; i < len(v); i += 2 {
		got = append(got, stun.AttrType(binary.BigEndian.Uint16(v[i:])))
	}
	if !slices.Equal(got, want) {
		t.Errorf("UNKNOWN-ATTRIBUTES %v, want %v", got, want)
	}
	if err := stun.Fingerprint.Check(m); err != nil {
		t.Errorf("FINGERPRINT: %v", err)
	}
	if _, err := m.Get(stun.AttrXORMappedAddress); err == nil {
		t.Errorf("a 420 carries XOR-MAPPED-ADDRESS")
	}
}

func TestSTUNUnknownAttribute(t *testing.T) {
	four := []byte{1, 2, 3, 4}
	for _, tc := range []struct {
		name  string
		extra []stun.Setter
		want  []stun.AttrType
	}{
		{"one unassigned", []stun.Setter{rawAttr{0x7abc, four}}, []stun.AttrType{0x7abc}},
		{"with software and fingerprint",
			[]stun.Setter{stun.NewSoftware("client"), rawAttr{0x0040, nil}, rawAttr{0x8fff, four}, stun.Fingerprint},
			[]stun.AttrType{0x0040}},
		{"listed once", []stun.Setter{rawAttr{0x7abc, four}, rawAttr{0x0041, nil}, rawAttr{0x7abc, nil}},
			[]stun.AttrType{0x7abc, 0x0041}},
		// An ICE connectivity check sent to the rendezvous: it runs no
		// short-term credentials and is no ICE agent.
		{"ICE check", []stun.Setter{
			stun.NewUsername("abcd:efgh"), rawAttr{stun.AttrICEControlling, make([]byte, 8)},
			rawAttr{stun.AttrPriority, four}, rawAttr{stun.AttrUseCandidate, nil},
			stun.NewShortTermIntegrity("password"), stun.Fingerprint,
		}, []stun.AttrType{stun.AttrUsername, stun.AttrPriority, stun.AttrUseCandidate, stun.AttrMessageIntegrity}},
		// RFC 5780 NAT behaviour discovery: the server cannot change its
		// address and will not pad or redirect, and says so.
		{"RFC 5780", []stun.Setter{rawAttr{stun.AttrChangeRequest, []byte{0, 0, 0, 6}}, rawAttr{stun.AttrResponsePort, []byte{0x12, 0x34, 0, 0}}, rawAttr{stun.AttrPadding, make([]byte, 500)}},
			[]stun.AttrType{stun.AttrChangeRequest, stun.AttrResponsePort, stun.AttrPadding}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			src := netip.MustParseAddrPort("203.0.113.5:40000")
			req := stunBinding(t, tc.extra...)
			out := h.handle(req, src)
			if len(out) != 1 || out[0].to != src {
				t.Fatalf("got %d datagrams, want one to %v", len(out), src)
			}
			checkUnknownAttribute(t, req, out[0].b, tc.want)
		})
	}
}

// TestSTUNOptionalIgnored: unknown comprehension-optional attributes are
// ignored (RFC 8489 §6.3.1), as are ICE's optional ones.
func TestSTUNOptionalIgnored(t *testing.T) {
	h := newHarness(t, nil)
	src := netip.MustParseAddrPort("203.0.113.5:40000")
	req := stunBinding(t,
		rawAttr{0x8fff, []byte{1, 2, 3, 4}}, rawAttr{0xc057, []byte{0, 1, 0, 10}}, // GOOG-NETWORK-INFO
		rawAttr{stun.AttrICEControlled, make([]byte, 8)}, rawAttr{0x8000, nil},
		stun.NewSoftware("client"), stun.Fingerprint)
	out := h.handle(req, src)
	if len(out) != 1 {
		t.Fatalf("got %d datagrams, want one", len(out))
	}
	checkBindingSuccess(t, req, out[0].b, src, "natchat-rendezvous")
}

// TestSTUNUnknownAttributeSize: the 420 lists at most 8 types and is never
// larger than a success answer to an IPv6 source (76 bytes), whatever the
// request; its requests cost the same per-source budget as any other.
func TestSTUNUnknownAttributeSize(t *testing.T) {
	h := newHarness(t, nil)
	src := netip.MustParseAddrPort("[2001:db8::5]:40000")
	ok := h.handle(stunBinding(t), src)
	if len(ok) != 1 {
		t.Fatalf("plain request: %d datagrams, want 1", len(ok))
	}
	bound := len(ok[0].b) // 76 with the default SOFTWARE
	for _, n := range []int{1, 2, 3, 7, 8, 9, 40, 200} {
		h.clock.Step(time.Minute) // a full budget each time
		var extra []stun.Setter
		var want []stun.AttrType
		for i := range n {
			typ := stun.AttrType(0x7f00 + i)
			extra = append(extra, rawAttr{typ, nil})
			if i < 8 {
				want = append(want, typ)
			}
		}
		req := stunBinding(t, extra...)
		out := h.handle(req, src)
		if len(out) != 1 {
			t.Fatalf("%d unknown: %d datagrams, want 1", n, len(out))
		}
		checkUnknownAttribute(t, req, out[0].b, want)
		if len(out[0].b) > bound {
			t.Errorf("%d unknown: 420 of %d bytes to a %d-byte request, want ≤ %d (a success answer)", n, len(out[0].b), len(req), bound)
		}
	}

	// A flood of them from one IP is bounded like any unproven reply.
	h.clock.Step(time.Minute)
	limited := h.metric(dropped(relay.DropSourceLimited))
	const flood = 1000
	answered := 0
	for i := range flood {
		from := netip.MustParseAddrPort(fmt.Sprintf("[2001:db8::5]:%d", 1000+i))
		answered += len(h.handle(stunBinding(t, rawAttr{0x7abc, nil}), from))
	}
	if answered == 0 || answered > 100 {
		t.Errorf("answered %d of %d from one IP, want 1..100", answered, flood)
	}
	if got := h.metric(dropped(relay.DropSourceLimited)) - limited; got != float64(flood-answered) {
		t.Errorf("source_limited drops %v, want %d", got, flood-answered)
	}
}
