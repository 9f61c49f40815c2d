package scenario

import (
	"net"
	"slices"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"natchat/testenv"
)

// portPair builds alice and bob behind their own port-restricted routers.
func portPair(t *testing.T, l *testenv.Lab, naiveA bool) (ha, hb *testenv.Host, ra, rb *testenv.Router) {
	t.Helper()
	sa, err := l.AddSite("ra", testenv.PortRestricted, naiveA, "alice")
	if err != nil {
		t.Fatal(err)
	}
	sb, err := l.AddSite("rb", testenv.PortRestricted, false, "bob")
	if err != nil {
		t.Fatal(err)
	}
	return sa.Hosts[0], sb.Hosts[0], sa.Router, sb.Router
}

// waitDirectBoth waits for both nodes to report a direct path to the other.
func waitDirectBoth(t *testing.T, a, b *testenv.Node, from map[*testenv.Node]int, within time.Duration) {
	t.Helper()
	for _, p := range [][2]*testenv.Node{{a, b}, {b, a}} {
		if _, err := p[0].WaitFrom(from[p[0]], within, testenv.PathIs(p[1].Name, "direct")); err != nil {
			t.Fatal(err)
		}
	}
}

// TestImpairedLink runs a conversation over WAN links with 40ms one-way
// delay, 5ms jitter and 10% loss in each direction on both routers: every
// message must arrive exactly once and in order.
func TestImpairedLink(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 0, 0)
	ha, hb, ra, rb := portPair(t, w.lab, false)
	im := testenv.Impairment{Delay: 40 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 10}
	for _, r := range []*testenv.Router{ra, rb} {
		if err := r.Impair(im); err != nil {
			t.Fatal(err)
		}
	}
	a, b := w.meet(t, ha, hb, 0)
	res := converse(t, a, b, 30, "lossy", 2*sendWait)
	t.Logf("%d sent, %d delivered, message paths %v; alice's WAN lost %d up / %d down frames",
		res.sent, res.delivered, res.paths, ra.WAN().Stats(testenv.Up).Lost, ra.WAN().Stats(testenv.Down).Lost)
}

// TestRendezvousRestart restarts the rendezvous in the middle of a chat:
// messages sent while it is down are delivered (directly, or through the
// relay once it is back), both nodes register again, and the chat goes on.
func TestRendezvousRestart(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 0, 0)
	ha, hb, _, _ := portPair(t, w.lab, false)
	a, b := w.meet(t, ha, hb, 0)
	converse(t, a, b, 3, "before", sendWait)
	marks := map[*testenv.Node]int{a: a.Mark(), b: b.Mark()}

	if err := w.rv.Stop(); err != nil {
		t.Fatal(err)
	}
	down := converse(t, a, b, 3, "while-down", sendWait)
	t.Logf("while the rendezvous was down: message paths %v", down.paths)
	if err := w.rv.Restart(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*testenv.Node{a, b} {
		if _, err := n.WaitFrom(marks[n], waitShort+2*heartbeat, testenv.Registered()); err != nil {
			t.Fatal(err)
		}
	}
	converse(t, a, b, 5, "after", sendWait)
}

// TestNATRebinding changes alice's NAT state under a direct path. A
// conntrack flush keeps the mapping (masquerade picks the free port
// again), so the chat just goes on. A new public address breaks the direct
// path: messages must still be delivered at once (through the relay), the
// path must fall back to relay and come back to direct.
func TestNATRebinding(t *testing.T) {
	t.Parallel()
	t.Run("conntrack flush", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t, 0, 0)
		ha, hb, ra, _ := portPair(t, w.lab, false)
		a, b := w.meet(t, ha, hb, 0)
		converse(t, a, b, 1, "hello", sendWait)
		waitDirectBoth(t, a, b, nil, waitDirect)
		if err := ra.FlushConntrack(); err != nil {
			t.Fatal(err)
		}
		converse(t, a, b, 5, "after-flush", waitShort)
		if p := lastPath(a, b.Name) + "/" + lastPath(b, a.Name); p != "direct/direct" {
			if _, err := a.Wait(waitDirect, testenv.PathIs(b.Name, "direct")); err != nil {
				t.Errorf("paths %s after the flush: %v", p, err)
			}
		}
	})
	t.Run("public address change", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t, 0, 0)
		ha, hb, ra, _ := portPair(t, w.lab, false)
		a, b := w.meet(t, ha, hb, 0)
		converse(t, a, b, 1, "hello", sendWait)
		waitDirectBoth(t, a, b, nil, waitDirect)
		marks := map[*testenv.Node]int{a: a.Mark(), b: b.Mark()}
		old := ra.PublicAddr()
		next, err := ra.ChangePublicAddr()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("alice's router moved from %v to %v", old, next)
		changed := time.Now()
		// At once: delivery must not wait for the direct path to heal.
		converse(t, a, b, 3, "after-rebind", waitShort)
		t.Logf("messages after the change delivered in %v", time.Since(changed).Round(time.Millisecond))
		// Each side falls back to the relay, then punches again.
		for _, p := range [][2]*testenv.Node{{a, b}, {b, a}} {
			n, peer := p[0], p[1]
			relay, err := n.WaitFrom(marks[n], waitShort, testenv.PathIs(peer.Name, "relay"))
			if err != nil {
				t.Error(err)
				continue
			}
			ev, err := n.WaitFrom(relay.Seq+1, 2*waitDirect, testenv.PathIs(peer.Name, "direct"))
			if err != nil {
				t.Error(err)
				continue
			}
			t.Logf("%s: relay after %v, direct again after %v (%s)", n.Name, relay.Recv.Sub(changed).Round(time.Millisecond),
				ev.Recv.Sub(changed).Round(time.Millisecond), ev.Remote)
		}
		converse(t, a, b, 3, "healed", sendWait)
	})
}

// TestDirectPathBlackholed cuts a working direct path without touching
// the relay: port-restricted to port-restricted, and once both sides are
// direct, alice's router black-holes bob's router's public address (the
// rendezvous stays reachable) while a message goes each way every 200ms.
// Both sides must report the relay within 5s of the cut (ICE notices
// after 3-4s), and every message sent before, during and after the cut
// must arrive exactly once, in order. When the black hole is lifted both
// sides must go direct again (ICE restarts back off from 1s to 60s) and
// the chat go on.
func TestDirectPathBlackholed(t *testing.T) {
	t.Parallel()
	const (
		pace        = 200 * time.Millisecond
		relayWithin = 5 * time.Second
		onRelay     = 2 * time.Second // chat on the relay before healing
		healWithin  = 75 * time.Second
	)
	w := newWorld(t, 0, 0)
	ha, hb, ra, rb := portPair(t, w.lab, false)
	a, b := w.meet(t, ha, hb, 0)
	c := newChat(a, b, "stream")
	both := func(path string, from map[*testenv.Node]int) func() bool {
		return func() bool {
			for _, p := range c.directions() {
				if _, ok := seen(p[0], from[p[0]], testenv.PathIs(p[1].Name, path)); !ok || lastPath(p[0], p[1].Name) != path {
					return false
				}
			}
			return true
		}
	}
	if !c.pump(t, pace, waitDirect, both("direct", nil)) {
		t.Fatalf("no direct path both ways before the cut: paths %s/%s", lastPath(a, b.Name), lastPath(b, a.Name))
	}
	c.round(t) // one more on the direct path

	cutMarks := map[*testenv.Node]int{a: a.Mark(), b: b.Mark()}
	cutRound := c.rounds()
	cut := time.Now()
	if err := ra.Block(rb.PublicAddr()); err != nil {
		t.Fatal(err)
	}
	t.Logf("cut: %s blocks %v", ra.Name, rb.PublicAddr())
	if !c.pump(t, pace, waitShort, both("relay", cutMarks)) {
		t.Fatalf("not on the relay both ways %v after the cut: paths %s/%s", waitShort, lastPath(a, b.Name), lastPath(b, a.Name))
	}
	for _, p := range c.directions() {
		ev, _ := seen(p[0], cutMarks[p[0]], testenv.PathIs(p[1].Name, "relay"))
		took := ev.Recv.Sub(cut)
		t.Logf("%s: relay %v after the cut", p[0].Name, took.Round(time.Millisecond))
		if took > relayWithin {
			t.Errorf("%s went to the relay %v after the cut, want within %v", p[0].Name, took.Round(time.Millisecond), relayWithin)
		}
	}
	relayed := time.Now()
	c.pump(t, pace, onRelay, func() bool { return time.Since(relayed) >= onRelay })

	healMarks := map[*testenv.Node]int{a: a.Mark(), b: b.Mark()}
	healRound := c.rounds()
	healed := time.Now()
	if err := ra.Unblock(rb.PublicAddr()); err != nil {
		t.Fatal(err)
	}
	dropped, err := ra.BlockDropped()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("heal after %v of black hole, %d packets dropped", healed.Sub(cut).Round(time.Millisecond), dropped)
	if !c.pump(t, pace, healWithin, both("direct", healMarks)) {
		t.Fatalf("not direct both ways %v after the heal: paths %s/%s", healWithin, lastPath(a, b.Name), lastPath(b, a.Name))
	}
	for _, p := range c.directions() {
		ev, _ := seen(p[0], healMarks[p[0]], testenv.PathIs(p[1].Name, "direct"))
		t.Logf("%s: direct again %v after the heal (%s)", p[0].Name, ev.Recv.Sub(healed).Round(time.Millisecond), ev.Remote)
	}
	for range 5 { // and the chat goes on over the direct path
		c.round(t)
	}
	res := c.check(t, sendWait)

	lat := c.latencies(cutRound, healRound)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		t.Logf("delivery latency of the %d messages sent during the cut: median %v, max %v", len(lat),
			lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	}
	t.Logf("%d sent, %d delivered exactly once and in order, message paths %v", res.sent, res.delivered, res.paths)
}

// seen returns the first event of n since from that matches m.
func seen(n *testenv.Node, from int, m testenv.Match) (testenv.Event, bool) {
	for _, ev := range n.Events()[from:] {
		if m.F(ev) {
			return ev, true
		}
	}
	return testenv.Event{}, false
}

// TestKilledNode SIGKILLs bob: alice must see peer_left with reason
// timeout within the rendezvous expiry (6s, heartbeats every 2s) plus
// scheduling slack.
func TestKilledNode(t *testing.T) {
	t.Parallel()
	const exp, hb = 6 * time.Second, 2 * time.Second
	w := newWorld(t, exp, hb)
	ha, hb2, _, _ := portPair(t, w.lab, false)
	a, b := w.meet(t, ha, hb2, hb)
	converse(t, a, b, 1, "hello", sendWait)
	mark := a.Mark()
	killed := time.Now()
	if err := b.Kill(); err != nil {
		t.Fatal(err)
	}
	ev, err := a.WaitFrom(mark, exp+2*hb+5*time.Second, testenv.PeerLeft(b.Name, ""))
	if err != nil {
		t.Fatal(err)
	}
	took := ev.Recv.Sub(killed)
	t.Logf("peer_left %s after %v", ev.Reason, took.Round(time.Millisecond))
	if ev.Reason != "timeout" {
		t.Errorf("peer_left reason %q, want timeout", ev.Reason)
	}
	if took < exp-hb {
		t.Errorf("peer_left after %v, sooner than the expiry allows", took)
	}
}

// TestIdleMappings lets the routers' UDP mappings expire: with a 10s
// conntrack UDP timeout and the binaries' default heartbeat (24s), the
// pair sits idle for three timeouts, then talks; every message must be
// delivered at once (within 5s). Port-restricted to port-restricted keeps a direct path; symmetric
// to port-restricted depends on the relay, i.e. on the mapping to the
// rendezvous.
func TestIdleMappings(t *testing.T) {
	t.Parallel()
	const timeout = 10 * time.Second
	for _, c := range []struct {
		name   string
		na, nb testenv.NATType
	}{
		{"port-restricted to port-restricted", testenv.PortRestricted, testenv.PortRestricted},
		{"symmetric to port-restricted", testenv.Symmetric, testenv.PortRestricted},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			// The binaries' defaults: 60s expiry, 25s heartbeat (24s in
			// force), much longer than the routers' mapping timeout.
			w := newWorld(t, time.Minute, 25*time.Second)
			sa, err := w.lab.AddSite("ra", c.na, false, "alice")
			if err != nil {
				t.Fatal(err)
			}
			sb, err := w.lab.AddSite("rb", c.nb, false, "bob")
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range []*testenv.Router{sa.Router, sb.Router} {
				if err := r.SetUDPTimeouts(timeout, timeout); err != nil {
					t.Fatal(err)
				}
			}
			// -1: the node binary's default heartbeat.
			a, b := w.meet(t, sa.Hosts[0], sb.Hosts[0], -1)
			converse(t, a, b, 2, "before", sendWait)
			t.Logf("idle for %v (3 mapping timeouts), paths %s/%s", 3*timeout, lastPath(a, b.Name), lastPath(b, a.Name))
			idle(3 * timeout)
			start := time.Now()
			converse(t, a, b, 2, "after-idle", 5*time.Second)
			t.Logf("delivered after idling in %v, paths %s/%s", time.Since(start).Round(time.Millisecond),
				lastPath(a, b.Name), lastPath(b, a.Name))
		})
	}
}

// TestNaiveRouter puts alice behind a port-restricted router without an
// input firewall; bob's router is a normal one. A hole-punch packet from
// bob that reaches alice's router before alice has sent to bob leaves a
// conntrack entry there, and the router then maps alice's own packets to
// bob to another port (the kernel behaviour testenv.TestNaiveRouter
// shows), which bob's filter drops. Whether bob's first check wins that
// race is a matter of timing, so when the first punch succeeds anyway the
// test forces the situation: it freezes alice's node (SIGSTOP), flushes
// her router's conntrack table and resumes her once bob's next keepalive
// has reached the router. Either way the direct path must be lost and
// every message delivered over the relay.
//
// The control, the same pair behind a firewalled router, must punch at
// once and stay direct through the same freeze and flush: the firewall
// drops bob's packet, so alice keeps her port.
func TestNaiveRouter(t *testing.T) {
	t.Parallel()
	for _, naive := range []bool{true, false} {
		name := "naive port-restricted to port-restricted"
		if !naive {
			name = "control: port-restricted to port-restricted"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, 0, 0)
			ha, hb, ra, rb := portPair(t, w.lab, naive)
			a, b := w.meet(t, ha, hb, 0)
			converse(t, a, b, 1, "hello", sendWait)
			within := waitDirect
			if naive {
				within = relayWindow
			}
			ev, err := a.Wait(within, testenv.PathIs(b.Name, "direct"))
			switch {
			case err != nil && naive:
				t.Logf("the first punch failed behind the naive router, as expected; stray entries from bob: %d",
					strayFlows(t, ra, rb))
			case err != nil:
				t.Fatalf("no direct path behind a firewalled router: %v", err)
			default:
				t.Logf("first punch: %s", ev.Raw)
				waitDirectBoth(t, a, b, nil, waitDirect)
				freezeFlushResume(t, a, ra, rb, naive)
			}
			marks := map[*testenv.Node]int{a: a.Mark(), b: b.Mark()}
			res := converse(t, a, b, 10, "batch", sendWait)
			t.Logf("message paths %v, final paths %s/%s", res.paths, lastPath(a, b.Name), lastPath(b, a.Name))
			if naive {
				if p := lastPath(b, a.Name); p != "relay" {
					if _, err := b.WaitFrom(marks[b], waitShort, testenv.PathIs(a.Name, "relay")); err != nil {
						t.Errorf("path %s: the naive router's remap did not break the direct path: %v", p, err)
					}
				}
				converse(t, a, b, 5, "on-relay", sendWait)
			} else if p := lastPath(a, b.Name) + "/" + lastPath(b, a.Name); p != "direct/direct" {
				t.Errorf("paths %s after the flush behind a firewalled router, want direct/direct", p)
			}
		})
	}
}

// strayFlows counts the conntrack entries on ra that bob's router (rb)
// originated: packets from bob that the router took for new flows to
// itself.
func strayFlows(t *testing.T, ra, rb *testenv.Router) int {
	t.Helper()
	flows, err := ra.Conntrack()
	if err != nil {
		t.Fatal(err)
	}
	bob := net.IP(rb.PublicAddr().AsSlice())
	return len(slices.DeleteFunc(flows, func(f *netlink.ConntrackFlow) bool { return !f.Forward.SrcIP.Equal(bob) }))
}

// freezeFlushResume stops alice's node, flushes her router's conntrack
// table, waits until a packet from bob has reached the router (a stray
// entry on a naive router, a drop on a firewalled one) and resumes her.
func freezeFlushResume(t *testing.T, a *testenv.Node, ra, rb *testenv.Router, naive bool) {
	t.Helper()
	if err := a.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := a.Signal(syscall.SIGCONT); err != nil {
			t.Error(err)
		}
	}()
	var dropped uint64
	var err error
	if !naive {
		if dropped, err = ra.InboundDropped(); err != nil {
			t.Fatal(err)
		}
	}
	if err := ra.FlushConntrack(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitShort)
	for {
		if naive && strayFlows(t, ra, rb) > 0 {
			return // bob's packet left an entry on the naive router
		}
		if !naive {
			n, err := ra.InboundDropped()
			if err != nil {
				t.Fatal(err)
			}
			if n > dropped {
				return // the firewall dropped bob's packet
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no packet from bob reached alice's router while she was stopped")
		}
		idle(20 * time.Millisecond) // polling the router's state
	}
}
