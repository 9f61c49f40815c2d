package sim

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"natchat/node/api"
	"natchat/rendezvous"
)

func listenLoopback(tb testing.TB) net.PacketConn {
	tb.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// star is one hub node with n live peer links: each peer has sent the hub
// a message, got its receipt, and both sides hold a session and a direct
// path (loopback host candidates).
type star struct {
	rv    *Rendezvous
	hub   *Node
	peers []*Node
}

func newStar(tb testing.TB, n int) *star {
	tb.Helper()
	rv := StartRendezvous(tb, listenLoopback(tb), func(o *rendezvous.Options) {
		o.SourceRate = -1  // every node shares 127.0.0.1
		o.NewNames = -1    // and registers a new name
		o.DefaultRoom = "" // no presence fan-out: measure the links alone
	})
	s := &star{rv: rv}
	s.hub = StartNode(tb, NodeConfig{Name: "hub", Conn: listenLoopback(tb), RV: rv.Addr})
	s.hub.WaitRegistered(10 * time.Second)
	var wg sync.WaitGroup
	s.peers = make([]*Node, n)
	for i := range n {
		s.peers[i] = StartNode(tb, NodeConfig{Name: fmt.Sprintf("p%03d", i), Conn: listenLoopback(tb), RV: rv.Addr})
	}
	for i, p := range s.peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.WaitRegistered(60 * time.Second)
			id := p.Send("hub", fmt.Sprintf("hello from %d", i))
			p.Wait(0, 60*time.Second, "delivered", func(e api.Event) bool {
				d, ok := e.(*api.Delivered)
				return ok && d.ID == id
			})
		}()
	}
	wg.Wait()
	// Every link direct at the hub.
	for _, p := range s.peers {
		s.hub.WaitPath(0, p.Name, "direct", 60*time.Second)
	}
	return s
}

// drops counts the hub's path events leaving direct after index from.
func (s *star) drops(from int) int {
	n := 0
	for _, e := range s.hub.Events()[from:] {
		if p, ok := e.(*api.PathChanged); ok && p.Path != "direct" {
			n++
		}
	}
	return n
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func heapInUse() uint64 {
	// Objects with finalizers (sockets, files) and what they reference go
	// only on the next cycle after their finalizers ran.
	for range 5 {
		runtime.GC()
		runtime.Gosched() // the finalizer goroutine runs
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestManyPeerLinks holds 20 live links on one node for a few seconds: all
// messages delivered, every path direct, none dropping.
func TestManyPeerLinks(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: holds links for seconds")
	}
	s := newStar(t, 20)
	from := len(s.hub.Events())
	hold(3 * time.Second)
	if d := s.drops(from); d != 0 {
		t.Fatalf("%d direct paths dropped while idle", d)
	}
	msgs := 0
	for _, e := range s.hub.Events() {
		if _, ok := e.(*api.Message); ok {
			msgs++
		}
	}
	if msgs != 20 {
		t.Fatalf("hub got %d messages, want 20", msgs)
	}
}

// hold waits out a measurement window: an interval of observation, not a
// synchronisation point.
func hold(d time.Duration) { <-time.After(d) }

// BenchmarkPeerLinks measures what live peer links cost a node: N peers
// (SIM_PEERS, default 500) each hold a session and a direct path to one
// hub; over a hold window (SIM_HOLD, default 30s) with keepalives only, it
// reports goroutines, heap and CPU per link (both ends of each link run in
// this process, so the figures are per pair of endpoints), and fails if
// any direct path drops — a missed keepalive. Run with -benchtime=1x.
func BenchmarkPeerLinks(b *testing.B) {
	n := envInt("SIM_PEERS", 500)
	holdFor := 30 * time.Second
	if v, err := time.ParseDuration(os.Getenv("SIM_HOLD")); err == nil {
		holdFor = v
	}
	g0, h0 := runtime.NumGoroutine(), heapInUse()
	s := newStar(b, n)
	b.ResetTimer()
	for range b.N {
		from := len(s.hub.Events())
		c0 := cpuTime()
		hold(holdFor)
		cpu := cpuTime() - c0
		if d := s.drops(from); d != 0 {
			b.Fatalf("%d of %d direct paths dropped during %v", d, n, holdFor)
		}
		g1, h1 := runtime.NumGoroutine(), heapInUse()
		b.ReportMetric(float64(g1-g0)/float64(n), "goroutines/link")
		b.ReportMetric(float64(h1-h0)/float64(n)/1024, "heapKiB/link")
		b.ReportMetric(100*cpu.Seconds()/holdFor.Seconds()/float64(n), "cpu%/link")
		b.ReportMetric(100*cpu.Seconds()/holdFor.Seconds(), "cpu%")
		b.ReportMetric(float64(n), "links")
	}
}

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}
