package rendezvous_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"natchat/ctrl"
	"natchat/internal/rvtest"
	"natchat/relay"
	"natchat/rendezvous"
	"natchat/wire"
)

// This file is self-contained: the benchmarks drive a Server in memory
// through Handle, DrainRegistrations and FlushPresence, with rvtest as the
// client, and share nothing with the other test files of the package.

// benchConn is an in-memory net.PacketConn for benchmarks. WriteTo keeps
// the datagrams written to each address while capturing (to read cookies
// and handshake replies), and otherwise only counts. ReadFrom
// blocks until Close: the benchmarks call Handle, never Run.
type benchConn struct {
	mu      sync.Mutex
	capture bool
	kept    map[netip.AddrPort][][]byte
	packets int
	bytes   int
	closed  chan struct{}
	once    sync.Once
}

var _ net.PacketConn = (*benchConn)(nil)

func newBenchConn() *benchConn {
	return &benchConn{kept: make(map[netip.AddrPort][][]byte), closed: make(chan struct{})}
}

func (c *benchConn) ReadFrom([]byte) (int, net.Addr, error) {
	<-c.closed
	return 0, nil, net.ErrClosed
}

func (c *benchConn) WriteTo(b []byte, a net.Addr) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.packets++
	c.bytes += len(b)
	if c.capture {
		ua := a.(*net.UDPAddr).AddrPort()
		to := netip.AddrPortFrom(ua.Addr().Unmap(), ua.Port())
		c.kept[to] = append(c.kept[to], append([]byte(nil), b...))
	}
	return len(b), nil
}

// setCapture switches keeping datagrams on or off, and forgets those kept.
func (c *benchConn) setCapture(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.capture = on
	clear(c.kept)
}

// first returns the first datagram of type t captured for to, or nil.
func (c *benchConn) first(to netip.AddrPort, t wire.Type) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range c.kept[to] {
		if len(b) >= wire.HeaderLen && b[0] == wire.Magic && wire.Type(b[2]) == t {
			return b
		}
	}
	return nil
}

// counts returns the datagrams and bytes written so far.
func (c *benchConn) counts() (packets, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.packets, c.bytes
}

func (c *benchConn) Close() error { c.once.Do(func() { close(c.closed) }); return nil }
func (c *benchConn) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(192, 0, 2, 53), Port: 3478}
}
func (c *benchConn) SetDeadline(time.Time) error      { return nil }
func (c *benchConn) SetReadDeadline(time.Time) error  { return nil }
func (c *benchConn) SetWriteDeadline(time.Time) error { return nil }

// benchServer is a Server on a benchConn with a bbolt store in a temporary
// directory, not running: the benchmark calls Handle.
func benchServer(b *testing.B, key ctrl.ServerKey, edit func(*rendezvous.Options)) (*rendezvous.Server, *benchConn) {
	b.Helper()
	st, err := rendezvous.OpenStore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	conn := newBenchConn()
	o := rendezvous.Options{Conn: conn, Store: st, Key: key, DefaultRoom: rendezvous.DefaultRoom}
	if edit != nil {
		edit(&o)
	}
	srv, err := rendezvous.New(o)
	if err != nil {
		b.Fatal(err)
	}
	return srv, conn
}

func benchKey(b *testing.B) ctrl.ServerKey {
	b.Helper()
	k, err := ctrl.NewServerKey()
	if err != nil {
		b.Fatal(err)
	}
	return k
}

// benchRegister registers n from src completely (the client finishes its
// handshake, so it holds the session keys), untimed.
func benchRegister(b *testing.B, srv *rendezvous.Server, conn *benchConn, n *rvtest.Node, src netip.AddrPort) {
	b.Helper()
	conn.setCapture(true)
	defer conn.setCapture(false)
	srv.Handle(n.Hello(1), src)
	hs, err := n.FromCookie(conn.first(src, wire.TypeCookie))
	if err != nil {
		b.Fatal(err)
	}
	srv.Handle(hs, src)
	if srv.DrainRegistrations() != 1 {
		b.Fatal("registration not queued")
	}
	if _, err := n.Finish(conn.first(src, wire.TypeHandshakeReply)); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRelay measures the rendezvous's relay hot path: one 1200-byte
// Relay datagram from a registered node at its validated address, parsed,
// checked, rate-metered and forwarded as Relayed (the socket write itself
// only counts).
func BenchmarkRelay(b *testing.B) {
	srv, conn := benchServer(b, benchKey(b), func(o *rendezvous.Options) {
		o.Relay = relay.Limits{PacketsPerSec: -1, BytesPerSec: -1}
	})
	alice, bob := rvtest.New("alice"), rvtest.New("bob")
	aAddr, bAddr := netip.MustParseAddrPort("198.51.100.1:1000"), netip.MustParseAddrPort("198.51.100.2:2000")
	benchRegister(b, srv, conn, alice, aAddr)
	benchRegister(b, srv, conn, bob, bAddr)
	pkt := alice.Relay(bob.Key, make([]byte, 1200))
	p0, _ := conn.counts()
	b.ReportAllocs()
	b.SetBytes(1200)
	b.ResetTimer()
	for range b.N {
		srv.Handle(pkt, aAddr)
	}
	b.StopTimer()
	if p, _ := conn.counts(); p-p0 != b.N {
		b.Fatalf("%d packets relayed, want %d", p-p0, b.N)
	}
}

// BenchmarkHeartbeat measures a sealed Heartbeat from a registered node:
// opened (AEAD and replay window), parsed, and answered with a sealed
// HeartbeatAck. The heartbeats are sealed beforehand (each has its own
// counter), in chunks, with the timer stopped.
func BenchmarkHeartbeat(b *testing.B) {
	srv, conn := benchServer(b, benchKey(b), nil)
	alice := rvtest.New("alice")
	src := netip.MustParseAddrPort("198.51.100.1:1000")
	benchRegister(b, srv, conn, alice, src)
	const chunk = 4096
	pkts := make([][]byte, 0, chunk)
	p0, _ := conn.counts()
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		b.StopTimer()
		pkts = pkts[:0]
		for range min(chunk, b.N-done) {
			pkts = append(pkts, alice.Seal(&wire.Heartbeat{}))
		}
		b.StartTimer()
		for _, p := range pkts {
			srv.Handle(p, src)
		}
		done += len(pkts)
	}
	b.StopTimer()
	if p, _ := conn.counts(); p-p0 != b.N {
		b.Fatalf("%d acks, want %d", p-p0, b.N)
	}
}

// BenchmarkSTUN measures a STUN Binding request answered with the
// source's address. The per-source budget is off (one source here), so
// this is the STUN work alone.
func BenchmarkSTUN(b *testing.B) {
	srv, conn := benchServer(b, benchKey(b), func(o *rendezvous.Options) { o.SourceRate = -1 })
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw
	src := netip.MustParseAddrPort("198.51.100.1:1000")
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		srv.Handle(req, src)
	}
	b.StopTimer()
	if p, _ := conn.counts(); p != b.N {
		b.Fatalf("%d answers, want %d", p, b.N)
	}
}

// benchCost is what the timed part of a run cost.
type benchCost struct {
	wall, cpu time.Duration
	packets   int // datagrams the server sent
	bytes     int
}

func (c *benchCost) add(o benchCost) {
	c.wall += o.wall
	c.cpu += o.cpu
	c.packets += o.packets
	c.bytes += o.bytes
}

// benchTimer measures the wall-clock and CPU time (the whole process's,
// user and system: the server's goroutines and the store's committer) of
// the timed phases.
type benchTimer struct {
	w0  time.Time
	cpu time.Duration
}

func startBenchTimer() benchTimer { return benchTimer{w0: time.Now(), cpu: benchCPU()} }

func (t benchTimer) stop() benchCost {
	return benchCost{wall: time.Since(t.w0), cpu: benchCPU() - t.cpu}
}

// benchFleet is the identities and addresses of the nodes a registration
// benchmark registers: 25 per /24, so the default quota of new names per
// network (30 an hour) and the per-source reply budget (a burst of 100)
// hold for every one of them.
type benchFleet struct {
	nodes  []*rvtest.Node
	src    []netip.AddrPort
	hellos [][]byte
}

func newBenchFleet(n int) *benchFleet {
	f := &benchFleet{}
	for i := range n {
		nw := i / 25
		f.nodes = append(f.nodes, rvtest.New(fmt.Sprintf("n%05d", i)))
		f.src = append(f.src, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(nw >> 8), byte(nw), byte(i%25 + 1)}), 40000))
		f.hellos = append(f.hellos, f.nodes[i].Hello(uint64(i+1)))
	}
	return f
}

// benchBatch is how many registrations the benchmark gathers between two
// presence flushes: what a server registering 2,000 nodes a second takes
// in one PresenceDelay (50 ms).
const benchBatch = 100

// registerFleet registers every node of f with a fresh server (room as its
// default room) and returns the cost of the server's part: the Hellos
// (cookies), the Handshakes (cookie check, Noise handshake, durable name
// binding, session, reply, snapshot, presence queued) run by
// Options.RegisterWorkers goroutines as in Run, and the presence flushes
// after each batch. The client's part (its side of the handshake) is not
// timed. It fails the benchmark unless every node is online at the end.
func registerFleet(b *testing.B, key ctrl.ServerKey, f *benchFleet, room string, bigRoom int) benchCost {
	srv, conn := benchServer(b, key, func(o *rendezvous.Options) { o.DefaultRoom, o.BigRoom = room, bigRoom })
	const workers = 16 // Options.RegisterWorkers's default
	var total benchCost
	hs := make([][]byte, benchBatch)
	for lo := 0; lo < len(f.nodes); lo += benchBatch {
		hi := min(lo+benchBatch, len(f.nodes))
		conn.setCapture(true)
		t := startBenchTimer()
		for i := lo; i < hi; i++ {
			srv.Handle(f.hellos[i], f.src[i])
		}
		total.add(t.stop())

		for i := lo; i < hi; i++ {
			var err error
			if hs[i-lo], err = f.nodes[i].FromCookie(conn.first(f.src[i], wire.TypeCookie)); err != nil {
				b.Fatalf("node %d: %v", i, err)
			}
		}
		conn.setCapture(false)

		t = startBenchTimer()
		for i := lo; i < hi; i++ {
			srv.Handle(hs[i-lo], f.src[i])
		}
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() { defer wg.Done(); srv.DrainRegistrations() }()
		}
		wg.Wait()
		srv.FlushPresence()
		total.add(t.stop())
	}
	if n := len(srv.Online()); n != len(f.nodes) {
		b.Fatalf("room %q: %d of %d nodes online", room, n, len(f.nodes))
	}
	total.packets, total.bytes = conn.counts()
	return total
}

// BenchmarkRegisterRoom compares the cost of registering N nodes (env
// RV_BENCH_NODES, default 10,000) into the default room with the cost of
// registering them into no room, both through Handle, the registration
// workers and the presence flushes, each into a fresh server with its own
// bbolt store. It reports the server's CPU time per registration (the
// whole process's: user and system) and wall-clock time, and fails if
// the room costs more than 5× the CPU of no room (issue 8: a join's cost is
// bounded by Options.BigRoom, not by the room). Each iteration runs both,
// in alternating order. Run with -benchtime=1x.
//
// RV_BENCH_BIGROOM sets Options.BigRoom (default: its default, 200); set
// above the node count, every join is broadcast to the whole room, as
// before issue 8, and the benchmark shows what that costs.
func BenchmarkRegisterRoom(b *testing.B) {
	n := benchEnv("RV_BENCH_NODES", 10000)
	bigRoom := benchEnv("RV_BENCH_BIGROOM", 0)
	key := benchKey(b)
	f := newBenchFleet(n)
	var none, lobby benchCost
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer() // registerFleet times its own server-side phases
		if i%2 == 0 {
			none.add(registerFleet(b, key, f, "", bigRoom))
			lobby.add(registerFleet(b, key, f, rendezvous.DefaultRoom, bigRoom))
		} else {
			lobby.add(registerFleet(b, key, f, rendezvous.DefaultRoom, bigRoom))
			none.add(registerFleet(b, key, f, "", bigRoom))
		}
	}
	regs := float64(b.N * n)
	ratio := lobby.cpu.Seconds() / none.cpu.Seconds()
	b.ReportMetric(0, "ns/op") // an iteration is two fleets: meaningless
	if benchCPUOK {
		b.ReportMetric(float64(none.cpu.Nanoseconds())/regs, "cpu-ns/reg-none")
		b.ReportMetric(float64(lobby.cpu.Nanoseconds())/regs, "cpu-ns/reg-lobby")
		b.ReportMetric(ratio, "cpu-lobby/none")
	}
	b.ReportMetric(float64(none.wall.Nanoseconds())/regs, "wall-ns/reg-none")
	b.ReportMetric(float64(lobby.wall.Nanoseconds())/regs, "wall-ns/reg-lobby")
	b.ReportMetric(float64(n), "nodes")
	b.Logf("%d nodes ×%d: the server sent %d datagrams (%d B) registering them into no room, %d (%d B) into %s",
		n, b.N, none.packets, none.bytes, lobby.packets, lobby.bytes, rendezvous.DefaultRoom)
	if bigRoom > 0 {
		b.Logf("Options.BigRoom = %d (RV_BENCH_BIGROOM)", bigRoom)
	}
	if ratio > 5 {
		b.Fatalf("registering %d nodes into %s cost %.1f× the CPU of no room: want at most 5×", n, rendezvous.DefaultRoom, ratio)
	}
}

// benchEnv returns the positive integer in the environment variable k, or
// def.
func benchEnv(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}
