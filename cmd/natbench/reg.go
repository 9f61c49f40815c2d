package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"natchat/internal/benchnode"
	"natchat/wire"
)

// The registered-nodes row: a rendezvous built with -tags natbench
// preloads N simulated nodes (rendezvous.Preload, internal/benchnode),
// and natbench heartbeats every one of them at the node's interval from
// its own address, sealed with its own session keys.

// listenUDP binds a UDP socket on a.
func listenUDP(a netip.AddrPort) (*net.UDPConn, error) {
	return net.ListenUDP("udp4", net.UDPAddrFromAddrPort(a))
}

// regSockets binds benchnode's source sockets 0 to n-1, all on one port
// (free on every address: a few tries).
func regSockets(n int) ([]*net.UDPConn, uint16, error) {
	var lastErr error
	for range 5 {
		first, err := listenUDP(netip.AddrPortFrom(benchnode.SocketIP(0), 0))
		if err != nil {
			return nil, 0, err
		}
		port := uint16(first.LocalAddr().(*net.UDPAddr).Port)
		conns := []*net.UDPConn{first}
		for j := 1; j < n && err == nil; j++ {
			var c *net.UDPConn
			if c, err = listenUDP(netip.AddrPortFrom(benchnode.SocketIP(j), port)); err == nil {
				conns = append(conns, c)
			}
		}
		if err == nil {
			return conns, port, nil
		}
		for _, c := range conns {
			c.Close()
		}
		lastErr = err
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return nil, 0, fmt.Errorf("binding %d sockets on 127.64.0.0/10: %w", n, lastErr)
}

// regResult is one repetition of a registered-nodes row.
type regResult struct {
	preload       time.Duration // from start until the server answered
	rss           int64         // the server's, at the end of the window
	peakRSS       int64         // the server's highest (VmHWM), preload and registrations included
	rssPerNode    float64       // (rss − the same binary's with no nodes) / N
	hbps          float64       // heartbeats sent per second in the window
	cpuPerHB      time.Duration // the server's CPU in the window per heartbeat sent
	cpuShare      float64       // the server's CPU in the window / the window
	genPerHB      time.Duration
	srvDrops      uint64 // the kernel's, for the rendezvous's socket, over the window
	srvDropsAll   uint64 // the same from the first heartbeat (warm-up and window)
	genDrops      uint64 // the kernel's, for natbench's sockets, over the window
	unanswered    int64  // heartbeats sent without an answer (warm-up and window)
	notRegistered int64  // answers saying "register again" (a node expired)
	steal         float64
}

// runReg starts bin (the natbench build of cmd/rendezvous) with n nodes
// preloaded (and more flags, -ours-flags), heartbeats them for warm then
// window, and measures.
func runReg(ctx context.Context, dir, bin string, n, sockets int, interval, warm, window time.Duration, baseRSS int64, more ...string) (regResult, error) {
	sockets = min(sockets, n, benchnode.MaxSockets)
	conns, port, err := regSockets(sockets)
	if err != nil {
		return regResult{}, err
	}
	var (
		wg       sync.WaitGroup
		counting atomic.Bool
		reads    atomic.Int64 // every datagram read, counted or not
		acks     atomic.Int64
		refused  atomic.Int64
	)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	}()
	seed := rand.Uint64()
	t0 := time.Now()
	srv, err := startOursWait(fmt.Sprintf("rendezvous-reg-%d", n), dir, bin, 5*time.Minute,
		append([]string{"-natbench-nodes", strconv.Itoa(n), "-natbench-seed", strconv.FormatUint(seed, 10),
			"-natbench-sockets", strconv.Itoa(sockets), "-natbench-port", strconv.Itoa(int(port))}, more...)...)
	if err != nil {
		return regResult{}, err
	}
	defer srv.stop()
	r := regResult{preload: time.Since(t0)}
	// Read only once the preload is done: each node's HandshakeReply and
	// snapshot (admitLocked sends them) fill the sockets' buffers and the
	// rest is dropped, rather than natbench's readers taking CPU from the
	// preload.
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			for {
				k, err := c.Read(buf)
				if err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					continue
				}
				reads.Add(1)
				if !counting.Load() || k < wire.HeaderLen || !wire.IsProtocol(buf[:k]) {
					continue
				}
				switch wire.Type(buf[2]) {
				case wire.TypeSealed:
					acks.Add(1)
				case wire.TypeError:
					refused.Add(1)
				}
			}
		}()
	}
	// What the preload sent (each node's HandshakeReply and snapshot, up
	// to a socket buffer's worth per socket) is read and not counted:
	// wait until the sockets are quiet.
	for last, quiet, deadline := int64(-1), 0, time.Now().Add(30*time.Second); quiet < 3 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		if now := reads.Load(); now == last {
			quiet++
		} else {
			last, quiet = now, 0
		}
	}
	counting.Store(true)

	srvPort := uint16(srv.addr.Port)
	dAll, _, err := udpDrops(srvPort)
	if err != nil {
		return regResult{}, err
	}
	rate := float64(n) / interval.Seconds()
	p := &phase{base: time.Now()}
	var sent, sentWindow atomic.Int64
	var sendErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		dst := srv.addr.AddrPort()
		pt := benchnode.Plaintext(&wire.Heartbeat{})
		counters := make([]uint64, n)
		buf := make([]byte, 0, 128)
		var k int64
		for !p.done.Load() && ctx.Err() == nil {
			due := int64(time.Since(p.base).Seconds() * rate)
			for ; k < due && !p.done.Load(); k++ {
				i := int(k % int64(n))
				bn := benchnode.Derive(seed, i)
				counters[i]++
				buf = benchnode.Seal(buf[:0], &bn, counters[i], pt)
				if _, err := conns[i%sockets].WriteToUDPAddrPort(buf, dst); err != nil {
					sendErr = err
					p.done.Store(true)
					return
				}
				sent.Add(1)
				if p.measuring.Load() {
					sentWindow.Add(1)
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	var d0, g0 uint64
	m, err := measureWith(p, srv.pid(), warm, window, func() {
		d0, _, _ = udpDrops(srvPort)
		g0, _, _ = udpDrops(port)
	})
	if err != nil {
		return regResult{}, err
	}
	d1, _, _ := udpDrops(srvPort)
	g1, _, _ := udpDrops(port)
	// Answers to the last heartbeats are on their way.
	for last, i := acks.Load(), 0; i < 20; i++ {
		time.Sleep(25 * time.Millisecond)
		now := acks.Load()
		if now+refused.Load() >= sent.Load() || now == last && i > 4 {
			break
		}
		last = now
	}
	if sendErr != nil {
		return regResult{}, fmt.Errorf("heartbeat: %w", sendErr)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", srv.pid())); err != nil {
		return regResult{}, fmt.Errorf("the rendezvous exited; its log: %s", srv.log)
	}
	hb := sentWindow.Load()
	r.rss, r.steal = m.rss, m.steal
	if r.peakRSS, err = procPeakRSS(srv.pid()); err != nil {
		return regResult{}, err
	}
	r.rssPerNode = float64(m.rss-baseRSS) / float64(n)
	r.hbps = float64(hb) / m.elapsed.Seconds()
	r.cpuShare = m.cpu.Seconds() / m.elapsed.Seconds()
	if hb > 0 {
		r.cpuPerHB = m.cpu / time.Duration(hb)
		r.genPerHB = m.self / time.Duration(hb)
	}
	r.srvDrops, r.srvDropsAll, r.genDrops = d1-d0, d1-dAll, g1-g0
	r.unanswered = max(0, sent.Load()-acks.Load()-refused.Load())
	r.notRegistered = refused.Load()
	return r, nil
}

// idleServer measures bin (the natbench build of cmd/rendezvous) serving
// with no node: its resident set a second after it answered, and its CPU
// over the next two seconds as a share of one core.
func idleServer(dir, bin string) (rss int64, cpuShare float64, err error) {
	srv, err := startOurs("rendezvous-idle", dir, bin)
	if err != nil {
		return 0, 0, err
	}
	defer srv.stop()
	time.Sleep(time.Second)
	if rss, err = procRSS(srv.pid()); err != nil {
		return 0, 0, err
	}
	c0, err := procCPU(srv.pid())
	if err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	time.Sleep(2 * time.Second)
	c1, err := procCPU(srv.pid())
	if err != nil {
		return 0, 0, err
	}
	return rss, (c1 - c0).Seconds() / time.Since(t0).Seconds(), nil
}

var regMetrics = []metricDef{
	{name: "server RSS B/node"}, {name: "server RSS MiB"}, {name: "server peak RSS MiB"},
	{name: "heartbeats/s"}, {name: "server CPU µs/heartbeat"}, {name: "server CPU % of a core"},
	{name: "load generator CPU µs/heartbeat"},
	{name: "kernel drops, rendezvous socket", noRatio: true},
	{name: "kernel drops, rendezvous socket, warm-up too", noRatio: true},
	{name: "kernel drops, natbench sockets", noRatio: true},
	{name: "unanswered heartbeats", noRatio: true},
	{name: "preload s", noRatio: true},
}

// regRows runs the registered-nodes rows: ours only (coturn has no
// registrations).
func (b *bench) regRows(ctx context.Context, dir string) error {
	b.log("building the rendezvous with -tags natbench (the preload)")
	bin, err := goBuild(ctx, dir+"/rendezvous-natbench", "natchat/cmd/rendezvous", "-tags", "natbench")
	if err != nil {
		return err
	}
	base, idleCPU, err := idleServer(dir, bin)
	if err != nil {
		return err
	}
	b.regBaseRSS, b.regIdleCPU = base, idleCPU
	b.log("registered nodes: the rendezvous with no node has %.1f MiB resident and takes %.2f%% of a core", float64(base)/(1<<20), 100*idleCPU)
	for _, n := range b.cfg.regSizes {
		r := newRow("reg", fmt.Sprintf("registered N=%d", n), regMetrics...)
		b.rows = append(b.rows, r)
		for rep := range b.cfg.reps {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !b.regExpiryWarned && b.cfg.regHB > 50*time.Second {
				b.regExpiryWarned = true
				b.log("warning: -reg-heartbeat %v: nodes silent past the rendezvous's 60 s expiry leave; their heartbeats count as unanswered", b.cfg.regHB)
			}
			res, err := runReg(ctx, dir, bin, n, b.cfg.regSockets, b.cfg.regHB, b.cfg.regWarm, b.cfg.regWindow, base, b.cfg.oursFlags...)
			if err != nil {
				return fmt.Errorf("%s: %w", r.label, err)
			}
			b.noteSteal(res.steal)
			if res.preload > 45*time.Second {
				// Node 0 was preloaded first and heartbeats first: any node's
				// silence is at most the preload plus a moment.
				b.log("warning: the preload took %v: past 60 s (the rendezvous's expiry) nodes would leave before their first heartbeat", res.preload.Round(time.Second))
			}
			b.log("%s rep %d  preload %v  rss %.1f MiB (%.0f B/node, peak %.1f MiB)  %.0f heartbeats/s  server %v/heartbeat (%.1f%% of a core)  generator %v/heartbeat  drops: rendezvous %d (%d with the warm-up), natbench %d  unanswered %d (register again: %d)  steal %.0f%%",
				r.label, rep+1, res.preload.Round(time.Millisecond), float64(res.rss)/(1<<20), res.rssPerNode, float64(res.peakRSS)/(1<<20), res.hbps,
				res.cpuPerHB.Round(10*time.Nanosecond), 100*res.cpuShare, res.genPerHB.Round(10*time.Nanosecond),
				res.srvDrops, res.srvDropsAll, res.genDrops, res.unanswered, res.notRegistered, 100*res.steal)
			r.add(true, map[string]float64{
				"server RSS B/node": res.rssPerNode, "server RSS MiB": float64(res.rss) / (1 << 20), "server peak RSS MiB": float64(res.peakRSS) / (1 << 20),
				"heartbeats/s": res.hbps, "server CPU µs/heartbeat": us(res.cpuPerHB), "server CPU % of a core": 100 * res.cpuShare,
				"load generator CPU µs/heartbeat": us(res.genPerHB),
				"kernel drops, rendezvous socket": float64(res.srvDrops), "kernel drops, rendezvous socket, warm-up too": float64(res.srvDropsAll), "kernel drops, natbench sockets": float64(res.genDrops),
				"unanswered heartbeats": float64(res.unanswered), "preload s": res.preload.Seconds(),
			})
		}
	}
	return nil
}
