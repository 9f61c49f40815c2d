package testenv

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// addVeth creates a veth pair with end aName in a and bName in b. The pair
// is created inside a directly, so no interface ever appears in the root
// namespace and names only need to be unique per namespace.
func addVeth(a *Namespace, aName string, b *Namespace, bName string) error {
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: aName, MTU: 1500},
		PeerName:      bName,
		PeerNamespace: netlink.NsFd(int(b.h)),
	}
	if err := a.nl.LinkAdd(v); err != nil {
		return fmt.Errorf("veth %s/%s <-> %s/%s: %w", a.Short, aName, b.Short, bName, err)
	}
	return nil
}

// bridgePort enslaves port to bridge and brings it up.
func (ns *Namespace) bridgePort(port, bridge string) error {
	p, err := ns.nl.LinkByName(port)
	if err != nil {
		return fmt.Errorf("%s: link %s: %w", ns.Short, port, err)
	}
	br, err := ns.nl.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("%s: bridge %s: %w", ns.Short, bridge, err)
	}
	if err := ns.nl.LinkSetMaster(p, br); err != nil {
		return fmt.Errorf("%s: enslave %s to %s: %w", ns.Short, port, bridge, err)
	}
	return ns.linkUp(port, false)
}

// linkUp sets a link up, optionally in promiscuous mode.
func (ns *Namespace) linkUp(name string, promisc bool) error {
	l, err := ns.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("%s: link %s: %w", ns.Short, name, err)
	}
	if promisc {
		if err := ns.nl.SetPromiscOn(l); err != nil {
			return fmt.Errorf("%s: promisc %s: %w", ns.Short, name, err)
		}
	}
	if err := ns.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("%s: %s up: %w", ns.Short, name, err)
	}
	return nil
}

// setAddr adds addr to link name.
func (ns *Namespace) setAddr(name string, addr netip.Prefix) error {
	l, err := ns.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("%s: link %s: %w", ns.Short, name, err)
	}
	if err := ns.nl.AddrAdd(l, &netlink.Addr{IPNet: ipNet(addr)}); err != nil {
		return fmt.Errorf("%s: add %s to %s: %w", ns.Short, addr, name, err)
	}
	return nil
}

// delAddr removes addr from link name.
func (ns *Namespace) delAddr(name string, addr netip.Prefix) error {
	l, err := ns.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("%s: link %s: %w", ns.Short, name, err)
	}
	if err := ns.nl.AddrDel(l, &netlink.Addr{IPNet: ipNet(addr)}); err != nil {
		return fmt.Errorf("%s: delete %s from %s: %w", ns.Short, addr, name, err)
	}
	return nil
}

// onLinkRoute routes dst directly out of link name (no gateway).
func (ns *Namespace) onLinkRoute(name string, dst netip.Prefix) error {
	l, err := ns.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("%s: link %s: %w", ns.Short, name, err)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipNet(dst), Scope: netlink.SCOPE_LINK}
	if err := ns.nl.RouteReplace(r); err != nil {
		return fmt.Errorf("%s: route %s dev %s: %w", ns.Short, dst, name, err)
	}
	return nil
}

// defaultRoute sets the default route via gw.
func (ns *Namespace) defaultRoute(gw netip.Addr) error {
	r := &netlink.Route{Dst: ipNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: net.IP(gw.AsSlice())}
	if err := ns.nl.RouteReplace(r); err != nil {
		return fmt.Errorf("%s: default route via %s: %w", ns.Short, gw, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}
}
