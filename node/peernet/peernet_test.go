package peernet

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"natchat/node/link"
	"natchat/wire"
)

// fakeSock is the node's socket: writes are recorded, reads never come
// (tests call demux directly).
type fakeSock struct {
	mu     sync.Mutex
	writes []sent
	closed chan struct{}
}

type sent struct {
	to netip.AddrPort
	b  []byte
}

func newSock() *fakeSock { return &fakeSock{closed: make(chan struct{})} }

func (s *fakeSock) ReadFrom([]byte) (int, net.Addr, error) {
	<-s.closed
	return 0, nil, net.ErrClosed
}
func (s *fakeSock) WriteTo(b []byte, a net.Addr) (int, error) {
	s.mu.Lock()
	s.writes = append(s.writes, sent{to: a.(*net.UDPAddr).AddrPort(), b: bytes.Clone(b)})
	s.mu.Unlock()
	return len(b), nil
}
func (s *fakeSock) Close() error                     { return nil }
func (s *fakeSock) LocalAddr() net.Addr              { return &net.UDPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 1} }
func (s *fakeSock) SetDeadline(time.Time) error      { return nil }
func (s *fakeSock) SetReadDeadline(time.Time) error  { return nil }
func (s *fakeSock) SetWriteDeadline(time.Time) error { return nil }

func (s *fakeSock) take() []sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.writes
	s.writes = nil
	return w
}

// fakeRV records what the peer network hands the rendezvous client.
type fakeRV struct {
	mu      sync.Mutex
	handled [][]byte
	stun    [][]byte
	stunSrc []netip.AddrPort
	mine    bool // HandleSTUN's answer
	session *wire.SessionID
}

func (r *fakeRV) Handle(b []byte) {
	r.mu.Lock()
	r.handled = append(r.handled, bytes.Clone(b))
	r.mu.Unlock()
}
func (r *fakeRV) HandleSTUN(b []byte, src netip.AddrPort) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stun = append(r.stun, bytes.Clone(b))
	r.stunSrc = append(r.stunSrc, src)
	return r.mine
}
func (r *fakeRV) RelaySession() *wire.SessionID         { return r.session }
func (r *fakeRV) Signal(dst wire.Key, body []byte) bool { return true }

var (
	rvAddr = netip.MustParseAddrPort("192.0.2.1:3478")
	peerA  = wire.Key{0xaa}
	stunB  = append([]byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42}, make([]byte, 12)...)
)

func newNet(t testing.TB, rv *fakeRV) (*Net, *fakeSock) {
	t.Helper()
	sock := newSock()
	p, err := New(Options{Conn: sock, Rendezvous: netip.MustParseAddrPort("[::ffff:192.0.2.1]:3478"), Local: wire.Key{1}, RV: rv, NoDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.link.Close() })
	return p, sock
}

func relayed(src wire.Key, payload []byte) []byte {
	return append(wire.AppendRelayedHeader(nil, src), payload...)
}

// read reads one packet from the link, failing after a second.
func read(t *testing.T, l *link.Conn) (wire.Key, []byte) {
	t.Helper()
	l.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 2048)
	n, from, err := l.ReadFrom(buf)
	if err != nil {
		t.Fatalf("link read: %v", err)
	}
	return from.(link.Addr).Key, buf[:n]
}

func TestDemux(t *testing.T) {
	rv := &fakeRV{}
	p, _ := newNet(t, rv)
	quic := append([]byte{0x45}, bytes.Repeat([]byte{7}, 1199)...)

	// A relayed packet from the rendezvous reaches the link as the peer's.
	p.demux(relayed(peerA, quic), rvAddr)
	if k, b := read(t, p.link); k != peerA || !bytes.Equal(b, quic) {
		t.Fatalf("relayed: from %s, %d bytes", k.Short(), len(b))
	}
	// The same from anyone else is not believed.
	p.demux(relayed(peerA, quic), netip.MustParseAddrPort("198.51.100.9:3478"))
	p.link.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, _, err := p.link.ReadFrom(make([]byte, 2048)); err == nil {
		t.Fatal("a relayed packet from another source reached the link")
	}
	// Other rendezvous messages go to the client; so does a short Relayed
	// (the client's parser refuses it) and another version's.
	hb := wire.Marshal(&wire.HeartbeatAck{})
	short := relayed(peerA, nil)[:20]
	v2 := relayed(peerA, quic)
	v2[1] = wire.Version + 1
	for _, b := range [][]byte{hb, short, v2} {
		p.demux(b, rvAddr)
	}
	if len(rv.handled) != 3 || !bytes.Equal(rv.handled[0], hb) {
		t.Fatalf("client got %d datagrams", len(rv.handled))
	}
	// Not from the rendezvous: nothing for the client.
	p.demux(hb, netip.MustParseAddrPort("192.0.2.1:3479"))
	if len(rv.handled) != 3 {
		t.Fatal("a datagram from another port reached the rendezvous client")
	}
	// STUN from the rendezvous is offered to the client first.
	p.demux(stunB, rvAddr)
	if len(rv.stun) != 1 {
		t.Fatalf("client saw %d STUN messages", len(rv.stun))
	}
	// So is STUN from another port of the rendezvous's IP (its second
	// STUN address), with its source; from another IP it is not.
	alt := netip.MustParseAddrPort("192.0.2.1:3479")
	p.demux(stunB, alt)
	p.demux(stunB, netip.MustParseAddrPort("198.51.100.9:3479"))
	if len(rv.stun) != 2 || rv.stunSrc[0] != rvAddr || rv.stunSrc[1] != alt {
		t.Fatalf("client saw STUN from %v", rv.stunSrc)
	}
}

func TestDirectFastPath(t *testing.T) {
	p, _ := newNet(t, &fakeRV{})
	remote := netip.MustParseAddrPort("203.0.113.7:5000")
	d := &direct{p: p, key: peerA}
	quic := []byte{0xc3, 1, 2, 3}
	p.setRemote(d, remote, true)
	p.demux(quic, remote)
	if k, b := read(t, p.link); k != peerA || !bytes.Equal(b, quic) {
		t.Fatalf("direct: from %s: %x", k.Short(), b)
	}
	// STUN from the same remote is ICE's, not the link's.
	p.demux(stunB, remote)
	p.link.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, _, err := p.link.ReadFrom(make([]byte, 2048)); err == nil {
		t.Fatal("STUN reached the link")
	}
	// Once the path is down (or another direct owns the address), no more.
	other := &direct{p: p, key: wire.Key{0xbb}}
	p.setRemote(other, netip.AddrPort{}, false) // not d's: d's mapping stays
	if _, ok := (*p.remotes.Load())[remote]; !ok {
		t.Fatal("another direct's removal dropped d's remote")
	}
	p.setRemote(d, netip.AddrPort{}, false)
	p.demux(quic, remote)
	p.link.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, _, err := p.link.ReadFrom(make([]byte, 2048)); err == nil {
		t.Fatal("a packet from a remote no longer direct reached the link")
	}
}

func TestSendRelay(t *testing.T) {
	rv := &fakeRV{}
	p, sock := newNet(t, rv)
	payload := []byte("quic bytes")
	p.sendRelay(peerA, payload)
	if w := sock.take(); len(w) != 0 {
		t.Fatalf("sent %d datagrams while not registered", len(w))
	}
	rv.session = &wire.SessionID{1, 2, 3}
	p.sendRelay(peerA, payload)
	w := sock.take()
	if len(w) != 1 || w[0].to != rvAddr {
		t.Fatalf("writes %+v", w)
	}
	m, err := wire.Parse(w[0].b)
	r, ok := m.(*wire.Relay)
	if err != nil || !ok || r.Session != *rv.session || r.Dst != peerA || !bytes.Equal(r.Payload, payload) {
		t.Fatalf("relay datagram %x: %#v, %v", w[0].b, m, err)
	}
}

// The hot paths: a relayed or direct datagram, from the socket's buffer to
// QUIC's, with no allocation.

func benchDemux(b *testing.B, pkt []byte, from netip.AddrPort, setup func(*Net)) {
	rv := &fakeRV{}
	p, _ := newNet(b, rv)
	p.link.Open(peerA)
	if setup != nil {
		setup(p)
	}
	buf := make([]byte, 2048)
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		p.demux(pkt, from)
		if _, _, err := p.link.ReadFrom(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRelayedToQUIC(b *testing.B) {
	benchDemux(b, relayed(peerA, make([]byte, 1200)), rvAddr, nil)
}

func BenchmarkDirectToQUIC(b *testing.B) {
	remote := netip.MustParseAddrPort("203.0.113.7:5000")
	pkt := append([]byte{0x45}, make([]byte, 1199)...)
	benchDemux(b, pkt, remote, func(p *Net) { p.setRemote(&direct{p: p, key: peerA}, remote, true) })
}

func BenchmarkSendRelay(b *testing.B) {
	rv := &fakeRV{session: &wire.SessionID{1}}
	sock := &discardSock{}
	p, err := New(Options{Conn: sock, Rendezvous: rvAddr, Local: wire.Key{1}, RV: rv, NoDirect: true})
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 1200)
	b.ReportAllocs()
	for b.Loop() {
		p.sendRelay(peerA, payload)
	}
}

type discardSock struct{ fakeSock }

func (*discardSock) WriteTo(b []byte, _ net.Addr) (int, error) { return len(b), nil }
