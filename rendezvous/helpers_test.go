package rendezvous_test

import (
	"bufio"
	"errors"
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

	"natchat/ctrl"
	"natchat/internal/rvtest"
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
	ap := ua.AddrPort()
	c.sent = append(c.sent, packet{to: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), b: slices.Clone(b)})
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

// harness is a Server on a fake socket and a stepped clock, run without
// Run: a test feeds datagrams with Handle, runs the queued registrations
// with DrainRegistrations and sends the gathered presence with
// FlushPresence, and sees every datagram the server wrote.
type harness struct {
	t     testing.TB
	s     *rendezvous.Server
	conn  *fakeConn
	clock *clock
	store *rendezvous.Store
	dir   string
	key   ctrl.ServerKey
}

// newHarness opens a Server in a fresh directory. edit, if not nil, may
// change the options before New.
func newHarness(t testing.TB, edit func(*rendezvous.Options)) *harness {
	t.Helper()
	return newHarnessIn(t, t.TempDir(), edit)
}

// newHarnessIn opens a Server whose key and name bindings are kept in dir,
// so a second harness on the same dir is the same rendezvous restarted.
func newHarnessIn(t testing.TB, dir string, edit func(*rendezvous.Options)) *harness {
	t.Helper()
	h := &harness{t: t, conn: newFakeConn(), clock: &clock{now: t0}, dir: dir}
	key, _, err := rendezvous.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	h.key = key
	st, err := rendezvous.OpenStoreWith(dir, rendezvous.StoreOptions{Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	h.store = st
	t.Cleanup(func() { st.Close() })
	opts := rendezvous.Options{
		Conn: h.conn, Store: st, Key: key, Now: h.clock.Now, DefaultRoom: "#lobby", Expiry: testExpiry,
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

// handle feeds one datagram, runs the registration it queued if any,
// waits for the room writes it queued (their replies are sent when they
// are durable), and returns what the server wrote meanwhile.
func (h *harness) handle(b []byte, src netip.AddrPort) []packet {
	h.conn.take()
	h.s.Handle(b, src)
	h.s.DrainRegistrations()
	h.s.WaitRooms()
	return h.conn.take()
}

// raw feeds one datagram without running registrations.
func (h *harness) raw(b []byte, src netip.AddrPort) []packet {
	h.conn.take()
	h.s.Handle(b, src)
	return h.conn.take()
}

// sealed sends m sealed with n's session from src.
func (h *harness) sealed(n *node, m wire.Message, src netip.AddrPort) []packet {
	return h.handle(n.seal(m), src)
}

// flush sends the gathered presence changes and returns what went out.
func (h *harness) flush() []packet {
	h.conn.take()
	h.s.FlushPresence()
	return h.conn.take()
}

// sweep runs the expiry sweep at the clock's time and returns what went
// out, presence flushed.
func (h *harness) sweep() []packet {
	h.conn.take()
	h.s.Sweep(h.clock.Now())
	h.s.FlushPresence()
	return h.conn.take()
}

// node is a test client: an rvtest.Node and where it sends from.
type node struct {
	rv      *rvtest.Node
	name    string
	key     wire.Key
	addr    netip.AddrPort // where it sends from, and where the rendezvous should answer
	session wire.SessionID
	hs      []byte // the Handshake datagram of its accepted registration
	tx      uint32 // the TxID of its last room request
}

func newNode(t testing.TB, name, addr string) *node {
	t.Helper()
	rv := rvtest.New(name)
	return &node{rv: rv, name: name, key: rv.Key, addr: netip.MustParseAddrPort(addr)}
}

// seal returns m sealed with n's session, padded as a node pads.
func (n *node) seal(m wire.Message) []byte { return n.rv.Seal(m) }

// sealShort returns m sealed without padding: smaller than a node sends.
func (n *node) sealShort(m wire.Message) []byte {
	return n.rv.Keys.Seal(nil, n.session, wire.AppendInner(nil, m))
}

// cookieReply says Hello from src and returns the answer.
func (h *harness) cookieReply(src netip.AddrPort) *wire.CookieReply {
	h.t.Helper()
	hello := wire.Marshal(&wire.Hello{Nonce: 7})
	out := h.handle(hello, src)
	cr := only[*wire.CookieReply](h.t, out, src)
	if cr.Nonce != 7 {
		h.t.Fatalf("cookie nonce %d, want 7", cr.Nonce)
	}
	if cr.ServerKey != h.key.Public {
		h.t.Fatalf("cookie reply carries key %x, want the server's %x", cr.ServerKey, h.key.Public)
	}
	if len(out[0].b) > len(hello) {
		h.t.Fatalf("cookie reply of %d bytes to a %d-byte hello", len(out[0].b), len(hello))
	}
	return cr
}

// cookie says Hello from src and returns the cookie.
func (h *harness) cookie(src netip.AddrPort) wire.Cookie { return h.cookieReply(src).Cookie }

// handshake returns a Handshake datagram registering n as name with a
// fresh cookie for n.addr.
func (h *harness) handshake(n *node, name string) []byte {
	h.t.Helper()
	n.rv.Server = h.key.Public
	b, err := n.rv.Handshake(h.cookie(n.addr), name)
	if err != nil {
		h.t.Fatal(err)
	}
	return b
}

// register runs Hello→Cookie→Handshake→HandshakeReply for n and returns
// the result, the snapshot parts and everything the server wrote in answer
// to the Handshake.
func (h *harness) register(n *node) (*wire.HandshakeResult, []*wire.Peers, []packet) {
	h.t.Helper()
	hs := h.handshake(n, n.name)
	out := h.handle(hs, n.addr)
	var to []packet
	for _, p := range out {
		if p.to == n.addr {
			to = append(to, p)
		}
	}
	if len(to) < 2 {
		h.t.Fatalf("register %s: got %s, want a HandshakeReply and Peers", n.name, describe(out))
	}
	res, err := n.rv.Finish(to[0].b)
	if err != nil {
		h.t.Fatalf("register %s: %v (got %s)", n.name, err, describe(out))
	}
	n.session, n.hs = res.Session, hs
	var parts []*wire.Peers
	for _, p := range to[1:] {
		m := n.open(h.t, p.b)
		ps, ok := m.(*wire.Peers)
		if !ok {
			h.t.Fatalf("register %s: %T after the reply, want Peers", n.name, m)
		}
		parts = append(parts, ps)
	}
	return res, parts, out
}

// refused registers n as name and expects a refusal in the authenticated
// reply: the only datagram, to n.addr.
func (h *harness) refused(n *node, name string) *wire.HandshakeResult {
	h.t.Helper()
	return h.refusedHS(n, h.handshake(n, name))
}

// refusedHS sends the handshake hs (made by n) and expects a refusal.
func (h *harness) refusedHS(n *node, hs []byte) *wire.HandshakeResult {
	h.t.Helper()
	out := h.handle(hs, n.addr)
	if len(out) != 1 || out[0].to != n.addr {
		h.t.Fatalf("refusal: got %s, want one HandshakeReply to %v", describe(out), n.addr)
	}
	res, err := n.rv.Finish(out[0].b)
	if !errors.Is(err, rvtest.ErrRefused) {
		h.t.Fatalf("got %v (result %+v), want a refusal", err, res)
	}
	if len(out[0].b) > len(hs) {
		h.t.Errorf("refusal of %d bytes to a %d-byte handshake", len(out[0].b), len(hs))
	}
	return res
}

// mustRegister registers every node and discards the replies and the
// presence they cause.
func (h *harness) mustRegister(nodes ...*node) {
	h.t.Helper()
	for _, n := range nodes {
		h.register(n)
	}
	h.flushInto(nodes...)
}

// flushInto flushes presence and has the nodes among ns read what went to
// them (their replay windows advance); everything else is dropped.
func (h *harness) flushInto(ns ...*node) {
	h.t.Helper()
	out := h.flush()
	for _, n := range ns {
		n.msgs(h.t, out)
	}
}

// heartbeat sends a Heartbeat for n from its address and returns the ack.
func (h *harness) heartbeat(n *node) *wire.HeartbeatAck {
	h.t.Helper()
	return onlyTo[*wire.HeartbeatAck](h.t, h.sealed(n, &wire.Heartbeat{}, n.addr), n)
}

// roam moves n to addr as a node whose NAT rebound does: a heartbeat from
// there (answered at the old address, challenged at the new one), then
// the PathResponse from there.
func (h *harness) roam(n *node, to netip.AddrPort) {
	h.t.Helper()
	h.clock.Step(time.Second) // past the challenge rate limit
	out := h.sealed(n, &wire.Heartbeat{}, to)
	ch := onlyAt[*wire.PathChallenge](h.t, out, n, to)
	if ack := onlyAt[*wire.HeartbeatAck](h.t, out, n, n.addr); ack.Observed != n.addr {
		h.t.Fatalf("ack before validation observed %v, want the old %v", ack.Observed, n.addr)
	}
	if out = h.sealed(n, &wire.PathResponse{Data: ch.Data}, to); len(out) != 0 {
		h.t.Fatalf("path response answered: %s", describe(out))
	}
	n.addr = to
}

// open reads a datagram sent to n: sealed ones are opened with n's keys.
func (n *node) open(t testing.TB, b []byte) wire.Message {
	t.Helper()
	m, err := n.rv.Open(b)
	if err != nil {
		t.Fatalf("%s cannot read a %d-byte datagram: %v", n.name, len(b), err)
	}
	return m
}

// msgs reads, in order, the datagrams in out sent to n's address.
func (n *node) msgs(t testing.TB, out []packet) []wire.Message { return n.msgsAt(t, out, n.addr) }

// msgsAt reads, in order, the datagrams in out sent to addr, as n.
func (n *node) msgsAt(t testing.TB, out []packet, addr netip.AddrPort) []wire.Message {
	t.Helper()
	var ms []wire.Message
	for _, p := range out {
		if p.to == addr {
			ms = append(ms, n.open(t, p.b))
		}
	}
	return ms
}

// onlyTo asserts that out is exactly one datagram, to n, that reads as a T.
func onlyTo[T wire.Message](t testing.TB, out []packet, n *node) T {
	t.Helper()
	if len(out) != 1 {
		t.Fatalf("got %d datagrams %s, want one %T to %s", len(out), describe(out), *new(T), n.name)
	}
	return onlyAt[T](t, out, n, n.addr)
}

// onlyAt asserts that exactly one datagram of out went to addr and that it
// reads, as n, as a T.
func onlyAt[T wire.Message](t testing.TB, out []packet, n *node, addr netip.AddrPort) T {
	t.Helper()
	ms := n.msgsAt(t, out, addr)
	if len(ms) != 1 {
		t.Fatalf("%d datagrams to %v in %s, want one %T", len(ms), addr, describe(out), *new(T))
	}
	m, ok := ms[0].(T)
	if !ok {
		t.Fatalf("%v got %s, want %T", addr, describeMsg(ms[0]), *new(T))
	}
	return m
}

// sealedError asserts that out is one sealed Error to n with code.
func sealedError(t testing.TB, out []packet, n *node, code wire.Code) *wire.Error {
	t.Helper()
	e := onlyTo[*wire.Error](t, out, n)
	if e.Code != code {
		t.Fatalf("error %v (%q), want %v", e.Code, e.Message, code)
	}
	return e
}

func parse(t testing.TB, b []byte) wire.Message {
	t.Helper()
	m, err := wire.Parse(b)
	if err != nil {
		t.Fatalf("server sent an unparsable datagram % x: %v", b, err)
	}
	return m
}

// only asserts that out is exactly one clear datagram, to dst, of type T.
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

// onlyError asserts that out is exactly one clear Error to dst with code,
// no larger than the request of reqLen bytes.
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

// bytesTo sums the bytes of the datagrams in out sent to addr.
func bytesTo(out []packet, addr netip.AddrPort) int {
	n := 0
	for _, p := range out {
		if p.to == addr {
			n += len(p.b)
		}
	}
	return n
}

func describeMsg(m wire.Message) string {
	if e, ok := m.(*wire.Error); ok {
		return "error(" + e.Code.String() + ": " + e.Message + ")"
	}
	return m.Type().String()
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
		sb.WriteString(p.to.String() + ": " + describeMsg(m) + " " + strconv.Itoa(len(p.b)) + "B")
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
	sc.Buffer(nil, 1<<20)
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
	name string
	b    []byte
	src  netip.AddrPort
}

// stranger is an address no test node uses.
var stranger = netip.MustParseAddrPort("192.0.2.77:7777")

// corpus returns one valid datagram of every message type: a Hello from a
// stranger; a Handshake registering c with a real cookie (c is not
// registered by it); every request a registered node seals, and a Relay,
// with a's session from a's address (not delivered: fresh to the server);
// and, from the stranger, every message the rendezvous sends and the inner
// messages in the clear. a's Leave is last.
func corpus(h *harness, a, b, c *node) []datagram {
	h.t.Helper()
	sig := wire.AppendPeerSignal(nil, &wire.PeerSignal{Kind: wire.SignalHello, Seq: 1})
	ds := []datagram{{"hello", wire.Marshal(&wire.Hello{Nonce: 9}), stranger}}
	ds = append(ds, datagram{"handshake", h.handshake(c, c.name), c.addr})
	for _, m := range []wire.Message{
		&wire.Heartbeat{},
		&wire.PeersRequest{},
		&wire.Lookup{TxID: 1, Name: b.name},
		&wire.Lookup{TxID: 2, Key: b.key},
		&wire.Signal{Dst: b.key, Body: sig},
		&wire.Who{TxID: 3, Room: "#lobby"},
		&wire.PathResponse{Data: [8]byte{1}},
		&wire.MailPut{TxID: 4, To: c.key, ID: wire.MsgID{1}, Part: 0, Parts: 1, Data: []byte("sealed blob")},
		&wire.MailPut{TxID: 5, To: b.key, ID: wire.MsgID{2}, Part: 1, Parts: 3, Data: make([]byte, wire.MailPartLen)},
		&wire.MailFetch{Max: 8},
		&wire.MailAck{Refs: []wire.MailRef{{Peer: b.key, ID: wire.MsgID{3}}}},
		&wire.MailReceiptAck{Refs: []wire.MailRef{{Peer: b.key, ID: wire.MsgID{4}}}},
		&wire.RoomJoin{TxID: 6, Room: "#corpus"},
		&wire.RoomList{TxID: 7},
		&wire.RoomMembers{TxID: 8, Room: "#lobby", After: b.name},
		&wire.RoomPart{TxID: 9, Room: "#corpus"},
	} {
		ds = append(ds, datagram{"sealed " + m.Type().String(), a.seal(m), a.addr})
	}
	ds = append(ds, datagram{"relay", a.rv.Relay(b.key, []byte("relayed payload")), a.addr})
	for _, m := range rToN(a, b) {
		ds = append(ds, datagram{m.Type().String(), wire.Marshal(m), stranger})
	}
	ds = append(ds, datagram{"sealed leave", a.seal(&wire.Leave{}), a.addr})
	return ds
}

// rToN returns one message of every type the rendezvous sends, and the
// inner messages a node seals, in the clear.
func rToN(a, b *node) []wire.Message {
	return []wire.Message{
		&wire.CookieReply{Nonce: 1, Cookie: wire.Cookie{1}},
		&wire.HandshakeReply{Noise: make([]byte, 80)},
		&wire.Relayed{Src: b.key, Payload: []byte("x")},
		&wire.Error{Code: wire.CodeNotRegistered, Request: wire.TypeSealed, Message: "register again"},
		&wire.Heartbeat{},
		&wire.HeartbeatAck{Observed: a.addr, PresenceSeq: 3},
		&wire.Leave{},
		&wire.Presence{Seq: 1, Changes: []wire.Change{{Kind: wire.PresenceLeft, Reason: wire.ReasonQuit, Key: b.key, Name: b.name}}},
		&wire.PeersRequest{},
		&wire.Peers{Seq: 1, Parts: 1, Peers: []wire.Peer{{Key: b.key, Name: b.name}}},
		&wire.Lookup{TxID: 1, Name: b.name},
		&wire.LookupReply{TxID: 1, Status: wire.LookupOnline, Key: b.key, Name: b.name},
		&wire.Signal{Dst: b.key, Body: []byte("y")},
		&wire.Signaled{Src: b.key, Name: b.name, Body: []byte("y")},
		&wire.PathChallenge{Data: [8]byte{2}},
		&wire.PathResponse{Data: [8]byte{2}},
		&wire.Who{TxID: 1, Room: "#lobby"},
		&wire.WhoReply{TxID: 1, Room: "#lobby", Total: 1},
		&wire.MailPut{TxID: 1, To: b.key, Parts: 1, Data: []byte("z")},
		&wire.MailPutReply{TxID: 1, Status: wire.MailStored},
		&wire.MailNotice{Count: 1, Bytes: 1},
		&wire.MailFetch{Max: 1},
		&wire.Mail{From: b.key, Count: 1, Parts: 1, Data: []byte("z")},
		&wire.MailAck{Refs: []wire.MailRef{{Peer: b.key}}},
		&wire.MailReceipt{Receipts: []wire.Receipt{{MailRef: wire.MailRef{Peer: b.key}}}},
		&wire.MailReceiptAck{Refs: []wire.MailRef{{Peer: b.key}}},
		&wire.RoomJoin{TxID: 1, Room: "#lobby"},
		&wire.RoomPart{TxID: 1, Room: "#lobby"},
		&wire.RoomReply{TxID: 1, Room: "#lobby", Version: 1, Members: 1, Online: 1},
		&wire.RoomList{TxID: 1},
		&wire.RoomListReply{TxID: 1, Rooms: []wire.RoomInfo{{Room: "#lobby", Version: 1, Members: 1}}},
		&wire.RoomMembers{TxID: 1, Room: "#lobby"},
		&wire.RoomMembersReply{TxID: 1, Room: "#lobby", Version: 1, Total: 1, Members: []wire.RoomMember{{Key: b.key, Name: b.name}}},
		&wire.RoomEvent{Room: "#lobby", Version: 2, Kind: wire.RoomJoined, Key: b.key, Name: b.name},
	}
}
