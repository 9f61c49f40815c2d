package testenv

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// natSite builds a site of type nat with one host "h" and two public hosts
// "p1" and "p2", and returns the host, its router (nil for None) and the
// public hosts.
func natSite(t *testing.T, l *Lab, nat NATType, naive bool) (*Host, *Router, *Host, *Host) {
	t.Helper()
	s := must(l.AddSite("site", nat, naive, "h"))(t)
	p1 := must(l.AddHost("p1", l.Internet()))(t)
	p2 := must(l.AddHost("p2", l.Internet()))(t)
	return s.Hosts[0], s.Router, p1, p2
}

func ap(h *Host, port int) netip.AddrPort { return netip.AddrPortFrom(h.Addr, uint16(port)) }

// TestNATMapping checks RFC 4787 mapping behaviour: one LAN socket sending
// to three destinations (two ports of one host, one other host) appears
// under one public port for endpoint-independent mapping and under a
// different one per destination for symmetric.
func TestNATMapping(t *testing.T) {
	t.Parallel()
	for _, nat := range NATTypes {
		t.Run(nat.String(), func(t *testing.T) {
			t.Parallel()
			l := newLab(t)
			h, r, p1, p2 := natSite(t, l, nat, false)
			src := newProbe(t, h, 40000)
			a := newProbe(t, p1, 3000)
			b := newProbe(t, p1, 3001)
			c := newProbe(t, p2, 3000)
			var seen []netip.AddrPort
			for i, dst := range []*probe{a, b, c} {
				msg := fmt.Sprintf("m%d", i)
				src.send(netip.AddrPortFrom(l.Host(dst.name).Addr, uint16(dst.port())), msg)
				seen = append(seen, dst.expect(msg, 3*time.Second).from)
			}
			t.Logf("%v: mappings seen by p1:3000, p1:3001, p2:3000: %v", nat, seen)
			wantIP := h.Addr
			if r != nil {
				wantIP = r.PublicAddr()
			}
			for _, m := range seen {
				if m.Addr() != wantIP {
					t.Errorf("mapped address %v, want %v", m.Addr(), wantIP)
				}
			}
			if nat.EndpointIndependentMapping() {
				if seen[0] != seen[1] || seen[0] != seen[2] {
					t.Errorf("endpoint-independent mapping gave different mappings: %v", seen)
				}
				if seen[0].Port() != 40000 {
					t.Errorf("mapping %v does not preserve port 40000", seen[0])
				}
			} else if seen[0] == seen[1] || seen[0] == seen[2] || seen[1] == seen[2] {
				t.Errorf("symmetric NAT reused a mapping across destinations: %v", seen)
			}
		})
	}
}

// TestNATFiltering checks RFC 4787 filtering behaviour. The LAN socket
// sends to p1:3000; then p1:3000 (the same endpoint), p1:3001 (same
// address, other port) and p2:3000 (another address) send to the mapping.
// A packet the router must filter is proven dropped by the firewall's drop
// counter rising, not by waiting for silence. Every delivered packet is
// answered, and the answer must come from the same mapping.
func TestNATFiltering(t *testing.T) {
	t.Parallel()
	type want struct{ sameAddrOtherPort, otherAddr bool }
	cases := map[NATType]want{
		None:              {true, true},
		FullCone:          {true, true},
		AddressRestricted: {true, false},
		PortRestricted:    {false, false},
		Symmetric:         {false, false},
	}
	for _, nat := range NATTypes {
		w := cases[nat]
		t.Run(nat.String(), func(t *testing.T) {
			t.Parallel()
			l := newLab(t)
			h, r, p1, p2 := natSite(t, l, nat, false)
			src := newProbe(t, h, 40000)
			a := newProbe(t, p1, 3000)
			b := newProbe(t, p1, 3001)
			c := newProbe(t, p2, 3000)
			src.send(ap(p1, 3000), "hello")
			mapped := a.expect("hello", 3*time.Second).from

			check := func(from *probe, fromHost *Host, name string, allowed bool) {
				t.Helper()
				var before uint64
				if r != nil {
					before = must(r.InboundDropped())(t)
				}
				from.send(mapped, name)
				if allowed {
					pk := src.expect(name, 3*time.Second)
					if want := ap(fromHost, from.port()); pk.from != want {
						t.Errorf("%s arrived from %v, want %v", name, pk.from, want)
					}
					src.send(pk.from, name+"-reply")
					if got := from.expect(name+"-reply", 3*time.Second).from; got != mapped {
						t.Errorf("reply to %s left through %v, want the mapping %v", name, got, mapped)
					}
					return
				}
				eventually(t, 3*time.Second, name+" dropped by "+r.Name, func() bool {
					return must(r.InboundDropped())(t) > before
				})
				if src.got(name) {
					t.Errorf("%s was delivered; %v must filter it", name, nat)
				}
			}
			check(a, p1, "same-endpoint", true)
			check(b, p1, "same-address-other-port", w.sameAddrOtherPort)
			check(c, p2, "other-address", w.otherAddr)
		})
	}
}

// TestFullConeTwoHosts checks that a full-cone router keeps the mappings
// of two LAN hosts using the same local port apart.
func TestFullConeTwoHosts(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	s := must(l.AddSite("site", FullCone, false, "h1", "h2"))(t)
	p1 := must(l.AddHost("p1", l.Internet()))(t)
	p2 := must(l.AddHost("p2", l.Internet()))(t)
	a := newProbe(t, p1, 3000)
	c := newProbe(t, p2, 3000)
	var mapped [2]netip.AddrPort
	var srcs [2]*probe
	for i, h := range s.Hosts {
		srcs[i] = newProbe(t, h, 40000)
		srcs[i].send(ap(p1, 3000), h.Name)
		mapped[i] = a.expect(h.Name, 3*time.Second).from
	}
	if mapped[0] == mapped[1] {
		t.Fatalf("both hosts mapped to %v", mapped[0])
	}
	for i := range s.Hosts {
		msg := fmt.Sprintf("to-%d", i)
		c.send(mapped[i], msg)
		srcs[i].expect(msg, 3*time.Second)
		if srcs[1-i].got(msg) {
			t.Errorf("%s reached the other host", msg)
		}
	}
}

// TestNaiveRouter reproduces the measured kernel behaviour behind the
// "naive router" scenario: without an input firewall, an unsolicited packet
// to the router's public port leaves a conntrack entry, and the LAN host's
// own flow to that peer is then remapped to another port. A firewalled
// router drops the packet before conntrack confirms it, so the port is
// preserved.
func TestNaiveRouter(t *testing.T) {
	t.Parallel()
	for _, naive := range []bool{false, true} {
		t.Run(fmt.Sprintf("naive=%v", naive), func(t *testing.T) {
			t.Parallel()
			l := newLab(t)
			h, r, p1, _ := natSite(t, l, PortRestricted, naive)
			src := newProbe(t, h, 40000)
			a := newProbe(t, p1, 3000)
			early := netip.AddrPortFrom(r.PublicAddr(), 40000)
			var before uint64
			if !naive {
				before = must(r.InboundDropped())(t)
			}
			a.send(early, "early punch")
			if naive {
				eventually(t, 3*time.Second, "conntrack entry for the early punch", func() bool {
					for _, f := range must(r.Conntrack())(t) {
						if f.Forward.DstPort == 40000 && f.Forward.SrcPort == 3000 {
							return true
						}
					}
					return false
				})
			} else {
				eventually(t, 3*time.Second, "early punch dropped", func() bool {
					return must(r.InboundDropped())(t) > before
				})
			}
			src.send(ap(p1, 3000), "late punch")
			got := a.expect("late punch", 3*time.Second).from
			t.Logf("naive=%v: host port 40000 mapped to %v", naive, got)
			if naive && got.Port() == 40000 {
				t.Errorf("naive router kept port 40000; expected a remap after the early punch")
			}
			if !naive && got.Port() != 40000 {
				t.Errorf("firewalled router remapped to %v; expected port 40000", got)
			}
		})
	}
}
