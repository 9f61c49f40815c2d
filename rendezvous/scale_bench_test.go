package rendezvous_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"testing"
	"time"

	"natchat/ctrl"
	"natchat/rendezvous"
	"natchat/wire"
)

// BenchmarkScale registers 10k, 100k and 1M nodes (1M not with -short) in
// one in-memory Server each and reports, per size:
//
//   - heap-reg-B/node: the live heap the Server holds per node just
//     registered (after a GC, less the heap before the nodes registered);
//   - heap-B/node: the same in the steady state: each node has
//     heartbeated, and registered longer ago than a cookie's lifetime;
//   - rss-B/node: the process's resident memory gained per node, then,
//     after a GC that returns the free memory to the system;
//   - heartbeat-ns: one sealed Heartbeat through Handle (opened, the node's
//     expiry moved, answered), the mean of each node's first four;
//   - tick-ns and tick-ns/node: one expiry tick (Sweep) at which no node
//     is due, in all and divided by the nodes online;
//   - expire-ns/node: a Sweep at which every node is due, per node expired.
//
// The nodes are registered with rendezvous.AddRegistered: what a
// registration leaves in memory, without a million Noise handshakes. They
// share the ciphers of a few real sessions, so the figures leave out each
// session's two AEAD states (aead-B/node: scaleCipherBytes measures them
// at 1,000 real handshakes), which are added to the heap and RSS figures.
//
//	go test -run '^$' -bench BenchmarkScale -benchtime 1x ./rendezvous/
//
// SCALE_NODES="10000 50000" picks the sizes; SCALE_NO_ROOM=1 runs without
// a default room (the rooms' share of the memory is the difference);
// SCALE_HEAPPROFILE=FILE, with -memprofilerate=512, writes FILE.N, a heap
// profile of what N nodes hold.
func BenchmarkScale(b *testing.B) {
	sizes := []int{10_000, 100_000, 1_000_000}
	if v := os.Getenv("SCALE_NODES"); v != "" {
		sizes = nil
		for _, f := range bytes.Fields([]byte(v)) {
			n, err := strconv.Atoi(string(f))
			if err != nil {
				b.Fatal(err)
			}
			sizes = append(sizes, n)
		}
	}
	cipher := scaleCipherBytes(b)
	for _, n := range sizes {
		if n > 100_000 && testing.Short() {
			continue
		}
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			r := runScale(b, n)
			b.ReportMetric(r.regPerNode+cipher, "heap-reg-B/node")
			b.ReportMetric(r.heapPerNode+cipher, "heap-B/node")
			b.ReportMetric(r.rssPerNode+cipher, "rss-B/node")
			b.ReportMetric(cipher, "aead-B/node")
			b.ReportMetric(r.heartbeatNs, "heartbeat-ns")
			b.ReportMetric(r.tickNs, "tick-ns")
			b.ReportMetric(r.tickNs/float64(n), "tick-ns/node")
			b.ReportMetric(r.expireNs, "expire-ns/node")
		})
	}
}

type scaleResult struct {
	regPerNode              float64
	heapPerNode, rssPerNode float64
	heartbeatNs             float64
	tickNs                  float64
	expireNs                float64
}

// scaleSession is one real control session: the rendezvous's keys and the
// node's.
type scaleSession struct {
	server, node *ctrl.Keys
	reply        []byte // a HandshakeReply datagram of the real size
}

// newScaleSessions runs n real Noise handshakes with key.
func newScaleSessions(tb testing.TB, key ctrl.ServerKey, n int) []scaleSession {
	tb.Helper()
	out := make([]scaleSession, n)
	for i := range out {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		var cookie wire.Cookie
		rand.Read(cookie[:])
		init, err := ctrl.NewInitiator(priv, key.Public, cookie)
		if err != nil {
			tb.Fatal(err)
		}
		first, err := init.First(wire.AppendRegisterPayload(nil, &wire.RegisterPayload{Key: wire.Key(priv.Public().(ed25519.PublicKey)), Name: "scale"}))
		if err != nil {
			tb.Fatal(err)
		}
		resp, _, _, err := ctrl.Respond(key, cookie, first)
		if err != nil {
			tb.Fatal(err)
		}
		res := wire.AppendHandshakeResult(nil, &wire.HandshakeResult{Observed: netip.MustParseAddrPort("198.51.100.1:1000"),
			HeartbeatMS: 25000, ExpiryMS: 60000})
		msg, skeys, err := resp.Finish(res)
		if err != nil {
			tb.Fatal(err)
		}
		_, nkeys, err := init.Finish(msg)
		if err != nil {
			tb.Fatal(err)
		}
		out[i] = scaleSession{server: skeys, node: nkeys, reply: wire.Marshal(&wire.HandshakeReply{Noise: msg})}
	}
	return out
}

// scaleCipherBytes returns the heap one real session's keys hold beyond a
// shallow copy of its ctrl.Keys (which the scale runs give each node):
// its two AEAD states.
func scaleCipherBytes(tb testing.TB) float64 {
	key, err := ctrl.NewServerKey()
	if err != nil {
		tb.Fatal(err)
	}
	const n = 1000
	h0 := liveHeap()
	ss := newScaleSessions(tb, key, n)
	for i := range ss {
		ss[i].node, ss[i].reply = nil, nil
	}
	real := float64(liveHeap()-h0) / n
	shallow := float64(0)
	{
		h0 := liveHeap()
		cp := make([]*ctrl.Keys, n)
		for i := range cp {
			k := *ss[0].server
			cp[i] = &k
		}
		shallow = float64(liveHeap()-h0) / n
		runtime.KeepAlive(cp)
	}
	runtime.KeepAlive(ss)
	// real counts a scaleSession (40 B) and its pointer slot too.
	return max(0, real-shallow-float64(40))
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// rss returns the process's resident set in bytes (0 where /proc is
// missing).
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(string(f[1]), 10, 64)
	return pages * uint64(os.Getpagesize())
}

// scaleAddr is node i's address: one per node, 16 per IPv4 address.
func scaleAddr(i int) netip.AddrPort {
	ip := uint32(0x0a000000) + uint32(i/16)
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], ip)
	return netip.AddrPortFrom(netip.AddrFrom4(a), uint16(10000+i%16))
}

// scaleConn is the scale runs' socket: a benchConn with *net.UDPConn's
// WriteToUDPAddrPort, through which the server writes to every node, as
// it does to its real socket, without a *net.UDPAddr for each.
type scaleConn struct{ *benchConn }

func (c scaleConn) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	c.mu.Lock()
	capture := c.capture
	if !capture {
		c.packets++
		c.bytes += len(b)
	}
	c.mu.Unlock()
	if capture {
		return c.WriteTo(b, net.UDPAddrFromAddrPort(to))
	}
	return len(b), nil
}

func runScale(b *testing.B, n int) scaleResult {
	key := benchKey(b)
	clk := &clock{now: t0}
	const expiry = 60 * time.Second
	var conn *benchConn
	srv, _ := benchServer(b, key, func(o *rendezvous.Options) {
		conn = o.Conn.(*benchConn)
		o.Conn = scaleConn{conn}
		o.Now = clk.Now
		o.Expiry = expiry
		o.SourceRate = -1
		if os.Getenv("SCALE_NO_ROOM") != "" {
			o.DefaultRoom = "" // to tell the rooms' share
		}
	})
	conn.setCapture(false)
	pool := newScaleSessions(b, key, 64)
	sessions := make([]wire.SessionID, n) // counted in the baseline
	// Warm up the Server's own first-use allocations.
	var tmp [1]ctrl.Keys
	tmp[0] = *pool[0].server
	rendezvous.AddRegistered(srv, wire.Key{0xff, 0xff}, "warmup", netip.MustParseAddrPort("192.0.2.9:9"), wire.Cookie{0xff}, slices.Clone(pool[0].reply), &tmp[0])

	debug.FreeOSMemory()
	h0, r0 := liveHeap(), rss()
	// Nodes register over half an Expiry, as a steady fleet's heartbeats
	// spread its expiries.
	step := expiry / 2 / time.Duration(n)
	for i := range n {
		var k wire.Key
		binary.BigEndian.PutUint64(k[:], uint64(i)+1)
		rand.Read(k[8:16])
		var c wire.Cookie
		binary.BigEndian.PutUint64(c[:], uint64(i)+1)
		p := &pool[i%len(pool)]
		sk := *p.server
		sessions[i] = rendezvous.AddRegistered(srv, k, "n"+strconv.Itoa(i), scaleAddr(i), c, slices.Clone(p.reply), &sk)
		clk.Step(step)
	}
	h1 := liveHeap()
	res := scaleResult{regPerNode: float64(int64(h1)-int64(h0)) / float64(n)}

	// Every node heartbeats, in rounds under Expiry apart, until its
	// registration is older than a cookie's lifetime: the steady state.
	// The heartbeats are sealed beforehand in chunks; the Handle calls
	// are timed. A Sweep follows each round.
	const chunk = 4096
	pkts := make([][]byte, 0, chunk)
	pt := wire.AppendInner(nil, &wire.Heartbeat{})
	for len(pt)+wire.SealedHeaderLen+ctrl.Overhead < wire.SealedMinLen {
		pt = append(pt, 0)
	}
	var took time.Duration
	rounds := 0
	for _, wait := range []time.Duration{expiry / 4, 50 * time.Second, 50 * time.Second, 30 * time.Second} {
		clk.Step(wait)
		p0, _ := conn.counts()
		for i := 0; i < n; i += chunk {
			pkts = pkts[:0]
			for j := i; j < min(n, i+chunk); j++ {
				pkts = append(pkts, pool[j%len(pool)].node.Seal(nil, sessions[j], pt))
			}
			start := time.Now()
			for k, p := range pkts {
				srv.Handle(p, scaleAddr(i+k))
			}
			took += time.Since(start)
		}
		rounds++
		if p, _ := conn.counts(); p-p0 != n {
			b.Fatalf("%d acks to %d heartbeats", p-p0, n)
		}
		srv.Sweep(clk.Now())
	}
	res.heartbeatNs = float64(took.Nanoseconds()) / float64(n*rounds)
	if clk.Now().Sub(t0) < expiry/2+rendezvous.CookieLifetime+10*time.Second { // the last registration
		b.Fatal("the steady state comes too early")
	}
	pkts = nil
	h2 := liveHeap()
	debug.FreeOSMemory() // what the heap needs, not what the heartbeats' garbage left
	r2 := rss()
	res.heapPerNode = float64(int64(h2)-int64(h0)) / float64(n)
	res.rssPerNode = float64(int64(r2)-int64(r0)) / float64(n)
	if p := os.Getenv("SCALE_HEAPPROFILE"); p != "" {
		// With -memprofilerate, a profile of what the nodes hold.
		f, err := os.Create(fmt.Sprintf("%s.%d", p, n))
		if err != nil {
			b.Fatal(err)
		}
		pprof.Lookup("heap").WriteTo(f, 0)
		f.Close()
	}

	// Ticks at which nobody is due: every node was heard from half an
	// Expiry ago. The best of 5.
	best := time.Duration(1 << 62)
	for range 5 {
		clk.Step(100 * time.Millisecond)
		now := clk.Now()
		start := time.Now()
		srv.Sweep(now)
		best = min(best, time.Since(start))
	}
	res.tickNs = float64(best.Nanoseconds())
	if got := len(srv.Online()); got != n { // the warm-up node expired
		b.Fatalf("%d online after quiet ticks, want %d", got, n)
	}

	// Everyone is due.
	clk.Step(2 * expiry)
	start := time.Now()
	srv.Sweep(clk.Now())
	res.expireNs = float64(time.Since(start).Nanoseconds()) / float64(n)
	if got := len(srv.Online()); got != 0 {
		b.Fatalf("%d online after everyone's expiry, want 0", got)
	}
	return res
}
