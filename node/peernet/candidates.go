package peernet

import (
	"net/netip"
	"slices"

	"github.com/pion/ice/v2"
)

// maxOfferCandidates bounds the candidates taken from one peer's offer.
// wire allows 32 (wire.MaxCandidates); every one is a destination our ICE
// agent sends connectivity checks to, so a registered peer pointing them
// all at a third party would make us amplify its one offer about eightfold.
// A natchat node offers one host candidate per usable interface address
// plus a server-reflexive one, so 8 is ample.
const maxOfferCandidates = 8

// filterCandidates returns at most max candidates from cs for an offer from a
// peer: it drops duplicates (same address and port), unparseable ones,
// unspecified, loopback, multicast, link-local multicast, broadcast
// addresses, and the rendezvous's own address (rv), keeping the first of
// each, in order. The result is a new slice; cs is not modified.
//
// In detail, a candidate is dropped if:
//   - pion's ice.UnmarshalCandidate refuses it, its address is not an IP
//     literal (mDNS ".local" names: mDNS is disabled in punch, and a name
//     would make us resolve what a peer chose), or its port is 0;
//   - its address is unspecified (0.0.0.0/8, ::), multicast (link-local
//     multicast included) or the IPv4 limited broadcast 255.255.255.255
//     (directed broadcasts cannot be told apart without the netmask);
//   - it is loopback or link-local unicast (169.254.0.0/16, fe80::/10),
//     unless rv is in the same scope. Such an address names a host near
//     us, not near the peer: loopback is our own host, and 169.254.169.254
//     is the cloud metadata service. Our own nodes never offer them when
//     they have another address (punch prunes them from its host
//     candidates), and an IPv6 link-local one is unusable anyway: pion
//     strips the zone, and a send to fe80::/10 without one fails. When the
//     rendezvous itself is on loopback (tests, a one-host lab) or on a
//     link-local address, every peer is on our host or link and these are
//     the candidates that work, so they are kept;
//   - it is rv itself (address and port): checks sent there would spend our
//     own per-source budget at the rendezvous.
//
// Host candidates with private addresses (RFC 1918, fc00::/7) are kept:
// peers on one LAN need them. IPv4-mapped IPv6 addresses count as the IPv4
// address for every rule, duplicates included. max ≤ 0 returns nothing.
func filterCandidates(cs []string, rv netip.AddrPort, max int) []string {
	if max <= 0 || len(cs) == 0 {
		return nil
	}
	rv = netip.AddrPortFrom(rv.Addr().Unmap(), rv.Port())
	out := make([]string, 0, min(len(cs), max))
	seen := make([]netip.AddrPort, 0, cap(out))
	for _, raw := range cs {
		ap, ok := candidateAddr(raw)
		if !ok || ap == rv || !acceptableAddr(ap.Addr(), rv.Addr()) || slices.Contains(seen, ap) {
			continue
		}
		out = append(out, raw)
		seen = append(seen, ap)
		if len(out) == max {
			break
		}
	}
	return out
}

// candidateAddr returns the transport address of an ICE candidate string,
// with IPv4-mapped IPv6 unmapped.
func candidateAddr(raw string) (netip.AddrPort, bool) {
	c, err := ice.UnmarshalCandidate(raw)
	if err != nil {
		return netip.AddrPort{}, false
	}
	ip, err := netip.ParseAddr(c.Address())
	if err != nil || c.Port() <= 0 || c.Port() > 0xffff {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip.Unmap().WithZone(""), uint16(c.Port())), true
}

// acceptableAddr reports whether a peer's candidate address ip may be
// checked, for a rendezvous at rv (see filterCandidates).
func acceptableAddr(ip, rv netip.Addr) bool {
	switch {
	case ip.IsUnspecified(), ip.IsMulticast(), ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}), ip.Is4() && ip.As4()[0] == 0:
		return false
	case ip.IsLoopback():
		return rv.IsLoopback()
	case ip.IsLinkLocalUnicast():
		return rv.IsLinkLocalUnicast()
	}
	return true
}
