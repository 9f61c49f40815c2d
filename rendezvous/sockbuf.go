package rendezvous

import (
	"net"
	"syscall"
)

// DefaultSocketBuffer is Options.SocketBuffer's default: 4 MiB, about
// 2,800 full-size relayed packets or 40,000 heartbeats. A relayed 1 GiB
// file overflowed the system's default 208 KiB buffer some 750-1,960
// times (docs/BENCHMARKS.md), each a loss the sender's congestion control
// answers by slowing down.
const DefaultSocketBuffer = 4 << 20

// sizeBuffers applies Options.SocketBuffer to Conn and MoreConns and
// logs the outcome.
func (s *Server) sizeBuffers() {
	want := s.opts.SocketBuffer
	if want < 0 {
		return
	}
	if want == 0 {
		want = DefaultSocketBuffer
	}
	s.sizeBuffer(s.opts.Conn, want)
	for _, c := range s.opts.MoreConns {
		s.sizeBuffer(c, want)
	}
}

func (s *Server) sizeBuffer(conn net.PacketConn, want int) {
	type buffered interface {
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
		SyscallConn() (syscall.RawConn, error)
	}
	c, ok := conn.(buffered)
	if !ok {
		return
	}
	if err := c.SetReadBuffer(want); err != nil {
		s.log.Warn().Err(err).Int("bytes", want).Msg("socket receive buffer not set")
	}
	if err := c.SetWriteBuffer(want); err != nil {
		s.log.Warn().Err(err).Int("bytes", want).Msg("socket send buffer not set")
	}
	rcv, snd := sockBuffers(c)
	ev := s.log.Info()
	if rcv > 0 && rcv < want {
		// Linux reports twice what it grants (its bookkeeping): below
		// want means capped by net.core.rmem_max.
		ev = s.log.Warn().Str("hint", "raise net.core.rmem_max and net.core.wmem_max (sysctl) to at least the wanted size")
	}
	ev.Int("wanted", want).Int("receive", rcv).Int("send", snd).Msg("socket buffers")
}
