//go:build !linux

package rendezvous

import (
	"net"
	"net/netip"
)

// batchReader returns nil: batched reads (recvmmsg) are Linux's.
func batchReader(net.PacketConn) func() ([]byte, netip.AddrPort, error) { return nil }
