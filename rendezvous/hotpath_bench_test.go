package rendezvous_test

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

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
//
// The Batch variants go through Run's batched path instead (a read batch
// of 16 handled under one hold of the lock, the replies sent with one
// sendmmsg on a real loopback socket, to a socket nobody reads).

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

// batchSink returns a loopback UDP socket to send from, as the server's
// socket, and the address of one nobody reads, which takes what is sent
// there until its buffer is full and then drops it.
func batchSink(b *testing.B) (from *net.UDPConn, sink *net.UDPConn) {
	b.Helper()
	var err error
	if from, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		b.Fatal(err)
	}
	if sink, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { from.Close(); sink.Close() })
	return from, sink
}

// runBatches hands pkt from src to handle b.N times, in batches of 16 (a
// read batch), so that allocations per op are per datagram.
func runBatches(b *testing.B, handle func([][]byte, []netip.AddrPort), pkt []byte, src netip.AddrPort) {
	const batch = 16
	dgrams, srcs := make([][]byte, batch), make([]netip.AddrPort, batch)
	for i := range dgrams {
		dgrams[i], srcs[i] = pkt, src
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		n := min(batch, b.N-i)
		handle(dgrams[:n], srcs[:n])
	}
	b.StopTimer()
}

// firstDatagram returns the first datagram waiting on c.
func firstDatagram(b *testing.B, c *net.UDPConn) []byte {
	b.Helper()
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		b.Fatalf("nothing sent: %v", err)
	}
	return buf[:n]
}

// BenchmarkRelayForwardBatch is BenchmarkRelayForward through the batched
// path: bob is at the sink's address.
func BenchmarkRelayForwardBatch(b *testing.B) {
	srv, conn := hotServer(b)
	from, sink := batchSink(b)
	alice, bob := rvtest.New("alice"), rvtest.New("bob")
	aAddr, bAddr := netip.MustParseAddrPort("198.51.100.1:1000"), sink.LocalAddr().(*net.UDPAddr).AddrPort()
	benchRegister(b, srv, conn.benchConn, alice, aAddr)
	benchRegister(b, srv, conn.benchConn, bob, bAddr)
	conn.mu.Lock()
	conn.setup = false
	conn.mu.Unlock()
	payload := bytes.Repeat([]byte{0xab}, 1200)
	b.SetBytes(int64(len(payload)))
	runBatches(b, rendezvous.BatchHandler(srv, from), alice.Relay(bob.Key, payload), aAddr)
	m, err := wire.Parse(firstDatagram(b, sink))
	if r, ok := m.(*wire.Relayed); err != nil || !ok || r.Src != alice.Key || !bytes.Equal(r.Payload, payload) {
		b.Fatalf("sent %T (%v), want a Relayed from alice with the payload", m, err)
	}
	if n, _, _ := conn.written(); n != 0 {
		b.Fatalf("%d datagrams written on their own, want all batched", n)
	}
}

// BenchmarkSTUNAnswerBatch is BenchmarkSTUNAnswer through the batched
// path, the requests from the sink's address.
func BenchmarkSTUNAnswerBatch(b *testing.B) {
	srv, conn := hotServer(b)
	conn.setup = false
	from, sink := batchSink(b)
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewSoftware("bench"), stun.Fingerprint)
	src := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	runBatches(b, rendezvous.BatchHandler(srv, from), req.Raw, src)
	want := stun.MustBuild(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: src.Addr().AsSlice(), Port: int(src.Port())},
		stun.NewSoftware("natchat-rendezvous"), stun.Fingerprint)
	if got := firstDatagram(b, sink); !bytes.Equal(got, want.Raw) {
		b.Fatalf("answer\n%x\nwant\n%x", got, want.Raw)
	}
	if n, _, _ := conn.written(); n != 0 {
		b.Fatalf("%d answers written on their own, want all batched", n)
	}
}
