//go:build !linux

package link

import "net"

// ForQUIC returns the link: the adapter for quic-go's batched I/O is
// Linux's (see quic_linux.go).
func (c *Conn) ForQUIC() net.PacketConn { return c }

type quicConn struct{ *Conn }
