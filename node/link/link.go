// Package link is the node's path-agnostic per-peer link, in the spirit of
// Tailscale's magicsock under WireGuard: a net.PacketConn whose addresses
// are peers' identity keys. The session above it (QUIC) writes to a key; the
// link sends each packet on the peer's best path — direct when a direct
// path is up, through the rendezvous relay otherwise — and hands up packets
// from either path as coming from that key. A path change is invisible to
// the session: its address never changes, and QUIC absorbs the loss and
// reordering of the switch.
package link

import (
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"natchat/wire"
)

// Addr is a peer's address on the link: its identity key.
type Addr struct{ Key wire.Key }

// Network returns "natchat".
func (Addr) Network() string { return "natchat" }

// String returns the key in hex.
func (a Addr) String() string { return a.Key.String() }

var _ net.Addr = Addr{}

// Kind is a path kind.
type Kind int

// Path kinds, as the headless interface names them.
const (
	None   Kind = iota // no traffic yet
	Relay              // through the rendezvous
	Direct             // a direct UDP path (ICE)
)

func (k Kind) String() string {
	switch k {
	case Relay:
		return "relay"
	case Direct:
		return "direct"
	}
	return "none"
}

// Path describes the path a peer's packets take now.
type Path struct {
	Kind   Kind
	Remote string        // the far end: rendezvous or peer endpoint
	RTT    time.Duration // 0 when unknown
}

// DirectPath is a proven direct path to one peer (punch provides it).
type DirectPath interface {
	// Write sends one datagram; it returns an error when it did not send.
	Write(b []byte) error
}

// Options configure a Conn.
type Options struct {
	// Local is this node's key, the Conn's LocalAddr.
	Local wire.Key
	// SendRelay sends a datagram to dst through the rendezvous. Required.
	// It must not block for long and must not keep b.
	SendRelay func(dst wire.Key, b []byte) error
	// RelayRemote names the relay in Path.Remote (e.g. "198.51.100.1:3478").
	RelayRemote string
	// OnPath is called, outside the Conn's lock, whenever a peer's path
	// kind changes. May be nil.
	OnPath func(peer wire.Key, p Path)
	// SetReadBuffer, when set, receives quic-go's request for a larger
	// socket receive buffer (the node passes it to its UDP socket).
	SetReadBuffer func(bytes int) error
	// SetWriteBuffer, likewise, for the send buffer.
	SetWriteBuffer func(bytes int) error
	// QueueLen bounds received packets not yet read. 0: 1024. When full,
	// new packets are dropped (QUIC retransmits) and counted.
	QueueLen int
}

type packet struct {
	from wire.Key
	b    []byte
}

type peer struct {
	path   Path
	direct DirectPath
	// trusted is until when the direct path counts as proven: set when it
	// comes up and renewed by every packet received on it. Past it, each
	// packet also goes through the relay, so a direct path that died
	// silently costs no more than the trust window while ICE (3-4 s)
	// notices, the way Tailscale's magicsock trusts a direct address.
	trusted time.Time
}

// TrustWindow is how long a direct path stays trusted without a packet
// received on it.
const TrustWindow = 1500 * time.Millisecond

// Conn is the link. Safe for concurrent use. After Close, ReadFrom and
// WriteTo return net.ErrClosed.
type Conn struct {
	opts   Options
	in     chan packet
	closed chan struct{}
	once   sync.Once

	mu sync.Mutex
	// Guarded by mu:
	peers    map[wire.Key]*peer
	deadline time.Time
	dlChange chan struct{} // closed and replaced when the read deadline changes
	dropped  uint64
}

// New returns a Conn.
func New(o Options) *Conn {
	if o.QueueLen <= 0 {
		o.QueueLen = 1024
	}
	return &Conn{
		opts:     o,
		in:       make(chan packet, o.QueueLen),
		closed:   make(chan struct{}),
		peers:    make(map[wire.Key]*peer),
		dlChange: make(chan struct{}),
	}
}

var _ net.PacketConn = (*Conn)(nil)

// DeliverDirect is Deliver for a datagram that arrived on the direct path:
// it also renews the path's trust.
func (c *Conn) DeliverDirect(src wire.Key, b []byte) {
	c.mu.Lock()
	if p := c.peers[src]; p != nil && p.direct != nil {
		p.trusted = time.Now().Add(TrustWindow)
	}
	c.mu.Unlock()
	c.Deliver(src, b)
}

// Deliver hands up a datagram that arrived from peer src (through the
// relay; see DeliverDirect). It copies b. It never blocks: when the queue
// is full the packet is dropped and counted.
func (c *Conn) Deliver(src wire.Key, b []byte) {
	p := packet{from: src, b: append([]byte(nil), b...)}
	select {
	case c.in <- p:
	case <-c.closed:
	default:
		c.mu.Lock()
		c.dropped++
		c.mu.Unlock()
	}
}

// Dropped returns how many received packets were dropped on a full queue.
func (c *Conn) Dropped() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

// ReadFrom implements net.PacketConn; the address is an Addr.
func (c *Conn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		dl, change := c.deadline, c.dlChange
		c.mu.Unlock()
		var timer *time.Timer
		var timeout <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(d)
			timeout = timer.C
		}
		n, from, err, again := c.wait(b, timeout, change)
		if timer != nil {
			timer.Stop()
		}
		if !again {
			return n, from, err
		}
	}
}

func (c *Conn) wait(b []byte, timeout <-chan time.Time, change chan struct{}) (int, net.Addr, error, bool) {
	select {
	case p := <-c.in:
		return copy(b, p.b), Addr{Key: p.from}, nil, false
	case <-c.closed:
		return 0, nil, net.ErrClosed, false
	case <-timeout:
		return 0, nil, os.ErrDeadlineExceeded, false
	case <-change:
		return 0, nil, nil, true
	}
}

// WriteTo implements net.PacketConn: it sends b to the peer named by addr
// (an Addr) on that peer's current path.
func (c *Conn) WriteTo(b []byte, addr net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	a, ok := addr.(Addr)
	if !ok {
		return 0, errors.New("link: not a link address")
	}
	c.mu.Lock()
	p := c.peerLocked(a.Key)
	d := p.direct
	trusted := d != nil && time.Now().Before(p.trusted)
	var changed *Path
	if d == nil && p.path.Kind == None {
		p.path = Path{Kind: Relay, Remote: c.opts.RelayRemote}
		cp := p.path
		changed = &cp
	}
	c.mu.Unlock()
	if changed != nil && c.opts.OnPath != nil {
		c.opts.OnPath(a.Key, *changed)
	}
	if d != nil {
		if err := d.Write(b); err == nil && trusted {
			return len(b), nil
		}
		// The direct path failed this packet, or has been silent past the
		// trust window: the relay carries it (too).
	}
	if err := c.opts.SendRelay(a.Key, b); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (c *Conn) peerLocked(k wire.Key) *peer {
	p := c.peers[k]
	if p == nil {
		p = &peer{}
		c.peers[k] = p
	}
	return p
}

// SetDirect makes d the path to peer k (nil: back to the relay) and
// reports the change through OnPath.
func (c *Conn) SetDirect(k wire.Key, d DirectPath, remote string, rtt time.Duration) {
	c.mu.Lock()
	p := c.peerLocked(k)
	p.direct = d
	if d != nil {
		p.path = Path{Kind: Direct, Remote: remote, RTT: rtt}
		p.trusted = time.Now().Add(TrustWindow)
	} else {
		p.path = Path{Kind: Relay, Remote: c.opts.RelayRemote}
	}
	np := p.path
	c.mu.Unlock()
	if c.opts.OnPath != nil {
		c.opts.OnPath(k, np)
	}
}

// Forget drops peer k's path state (it left); the next packet to it
// starts on the relay again. OnPath reports the path as None.
func (c *Conn) Forget(k wire.Key) {
	c.mu.Lock()
	_, ok := c.peers[k]
	delete(c.peers, k)
	c.mu.Unlock()
	if ok && c.opts.OnPath != nil {
		c.opts.OnPath(k, Path{})
	}
}

// PathOf returns peer k's current path.
func (c *Conn) PathOf(k wire.Key) Path {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.peers[k]; p != nil {
		return p.path
	}
	return Path{}
}

// Close implements net.PacketConn.
func (c *Conn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// LocalAddr returns this node's Addr.
func (c *Conn) LocalAddr() net.Addr { return Addr{Key: c.opts.Local} }

// SetDeadline sets the read deadline; writes never block.
func (c *Conn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline implements net.PacketConn.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	close(c.dlChange)
	c.dlChange = make(chan struct{})
	c.mu.Unlock()
	return nil
}

// SetReadBuffer lets quic-go size the receive buffer: the request is passed
// to the underlying socket when Options.SetReadBuffer is set (the link's own
// queue is fixed by QueueLen).
func (c *Conn) SetReadBuffer(n int) error {
	if c.opts.SetReadBuffer != nil {
		return c.opts.SetReadBuffer(n)
	}
	return nil
}

// SetWriteBuffer is SetReadBuffer's twin for the send buffer.
func (c *Conn) SetWriteBuffer(n int) error {
	if c.opts.SetWriteBuffer != nil {
		return c.opts.SetWriteBuffer(n)
	}
	return nil
}

// SetWriteDeadline is a no-op: writes never block.
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }
