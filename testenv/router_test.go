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
