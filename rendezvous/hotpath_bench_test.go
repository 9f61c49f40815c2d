package rendezvous_test

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/pion/stun/v2"

	"natchat/internal/rvtest"
	"natchat/relay"
	"natchat/rendezvous"
	"natchat/wire"
)

// The hot path's benchmarks (rendezvous/hotpath.go): a relayed packet and
// a STUN answer, each from Handle to the datagram written, must allocate
// nothing. Run with
//
//	go test -run '^$' -bench 'RelayForward|STUNAnswer' -benchmem ./rendezvous/

// addrPortConn is a benchConn that also has *net.UDPConn's
// WriteToUDPAddrPort, through which the server then writes as it does to
// its real socket. Once setup is over it keeps only a count and the last
// datagram, in fixed memory, so that the benchmark counts the server's
// allocations alone.
type addrPortConn struct {
	*benchConn
	mu      sync.Mutex
	setup   bool // pass datagrams to benchConn (registration)
	n       int
	last    [2048]byte
	lastLen int
	lastTo  netip.AddrPort
}

func (c *addrPortConn) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.setup {
		return c.benchConn.WriteTo(b, net.UDPAddrFromAddrPort(to))
	}
	c.n++
	c.lastLen = copy(c.last[:], b)
	c.lastTo = to
	return len(b), nil
}

// written returns the datagrams written since setup and the last one.
func (c *addrPortConn) written() (n int, last []byte, to netip.AddrPort) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, bytes.Clone(c.last[:c.lastLen]), c.lastTo
}

// hotServer is benchServer on an addrPortConn, with relay and source
// budgets too large to run out during a benchmark but still metered.
func hotServer(b *testing.B) (*rendezvous.Server, *addrPortConn) {
	b.Helper()
	st, err := rendezvous.OpenStore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	conn := &addrPortConn{benchConn: newBenchConn(), setup: true}
	srv, err := rendezvous.New(rendezvous.Options{
		Conn: conn, Store: st, Key: benchKey(b), DefaultRoom: rendezvous.DefaultRoom,
		Relay:      relay.Limits{PacketsPerSec: 1 << 30, BytesPerSec: 1 << 40},
		SourceRate: 1e9,
	})
	if err != nil {
		b.Fatal(err)
	}
	return srv, conn
}

// BenchmarkRelayForward measures one 1200-byte Relay from a registered
// node at its validated address, through Handle (parsed, checked,
// metered, counted) to the Relayed datagram written to its peer.
func BenchmarkRelayForward(b *testing.B) {
	srv, conn := hotServer(b)
	alice, bob := rvtest.New("alice"), rvtest.New("bob")
	aAddr, bAddr := netip.MustParseAddrPort("198.51.100.1:1000"), netip.MustParseAddrPort("203.0.113.2:2000")
	benchRegister(b, srv, conn.benchConn, alice, aAddr)
	benchRegister(b, srv, conn.benchConn, bob, bAddr)
	conn.mu.Lock()
	conn.setup = false
	conn.mu.Unlock()
	payload := bytes.Repeat([]byte{0xab}, 1200)
	pkt := alice.Relay(bob.Key, payload)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	for range b.N {
		srv.Handle(pkt, aAddr)
	}
	b.StopTimer()
	n, last, to := conn.written()
	if n != b.N || to != bAddr {
		b.Fatalf("%d datagrams written, the last to %v; want %d to %v", n, to, b.N, bAddr)
	}
	m, err := wire.Parse(last)
	if r, ok := m.(*wire.Relayed); err != nil || !ok || r.Src != alice.Key || !bytes.Equal(r.Payload, payload) {
		b.Fatalf("wrote %T (%v), want a Relayed from alice with the payload", m, err)
	}
}

// BenchmarkSTUNAnswer measures a STUN Binding request, through Handle
// (decoded, metered by the per-source budget) to the answer written.
func BenchmarkSTUNAnswer(b *testing.B) {
	srv, conn := hotServer(b)
	conn.setup = false
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewSoftware("bench"), stun.Fingerprint)
	src := netip.MustParseAddrPort("198.51.100.1:1000")
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		srv.Handle(req.Raw, src)
	}
	b.StopTimer()
	n, last, to := conn.written()
	if n != b.N || to != src {
		b.Fatalf("%d answers written, the last to %v; want %d to %v", n, to, b.N, src)
	}
	want := stun.MustBuild(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: src.Addr().AsSlice(), Port: int(src.Port())},
		stun.NewSoftware("natchat-rendezvous"), stun.Fingerprint)
	if !bytes.Equal(last, want.Raw) {
		b.Fatalf("answer\n%x\nwant\n%x", last, want.Raw)
	}
}
