package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"natchat/wire"
)

// The second STUN socket (Options.AltSTUN).
//
// A node behind a NAT learns its public endpoint from a STUN answer; from
// two answers, by two server addresses, it learns whether its NAT maps
// its socket to the same public endpoint whatever the destination
// (endpoint-independent mapping: hole punching works) or to a new one per
// destination (endpoint-dependent, "symmetric": its peers mostly reach it
// through the relay). RFC 5780 gets the second answer with CHANGE-REQUEST,
// which asks the server to answer from elsewhere; the rendezvous refuses
// that (a reflection aid, see understoodBindingAttr) and instead listens
// on a second port, which answers only requests sent to it, to their
// source, with the same answer and under the same per-source budget as
// the main port. Nodes learn its port over their sealed channel (the
// HeartbeatAck), never from an unauthenticated datagram.

// dropAltOther counts datagrams on the AltSTUN socket that are not STUN:
// it speaks nothing else.
const dropAltOther = "alt_other"

// initAltSTUN reads AltSTUN's port, for HeartbeatAcks, and exports the
// alt_other drop reason at zero. New calls it.
func (s *Server) initAltSTUN() error {
	if s.opts.AltSTUN == nil {
		return nil
	}
	ap, ok := addrPort(s.opts.AltSTUN.LocalAddr())
	if !ok || ap.Port() == 0 {
		return fmt.Errorf("rendezvous: Options.AltSTUN: no port in its local address %v", s.opts.AltSTUN.LocalAddr())
	}
	if main, ok := addrPort(s.opts.Conn.LocalAddr()); ok && main.Port() == ap.Port() {
		return fmt.Errorf("rendezvous: Options.AltSTUN is on the main socket's port %d", ap.Port())
	}
	s.altPort = ap.Port()
	s.m.dropped.WithLabelValues(dropAltOther)
	return nil
}

// altLoop reads the AltSTUN socket until ctx is done or the socket fails;
// after a failure HeartbeatAcks announce no second STUN port.
func (s *Server) altLoop(ctx context.Context) {
	buf := make([]byte, 2048) // a longer datagram is cut, and then does not decode: malformed
	for {
		n, from, err := s.opts.AltSTUN.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Error().Err(err).Msg("second STUN socket failed; no longer announced")
			s.mu.Lock()
			s.altPort = 0
			s.mu.Unlock()
			return
		}
		src, ok := addrPort(from)
		if !ok {
			continue
		}
		s.HandleAlt(buf[:n], src)
	}
}

// HandleAlt processes one datagram from src that arrived on the AltSTUN
// socket: a STUN Binding request is answered from there as the main port
// answers it; anything else is dropped. Run calls it for every datagram
// there; it is exported for in-memory tests. Without AltSTUN it does
// nothing.
func (s *Server) HandleAlt(b []byte, src netip.AddrPort) {
	if s.opts.AltSTUN == nil {
		return
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !wire.IsSTUN(b) {
		s.drop(dropAltOther)
		return
	}
	s.handleSTUNLocked(b, src, now, true)
}

// sendAlt sends b from the AltSTUN socket.
func (s *Server) sendAlt(b []byte, to netip.AddrPort) {
	if _, err := s.opts.AltSTUN.WriteTo(b, net.UDPAddrFromAddrPort(to)); err != nil {
		s.log.Debug().Err(err).Stringer("to", to).Msg("write failed (second STUN socket)")
	}
}
