package testenv

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// udpFlowTo reports whether the router tracks a UDP flow towards dst.
func udpFlowTo(t *testing.T, r *Router, dst netip.AddrPort) bool {
	t.Helper()
	for _, f := range must(r.Conntrack())(t) {
		if f.Forward.Protocol == 17 && f.Forward.DstIP.Equal(dst.Addr().AsSlice()) && f.Forward.DstPort == dst.Port() {
			return true
		}
	}
	return false
}

// TestConntrackTimeout checks that the UDP timeouts are set per router
// namespace and that an idle mapping really expires: afterwards the
// peer's packets to the old mapping are dropped by the firewall.
func TestConntrackTimeout(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	h, r, p1, _ := natSite(t, l, PortRestricted, false)
	rootBefore, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_udp_timeout")
	noErr(t, err)
	noErr(t, r.SetUDPTimeouts(2*time.Second, 3*time.Second))
	un, st, err := r.UDPTimeouts()
	noErr(t, err)
	if un != 2*time.Second || st != 3*time.Second {
		t.Fatalf("router timeouts %v/%v, want 2s/3s", un, st)
	}
	rootAfter, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_udp_timeout")
	noErr(t, err)
	if string(rootAfter) != string(rootBefore) {
		t.Errorf("root namespace timeout changed from %q to %q", rootBefore, rootAfter)
	}

	src := newProbe(t, h, 40000)
	a := newProbe(t, p1, 3000)
	src.send(ap(p1, 3000), "out")
	mapped := a.expect("out", 3*time.Second).from
	a.send(mapped, "back")
	src.expect("back", 3*time.Second)
	start := time.Now()
	if !udpFlowTo(t, r, ap(p1, 3000)) {
		t.Fatal("no conntrack entry for the flow")
	}
	eventually(t, 15*time.Second, "the idle mapping to expire", func() bool { return !udpFlowTo(t, r, ap(p1, 3000)) })
	idle := time.Since(start)
	t.Logf("mapping expired after %v idle", idle)
	if idle < 1500*time.Millisecond {
		t.Errorf("mapping expired after %v, before the 2s timeout", idle)
	}
	before := must(r.InboundDropped())(t)
	a.send(mapped, "after expiry")
	eventually(t, 3*time.Second, "packet to the expired mapping dropped", func() bool {
		return must(r.InboundDropped())(t) > before
	})
	if src.got("after expiry") {
		t.Error("packet to the expired mapping was delivered")
	}
}

// TestConntrackFlush checks that a flush forgets mappings at once, for
// masquerade and for the full-cone map.
func TestConntrackFlush(t *testing.T) {
	t.Parallel()
	for _, nat := range []NATType{PortRestricted, FullCone} {
		t.Run(nat.String(), func(t *testing.T) {
			t.Parallel()
			l := newLab(t)
			h, r, p1, p2 := natSite(t, l, nat, false)
			src := newProbe(t, h, 40000)
			a := newProbe(t, p1, 3000)
			c := newProbe(t, p2, 3000)
			src.send(ap(p1, 3000), "out")
			mapped := a.expect("out", 3*time.Second).from
			noErr(t, r.FlushConntrack())
			if udpFlowTo(t, r, ap(p1, 3000)) {
				t.Fatal("flow still tracked after flush")
			}
			for _, from := range []*probe{a, c} {
				before := must(r.InboundDropped())(t)
				from.send(mapped, "after flush")
				eventually(t, 3*time.Second, "packet to the flushed mapping dropped", func() bool {
					return must(r.InboundDropped())(t) > before
				})
			}
			if src.got("after flush") {
				t.Error("packet to the flushed mapping was delivered")
			}
		})
	}
}

// TestChangePublicAddr checks NAT rebinding: after the router's public
// address changes, the same LAN socket appears under the new address.
func TestChangePublicAddr(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	h, r, p1, _ := natSite(t, l, PortRestricted, false)
	src := newProbe(t, h, 40000)
	a := newProbe(t, p1, 3000)
	src.send(ap(p1, 3000), "one")
	m1 := a.expect("one", 3*time.Second).from
	old := r.PublicAddr()
	next := must(r.ChangePublicAddr())(t)
	if next == old || !RouterNet.Contains(next) || r.PublicAddr() != next {
		t.Fatalf("ChangePublicAddr: %v -> %v (PublicAddr %v)", old, next, r.PublicAddr())
	}
	src.send(ap(p1, 3000), "two")
	m2 := a.expect("two", 3*time.Second).from
	t.Logf("mapping %v -> %v", m1, m2)
	if m1.Addr() != old || m2.Addr() != next {
		t.Errorf("mappings %v then %v, want addresses %v then %v", m1, m2, old, next)
	}
	a.send(m2, "back")
	src.expect("back", 3*time.Second)
}

// TestDoubleNAT checks a host behind a home router behind a carrier-grade
// NAT: the internet sees the carrier's address, the home router's WAN is
// in 100.64.0.0/10, and replies find their way back.
func TestDoubleNAT(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	s := must(l.AddDoubleNAT("home", PortRestricted, PortRestricted, "h"))(t)
	cgn := l.Router("home-cgn")
	p1 := must(l.AddHost("p1", l.Internet()))(t)
	if !netip.MustParsePrefix("100.64.0.0/10").Contains(s.Router.PublicAddr()) {
		t.Errorf("home router WAN %v not in 100.64.0.0/10", s.Router.PublicAddr())
	}
	src := newProbe(t, s.Hosts[0], 40000)
	a := newProbe(t, p1, 3000)
	src.send(ap(p1, 3000), "out")
	m := a.expect("out", 3*time.Second).from
	if m.Addr() != cgn.PublicAddr() {
		t.Errorf("seen from %v, want the carrier address %v", m, cgn.PublicAddr())
	}
	a.send(m, "back")
	src.expect("back", 3*time.Second)
	if s.Router.WAN() != nil || s.Router.Impair(Impairment{}) == nil {
		t.Error("a router behind a carrier NAT has no internet wire")
	}
}

// TestSameRouterLAN checks that two hosts behind one router reach each
// other directly on the LAN (no NAT between them), and that the router
// does not hairpin traffic sent to its own public address.
func TestSameRouterLAN(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	s := must(l.AddSite("home", PortRestricted, false, "h1", "h2"))(t)
	p1 := must(l.AddHost("p1", l.Internet()))(t)
	x := newProbe(t, s.Hosts[0], 40000)
	y := newProbe(t, s.Hosts[1], 40001)
	a := newProbe(t, p1, 3000)
	x.send(ap(s.Hosts[1], 40001), "lan")
	if got := y.expect("lan", 3*time.Second).from; got != ap(s.Hosts[0], 40000) {
		t.Errorf("LAN packet from %v, want %v", got, ap(s.Hosts[0], 40000))
	}
	// Learn y's public mapping, then send to it from x.
	y.send(ap(p1, 3000), "map")
	ym := a.expect("map", 3*time.Second).from
	x.send(ym, "hairpin")
	// The router drops or rejects it; it must never arrive.
	x.send(ap(s.Hosts[1], 40001), "marker")
	y.expect("marker", 3*time.Second)
	if y.got("hairpin") {
		t.Error("router hairpinned a packet to its own public address")
	}
}

// TestPublicHostLinks checks the addressing plan: public hosts and routers
// on the internet get documentation addresses, the rendezvous host gets
// RendezvousAddr, and the internet segment holds both networks.
func TestPublicHostLinks(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	rv := must(l.AddRendezvousHost())(t)
	r := must(l.AddRouter("r1", RouterConfig{NAT: Symmetric}))(t)
	p := must(l.AddHost("p1", l.Internet()))(t)
	if rv.Addr != RendezvousAddr || !PublicNet.Contains(p.Addr) || !RouterNet.Contains(r.PublicAddr()) {
		t.Errorf("addresses rv %v p1 %v r1 %v", rv.Addr, p.Addr, r.PublicAddr())
	}
	links := must(r.NS.Netlink().LinkList())(t)
	var names []string
	for _, ln := range links {
		names = append(names, ln.Attrs().Name)
	}
	if got := strings.Join(names, ","); got != "lo,lan0,wan0" {
		t.Errorf("router links %s, want lo,lan0,wan0", got)
	}
	if _, err := l.AddRouter("r2", RouterConfig{NAT: None}); err == nil {
		t.Error("AddRouter accepted NAT type none")
	}
	if _, err := l.AddHost("p1", l.Internet()); err == nil {
		t.Error("AddHost accepted a duplicate name")
	}
	if _, err := l.AddHost("Bad_Name", l.Internet()); err == nil {
		t.Error("AddHost accepted an invalid name")
	}
}

// TestBlock checks the black hole: with p1 blocked, a packet from the LAN
// host to p1 and one from p1 to the host's mapping (an established flow)
// are dropped by the block, shown by its counter, while p2 still gets
// through both ways; a packet from p1 to the router itself is dropped
// too. After Unblock the flow to p1 works again through the same mapping.
// On the full-cone router the rules are rebuilt while blocked
// (SetUDPTimeouts), which must keep the block; it is also naive, so no
// firewall stands in for the block.
func TestBlock(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		nat     NATType
		naive   bool
		rebuild bool
		name    string
	}{
		{nat: PortRestricted, name: "port-restricted"},
		{nat: FullCone, naive: true, rebuild: true, name: "full-cone naive, rules rebuilt"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			l := newLab(t)
			h, r, p1, p2 := natSite(t, l, c.nat, c.naive)
			src := newProbe(t, h, 40000)
			a := newProbe(t, p1, 3000)
			b := newProbe(t, p2, 3000)
			// Open flows to both public hosts.
			var mapped netip.AddrPort
			for _, dst := range []*probe{a, b} {
				src.send(ap(l.Host(dst.name), 3000), "open")
				mapped = dst.expect("open", 3*time.Second).from
				dst.send(mapped, "open-reply")
				src.expect("open-reply", 3*time.Second)
			}

			noErr(t, r.Block(p1.Addr))
			noErr(t, r.Block(p1.Addr)) // twice is once
			if got := r.Blocked(); len(got) != 1 || got[0] != p1.Addr {
				t.Fatalf("Blocked() = %v, want [%v]", got, p1.Addr)
			}
			if c.rebuild {
				noErr(t, r.SetUDPTimeouts(30*time.Second, 120*time.Second))
			}
			// blocked sends one packet and waits for the block's counter
			// to count exactly it.
			blocked := func(from *probe, to netip.AddrPort, data string) {
				t.Helper()
				before := must(r.BlockDropped())(t)
				from.send(to, data)
				eventually(t, 3*time.Second, data+" dropped by the block", func() bool {
					return must(r.BlockDropped())(t) > before
				})
				if n := must(r.BlockDropped())(t); n != before+1 {
					t.Errorf("%s: block counter rose by %d, want 1", data, n-before)
				}
			}
			blocked(src, ap(p1, 3000), "out-blocked")
			blocked(a, mapped, "in-blocked")
			blocked(a, netip.AddrPortFrom(r.PublicAddr(), 5555), "to-router-blocked")
			// Other addresses pass both ways, and afterwards nothing from
			// p1 has turned up at the host or the other way round.
			dropped := must(r.BlockDropped())(t)
			src.send(ap(p2, 3000), "other-out")
			b.expect("other-out", 3*time.Second)
			b.send(mapped, "other-in")
			src.expect("other-in", 3*time.Second)
			if src.got("in-blocked") || a.got("out-blocked") {
				t.Error("a blocked packet was delivered")
			}
			if n := must(r.BlockDropped())(t); n != dropped {
				t.Errorf("block counter rose by %d for traffic with %v, which is not blocked", n-dropped, p2.Addr)
			}

			noErr(t, r.Unblock(p1.Addr))
			noErr(t, r.Unblock(p1.Addr)) // not blocked: nothing to do
			if got := r.Blocked(); len(got) != 0 {
				t.Fatalf("Blocked() = %v after Unblock", got)
			}
			src.send(ap(p1, 3000), "out-unblocked")
			if got := a.expect("out-unblocked", 3*time.Second).from; got != mapped {
				t.Errorf("after Unblock the host appears as %v, want the old mapping %v", got, mapped)
			}
			a.send(mapped, "in-unblocked")
			src.expect("in-unblocked", 3*time.Second)
			if n := must(r.BlockDropped())(t); n != dropped {
				t.Errorf("block counter rose by %d after Unblock", n-dropped)
			}
			if err := r.Block(netip.MustParseAddr("2001:db8::1")); err == nil {
				t.Error("Block accepted an IPv6 address")
			}
		})
	}
}
