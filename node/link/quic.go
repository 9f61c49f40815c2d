package link

import (
	"net"

	"natchat/wire"
)

// A peer's address as quic-go sees it through ForQUIC: a *net.UDPAddr
// whose IP is the peer's whole 32-byte key (port 0). quic-go keeps remote
// addresses opaque, compares them with IP.Equal, and writes to them with
// WriteMsgUDP, which the adapter maps back to the key: no table, nothing
// a stranger can grow.

// AddrOf returns the address under which conn (the link, or its ForQUIC
// adapter) knows peer k: Dial that.
func AddrOf(conn net.PacketConn, k wire.Key) net.Addr {
	if _, ok := conn.(*quicConn); ok {
		return quicAddr(k)
	}
	return NewAddr(k)
}

// KeyOf returns the peer key behind an address of the link or of its
// ForQUIC adapter.
func KeyOf(a net.Addr) (wire.Key, bool) {
	switch a := a.(type) {
	case Addr:
		return a.Key, true
	case *Addr:
		return a.Key, true
	case *net.UDPAddr:
		if len(a.IP) == wire.KeyLen && a.Port == 0 {
			return wire.Key(a.IP), true
		}
	}
	return wire.Key{}, false
}

func quicAddr(k wire.Key) *net.UDPAddr { return &net.UDPAddr{IP: append(net.IP(nil), k[:]...)} }
