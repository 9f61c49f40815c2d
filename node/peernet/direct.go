package peernet

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"time"

	"natchat/node/link"
	"natchat/punch"
	"natchat/wire"
)

// iceConn is punch's view of the node's socket: the read loop hands it
// every datagram that is not for the rendezvous client or the link's fast
// path (STUN, ICE checks, direct peer data before punch reported the path);
// writes go straight out of the socket. After Close, ReadFrom returns
// net.ErrClosed.
type iceConn struct {
	sock   net.PacketConn
	in     chan iceDatagram
	closed chan struct{}
	once   sync.Once
}

type iceDatagram struct {
	b    []byte
	from net.Addr
}

var _ net.PacketConn = (*iceConn)(nil)

func newICEConn(sock net.PacketConn) *iceConn {
	return &iceConn{sock: sock, in: make(chan iceDatagram, 512), closed: make(chan struct{})}
}

// deliver queues a copy of b; when punch falls behind the datagram is
// dropped like any UDP packet.
func (c *iceConn) deliver(b []byte, from netip.AddrPort) {
	select {
	case c.in <- iceDatagram{b: append([]byte(nil), b...), from: net.UDPAddrFromAddrPort(from)}:
	default:
	}
}

func (c *iceConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case d := <-c.in:
		return copy(b, d.b), d.from, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *iceConn) WriteTo(b []byte, to net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	return c.sock.WriteTo(b, to)
}

func (c *iceConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *iceConn) LocalAddr() net.Addr                { return c.sock.LocalAddr() }
func (c *iceConn) SetDeadline(t time.Time) error      { return nil }
func (c *iceConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *iceConn) SetWriteDeadline(t time.Time) error { return nil }

// direct is the node's side of punching to one peer: it carries punch's
// signals reliably through the rendezvous and moves the peer's link to the
// direct path and back as punch reports.
type direct struct {
	p       *Net
	key     wire.Key
	created time.Time
	peer    *punch.Peer // set once, before the direct is published

	mu      sync.Mutex
	stopped bool // after stop, path reports are ignored
	seq     uint32
	pending map[uint32]*pendingSignal // offers awaiting their Ack
	// The path as punch last reported it, to give the link again when
	// the peer's session comes back (reopen).
	up     bool
	path   *sockPath
	remote string
	rtt    time.Duration
}

type pendingSignal struct {
	body  []byte
	tries int
	timer *time.Timer
}

// maxPendingSignals bounds unacknowledged signals per peer; the oldest is
// given up first (a newer signal supersedes it: each carries every
// candidate gathered so far).
const maxPendingSignals = 8

var _ punch.Handler = (*direct)(nil)

// controlling reports whether we control ICE with peer k: the smaller key
// does, so the two sides always agree.
func (p *Net) controlling(k wire.Key) bool { return bytes.Compare(p.opts.Local[:], k[:]) < 0 }

// ensureDirect returns the punching state for k, creating and starting it.
// A peer that is not ours (Vouch) gets one only under half the cap: a
// stranger's offer (no session with us), or a peer whose session it
// dialed and we never used. None is made right after k's session ended.
// It runs on the worker only.
func (p *Net) ensureDirect(k wire.Key) *direct {
	if p.punch == nil || k == p.opts.Local {
		return nil
	}
	p.mu.Lock()
	d := p.directs[k]
	_, tomb := p.closed[k] // never for a peer opened
	full := len(p.directs) >= p.opts.MaxDirect || (!p.ours[k] && len(p.directs) >= p.opts.MaxDirect/2)
	p.mu.Unlock()
	if d != nil {
		return d
	}
	if p.stopped || tomb || full {
		if full {
			p.log.Info().Str("key", k.Short()).Msg("too many peers punched at once; staying on the relay")
		}
		return nil
	}
	d = &direct{p: p, key: k, created: time.Now(), pending: make(map[uint32]*pendingSignal)}
	pp, err := p.punch.Peer(k.String(), p.controlling(k), d)
	if err != nil {
		p.log.Warn().Err(err).Str("key", k.Short()).Msg("punch: no peer")
		return nil
	}
	d.peer = pp
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		p.stopDirect(d)
		return nil
	}
	p.directs[k] = d
	p.mu.Unlock()
	if err := pp.Start(); err != nil {
		p.log.Debug().Err(err).Msg("punch start")
	}
	return d
}

// SendSignal implements punch.Handler: send s to the peer, retransmitting
// until it is acknowledged.
func (d *direct) SendSignal(s punch.Signal) {
	ps := &wire.PeerSignal{Kind: wire.SignalOffer, Generation: s.Generation, Ufrag: s.Ufrag, Pwd: s.Pwd, Candidates: s.Candidates}
	if s.Failed {
		ps.Flags |= wire.SignalFailed
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return
	}
	d.seq++
	ps.Seq = d.seq
	if len(d.pending) >= maxPendingSignals {
		oldest := d.seq
		for s := range d.pending {
			if s < oldest {
				oldest = s
			}
		}
		d.pending[oldest].timer.Stop()
		delete(d.pending, oldest)
	}
	sig := &pendingSignal{body: wire.AppendPeerSignal(nil, ps)}
	d.pending[ps.Seq] = sig
	seq := ps.Seq
	sig.timer = time.AfterFunc(0, func() { d.retransmit(seq) })
}

// retransmit sends pending signal seq and schedules the next try: 250 ms,
// doubling to 2 s, for about 15 s in all.
func (d *direct) retransmit(seq uint32) {
	d.mu.Lock()
	sig := d.pending[seq]
	if sig == nil || d.stopped {
		d.mu.Unlock()
		return
	}
	if sig.tries >= 12 {
		delete(d.pending, seq)
		d.mu.Unlock()
		d.p.log.Info().Str("key", d.key.Short()).Uint32("seq", seq).Msg("signal never acknowledged; given up")
		return
	}
	sig.tries++
	sig.timer.Reset(min(250*time.Millisecond<<min(sig.tries-1, 3), 2*time.Second))
	body := sig.body
	d.mu.Unlock()
	d.p.rv.Signal(d.key, body) // false when not registered: retransmitted later
}

func (d *direct) acked(seq uint32) {
	d.mu.Lock()
	if sig := d.pending[seq]; sig != nil {
		sig.timer.Stop()
		delete(d.pending, seq)
	}
	d.mu.Unlock()
}

// stop ends punching to the peer. It may block for seconds (pion closes
// its agent gracefully), so it must not run on the read loop or worker.
func (d *direct) stop() {
	d.mu.Lock()
	d.stopped = true
	for s, sig := range d.pending {
		sig.timer.Stop()
		delete(d.pending, s)
	}
	d.mu.Unlock()
	// The link is not touched: the peer was forgotten (or the link is
	// closing), and a new direct for a peer opened again owns its path.
	d.p.setRemote(d, netip.AddrPort{}, false)
	if d.peer != nil {
		d.peer.Close()
	}
}

// Direct implements punch.Handler: move the link, and let the read loop
// hand the peer's direct packets straight to the link.
func (d *direct) Direct(up bool, remote net.Addr, rtt time.Duration) {
	// Held throughout, so that stop cannot run between the check and the
	// change and leave a stopped peer's remote behind.
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return
	}
	ua, ok := remote.(*net.UDPAddr)
	if up && ok {
		ap := ua.AddrPort()
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		d.up, d.path, d.remote, d.rtt = true, &sockPath{conn: d.p.opts.Conn, snd: d.p.snd, to: net.UDPAddrFromAddrPort(ap), ap: ap}, ap.String(), rtt
		d.p.setRemote(d, ap, true)
		d.p.link.SetDirect(d.key, d.path, d.remote, rtt)
		return
	}
	d.up, d.path, d.remote, d.rtt = false, nil, "", 0
	d.p.setRemote(d, netip.AddrPort{}, false)
	d.p.link.SetDirect(d.key, nil, "", 0)
}

// reopen gives the link the direct path again after the peer's session
// came back (the link forgot the peer when the session ended).
func (d *direct) reopen() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.stopped && d.up {
		d.p.link.SetDirect(d.key, d.path, d.remote, d.rtt)
	}
}

// Receive implements punch.Handler: a datagram on the direct path that
// came through punch (before the fast path knew the remote).
func (d *direct) Receive(b []byte) { d.p.link.DeliverDirect(d.key, b) }

// sockPath is a proven direct path: packets go straight out of the socket
// to the peer's address, without an allocation.
type sockPath struct {
	conn net.PacketConn
	snd  *sender // for WriteGSO; nil: no GSO
	to   *net.UDPAddr
	ap   netip.AddrPort
}

type udpWriter interface {
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
}

func (s *sockPath) Write(b []byte) error {
	if w, ok := s.conn.(udpWriter); ok {
		_, err := w.WriteToUDPAddrPort(b, s.ap)
		return err
	}
	_, err := s.conn.WriteTo(b, s.to)
	return err
}

// WriteGSO implements link.GSOWriter: quic-go's burst goes out in one
// send from the caller's goroutine, as Write's single packets do, so the
// path keeps quic-go's order.
func (s *sockPath) WriteGSO(b []byte, seg int) error {
	if s.snd == nil {
		for off := 0; off < len(b); off += seg {
			if err := s.Write(b[off:min(off+seg, len(b))]); err != nil {
				return err
			}
		}
		return nil
	}
	return s.snd.writeRun(b, seg, s.ap)
}

var _ link.GSOWriter = (*sockPath)(nil)

// onSignal handles signalling from peer k.
func (p *Net) onSignal(k wire.Key, body []byte) {
	ps, err := wire.ParsePeerSignal(body)
	if err != nil {
		p.log.Debug().Err(err).Msg("bad peer signal")
		return
	}
	switch ps.Kind {
	case wire.SignalAck:
		p.mu.Lock()
		d := p.directs[k]
		p.mu.Unlock()
		if d != nil {
			d.acked(ps.Seq)
		}
	case wire.SignalOffer:
		// Acknowledge every copy: the first Ack may have been lost.
		p.rv.Signal(k, wire.AppendPeerSignal(nil, &wire.PeerSignal{Kind: wire.SignalAck, Seq: ps.Seq}))
		d := p.ensureDirect(k)
		if d == nil {
			return
		}
		cs := filterCandidates(ps.Candidates, p.opts.Rendezvous, maxOfferCandidates)
		if len(cs) < len(ps.Candidates) {
			p.log.Debug().Str("key", k.Short()).Int("offered", len(ps.Candidates)).Int("kept", len(cs)).Msg("peer's candidates filtered")
		}
		d.peer.HandleSignal(punch.Signal{Generation: ps.Generation, Ufrag: ps.Ufrag, Pwd: ps.Pwd,
			Candidates: cs, Failed: ps.Flags&wire.SignalFailed != 0})
	case wire.SignalHello:
		p.ensureDirect(k)
	}
}
