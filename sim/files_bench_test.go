package sim

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"natchat/node/api"
	"natchat/node/session"
	"natchat/relay"
	"natchat/rendezvous"
)

// BenchmarkFileTransfer moves one file of SIM_FILE_MB MiB (default 256;
// the figure is SIM_FILE_MB=1024) from a sender to a receiver on
// loopback, four ways, one sub-benchmark each, in this order and in the
// same process:
//
//   - quic: the baseline. A plain quic-go client and server on their own
//     loopback UDP sockets (*net.UDPConn, so quic-go reads in batches and
//     writes with GSO), one stream, the same bytes from memory to
//     memory, with the node's QUIC configuration (node/session's
//     quicConfig: 1200-byte packets, no path MTU discovery, quic-go's
//     default flow-control windows and its only congestion controller,
//     Cubic with pacing) and the same 256 KiB application buffers as
//     node/transfer.
//   - quic-pconn: the same, but quic-go sees each socket as a plain
//     net.PacketConn (ReadFrom/WriteTo, one datagram a system call), as
//     it sees the node's link: what the link's design alone costs.
//   - direct: two nodes (StartNode's, the receiver with a downloads
//     directory and the sender on its accept list) on loopback UDP
//     sockets and a rendezvous; after a chat message has opened the
//     session and ICE has put both sides on the direct path, /send of a
//     file on the disk, until the receiver's file_done (verified,
//     fsync'd, named).
//   - relay: the same with direct punching off (NoDirect), every packet
//     through the rendezvous, whose relay limits are lifted.
//   - relay-default: the same with the rendezvous's default relay limits
//     (relay.DefaultPacketsPerSec, DefaultBytesPerSec), which must leave
//     a pair more than 100 Mbit/s (issue 13): the summary gives it in
//     Mbit/s.
//
// The file and the downloads live in the test's temporary directories:
// set TMPDIR to a directory on a real disk (not tmpfs) for the receiver's
// fsyncs to mean something; the log names the file system.
//
// Reported, besides MB/s (bytes over ns/op):
//   - for direct and relay, ns/op runs from the /send to the receiver's
//     file_done, so it includes the sender's hashing of the file before
//     its offer; MB/s-stream is from the sender's file_offer (hashing
//     done) to the receiver's file_done, the part comparable with the
//     baseline; hash-ms is the hashing.
//   - cpu-s/GiB: the whole process's CPU (user and system) per GiB moved;
//     cpu-s/GiB-send, -recv, -rv and -other split it by pprof label: each
//     side is started under a label its goroutines (quic-go's included)
//     inherit, so a side's share is its goroutines' CPU, system calls
//     included; "other" is the garbage collector's workers and the
//     runtime. The split is in the proportions of a CPU profile of the
//     iterations (100 Hz).
//   - heap-MiB-peak: the most heap (objects, live or not yet swept) seen
//     by sampling runtime/metrics every 5 ms; heap-MiB-live-peak the
//     largest live heap a garbage collection marked; heap-MiB-base the
//     live heap just before the transfer; rss-MiB-peak the process's peak
//     resident set (VmHWM, reset before the transfer where the kernel
//     allows). All for the whole process (both sides, the rendezvous, and
//     the CPU profile's own buffer, about 1 MiB).
//   - steal%, others%: the share of the machine's CPUs that its
//     hypervisor gave to other machines (steal) and that other processes
//     used, meanwhile: both slow every side at once, which is why the
//     rates of one round are compared only with care.
//   - udp-drops: datagrams the kernel dropped on full socket receive
//     buffers meanwhile (counted for the whole network namespace), each
//     a loss QUIC's congestion control answers.
//
// With -v a log line per round gives direct/quic and relay/direct, and a
// last one their medians. Run with -benchtime=1x. SIM_FILE_ROUNDS=N runs
// the four N times in rounds (-count=N would run each N times in a row,
// and a machine whose load changes would favour one); the sub-benchmarks
// of later rounds are named quic#01 and so on. SIM_CPUPROFILE=PREFIX
// writes each sub-benchmark's labelled CPU profile to PREFIX-NAME.prof,
// SIM_HEAPPROFILE=PREFIX its heap profile at the live heap's peak (add
// -memprofilerate=4096 for one finer than every 512 KiB).
// SIM_RV_RCVBUF=BYTES sets the rendezvous's socket receive buffer
// (default: rendezvous.DefaultSocketBuffer, capped by rmem_max).
func BenchmarkFileTransfer(b *testing.B) {
	mb := envInt("SIM_FILE_MB", 256)
	size := int64(mb) << 20
	dir := b.TempDir()
	b.Logf("file %d MiB in %s (%s)", mb, dir, fsType(dir))
	src := filepath.Join(dir, fmt.Sprintf("file-%dMiB.bin", mb))
	if err := writeRandomFile(src, size); err != nil {
		b.Fatal(err)
	}
	modes := []string{"quic", "quic-pconn", "direct", "relay", "relay-default"}
	rounds := envInt("SIM_FILE_ROUNDS", 1)
	all := map[string][]modeResult{}
	var ratios [2][]float64 // direct/quic, relay/direct by round
	for round := range rounds {
		res := map[string]modeResult{}
		for _, mode := range modes {
			b.Run(mode, func(b *testing.B) {
				switch mode {
				case "quic", "quic-pconn":
					res[mode] = benchQUICBaseline(b, size, mode == "quic-pconn")
				default:
					res[mode] = benchNodeTransfer(b, src, size, mode != "direct", mode == "relay-default")
				}
			})
			if r, ok := res[mode]; ok {
				all[mode] = append(all[mode], r)
			}
		}
		ratio := func(a, of string) float64 {
			if res[a].rate == 0 || res[of].rate == 0 {
				return 0
			}
			return 100 * res[a].rate / res[of].rate
		}
		var line strings.Builder
		for _, mode := range modes {
			if r, ok := res[mode]; ok {
				fmt.Fprintf(&line, "%s %.0f MB/s (%.1f cpu-s/GiB, steal %.0f %%, others %.0f %%); ", mode, r.rate, r.cpu, r.steal, r.others)
			}
		}
		dq, rd := ratio("direct", "quic"), ratio("relay", "direct")
		if dq > 0 {
			ratios[0] = append(ratios[0], dq)
		}
		if rd > 0 {
			ratios[1] = append(ratios[1], rd)
		}
		b.Logf("%d MiB, round %d: %sdirect/quic %s, direct/quic-pconn %s, relay/direct %s",
			mb, round+1, line.String(), pct(dq), pct(ratio("direct", "quic-pconn")), pct(rd))
	}
	var line strings.Builder
	for _, mode := range modes {
		if rs := all[mode]; len(rs) > 0 {
			fmt.Fprintf(&line, "%s %.0f MB/s, %.1f cpu-s/GiB; ", mode,
				median(rs, func(r modeResult) float64 { return r.rate }), median(rs, func(r modeResult) float64 { return r.cpu }))
		}
	}
	id := func(v float64) float64 { return v }
	b.Logf("%d MiB, medians of %d rounds (direct and relay: the stream's rate): %sdirect/quic %s (target ≥ 80 %%), relay/direct %s (target ≥ 50 %%)",
		mb, rounds, line.String(), pct(median(ratios[0], id)), pct(median(ratios[1], id)))
	if rs := all["relay-default"]; len(rs) > 0 {
		mbit := 8 * median(rs, func(r modeResult) float64 { return r.rate })
		b.Logf("relay with the default limits: %.0f Mbit/s (target > 100 Mbit/s)", mbit)
	}
}

// pct formats a percentage, "–" for none.
func pct(v float64) string {
	if v == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f %%", v)
}

// median returns the median of f over xs (0 for none).
func median[T any](xs []T, f func(T) float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// modeResult is what a sub-benchmark gives the summary: its rate (MB/s;
// for the nodes the stream's), CPU per GiB, steal and others (%).
type modeResult struct{ rate, cpu, steal, others float64 }

// benchNodeTransfer runs the direct or relay sub-benchmark; its rate is
// the stream's (file_offer to file_done).
func benchNodeTransfer(b *testing.B, src string, size int64, viaRelay, defaultLimits bool) modeResult {
	var rv *Rendezvous
	rvConn := listenLoopback(b)
	if n := envInt("SIM_RV_RCVBUF", 0); n > 0 {
		// Another receive buffer than the rendezvous's own
		// (rendezvous.DefaultSocketBuffer, capped by rmem_max).
		if err := rvConn.(*net.UDPConn).SetReadBuffer(n); err != nil {
			b.Fatal(err)
		}
	}
	labelled("rv", func() {
		rv = StartRendezvous(b, rvConn, func(o *rendezvous.Options) {
			o.SourceRate = -1 // both nodes share 127.0.0.1
			o.NewNames = -1
			o.DefaultRoom = ""
			if !defaultLimits {
				o.Relay = relay.Limits{PacketsPerSec: -1, BytesPerSec: -1, SmallPacketsPerSec: -1}
			}
		})
	})
	downloads := filepath.Join(b.TempDir(), "downloads")
	var alice, bob *Node
	aconn, bconn := listenLoopback(b), listenLoopback(b)
	labelled("send", func() {
		alice = StartNode(b, NodeConfig{Name: "alice", Conn: aconn, RV: rv.Addr, NoDirect: viaRelay})
	})
	labelled("recv", func() {
		bob = StartNode(b, NodeConfig{Name: "bob", Conn: bconn, RV: rv.Addr, NoDirect: viaRelay,
			Downloads: downloads, AcceptFrom: []string{"alice"}})
	})
	alice.WaitRegistered(30 * time.Second)
	bob.WaitRegistered(30 * time.Second)
	// A chat message opens the session (and, unless NoDirect, punching).
	id := alice.Send("bob", "warm-up")
	alice.Wait(0, 30*time.Second, "warm-up delivered", func(e api.Event) bool {
		d, ok := e.(*api.Delivered)
		return ok && d.ID == id
	})
	want := api.PathRelay
	if !viaRelay {
		want = api.PathDirect
		waitDirect(b, alice, bob, 30*time.Second)
		waitDirect(b, bob, alice, 30*time.Second)
	}
	timeout := time.Minute + time.Duration(size/(5<<20))*time.Second // at 5 MiB/s, and a minute
	var saved []string

	runtime.GC()
	p := startProbe(b)
	var hashing, stream time.Duration
	b.SetBytes(size)
	b.ResetTimer()
	for i := range b.N {
		sm, rm := alice.mark(), bob.mark()
		t0 := time.Now()
		alice.Do(api.SendFile{To: "bob", Path: src})
		e, _ := alice.Wait(sm, timeout, "file_offer", func(e api.Event) bool {
			switch e := e.(type) {
			case *api.FileOffer:
				return e.To == "bob"
			case *api.Error:
				return true
			}
			return false
		})
		offer, ok := e.(*api.FileOffer)
		if !ok {
			b.Fatalf("/send refused: %+v", e)
		}
		e, _ = bob.Wait(rm, timeout, "file_done", func(e api.Event) bool {
			switch e := e.(type) {
			case *api.FileDone:
				return e.ID == offer.ID
			case *api.FileFailed:
				return e.ID == offer.ID
			}
			return false
		})
		done, ok := e.(*api.FileDone)
		if !ok {
			b.Fatalf("transfer %d failed: %+v", i, e)
		}
		b.StopTimer()
		// The sender's file_done (it read the receiver's FileDone) ends
		// the transfer for the sender; wait for it outside the clock.
		alice.Wait(sm, 30*time.Second, "sender's file_done", func(e api.Event) bool {
			d, ok := e.(*api.FileDone)
			return ok && d.ID == offer.ID
		})
		hashing += offer.TS.Sub(t0)
		stream += done.TS.Sub(offer.TS)
		saved = append(saved, done.Path)
		for _, ev := range bob.Events()[rm:] {
			if pr, ok := ev.(*api.FileProgress); ok && pr.ID == offer.ID && pr.Path != want {
				b.Errorf("transfer %d: progress on the %q path, want %q: the figures are not %s", i, pr.Path, want, want)
				break
			}
		}
		b.StartTimer()
	}
	b.StopTimer()
	res := p.finish(b)
	// Which sockets dropped (the counts are the sockets' own, since they
	// were opened).
	drops := udpSocketDrops()
	port := func(a net.Addr) int { return a.(*net.UDPAddr).Port }
	rvPort, _ := strconv.Atoi(rv.Addr[strings.LastIndex(rv.Addr, ":")+1:])
	b.Logf("datagrams dropped on full socket receive buffers: rendezvous %d, sender %d, receiver %d",
		drops[rvPort], drops[port(aconn.LocalAddr())], drops[port(bconn.LocalAddr())])
	for _, path := range saved {
		fi, err := os.Stat(path)
		if err != nil || fi.Size() != size {
			b.Errorf("saved %s: %v (size %d, want %d)", path, err, fileSize(fi), size)
		}
		os.Remove(path)
	}
	n := float64(b.N)
	rate := float64(size) * n / stream.Seconds() / 1e6
	b.ReportMetric(rate, "MB/s-stream")
	b.ReportMetric(ms(hashing)/n, "hash-ms")
	cpu, steal, others := res.report(b, size*int64(b.N))
	return modeResult{rate, cpu, steal, others}
}

// benchQUICBaseline runs the quic or quic-pconn sub-benchmark.
func benchQUICBaseline(b *testing.B, size int64, pconn bool) modeResult {
	cert := benchCert(b)
	cfg := session.QUICConfig()
	const alpn = "natchat-bench"
	srvTLS := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, NextProtos: []string{alpn},
		ClientAuth: tls.RequireAnyClientCert}
	cliTLS := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, NextProtos: []string{alpn},
		ServerName: "natchat", InsecureSkipVerify: true}
	sock := func() net.PacketConn {
		u := listenLoopback(b).(*net.UDPConn)
		if pconn {
			return plainConn{PacketConn: u, u: u}
		}
		return u
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var srvTr, cliTr *quic.Transport
	var ln *quic.Listener
	served := make(chan error, 1)
	labelled("recv", func() {
		srvTr = &quic.Transport{Conn: sock()}
		var err error
		if ln, err = srvTr.Listen(srvTLS, cfg); err != nil {
			b.Fatal(err)
		}
		go func() { served <- serveStreams(ctx, ln) }()
	})
	defer func() {
		cancel()
		ln.Close()
		srvTr.Close()
		var ae *quic.ApplicationError
		if err := <-served; err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, quic.ErrServerClosed) && !errors.As(err, &ae) {
			b.Errorf("server: %v", err)
		}
	}()
	var conn *quic.Conn
	labelled("send", func() {
		cliTr = &quic.Transport{Conn: sock()}
		var err error
		if conn, err = cliTr.Dial(ctx, srvTr.Conn.LocalAddr(), cliTLS, cfg); err != nil {
			b.Fatal(err)
		}
	})
	defer cliTr.Close()
	defer conn.CloseWithError(0, "")
	buf := make([]byte, 256<<10) // node/transfer's bufSize
	fillRandom(buf, 1)

	runtime.GC()
	p := startProbe(b)
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		var err error
		labelled("send", func() { err = sendStream(ctx, conn, buf, size) })
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	took := b.Elapsed()
	res := p.finish(b)
	cpu, steal, others := res.report(b, size*int64(b.N))
	return modeResult{float64(size) * float64(b.N) / took.Seconds() / 1e6, cpu, steal, others}
}

// sendStream writes size bytes of buf over and over on a new stream,
// closes it and waits for the server's one-byte answer (it has read them
// all).
func sendStream(ctx context.Context, conn *quic.Conn, buf []byte, size int64) error {
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	defer st.CancelRead(0)
	for left := size; left > 0; {
		n, err := st.Write(buf[:min(int64(len(buf)), left)])
		if err != nil {
			return err
		}
		left -= int64(n)
	}
	if err := st.Close(); err != nil {
		return err
	}
	var ack [1]byte
	if _, err := io.ReadFull(st, ack[:]); err != nil {
		return fmt.Errorf("no answer: %w", err)
	}
	return nil
}

// serveStreams accepts one connection and reads each of its streams to
// its end into a 256 KiB buffer (as node/transfer's receiver does), then
// answers one byte.
func serveStreams(ctx context.Context, ln *quic.Listener) error {
	conn, err := ln.Accept(ctx)
	if err != nil {
		return err
	}
	buf := make([]byte, 256<<10)
	for {
		st, err := conn.AcceptStream(ctx)
		if err != nil {
			return err
		}
		for {
			_, err = st.Read(buf)
			if err != nil {
				break
			}
		}
		if err != io.EOF {
			return err
		}
		if _, err := st.Write([]byte{1}); err != nil {
			return err
		}
		st.Close()
	}
}

// plainConn shows quic-go a UDP socket as a bare net.PacketConn, as the
// node's link (node/link.Conn) is: quic-go then reads and writes one
// datagram a system call, without GSO, batch reads, ECN or the DF bit.
// Socket buffer requests pass through, as the link passes them to the
// node's socket.
type plainConn struct {
	net.PacketConn
	u *net.UDPConn
}

func (c plainConn) SetReadBuffer(n int) error  { return c.u.SetReadBuffer(n) }
func (c plainConn) SetWriteBuffer(n int) error { return c.u.SetWriteBuffer(n) }

// benchCert is a self-signed Ed25519 certificate, as the node's.
func benchCert(tb testing.TB) tls.Certificate {
	tb.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "natchat"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		tb.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}
}

// labelled runs f with the pprof label part=label: goroutines it starts
// inherit it.
func labelled(label string, f func()) {
	pprof.Do(context.Background(), pprof.Labels("part", label), func(context.Context) { f() })
}

// writeRandomFile writes size pseudo-random bytes to path and fsyncs it.
func writeRandomFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	buf := make([]byte, 1<<20)
	for i := int64(0); i < size; i += int64(len(buf)) {
		fillRandom(buf, uint64(i))
		if _, err := w.Write(buf[:min(int64(len(buf)), size-i)]); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// fillRandom fills b with bytes from a ChaCha8 stream seeded with seed.
func fillRandom(b []byte, seed uint64) {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	mrand.NewChaCha8(s).Read(b)
}

// fsType names the file system dir is on (tmpfs is not a disk).
func fsType(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return err.Error()
	}
	switch st.Type {
	case 0x01021994:
		return "tmpfs: not a disk, set TMPDIR"
	case 0xEF53:
		return "ext4"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x794c7630:
		return "overlayfs"
	}
	return fmt.Sprintf("file system type %#x", st.Type)
}

func fileSize(fi os.FileInfo) int64 {
	if fi == nil {
		return -1
	}
	return fi.Size()
}

// probe measures the timed part of a file benchmark: CPU (whole process,
// and split by pprof label), heap and RSS peaks.
type probe struct {
	t0       time.Time
	cpu0     time.Duration
	busy0    time.Duration
	steal0   time.Duration
	drops0   uint64
	gc0      uint64
	base     uint64 // live heap at the start
	hwmReset bool   // VmHWM was reset at the start
	prof     *cpuProfile
	stop     chan struct{}
	done     chan struct{}
	peak     uint64 // heap objects, sampled
	peakLive uint64 // live heap, as marked by a GC
	// heapProfile is the heap profile at the live heap's peak, when
	// SIM_HEAPPROFILE asks for it.
	heapProfile *bytes.Buffer
}

var heapSamples = []string{"/memory/classes/heap/objects:bytes", "/gc/heap/live:bytes"}

func startProbe(tb testing.TB) *probe {
	p := &probe{stop: make(chan struct{}), done: make(chan struct{}), gc0: gcCycles()}
	if os.Getenv("SIM_HEAPPROFILE") != "" {
		p.heapProfile = new(bytes.Buffer)
	}
	s := make([]metrics.Sample, len(heapSamples))
	for i, name := range heapSamples {
		s[i].Name = name
	}
	metrics.Read(s)
	p.base = s[1].Value.Uint64()
	// Writing 5 to clear_refs resets the peak RSS (Linux ≥ 4.0).
	p.hwmReset = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	go func() {
		defer close(p.done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			p.peak = max(p.peak, s[0].Value.Uint64())
			if live := s[1].Value.Uint64(); live > p.peakLive {
				p.peakLive = live
				if p.heapProfile != nil {
					// The heap profile is as of the last GC: the one
					// that marked this live heap.
					p.heapProfile.Reset()
					pprof.Lookup("heap").WriteTo(p.heapProfile, 0)
				}
			}
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
		}
	}()
	var err error
	if p.prof, err = startProfile(); err != nil {
		tb.Logf("no CPU split by side: %v", err)
	}
	p.busy0, p.steal0 = machineCPU()
	p.drops0 = udpRcvbufErrors()
	p.t0, p.cpu0 = time.Now(), cpuTime()
	return p
}

// probeResult is what a probe measured.
type probeResult struct {
	cpu, wall, steal     time.Duration
	others               time.Duration      // other processes' CPU
	parts                map[string]float64 // CPU profile by "part" label
	base, peak, peakLive uint64
	rss                  uint64 // peak RSS in bytes, 0 if unknown
	gcs                  uint64
	drops                uint64 // UDP datagrams dropped on full socket buffers
	profile              []byte
}

func (p *probe) finish(tb testing.TB) probeResult {
	r := probeResult{cpu: cpuTime() - p.cpu0, wall: time.Since(p.t0)}
	busy, steal := machineCPU()
	r.steal = steal - p.steal0
	r.others = busy - p.busy0 - r.cpu
	r.drops = udpRcvbufErrors() - p.drops0
	close(p.stop)
	<-p.done
	r.parts = p.prof.stop()
	if p.prof != nil {
		r.profile = p.prof.buf.Bytes()
	}
	r.base, r.peak, r.peakLive, r.gcs = p.base, p.peak, p.peakLive, gcCycles()-p.gc0
	r.rss = vmHWM()
	if !p.hwmReset {
		tb.Logf("peak RSS could not be reset: rss-MiB-peak is the process's since it started")
	}
	name := tb.Name()
	name = name[strings.LastIndex(name, "/")+1:]
	if f := os.Getenv("SIM_CPUPROFILE"); f != "" && r.profile != nil {
		if err := os.WriteFile(f+"-"+name+".prof", r.profile, 0o644); err != nil {
			tb.Error(err)
		}
	}
	if f := os.Getenv("SIM_HEAPPROFILE"); f != "" && p.heapProfile != nil {
		if err := os.WriteFile(f+"-"+name+".prof", p.heapProfile.Bytes(), 0o644); err != nil {
			tb.Error(err)
		}
	}
	return r
}

// report reports r's metrics for moved bytes, and returns its CPU seconds
// per GiB, steal and others (%).
func (r probeResult) report(b *testing.B, moved int64) (cpuPerGiB, steal, others float64) {
	gib := float64(moved) / (1 << 30)
	mib := func(v uint64) float64 { return float64(v) / (1 << 20) }
	b.ReportMetric(r.cpu.Seconds()/gib, "cpu-s/GiB")
	total := 0.0
	for _, v := range r.parts {
		total += v
	}
	if total > 0 {
		for _, part := range []string{"send", "recv", "rv", "other"} {
			b.ReportMetric(r.cpu.Seconds()*r.parts[part]/total/gib, "cpu-s/GiB-"+part)
		}
	}
	b.ReportMetric(100*r.cpu.Seconds()/r.wall.Seconds(), "cpu%")
	// What the VM's host took from this machine's CPUs meanwhile, as a
	// share of all of them: it slows every side at once.
	steal = 100 * r.steal.Seconds() / r.wall.Seconds() / float64(runtime.NumCPU())
	b.ReportMetric(steal, "steal%")
	// What other processes on this machine used meanwhile, likewise.
	others = max(0, 100*r.others.Seconds()/r.wall.Seconds()/float64(runtime.NumCPU()))
	b.ReportMetric(others, "others%")
	b.ReportMetric(mib(r.peak), "heap-MiB-peak")
	b.ReportMetric(mib(r.peakLive), "heap-MiB-live-peak")
	b.ReportMetric(mib(r.base), "heap-MiB-base")
	b.ReportMetric(mib(r.rss), "rss-MiB-peak")
	b.ReportMetric(float64(r.gcs), "gcs")
	b.ReportMetric(float64(r.drops), "udp-drops")
	return r.cpu.Seconds() / gib, steal, others
}

// udpRcvbufErrors returns how many UDP datagrams the kernel dropped on
// full socket receive buffers (in this network namespace: /proc/net/snmp),
// 0 if unknown.
func udpRcvbufErrors() uint64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.ParseUint(f[i], 10, 64)
				return v
			}
		}
	}
	return 0
}

// udpSocketDrops returns the drops counter of every UDP socket in this
// network namespace (/proc/net/udp) by local port.
func udpSocketDrops() map[int]uint64 {
	out := map[int]uint64{}
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 13 {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		p, err := strconv.ParseUint(hexPort, 16, 16)
		if !ok || err != nil {
			continue
		}
		d, _ := strconv.ParseUint(f[len(f)-1], 10, 64)
		out[int(p)] += d
	}
	return out
}

// vmHWM returns the process's peak resident set in bytes, 0 if unknown.
func vmHWM() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
