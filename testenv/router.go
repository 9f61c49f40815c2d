package testenv

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouterConfig describes a NAT router. NAT must be set (None is not a
// router); the zero values of the other fields give a firewalled router on
// the internet with an automatically numbered LAN.
type RouterConfig struct {
	// NAT is the router's NAT type; None is not a router.
	NAT NATType
	// Naive drops the router's firewall: new inbound traffic on the WAN is
	// not dropped, so an unsolicited packet to the router's public address
	// leaves a conntrack entry behind (see PortRestricted).
	Naive bool
	// Upstream is the network the WAN is on; nil means the internet.
	Upstream *Network
	// LAN is the LAN prefix; the zero value picks 192.168.N.0/24, or
	// 100.64.N.0/24 when CarrierGrade.
	LAN netip.Prefix
	// CarrierGrade makes the default LAN come from 100.64.0.0/10.
	CarrierGrade bool
}

// Router is a namespace that forwards between its LAN bridge "lan0" and
// its WAN interface "wan0" with NAT and (unless naive) a firewall.
type Router struct {
	Name  string
	NS    *Namespace
	NAT   NATType
	Naive bool

	lab      *Lab
	lan      *Network
	upstream *Network
	wire     *Wire // nil unless upstream is the internet

	mu       sync.Mutex // guards wan and rules
	wan      netip.Prefix
	rules    ruleConfig
	timeouts [2]time.Duration // unreplied, stream; zero = kernel default
}

// AddRouter creates a router with its LAN bridge and connects its WAN.
func (l *Lab) AddRouter(name string, cfg RouterConfig) (*Router, error) {
	if cfg.NAT == None {
		return nil, fmt.Errorf("router %s: NAT type none is a public host, not a router", name)
	}
	up := cfg.Upstream
	if up == nil {
		up = l.internet
	}
	lanPrefix := cfg.LAN
	if !lanPrefix.IsValid() {
		l.mu.Lock()
		if cfg.CarrierGrade {
			l.nextCGN++
			lanPrefix = netip.MustParsePrefix(fmt.Sprintf("100.64.%d.0/24", l.nextCGN))
		} else {
			l.nextLAN++
			lanPrefix = netip.MustParsePrefix(fmt.Sprintf("192.168.%d.0/24", l.nextLAN))
		}
		l.mu.Unlock()
	}
	if !lanPrefix.Addr().Is4() || lanPrefix.Bits() > 29 {
		return nil, fmt.Errorf("router %s: LAN %s: want an IPv4 prefix of /29 or shorter", name, lanPrefix)
	}
	ns, err := l.newNamespace(name)
	if err != nil {
		return nil, err
	}
	r := &Router{Name: name, NS: ns, NAT: cfg.NAT, Naive: cfg.Naive, lab: l, upstream: up,
		rules: ruleConfig{nat: cfg.NAT, naive: cfg.Naive}}
	gw := lanPrefix.Masked().Addr().Next()
	r.lan = &Network{Name: name, Prefix: lanPrefix.Masked(), Gateway: gw, Router: r, lab: l, ns: ns,
		bridge: "lan0", next: gw.Next()}
	// Hosts start at .10 when the LAN is big enough.
	if lanPrefix.Bits() <= 24 {
		b := gw.As4()
		b[3] = 10
		r.lan.next = netip.AddrFrom4(b)
	}
	for k, v := range map[string]string{
		"net/ipv4/ip_forward":                  "1",
		"net/ipv4/conf/all/send_redirects":     "0",
		"net/ipv4/conf/default/send_redirects": "0",
	} {
		if err := ns.SetSysctl(k, v); err != nil {
			return nil, err
		}
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "lan0"}}
	if err := ns.nl.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("router %s: create lan0: %w", name, err)
	}
	if err := ns.linkUp("lan0", false); err != nil {
		return nil, err
	}
	if err := ns.setAddr("lan0", netip.PrefixFrom(gw, lanPrefix.Bits())); err != nil {
		return nil, err
	}
	wan, err := l.allocAddr(up, false)
	if err != nil {
		return nil, err
	}
	if err := applyRules(ns, r.rules); err != nil {
		return nil, err
	}
	w, err := l.attach(ns, nftWAN, up, wan)
	if err != nil {
		return nil, fmt.Errorf("router %s: %w", name, err)
	}
	r.wire, r.wan = w, wan
	l.mu.Lock()
	l.routers[name] = r
	err = l.writeStateLocked()
	l.mu.Unlock()
	l.log.Debug().Str("router", name).Stringer("nat", cfg.NAT).Bool("naive", cfg.Naive).
		Stringer("wan", wan).Stringer("lan", lanPrefix).Msg("router added")
	return r, err
}

// LAN returns the router's LAN segment.
func (r *Router) LAN() *Network { return r.lan }

// Upstream returns the network the router's WAN is on.
func (r *Router) Upstream() *Network { return r.upstream }

// WAN returns the wire between the router and the internet, or nil when
// the router sits behind another router.
func (r *Router) WAN() *Wire { return r.wire }

// PublicAddr returns the router's WAN address.
func (r *Router) PublicAddr() netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.wan.Addr()
}

// Impair sets the impairment of both directions of the router's WAN.
func (r *Router) Impair(im Impairment) error {
	if r.wire == nil {
		return fmt.Errorf("router %s is not on the internet; impair its upstream router", r.Name)
	}
	r.wire.Set(im)
	return nil
}

// SetUDPTimeouts sets the router's conntrack UDP timeouts: unreplied
// applies to a flow that has seen packets in one direction only, stream to
// one that has seen both (after a few seconds of it). Both are whole
// seconds, at least 1. The kernel defaults are 30s and 120s. The idle
// mapping timeout of full-cone and address-restricted routers follows
// stream; setting it rebuilds their rules, which forgets current mappings.
func (r *Router) SetUDPTimeouts(unreplied, stream time.Duration) error {
	if unreplied < time.Second || stream < time.Second {
		return fmt.Errorf("router %s: UDP timeouts must be at least 1s", r.Name)
	}
	if err := r.NS.SetSysctl("net/netfilter/nf_conntrack_udp_timeout", strconv.Itoa(int(unreplied/time.Second))); err != nil {
		return err
	}
	if err := r.NS.SetSysctl("net/netfilter/nf_conntrack_udp_timeout_stream", strconv.Itoa(int(stream/time.Second))); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.timeouts = [2]time.Duration{unreplied, stream}
	if r.NAT == FullCone || r.NAT == AddressRestricted {
		r.rules.mapTimeout = stream
		return applyRules(r.NS, r.rules)
	}
	return nil
}

// UDPTimeouts returns the router's conntrack UDP timeouts as the kernel
// reports them.
func (r *Router) UDPTimeouts() (unreplied, stream time.Duration, err error) {
	get := func(k string) (time.Duration, error) {
		v, err := r.NS.Sysctl(k)
		if err != nil {
			return 0, err
		}
		n, err := strconv.Atoi(v)
		return time.Duration(n) * time.Second, err
	}
	if unreplied, err = get("net/netfilter/nf_conntrack_udp_timeout"); err != nil {
		return 0, 0, err
	}
	stream, err = get("net/netfilter/nf_conntrack_udp_timeout_stream")
	return unreplied, stream, err
}

// Conntrack lists the router's IPv4 conntrack entries.
func (r *Router) Conntrack() ([]*netlink.ConntrackFlow, error) {
	flows, err := r.NS.nl.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("router %s: list conntrack: %w", r.Name, err)
	}
	return flows, nil
}

// FlushConntrack empties the router's conntrack table, so every NAT
// mapping is forgotten (full-cone mappings too). The next outbound packet
// of a flow gets a new mapping; with masquerade that is usually the same
// port again, as the old one is free.
func (r *Router) FlushConntrack() error {
	if err := r.NS.nl.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		return fmt.Errorf("router %s: flush conntrack: %w", r.Name, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.NAT == FullCone || r.NAT == AddressRestricted {
		return applyRules(r.NS, r.rules)
	}
	return nil
}

// ChangePublicAddr moves the router's WAN to the next free address of its
// upstream network and forgets all mappings: NAT rebinding as when an ISP
// hands out a new address. It returns the new address.
func (r *Router) ChangePublicAddr() (netip.Addr, error) {
	next, err := r.lab.allocAddr(r.upstream, false)
	if err != nil {
		return netip.Addr{}, err
	}
	r.mu.Lock()
	old := r.wan
	r.mu.Unlock()
	// Delete first: removing a primary address also removes secondaries
	// in the same subnet. Masquerade drops conntrack entries of the old
	// address on its own; the flush below makes sure.
	if err := r.NS.delAddr(nftWAN, old); err != nil {
		return netip.Addr{}, err
	}
	if err := r.NS.setAddr(nftWAN, next); err != nil {
		return netip.Addr{}, err
	}
	if r.upstream.IsInternet() {
		for _, p := range []netip.Prefix{RouterNet, PublicNet} {
			if !p.Contains(next.Addr()) {
				if err := r.NS.onLinkRoute(nftWAN, p); err != nil {
					return netip.Addr{}, err
				}
			}
		}
	} else if err := r.NS.defaultRoute(r.upstream.Gateway); err != nil {
		return netip.Addr{}, err
	}
	r.mu.Lock()
	r.wan = next
	r.mu.Unlock()
	if err := r.FlushConntrack(); err != nil {
		return netip.Addr{}, err
	}
	r.lab.mu.Lock()
	err = r.lab.writeStateLocked()
	r.lab.mu.Unlock()
	r.lab.log.Debug().Str("router", r.Name).Stringer("old", old).Stringer("new", next).Msg("public address changed")
	return next.Addr(), err
}

// InboundDropped returns how many packets the router's firewall has
// dropped on its WAN (input and forward). A naive router drops nothing
// and returns an error.
func (r *Router) InboundDropped() (uint64, error) {
	if r.Naive {
		return 0, errors.New("naive router has no firewall")
	}
	var total uint64
	for _, ch := range []string{"in", "fwd"} {
		n, err := ruleCounters(r.NS, ch, true)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// Block black-holes the router's traffic with ip: from now on the router
// drops every IPv4 packet it would forward to or from ip, and those it
// would send to or receive from ip itself, without an ICMP error, as when
// the path dies somewhere on the internet. Traffic with other addresses is
// untouched, and so are conntrack entries and NAT mappings (packets
// dropped on the way still refresh them), so Unblock brings the path back
// as it was. Blocking an address twice does nothing; the block survives
// the rule rebuilds of SetUDPTimeouts and FlushConntrack. BlockDropped
// counts what it dropped. ip must be IPv4.
func (r *Router) Block(ip netip.Addr) error {
	ip = ip.Unmap()
	if !ip.Is4() {
		return fmt.Errorf("router %s: block %v: not an IPv4 address", r.Name, ip)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	i, found := slices.BinarySearchFunc(r.rules.blocked, ip, netip.Addr.Compare)
	if found {
		return nil
	}
	if err := updateBlocked(r.NS, ip, true); err != nil {
		return fmt.Errorf("router %s: %w", r.Name, err)
	}
	// A new slice: applyRules callers may hold a copy of the old config.
	r.rules.blocked = slices.Insert(slices.Clone(r.rules.blocked), i, ip)
	r.lab.log.Debug().Str("router", r.Name).Stringer("addr", ip).Msg("blocked")
	return nil
}

// Unblock lifts Block for ip. Unblocking an address that is not blocked
// does nothing.
func (r *Router) Unblock(ip netip.Addr) error {
	ip = ip.Unmap()
	r.mu.Lock()
	defer r.mu.Unlock()
	i, found := slices.BinarySearchFunc(r.rules.blocked, ip, netip.Addr.Compare)
	if !found {
		return nil
	}
	if err := updateBlocked(r.NS, ip, false); err != nil {
		return fmt.Errorf("router %s: %w", r.Name, err)
	}
	r.rules.blocked = slices.Delete(slices.Clone(r.rules.blocked), i, i+1)
	r.lab.log.Debug().Str("router", r.Name).Stringer("addr", ip).Msg("unblocked")
	return nil
}

// Blocked returns the addresses Block has black-holed, in order.
func (r *Router) Blocked() []netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.rules.blocked)
}

// BlockDropped returns how many packets Block has dropped on the router,
// all addresses and directions together. The count restarts from zero
// when SetUDPTimeouts or FlushConntrack rebuild the rules of a full-cone
// or address-restricted router.
func (r *Router) BlockDropped() (uint64, error) {
	var total uint64
	for _, ch := range blockChains {
		n, err := ruleCounters(r.NS, ch, true)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}
