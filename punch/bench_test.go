package punch

import (
	"fmt"
	"net"
	"runtime"
	"slices"
	"testing"
	"time"

	"natchat/internal/vnetlab"
)

// warmSTUN waits until the Manager has the mapped address cached, as a
// long-running node has by the time it starts a peer.
func warmSTUN(b *testing.B, m *Manager) {
	srv := &net.UDPAddr{IP: net.ParseIP(stunIP), Port: 3478}
	if _, err := m.mux.GetXORMappedAddr(srv, 5*time.Second); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkConnect measures, in real time, Start to Direct(true) on both
// sides between two port-restricted NATs with 30 ms one-way delay on the
// internet (60 ms RTT), a fresh world per iteration. Run with -benchtime=30x.
func BenchmarkConnect(b *testing.B) {
	var times []time.Duration
	for i := 0; i < b.N; i++ {
		w := newWorld(b, vnetlab.Impairment{Delay: 30 * time.Millisecond}, uint64(i))
		ha := w.LAN(vnetlab.PortRestricted).Host()
		hb := w.LAN(vnetlab.PortRestricted).Host()
		w.Start()
		a := w.newNode("a", ha, Options{})
		bn := w.newNode("b", hb, Options{})
		warmSTUN(b, a.m)
		warmSTUN(b, bn.m)
		connect(b, a, bn, &signalling{w: w, rto: 250 * time.Millisecond}, "bench")
		t0 := time.Now()
		must(b, a.p.Start())
		must(b, bn.p.Start())
		var last time.Time
		for _, n := range []*node{a, bn} {
			ev, ok := waitDirect(b, n, true, 10*time.Second)
			if !ok {
				b.Fatal("no direct path")
			}
			if ev.at.After(last) {
				last = ev.at
			}
		}
		times = append(times, last.Sub(t0))
		_ = a.m.Close()
		_ = bn.m.Close()
		w.close()
	}
	slices.Sort(times)
	pct := func(p float64) float64 {
		return float64(times[int(p*float64(len(times)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.5), "ms-median")
	b.ReportMetric(pct(0.99), "ms-p99")
}

// BenchmarkPeerFootprint measures the heap and goroutines of a live
// (connected, idle) Peer: a hub node connected to 100 remote nodes, each
// pair's cost divided by its two Peers.
func BenchmarkPeerFootprint(b *testing.B) {
	const n = 100
	for i := 0; i < b.N; i++ {
		w := newWorld(b, vnetlab.Impairment{}, 7)
		hh := w.LAN(vnetlab.NoNAT).Host()
		rh := w.LAN(vnetlab.NoNAT).Host()
		w.Start()
		hub := w.newNode("hub", hh, Options{})
		remotes := make([]*node, n)
		for j := range remotes {
			remotes[j] = w.newNode(fmt.Sprintf("r%d", j), rh, Options{})
		}
		warmSTUN(b, hub.m)
		for _, r := range remotes {
			warmSTUN(b, r.m)
		}
		// Handlers are the node's; keep their buffers out of the figure.
		hs := make([]*testHandler, 2*n)
		for j := range hs {
			hs[j] = newTestHandler(4)
		}
		heap0, g0 := footprint()

		sig := &signalling{w: w, rto: 250 * time.Millisecond}
		peers := make([]*node, n) // hub side of each pair
		for j, r := range remotes {
			h := &node{name: "hub", m: hub.m, h: hs[2*j]}
			r.h = hs[2*j+1]
			connect(b, h, r, sig, fmt.Sprint(j))
			peers[j] = h
			must(b, h.p.Start())
			must(b, r.p.Start())
		}
		for j := range peers {
			for _, nd := range []*node{peers[j], remotes[j]} {
				if _, ok := waitDirect(b, nd, true, 20*time.Second); !ok {
					b.Fatalf("pair %d: no direct path", j)
				}
			}
		}
		time.Sleep(500 * time.Millisecond) // let the checks settle into keepalives
		heap1, g1 := footprint()
		b.ReportMetric(float64(heap1-heap0)/(2*n), "B/peer")
		b.ReportMetric(float64(g1-g0)/(2*n), "goroutines/peer")

		_ = hub.m.Close()
		for _, r := range remotes {
			_ = r.m.Close()
		}
		w.close()
	}
}

func footprint() (heap uint64, goroutines int) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, runtime.NumGoroutine()
}
