//go:build !linux

package rendezvous

import "net"

// batchReader returns nil: batched reads (recvmmsg) are Linux's.
func batchReader(net.PacketConn) packetReader { return nil }

// newWriteQueue returns nil: batched writes (sendmmsg) are Linux's; every
// datagram is written on its own.
func newWriteQueue(net.PacketConn) writeQueue { return nil }
