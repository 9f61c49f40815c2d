package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v2"
	"github.com/prometheus/client_golang/prometheus"

	"natchat/relay"
	"natchat/wire"
)

// The packet hot path: what the read loop does for most datagrams (relay
// forwarding, STUN Binding answers, drops) allocates nothing on the heap,
// so that a busy rendezvous spends its CPU on packets, not on the garbage
// collector. BenchmarkRelayForward and BenchmarkSTUNAnswer
// (hotpath_bench_test.go) hold it to 0 allocs/op.
//
// The sources of garbage it avoids: net.PacketConn's ReadFrom returns a
// new *net.UDPAddr per datagram and WriteTo needs one (*net.UDPConn reads
// and writes netip.AddrPort values instead); wire.Parse returns each
// message on the heap (a Relay is read in place); pion's stun.Build makes
// a new Message per answer (the answer is built into one kept here); and
// a labelled counter costs a hash of its label per drop (the counters are
// looked up once).

// addrPortReader and addrPortWriter are the allocation-free datagram
// methods of *net.UDPConn, used when Conn has them.
type addrPortReader interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
}

type addrPortWriter interface {
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
}

var (
	_ addrPortReader = (*net.UDPConn)(nil)
	_ addrPortWriter = (*net.UDPConn)(nil)
)

// hotPath is a Server's state for the hot path. New sets it up; w and
// drops are read-only after that, out and the STUN fields are guarded by
// the Server's mu.
type hotPath struct {
	w     addrPortWriter                // Conn's, or nil: WriteTo
	out   writeQueue                    // where the read loop's replies go while it holds mu (serve); nil: sent at once
	drops map[string]prometheus.Counter // the dropped-packets counter of each reason

	stunReq  stun.Message // the request being answered (its Raw is not kept past the call)
	stunResp stun.Message // the answer being built
	software stun.Software
	ip       [16]byte // XOR-MAPPED-ADDRESS's address is built here
}

// initHotPath sets up s.hot. New calls it once s.m exists.
func (s *Server) initHotPath() {
	s.hot.w, _ = s.opts.Conn.(addrPortWriter)
	s.hot.software = stun.NewSoftware(s.opts.Software)
	reasons := []string{relay.DropMalformed, relay.DropVersion, relay.DropUnknownType, relay.DropBadCookie,
		relay.DropBadSignature, relay.DropNotRegistered, relay.DropRateLimited, relay.DropOffline, relay.DropReplay,
		relay.DropSourceLimited, relay.DropNotSTUN, relay.DropBadHandshake, relay.DropBusy, relay.DropOpen,
		relay.DropUnvalidated, relay.DropQuota}
	if s.opts.AltSTUN != nil {
		// Only then: without a second socket the reason is not exported.
		reasons = append(reasons, dropAltOther)
	}
	s.hot.drops = make(map[string]prometheus.Counter, len(reasons))
	for _, r := range reasons {
		s.hot.drops[r] = s.m.dropped.WithLabelValues(r)
	}
}

// packetReader is how Run reads a socket: read waits for one datagram or
// more and returns how many; datagram(i) returns the i-th of them, valid
// until the next read, and its source, IPv4-mapped addresses unmapped. A
// source that is not a UDP address comes back invalid, and the datagram
// is to be skipped. On Linux a UDP socket is read in batches
// (batchReader); elsewhere one datagram at a time.
type packetReader interface {
	read() (int, error)
	datagram(i int) ([]byte, netip.AddrPort)
	// kernelDrops returns how many datagrams the kernel has dropped on
	// the socket for want of buffer space, as of the last read, if the
	// platform tells (SO_RXQ_OVFL on Linux).
	kernelDrops() (uint32, bool)
}

// newPacketReader returns the packetReader for c.
func newPacketReader(c net.PacketConn) packetReader {
	if r := batchReader(c); r != nil {
		return r
	}
	return &singleReader{c: c, buf: make([]byte, 64<<10)}
}

// singleReader reads one datagram per call: ReadFromUDPAddrPort when c
// has it, which allocates nothing, else ReadFrom.
type singleReader struct {
	c   net.PacketConn
	buf []byte
	n   int
	src netip.AddrPort
}

func (r *singleReader) read() (int, error) {
	if ar, ok := r.c.(addrPortReader); ok {
		n, from, err := ar.ReadFromUDPAddrPort(r.buf)
		if err != nil {
			return 0, err
		}
		r.n, r.src = n, netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		return 1, nil
	}
	n, from, err := r.c.ReadFrom(r.buf)
	if err != nil {
		return 0, err
	}
	r.n, r.src = n, netip.AddrPort{}
	if from != nil {
		r.src, _ = addrPort(from)
	}
	return 1, nil
}

func (r *singleReader) datagram(int) ([]byte, netip.AddrPort) { return r.buf[:r.n], r.src }

func (r *singleReader) kernelDrops() (uint32, bool) { return 0, false }

// writeQueue gathers the datagrams the read loop sends while it handles
// one read batch, and sends them together (sendmmsg on Linux: one system
// call for the batch's STUN answers and relayed packets, instead of one
// each). The read loop sets Server.hot.out to its queue while it holds
// mu, so that s.send queues; every other goroutine, which sends under mu
// too, finds it nil and writes at once.
type writeQueue interface {
	// queue copies b, to go to to, and reports whether it did. It
	// refuses (after sending what it holds, to keep the order) what it
	// cannot send: a datagram too long for its buffers, a destination
	// with a zone or of the wrong family. It sends what it holds first
	// when it is full.
	queue(b []byte, to netip.AddrPort) bool
	// flush sends what is queued, and returns how many of those failed
	// and the last failure.
	flush() (failed int, err error)
}

// serve reads conn and handles its datagrams until the read fails: each
// read batch under one hold of mu, its replies queued (writeQueue) and
// sent together once mu is released, before the next read, so that no
// reply waits for more than its own batch.
func (s *Server) serve(ctx context.Context, conn net.PacketConn) error {
	r := newPacketReader(conn)
	w := newWriteQueue(conn)
	var dropped uint32 // the socket's kernel drops counted so far
	for {
		n, err := r.read()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("rendezvous: read: %w", err)
		}
		if d, ok := r.kernelDrops(); ok && d != dropped {
			s.m.socketDrops.Add(float64(d - dropped)) // the kernel's count is a uint32 that wraps
			dropped = d
		}
		s.handleBatch(r, n, w)
	}
}

// handleBatch handles the n datagrams r read last, queuing the replies
// on w (nil: each sent at once), then sends them.
func (s *Server) handleBatch(r packetReader, n int, w writeQueue) {
	s.mu.Lock()
	s.hot.out = w
	for i := range n {
		b, src := r.datagram(i)
		if !src.IsValid() {
			continue
		}
		s.handleLocked(b, src, s.now())
	}
	s.hot.out = nil
	s.mu.Unlock()
	if w != nil {
		if failed, err := w.flush(); failed > 0 {
			s.log.Debug().Err(err).Int("datagrams", failed).Msg("write failed")
		}
	}
}

// sendClient sends b to c's validated address.
func (s *Server) sendClient(b []byte, c *client) {
	if s.hot.w == nil {
		s.sendUDP(b, c.udpAddr()) // made once per address, not per datagram
		return
	}
	s.send(b, c.addr)
}

// relayView reads a Relay datagram in place, as wire.Parse would, without
// putting it on the heap. ok is false for anything else (and for a Relay
// too short to parse, which wire.Parse then refuses).
func relayView(b []byte) (m wire.Relay, ok bool) {
	const fixed = wire.HeaderLen + len(wire.SessionID{}) + wire.KeyLen
	if len(b) < fixed || b[0] != wire.Magic || b[1] != wire.Version || wire.Type(b[2]) != wire.TypeRelay {
		return m, false
	}
	r := b[wire.HeaderLen:]
	r = r[copy(m.Session[:], r):]
	r = r[copy(m.Dst[:], r):]
	m.Payload = r
	return m, true
}

// handleRelayLocked forwards a Relay from src to its destination as a
// Relayed datagram, if src is the session's validated address and its
// relay budget allows. reqLen is the datagram's length.
func (s *Server) handleRelayLocked(m *wire.Relay, src netip.AddrPort, now time.Time, reqLen int) {
	c := s.bySession.get(m.Session)
	switch {
	case c == nil:
		s.drop(relay.DropNotRegistered)
		s.replyErrorLocked(src, now, reqLen, &wire.Error{Code: wire.CodeNotRegistered, Request: wire.TypeRelay, Message: "register again"})
	case c.addr != src:
		// A session's relay is bound to its validated address, as
		// TURN binds an allocation to its 5-tuple: the session ID in
		// the clear is not enough. A node whose NAT rebound proves
		// its new address first.
		s.drop(relay.DropUnvalidated)
		s.challengeLocked(c, src, now, reqLen, false)
	default:
		if d := s.forwardableLocked(c, m.Dst, len(m.Payload), now); d != nil {
			s.scratch = append(wire.AppendRelayedHeader(s.scratch[:0], c.key), m.Payload...)
			s.sendClient(s.scratch, d)
			s.m.relayedPkts.Inc()
			s.m.relayedBytes.Add(float64(len(m.Payload)))
		}
	}
}

// bindingSuccessLocked builds the answer to the Binding request with
// transaction id from src into s.hot.stunResp: XOR-MAPPED-ADDRESS,
// SOFTWARE, FINGERPRINT, byte for byte what stun.Build makes of them, in
// a Message whose buffers are reused from one answer to the next.
func (s *Server) bindingSuccessLocked(id [stun.TransactionIDSize]byte, src netip.AddrPort) (*stun.Message, error) {
	m := &s.hot.stunResp
	m.Reset()
	m.TransactionID = id
	m.Type = stun.BindingSuccess
	m.WriteHeader()
	var ip []byte // nil for the zero Addr, which AddTo refuses, as stun.Build does
	switch a := src.Addr(); {
	case a.Is4():
		b := a.As4()
		ip = append(s.hot.ip[:0], b[:]...)
	case a.Is6():
		b := a.As16()
		ip = append(s.hot.ip[:0], b[:]...)
	}
	if err := (stun.XORMappedAddress{IP: ip, Port: int(src.Port())}).AddTo(m); err != nil {
		return nil, err
	}
	if err := s.hot.software.AddTo(m); err != nil {
		return nil, err
	}
	if err := stun.Fingerprint.AddTo(m); err != nil {
		return nil, err
	}
	return m, nil
}
