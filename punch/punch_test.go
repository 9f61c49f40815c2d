package punch

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// The vnet tests run in synctest bubbles: pion, vnet and punch all use the
// bubble's fake clock, so a 30 ms delay or a 20 s wait costs no wall time,
// and the bubble fails if any goroutine is left behind (the leak check).
// PUNCH_REALTIME=1 runs them on the real clock instead (slow: ~1 min).
func bubble(t *testing.T, f func(*testing.T)) {
	if os.Getenv("PUNCH_REALTIME") != "" {
		f(t)
		return
	}
	synctest.Test(t, f)
}

// natPairs is the expected outcome of ICE for each pair of NATs.
var natPairs = []struct {
	a, b       natKind
	sameRouter bool
	direct     bool
	why        string
}{
	{a: natPublic, b: natPublic, direct: true, why: "host to host"},
	{a: natPublic, b: natFullCone, direct: true, why: "public host reachable; NAT side opens its own mapping"},
	{a: natPublic, b: natAddrRestricted, direct: true, why: "public host reachable; NAT side opens its own mapping"},
	{a: natPublic, b: natPortRestricted, direct: true, why: "public host reachable; NAT side opens its own mapping"},
	{a: natPublic, b: natSymmetric, direct: true, why: "public host learns the symmetric side as peer-reflexive"},
	{a: natFullCone, b: natFullCone, direct: true, why: "srflx to srflx, no filtering"},
	{a: natFullCone, b: natAddrRestricted, direct: true, why: "srflx to srflx, checks from both sides open the filters"},
	{a: natFullCone, b: natPortRestricted, direct: true, why: "srflx to srflx, checks from both sides open the filters"},
	{a: natFullCone, b: natSymmetric, direct: true, why: "full cone accepts the symmetric side's new mapping (peer-reflexive)"},
	{a: natAddrRestricted, b: natAddrRestricted, direct: true, why: "srflx to srflx hole punch"},
	{a: natAddrRestricted, b: natPortRestricted, direct: true, why: "srflx to srflx hole punch"},
	{a: natAddrRestricted, b: natSymmetric, direct: true, why: "address filter opened towards the symmetric side's IP admits its new port"},
	{a: natPortRestricted, b: natPortRestricted, direct: true, why: "srflx to srflx hole punch"},
	{a: natPortRestricted, b: natSymmetric, direct: false, why: "no direct → relay: symmetric port unpredictable, port filter never opens"},
	{a: natSymmetric, b: natSymmetric, direct: false, why: "no direct → relay: neither mapping is predictable"},
	{a: natPortRestricted, b: natPortRestricted, sameRouter: true, direct: true, why: "same LAN: host to host (no hairpinning needed)"},
}

var impairments = []impairment{
	{delay: 0, loss: 0},
	{delay: 0, loss: 0.10},
	{delay: 30 * time.Millisecond, loss: 0},
	{delay: 30 * time.Millisecond, loss: 0.10},
}

func TestNATPairs(t *testing.T) {
	for pi, pc := range natPairs {
		name := fmt.Sprintf("%s to %s", pc.a, pc.b)
		if pc.sameRouter {
			name = "same router"
		}
		t.Run(name, func(t *testing.T) {
			for ii, imp := range impairments {
				// Swap roles on the delayed runs so both orientations are covered.
				swap := imp.delay > 0
				t.Run(imp.String(), func(t *testing.T) {
					t.Parallel()
					bubble(t, func(t *testing.T) {
						runPair(t, pc.a, pc.b, pc.sameRouter, swap, imp, pc.direct, uint64(pi*10+ii))
					})
				})
			}
		})
	}
}

func runPair(t *testing.T, ka, kb natKind, sameRouter, swap bool, imp impairment, wantDirect bool, seed uint64) {
	w := newWorld(t, imp, seed)
	addA := w.lan(ka)
	addB := addA
	if !sameRouter {
		addB = w.lan(kb)
	}
	na, ipA := addA()
	nb, ipB := addB()
	w.start()
	a := w.newNode("a", na, ipA, Options{})
	b := w.newNode("b", nb, ipB, Options{})
	defer w.close()
	defer b.m.Close()
	defer a.m.Close()
	if swap {
		a, b = b, a
	}
	sig := &signalling{w: w, rto: 250 * time.Millisecond}
	connect(t, a, b, sig, "t")
	t0 := time.Now()
	must(t, a.p.Start())
	must(t, b.p.Start())

	if !wantDirect {
		select {
		case ev := <-a.h.direct:
			t.Fatalf("a: unexpected direct path %+v", ev)
		case ev := <-b.h.direct:
			t.Fatalf("b: unexpected direct path %+v", ev)
		case <-time.After(20 * time.Second):
		}
		// The controlling side keeps retrying with new generations.
		gens := map[uint32]bool{}
		for len(a.h.sigs) > 0 {
			gens[(<-a.h.sigs).Generation] = true
		}
		if len(gens) < 2 {
			t.Errorf("controlling side used %d generation(s) in 20 s, want retries", len(gens))
		}
		t.Logf("no direct path (as expected), %d ICE generations in 20 s", len(gens))
		return
	}

	ea, ok := waitDirect(t, a, true, 20*time.Second)
	if !ok {
		t.Fatal("a: no direct path within 20 s")
	}
	eb, ok := waitDirect(t, b, true, 20*time.Second)
	if !ok {
		t.Fatal("b: no direct path within 20 s")
	}
	last := ea.at
	if eb.at.After(last) {
		last = eb.at
	}
	t.Logf("direct after %v (a sees %v rtt %v, b sees %v rtt %v)",
		last.Sub(t0), ea.remote, ea.rtt, eb.remote, eb.rtt)
	if sameRouter {
		for _, ev := range []directEv{ea, eb} {
			if ip := ev.remote.(*net.UDPAddr).IP.String(); !strings.HasPrefix(ip, "10.0.") {
				t.Errorf("same router: direct path via %v, want a host (LAN) candidate", ev.remote)
			}
		}
	}
	if !exchange(t, a, b, 5*time.Second) {
		t.Error("a->b: no datagram over the direct path")
	}
	if !exchange(t, b, a, 5*time.Second) {
		t.Error("b->a: no datagram over the direct path")
	}
}

// A direct path that dies (both ways, or one way only) is reported down
// within 5 s by the side that stops hearing; the controlling side restarts
// ICE (on its own failure or on the controlled side's Failed signal); when
// the network heals, the retry brings the path back.
func TestDirectPathDiesAndRecovers(t *testing.T) {
	const aIP, bIP = "1.2.3.11", "1.2.3.12" // the NATs' public addresses
	for _, tc := range []struct {
		name string
		cut  func(src, dst net.IP) bool
		deaf []string // sides that stop hearing
	}{
		{"both ways", func(net.IP, net.IP) bool { return true }, []string{"a", "b"}},
		{"controlling to controlled", func(src, _ net.IP) bool { return src.String() == aIP }, []string{"b"}},
		{"controlled to controlling", func(src, _ net.IP) bool { return src.String() == bIP }, []string{"a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bubble(t, func(t *testing.T) {
				w := newWorld(t, impairment{delay: 30 * time.Millisecond}, 1)
				na, ipA := w.lan(natPortRestricted)()
				nb, ipB := w.lan(natPortRestricted)()
				w.start()
				a := w.newNode("a", na, ipA, Options{})
				b := w.newNode("b", nb, ipB, Options{})
				defer w.close()
				defer b.m.Close()
				defer a.m.Close()
				connect(t, a, b, &signalling{w: w, rto: 250 * time.Millisecond}, "t")
				must(t, a.p.Start())
				must(t, b.p.Start())
				for _, n := range []*node{a, b} {
					if ev, ok := waitDirect(t, n, true, 10*time.Second); !ok || !strings.HasPrefix(ev.remote.String(), map[string]string{"a": bIP, "b": aIP}[n.name]) {
						t.Fatalf("%s: no direct path between the NATs (%v)", n.name, ev.remote)
					}
				}
				if !exchange(t, a, b, 5*time.Second) {
					t.Fatal("a->b: no datagram")
				}
				firstGen := (<-a.h.sigs).Generation

				w.cut.Store(&tc.cut)
				t0 := time.Now()
				for _, n := range []*node{a, b} {
					if !slices.Contains(tc.deaf, n.name) {
						continue
					}
					ev, ok := waitDirect(t, n, false, 5*time.Second)
					if !ok {
						t.Fatalf("%s: path not reported down within 5 s", n.name)
					}
					t.Logf("%s: down after %v", n.name, ev.at.Sub(t0))
					if err := n.p.Write([]byte("x")); !errors.Is(err, ErrNoDirectPath) {
						t.Errorf("%s: Write while down = %v, want ErrNoDirectPath", n.name, err)
					}
				}
				// Keep the path cut until the controlling side has restarted ICE.
				deadline := time.After(30 * time.Second)
				for restarted := false; !restarted; {
					select {
					case s := <-a.h.sigs:
						restarted = newerGen(s.Generation, firstGen)
					case <-deadline:
						t.Fatal("no ICE restart within 30 s of the path dying")
					}
				}
				t.Logf("restart after %v", time.Since(t0))
				w.cut.Store(nil)
				t1 := time.Now()
				for _, n := range []*node{a, b} {
					// Drain to the latest report, then wait for up if it is not.
					var last directEv
					for len(n.h.direct) > 0 {
						last = <-n.h.direct
					}
					if !last.up || last.at.Before(t1) {
						ev, ok := waitDirect(t, n, true, 20*time.Second)
						if !ok {
							t.Fatalf("%s: path not back within 20 s of healing", n.name)
						}
						t.Logf("%s: up again %v after healing", n.name, ev.at.Sub(t1))
					}
				}
				if !exchange(t, b, a, 5*time.Second) || !exchange(t, a, b, 5*time.Second) {
					t.Fatal("no datagram after recovery")
				}
			})
		})
	}
}

// When the remote Peer is recreated (its process restarted), the surviving
// side notices the new credentials and restarts ICE at once, on either role.
func TestRemotePeerRestarts(t *testing.T) {
	for _, controllingRestarts := range []bool{false, true} {
		t.Run(fmt.Sprintf("controlling restarts=%v", controllingRestarts), func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				w := newWorld(t, impairment{delay: 30 * time.Millisecond}, 4)
				na, ipA := w.lan(natPortRestricted)()
				nb, ipB := w.lan(natFullCone)()
				w.start()
				a := w.newNode("a", na, ipA, Options{})
				b := w.newNode("b", nb, ipB, Options{})
				defer w.close()
				defer b.m.Close()
				defer a.m.Close()
				sig := &signalling{w: w, rto: 250 * time.Millisecond}
				connect(t, a, b, sig, "t")
				must(t, a.p.Start())
				must(t, b.p.Start())
				for _, n := range []*node{a, b} {
					if _, ok := waitDirect(t, n, true, 10*time.Second); !ok {
						t.Fatalf("%s: no direct path", n.name)
					}
				}
				time.Sleep(2 * time.Second) // an established session

				gone, stays := b, a // b is the controlled side
				if controllingRestarts {
					gone, stays = a, b
				}
				must(t, gone.p.Close())
				h := newTestHandler(1024)
				h.sig = sig
				h.to.Store(stays.p)
				np, err := gone.m.Peer("t-"+stays.name, controllingRestarts, h)
				must(t, err)
				gone.p, gone.h = np, h
				stays.h.to.Store(np)
				t0 := time.Now()
				must(t, np.Start())
				if _, ok := waitDirect(t, gone, true, 3*time.Second); !ok {
					t.Fatal("recreated peer: no direct path within 3 s")
				}
				t.Logf("recreated peer direct after %v", time.Since(t0))
				if !exchange(t, gone, stays, 5*time.Second) || !exchange(t, stays, gone, 5*time.Second) {
					t.Fatal("no datagram after the remote restart")
				}
			})
		})
	}
}

// A pair with no STUN server still connects on host candidates.
func TestHostCandidatesOnly(t *testing.T) {
	bubble(t, func(t *testing.T) {
		w := newWorld(t, impairment{}, 2)
		add := w.lan(natPortRestricted)
		na, ipA := add()
		nb, ipB := add()
		w.start()
		a := w.newNode("a", na, ipA, Options{STUNServer: "-"})
		b := w.newNode("b", nb, ipB, Options{STUNServer: "-"})
		defer w.close()
		defer b.m.Close()
		defer a.m.Close()
		connect(t, a, b, &signalling{w: w, rto: 250 * time.Millisecond}, "t")
		must(t, a.p.Start())
		// b starts on a's signal.
		if _, ok := waitDirect(t, b, true, 5*time.Second); !ok {
			t.Fatal("no direct path on host candidates")
		}
		if !exchange(t, b, a, 5*time.Second) {
			t.Fatal("b->a: no datagram")
		}
	})
}

func TestManagerAPI(t *testing.T) {
	bubble(t, func(t *testing.T) {
		if _, err := NewManager(Options{}); !errors.Is(err, ErrBadConn) {
			t.Errorf("NewManager without Conn = %v, want ErrBadConn", err)
		}
		w := newWorld(t, impairment{}, 3)
		n, ip := w.lan(natPublic)()
		w.start()
		a := w.newNode("a", n, ip, Options{})
		defer w.close()
		h := newTestHandler(16)
		p, err := a.m.Peer("x", true, h)
		must(t, err)
		if _, err := a.m.Peer("x", false, h); !errors.Is(err, ErrPeerExists) {
			t.Errorf("second Peer(x) = %v, want ErrPeerExists", err)
		}
		if err := p.Write([]byte("hi")); !errors.Is(err, ErrNoDirectPath) {
			t.Errorf("Write before connecting = %v, want ErrNoDirectPath", err)
		}
		must(t, p.Start())
		select {
		case s := <-h.sigs:
			if s.Generation == 0 || s.Ufrag == "" || len(s.Candidates) == 0 {
				t.Errorf("first signal %+v: want a generation, credentials and candidates", s)
			}
			var srflx bool
			for _, c := range s.Candidates {
				srflx = srflx || strings.Contains(c, "typ srflx")
			}
			if !srflx {
				t.Errorf("first signal has no server-reflexive candidate: %q", s.Candidates)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no signal after Start")
		}
		must(t, p.Close())
		if err := p.Start(); !errors.Is(err, ErrClosed) {
			t.Errorf("Start after Close = %v, want ErrClosed", err)
		}
		p2, err := a.m.Peer("x", true, h) // the id is free again
		must(t, err)
		_ = p2
		must(t, a.m.Close())
		if _, err := a.m.Peer("y", true, h); !errors.Is(err, ErrClosed) {
			t.Errorf("Peer after Close = %v, want ErrClosed", err)
		}
	})
}

func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		attempt int
		jitter  float64
		want    time.Duration
	}{
		{0, 0.5, time.Second},
		{1, 0.5, 2 * time.Second},
		{5, 0.5, 32 * time.Second},
		{6, 0.5, 60 * time.Second},
		{100, 0.5, 60 * time.Second},
		{0, 0, 800 * time.Millisecond},
		{6, 0.999999, 72 * time.Second},
	} {
		got := backoff(tc.attempt, time.Second, 60*time.Second, tc.jitter)
		if d := got - tc.want; d < -time.Millisecond || d > time.Millisecond {
			t.Errorf("backoff(%d, jitter %g) = %v, want %v", tc.attempt, tc.jitter, got, tc.want)
		}
	}
}

func TestGenerations(t *testing.T) {
	for _, tc := range []struct {
		a, b uint32
		want bool
	}{
		{2, 1, true}, {1, 2, false}, {1, 1, false},
		{0, 0xffffffff, true}, {5, 0xfffffff0, true}, {0xfffffff0, 5, false},
	} {
		if got := newerGen(tc.a, tc.b); got != tc.want {
			t.Errorf("newerGen(%d, %d) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
	if nextGen(0xffffffff) != 1 {
		t.Error("nextGen must skip 0")
	}
	if firstGen(time.Unix(0, 0)) != 1 {
		t.Error("firstGen must not be 0")
	}
}
