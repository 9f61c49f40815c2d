package node

import (
	"bytes"
	"net"
	"sync"
	"time"

	"natchat/punch"
	"natchat/wire"
)

// iceConn is punch's view of the node's socket: the read loop hands it
// every datagram that is not rendezvous protocol (STUN, ICE checks, direct
// peer data); writes go straight out of the socket. After Close, ReadFrom
// returns net.ErrClosed.
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
func (c *iceConn) deliver(b []byte, from net.Addr) {
	select {
	case c.in <- iceDatagram{b: append([]byte(nil), b...), from: from}:
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
	n     *Node
	key   wire.Key
	ready chan struct{} // closed once peer is set (or failed to be)
	peer  *punch.Peer   // set once, before ready is closed

	mu      sync.Mutex
	stopped bool // after stop, path reports are ignored
	seq     uint32
	pending map[uint32]*pendingSignal // offers awaiting their Ack
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
func (n *Node) controlling(k wire.Key) bool { return bytes.Compare(n.key[:], k[:]) < 0 }

// ensureDirect returns the punching state for k, creating and starting it.
// It returns once the punch.Peer exists, also when another goroutine is
// creating it: a signal handed to a half-made direct would be acked and
// lost.
func (n *Node) ensureDirect(k wire.Key) *direct {
	if n.punch == nil || k == n.key {
		return nil
	}
	n.mu.Lock()
	d := n.directs[k]
	if d != nil || n.quitting || n.gone[k] {
		n.mu.Unlock()
		if d != nil {
			<-d.ready
		}
		return d
	}
	d = &direct{n: n, key: k, ready: make(chan struct{}), pending: make(map[uint32]*pendingSignal)}
	n.directs[k] = d
	n.mu.Unlock()
	defer close(d.ready)
	p, err := n.punch.Peer(k.String(), n.controlling(k), d)
	if err != nil {
		n.log.Warn().Err(err).Str("key", k.Short()).Msg("punch: no peer")
		return d
	}
	d.mu.Lock()
	d.peer = p
	d.mu.Unlock()
	if err := p.Start(); err != nil {
		n.log.Debug().Err(err).Msg("punch start")
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
	p := &pendingSignal{body: wire.AppendPeerSignal(nil, ps)}
	d.pending[ps.Seq] = p
	seq := ps.Seq
	p.timer = time.AfterFunc(0, func() { d.retransmit(seq) })
	d.mu.Unlock()
}

// retransmit sends pending signal seq and schedules the next try: 250 ms,
// doubling to 2 s, for about 15 s in all.
func (d *direct) retransmit(seq uint32) {
	d.mu.Lock()
	p := d.pending[seq]
	if p == nil || d.n.ctx.Err() != nil {
		d.mu.Unlock()
		return
	}
	if p.tries >= 12 {
		delete(d.pending, seq)
		d.mu.Unlock()
		d.n.log.Info().Str("key", d.key.Short()).Uint32("seq", seq).Msg("signal never acknowledged; given up")
		return
	}
	p.tries++
	p.timer.Reset(min(250*time.Millisecond<<min(p.tries-1, 3), 2*time.Second))
	body := p.body
	d.mu.Unlock()
	d.n.sendSignal(d.key, body)
}

func (d *direct) acked(seq uint32) {
	d.mu.Lock()
	if p := d.pending[seq]; p != nil {
		p.timer.Stop()
		delete(d.pending, seq)
	}
	d.mu.Unlock()
}

// stop ends punching to the peer. It may block for seconds (pion closes
// its agent gracefully), so it must not run on the read loop.
func (d *direct) stop() {
	<-d.ready
	d.mu.Lock()
	d.stopped = true
	for s, p := range d.pending {
		p.timer.Stop()
		delete(d.pending, s)
	}
	peer := d.peer
	d.mu.Unlock()
	if peer != nil {
		peer.Close()
	}
}

// Direct implements punch.Handler: move the link.
func (d *direct) Direct(up bool, remote net.Addr, rtt time.Duration) {
	d.mu.Lock()
	peer, stopped := d.peer, d.stopped
	d.mu.Unlock()
	switch {
	case stopped:
	case up && remote != nil:
		d.n.link.SetDirect(d.key, peer, remote.String(), rtt)
	default:
		d.n.link.SetDirect(d.key, nil, "", 0)
	}
}

// Receive implements punch.Handler: a datagram on the direct path.
func (d *direct) Receive(b []byte) { d.n.link.DeliverDirect(d.key, b) }

// sendSignal wraps a PeerSignal for the rendezvous.
func (n *Node) sendSignal(dst wire.Key, body []byte) {
	n.mu.Lock()
	ok, s := n.state == stRegistered, n.session
	n.mu.Unlock()
	if !ok {
		return // retransmitted once we are registered again
	}
	n.writeRV(wire.Marshal(&wire.Signal{Session: s, Dst: dst, Body: body}))
}

// onSignaled handles signaling from a peer.
func (n *Node) onSignaled(m *wire.Signaled) {
	n.learn(m.Src, m.Name)
	ps, err := wire.ParsePeerSignal(m.Body)
	if err != nil {
		n.log.Debug().Err(err).Msg("bad peer signal")
		return
	}
	switch ps.Kind {
	case wire.SignalAck:
		n.mu.Lock()
		d := n.directs[m.Src]
		n.mu.Unlock()
		if d != nil {
			d.acked(ps.Seq)
		}
	case wire.SignalOffer:
		// Acknowledge every copy: the first Ack may have been lost.
		n.sendSignal(m.Src, wire.AppendPeerSignal(nil, &wire.PeerSignal{Kind: wire.SignalAck, Seq: ps.Seq}))
		n.mu.Lock()
		delete(n.gone, m.Src) // it is back and wants to talk
		n.mu.Unlock()
		d := n.ensureDirect(m.Src)
		if d == nil || d.peer == nil { // ensureDirect returns d ready
			return
		}
		d.peer.HandleSignal(punch.Signal{Generation: ps.Generation, Ufrag: ps.Ufrag, Pwd: ps.Pwd,
			Candidates: ps.Candidates, Failed: ps.Flags&wire.SignalFailed != 0})
	case wire.SignalHello:
		n.ensureDirect(m.Src)
	}
}
