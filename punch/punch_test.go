package punch

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"natchat/internal/vnetlab"
)

// The vnet tests run in synctest bubbles (vnetlab.Bubble), where pion,
// vnet and punch share a fake clock and leaked goroutines fail the test;
// PUNCH_REALTIME=1 runs them on the real clock instead (slow: ~1 min).
const realtimeEnv = "PUNCH_REALTIME"

func bubble(t *testing.T, f func(*testing.T)) { vnetlab.Bubble(t, realtimeEnv, f) }

// TestNATPairs punches between every pair of NATs (vnetlab.Pairs) under
// every WAN impairment: a direct path where the NATs allow one, and
// otherwise none, with the controlling side retrying.
func TestNATPairs(t *testing.T) {
	vnetlab.RunMatrix(t, vnetlab.Impairments(), realtimeEnv, func(t *testing.T, p vnetlab.Pair, imp vnetlab.Impairment, seed uint64) {
		// Swap roles on the delayed runs so both orientations are covered.
		runPair(t, p, imp.Delay > 0, imp, seed)
	})
}

func runPair(t *testing.T, p vnetlab.Pair, swap bool, imp vnetlab.Impairment, seed uint64) {
	w := newWorld(t, imp, seed)
	la, lb := w.LANs(p)
	ha, hb := la.Host(), lb.Host()
	w.Start()
	a := w.newNode("a", ha, Options{})
	b := w.newNode("b", hb, Options{})
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

	if !p.Direct {
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
	if p.SameRouter {
		// Without loss the LAN pair wins. With loss on the WAN, the
		// signal carrying a host candidate may be lost and resent after
		// the server-reflexive one arrived, and ICE (no renomination in
		// pion) keeps the first pair that worked: the hairpin through the
		// router, a direct path too, which the exchange below checks.
		for _, ev := range []directEv{ea, eb} {
			ip := ev.remote.(*net.UDPAddr).IP.String()
			switch {
			case strings.HasPrefix(ip, "10.0."):
			case imp.Loss > 0:
				t.Logf("same router, lossy WAN: direct path via %v (hairpin), not the LAN", ev.remote)
			default:
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
				w := newWorld(t, vnetlab.Impairment{Delay: 30 * time.Millisecond}, 1)
				ha := w.LAN(vnetlab.PortRestricted).Host()
				hb := w.LAN(vnetlab.PortRestricted).Host()
				w.Start()
				a := w.newNode("a", ha, Options{})
				b := w.newNode("b", hb, Options{})
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

				w.cutNodes(tc.cut)
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
				w.cutNodes(nil)
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
				w := newWorld(t, vnetlab.Impairment{Delay: 30 * time.Millisecond}, 4)
				ha := w.LAN(vnetlab.PortRestricted).Host()
				hb := w.LAN(vnetlab.FullCone).Host()
				w.Start()
				a := w.newNode("a", ha, Options{})
				b := w.newNode("b", hb, Options{})
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
		w := newWorld(t, vnetlab.Impairment{}, 2)
		lan := w.LAN(vnetlab.PortRestricted)
		ha, hb := lan.Host(), lan.Host()
		w.Start()
		a := w.newNode("a", ha, Options{STUNServer: "-"})
		b := w.newNode("b", hb, Options{STUNServer: "-"})
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
		w := newWorld(t, vnetlab.Impairment{}, 3)
		host := w.LAN(vnetlab.NoNAT).Host()
		w.Start()
		a := w.newNode("a", host, Options{})
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
