package rendezvous_test

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"natchat/rendezvous"
	"natchat/wire"
)

// packet is one datagram the server wrote.
type packet struct {
	to netip.AddrPort
	b  []byte
}

// fakeConn is an in-memory net.PacketConn that records WriteTo calls.
// ReadFrom blocks until Close and then returns net.ErrClosed.
type fakeConn struct {
	discard atomic.Bool // benchmarks: count nothing, keep nothing
	mu      sync.Mutex
	sent    []packet
	closed  chan struct{}
	once    sync.Once
}

var _ net.PacketConn = (*fakeConn)(nil)

func newFakeConn() *fakeConn { return &fakeConn{closed: make(chan struct{})} }

func (c *fakeConn) ReadFrom([]byte) (int, net.Addr, error) {
	<-c.closed
	return 0, nil, net.ErrClosed
}

func (c *fakeConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		panic("fakeConn: WriteTo with a " + reflect.TypeOf(addr).String())
	}
	if c.discard.Load() {
		return len(b), nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent = append(c.sent, packet{to: ua.AddrPort(), b: slices.Clone(b)})
	return len(b), nil
}

// take returns and forgets the datagrams written so far.
func (c *fakeConn) take() []packet {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.sent
	c.sent = nil
	return p
}

func (c *fakeConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}
func (c *fakeConn) LocalAddr() net.Addr              { return &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 3478} }
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }

// clock is a steppable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

// t0 is a whole second, so cookie ages (whole seconds) are exact.
var t0 = time.Unix(1_700_000_000, 0)

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Step(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

const testExpiry = 30 * time.Second

// harness is a Server on a fake socket and a stepped clock.
type harness struct {
	t     testing.TB
	s     *rendezvous.Server
	conn  *fakeConn
	clock *clock
	store *rendezvous.Store
	dir   string
}

// newHarness opens a Server in a fresh directory. edit, if not nil, may
// change the options before New.
func newHarness(t testing.TB, edit func(*rendezvous.Options)) *harness {
	t.Helper()
	return newHarnessIn(t, t.TempDir(), edit)
}

func newHarnessIn(t testing.TB, dir string, edit func(*rendezvous.Options)) *harness {
	t.Helper()
	st, err := rendezvous.OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := &harness{t: t, conn: newFakeConn(), clock: &clock{now: t0}, store: st, dir: dir}
	opts := rendezvous.Options{
		Conn: h.conn, Store: st, Now: h.clock.Now, DefaultRoom: "#lobby", Expiry: testExpiry,
	}
	if edit != nil {
		edit(&opts)
	}
	h.s, err = rendezvous.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// handle feeds one datagram and returns what the server wrote in answer.
func (h *harness) handle(b []byte, src netip.AddrPort) []packet {
	h.conn.take()
	h.s.Handle(b, src)
	return h.conn.take()
}

func (h *harness) send(m wire.Message, src netip.AddrPort) []packet {
	return h.handle(wire.Marshal(m), src)
}

// node is a test client.
type node struct {
	name    string
	key     wire.Key
	priv    ed25519.PrivateKey
	addr    netip.AddrPort
	session wire.SessionID
	reg     []byte // the datagram of the accepted registration
}

func newNode(t testing.TB, name, addr string) *node {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &node{name: name, key: wire.Key(pub), priv: priv, addr: netip.MustParseAddrPort(addr)}
}

// signedRegister returns a Register for n with cookie c, signed by n.
func (n *node) signedRegister(c wire.Cookie, name string) *wire.Register {
	m := &wire.Register{Cookie: c, Key: n.key, Name: name}
	copy(m.Sig[:], ed25519.Sign(n.priv, wire.RegisterSigned(c, n.key, name)))
	return m
}

// cookie says Hello from src and returns the cookie.
func (h *harness) cookie(src netip.AddrPort) wire.Cookie {
	h.t.Helper()
	hello := wire.Marshal(&wire.Hello{Nonce: 7})
	out := h.handle(hello, src)
	cr := only[*wire.CookieReply](h.t, out, src)
	if cr.Nonce != 7 {
		h.t.Fatalf("cookie nonce %d, want 7", cr.Nonce)
	}
	return cr.Cookie
}

// register runs Hello→Cookie→Register→Registered for n and returns the
// Registered reply, the snapshot parts and everything the server wrote in
// answer to the Register.
func (h *harness) register(n *node) (*wire.Registered, []*wire.Peers, []packet) {
	h.t.Helper()
	c := h.cookie(n.addr)
	n.reg = wire.Marshal(n.signedRegister(c, n.name))
	out := h.handle(n.reg, n.addr)
	msgs := msgsTo(h.t, out, n.addr)
	if len(msgs) < 2 {
		h.t.Fatalf("register %s: got %d messages %v, want Registered and Peers", n.name, len(msgs), msgs)
	}
	reg, ok := msgs[0].(*wire.Registered)
	if !ok {
		h.t.Fatalf("register %s: first reply is %T %+v, want Registered", n.name, msgs[0], msgs[0])
	}
	n.session = reg.Session
	var parts []*wire.Peers
	for _, m := range msgs[1:] {
		p, ok := m.(*wire.Peers)
		if !ok {
			h.t.Fatalf("register %s: reply %T after Registered, want Peers", n.name, m)
		}
		parts = append(parts, p)
	}
	return reg, parts, out
}

// mustRegister registers every node and discards the replies.
func (h *harness) mustRegister(nodes ...*node) {
	h.t.Helper()
	for _, n := range nodes {
		h.register(n)
	}
}

// heartbeat sends a Heartbeat for n from src and returns the ack.
func (h *harness) heartbeat(n *node, src netip.AddrPort) *wire.HeartbeatAck {
	h.t.Helper()
	out := h.send(&wire.Heartbeat{Session: n.session}, src)
	return only[*wire.HeartbeatAck](h.t, out, src)
}

func parse(t testing.TB, b []byte) wire.Message {
	t.Helper()
	m, err := wire.Parse(b)
	if err != nil {
		t.Fatalf("server sent an unparsable datagram % x: %v", b, err)
	}
	return m
}

// msgsTo parses the datagrams sent to dst, in order.
func msgsTo(t testing.TB, out []packet, dst netip.AddrPort) []wire.Message {
	t.Helper()
	var ms []wire.Message
	for _, p := range out {
		if p.to == dst {
			ms = append(ms, parse(t, p.b))
		}
	}
	return ms
}

// only asserts that out is exactly one datagram, to dst, of type T.
func only[T wire.Message](t testing.TB, out []packet, dst netip.AddrPort) T {
	t.Helper()
	if len(out) != 1 {
		t.Fatalf("got %d datagrams %s, want one %T to %v", len(out), describe(out), *new(T), dst)
	}
	if out[0].to != dst {
		t.Fatalf("datagram went to %v, want %v", out[0].to, dst)
	}
	m, ok := parse(t, out[0].b).(T)
	if !ok {
		t.Fatalf("got %s, want %T", describe(out), *new(T))
	}
	return m
}

// onlyError asserts that out is exactly one Error to dst with code, no
// larger than the request of reqLen bytes.
func onlyError(t testing.TB, out []packet, dst netip.AddrPort, code wire.Code, reqLen int) *wire.Error {
	t.Helper()
	e := only[*wire.Error](t, out, dst)
	if e.Code != code {
		t.Fatalf("error code %v (%q), want %v", e.Code, e.Message, code)
	}
	if len(out[0].b) > reqLen {
		t.Fatalf("error reply of %d bytes to a %d-byte request: amplification", len(out[0].b), reqLen)
	}
	return e
}

func describe(out []packet) string {
	var sb strings.Builder
	sb.WriteString("[")
	for i, p := range out {
		if i > 0 {
			sb.WriteString(", ")
		}
		m, err := wire.Parse(p.b)
		if err != nil {
			sb.WriteString(p.to.String() + ": " + strconv.Itoa(len(p.b)) + " unparsable bytes")
			continue
		}
		sb.WriteString(p.to.String() + ": " + m.Type().String())
		if e, ok := m.(*wire.Error); ok {
			sb.WriteString("(" + e.Code.String() + ")")
		}
	}
	sb.WriteString("]")
	return sb.String()
}

// scrape returns the metrics exposition text.
func (h *harness) scrape() string {
	h.t.Helper()
	srv := httptest.NewServer(h.s.MetricsHandler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return string(b)
}

// metric returns the value of series (name plus labels, as exposed) from
// the exposition text; it fails the test if the series is missing.
func metric(t testing.TB, text, series string) float64 {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), series+" ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("series %s: %v", series, err)
		}
		return f
	}
	t.Fatalf("series %s missing from metrics:\n%s", series, text)
	return 0
}

func (h *harness) metric(series string) float64 {
	h.t.Helper()
	return metric(h.t, h.scrape(), series)
}

func dropped(reason string) string {
	return `natchat_rendezvous_dropped_packets_total{reason="` + reason + `"}`
}

// checkGoroutines records the goroutines running now and returns a check
// that fails t if others are still running after a deadline.
func checkGoroutines(t *testing.T) func() {
	t.Helper()
	before := make(map[string]bool)
	for _, g := range goroutines() {
		before[goroutineID(g)] = true
	}
	return func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			var leaked []string
			for _, g := range goroutines() {
				if !before[goroutineID(g)] {
					leaked = append(leaked, g)
				}
			}
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d goroutines leaked:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
				return
			}
			time.Sleep(5 * time.Millisecond) // polling with a deadline, not synchronisation
		}
	}
}

func goroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Split(strings.TrimSpace(string(buf[:n])), "\n\n")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// goroutineID returns "goroutine N" from a stack dump.
func goroutineID(stack string) string {
	id, _, _ := strings.Cut(stack, " [")
	return id
}

func helloBytes() []byte { return wire.Marshal(&wire.Hello{Nonce: 1}) }

// droppedTotal sums the dropped-packets counter over every reason.
func droppedTotal(t testing.TB, text string) float64 {
	t.Helper()
	var sum float64
	for line := range strings.Lines(text) {
		rest, ok := strings.CutPrefix(line, "natchat_rendezvous_dropped_packets_total{")
		if !ok {
			continue
		}
		_, v, _ := strings.Cut(rest, "} ")
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		sum += f
	}
	return sum
}

// datagram is a datagram and the source it comes from.
type datagram struct {
	b   []byte
	src netip.AddrPort
}

// corpus returns one valid datagram of every message type, those that carry
// a session with a's session, sent from a's address. c gets a real cookie
// and a signed Register (c is not registered by it).
func corpus(h *harness, a, b, c *node) []datagram {
	h.t.Helper()
	stranger := netip.MustParseAddrPort("192.0.2.77:7777")
	sig := wire.AppendPeerSignal(nil, &wire.PeerSignal{Kind: wire.SignalHello, Seq: 1})
	var ck wire.Cookie
	ck[0] = 0x42
	from := func(src netip.AddrPort, ms ...wire.Message) []datagram {
		var ds []datagram
		for _, m := range ms {
			ds = append(ds, datagram{wire.Marshal(m), src})
		}
		return ds
	}
	ds := from(stranger, &wire.Hello{Nonce: 9})
	ds = append(ds, from(c.addr, c.signedRegister(h.cookie(c.addr), c.name))...)
	ds = append(ds, from(a.addr,
		&wire.Heartbeat{Session: a.session},
		&wire.Leave{Session: a.session},
		&wire.PeersRequest{Session: a.session},
		&wire.Lookup{Session: a.session, TxID: 1, Name: b.name},
		&wire.Lookup{Session: a.session, TxID: 2, Key: b.key},
		&wire.Relay{Session: a.session, Dst: b.key, Payload: []byte("relayed payload")},
		&wire.Signal{Session: a.session, Dst: b.key, Body: sig},
	)...)
	ds = append(ds, from(stranger, rToN(a, b)...)...)
	return ds
}

// rToN returns one message of every type the rendezvous sends.
func rToN(a, b *node) []wire.Message {
	return []wire.Message{
		&wire.CookieReply{Nonce: 1, Cookie: wire.Cookie{1}},
		&wire.Registered{Session: a.session, Observed: a.addr, HeartbeatMS: 1, ExpiryMS: 2},
		&wire.HeartbeatAck{Observed: a.addr, PresenceSeq: 3},
		&wire.Presence{Seq: 1, Kind: wire.PresenceLeft, Reason: wire.ReasonQuit, Key: b.key, Name: b.name},
		&wire.Peers{Seq: 1, Parts: 1, Peers: []wire.Peer{{Key: b.key, Name: b.name}}},
		&wire.LookupReply{TxID: 1, Status: wire.LookupOnline, Key: b.key, Name: b.name},
		&wire.Relayed{Src: b.key, Payload: []byte("x")},
		&wire.Signaled{Src: b.key, Name: b.name, Body: []byte("y")},
		&wire.Error{Code: wire.CodeNotRegistered, Request: wire.TypeHeartbeat, Message: "register again"},
	}
}
