package rendezvous

import (
	"net"
	"net/netip"
)

// BatchHandler returns a function that handles datagrams as Run's loop
// handles one read batch (serve): under one hold of the lock, the replies
// queued and then sent with conn's writeQueue (sendmmsg on Linux; each on
// its own elsewhere), whatever s's Options.Conn is. For the batched hot
// path's benchmarks and tests.
func BatchHandler(s *Server, conn net.PacketConn) func(dgrams [][]byte, srcs []netip.AddrPort) {
	w := newWriteQueue(conn)
	r := new(sliceReader)
	return func(dgrams [][]byte, srcs []netip.AddrPort) {
		r.dgrams, r.srcs = dgrams, srcs
		s.handleBatch(r, len(dgrams), w)
	}
}

// sliceReader is a packetReader over datagrams given to it.
type sliceReader struct {
	dgrams [][]byte
	srcs   []netip.AddrPort
}

func (r *sliceReader) read() (int, error) { return len(r.dgrams), nil }
func (r *sliceReader) datagram(i int) ([]byte, netip.AddrPort) {
	return r.dgrams[i], r.srcs[i]
}
func (r *sliceReader) kernelDrops() (uint32, bool) { return 0, false }
