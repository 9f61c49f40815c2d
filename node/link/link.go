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
	"maps"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"natchat/wire"
)

// Addr is a peer's address on the link: its identity key. Compare Addrs
// by Key (a hidden field caches the key's text).
type Addr struct {
	Key wire.Key
	// s is Key in hex when made by NewAddr. quic-go compares a server
	// connection's remote address with every packet's by their String
	// (path_manager.go addrsEqual, for anything but *net.UDPAddr): two hex
	// encodings a packet, 0.5 s of CPU a GiB, until the text is cached.
	s string
}

// NewAddr returns k's Addr, its text made once.
func NewAddr(k wire.Key) Addr { return Addr{Key: k, s: k.String()} }

// Network returns "natchat".
func (Addr) Network() string { return "natchat" }

// String returns the key in hex.
func (a Addr) String() string {
	if a.s != "" {
		return a.s
	}
	return a.Key.String()
}

var _ net.Addr = Addr{}

// Kind is a path kind.
type Kind int

// Path kinds, as the headless interface names them.
const (
	None   Kind = iota // not tracked: never opened, or forgotten
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

// GSOWriter is a DirectPath that sends a burst in one go: b holds
// datagrams of seg bytes each, the last possibly shorter (UDP generic
// segmentation offload, or one datagram at a time where the device
// cannot). Without it the link writes the datagrams one by one.
type GSOWriter interface {
	WriteGSO(b []byte, seg int) error
}

// Options configure a Conn.
type Options struct {
	// Local is this node's key, the Conn's LocalAddr.
	Local wire.Key
	// SendRelay sends a datagram to dst through the rendezvous. Required.
	// It is called on every relayed packet, from any goroutine: it must not
	// block for long and must not keep b.
	SendRelay func(dst wire.Key, b []byte) error
	// RelayRemote names the relay in Path.Remote (e.g. "198.51.100.1:3478").
	RelayRemote string
	// OnPath, when set, is told each change of a tracked peer's path: Relay
	// when Open starts tracking it, Direct or Relay as SetDirect moves it,
	// None when Forget drops it. Calls are serialised (never two at once,
	// for any peers) and come in the order of the changes; each is made
	// with none of the Conn's locks held, from the goroutine of the call
	// that made the change or of another call that changed a path
	// meanwhile. OnPath must not block; it may call the Conn's methods
	// (changes made from it are reported after it returns). May be nil.
	OnPath func(peer wire.Key, p Path)
	// SetReadBuffer, when set, receives quic-go's request for a larger
	// socket receive buffer (the node passes it to its UDP socket).
	SetReadBuffer func(bytes int) error
	// SetWriteBuffer, likewise, for the send buffer.
	SetWriteBuffer func(bytes int) error
	// QueueLen bounds received packets not yet read. 0: 1024. When full,
	// new packets are dropped (QUIC retransmits) and counted.
	QueueLen int
	// Now is the clock of the trust window. nil: time.Now. (Read deadlines
	// always follow the real clock, as quic-go sets them from it.)
	Now func() time.Time
}

// BufSize is the capacity of a Buf: 2 KiB. The link carries QUIC packets,
// at most 1452 bytes (quic-go's MaxPacketBufferSize, also the most its
// reader takes; the node sends 1200), so a Buf holds any of them, and even
// one read whole with its 35-byte Relayed header or a full 1500-byte-MTU
// datagram, with room left to tell a datagram that filled it. 64 KiB
// buffers would hold 32 times the memory per queued packet (64 MiB for a
// full 1024-packet queue instead of 2 MiB) for packets no peer sends.
//
// So read into a Buf only a source whose datagrams must fit: the direct
// path (QUIC only; a read that fills the whole Buf, n == BufSize, may have
// been truncated and is to be dropped). The node's own socket also carries
// rendezvous messages up to about 9 KB (a Signaled offer of 32 candidates
// of up to 256 bytes): its read loop keeps one large buffer and hands
// Relayed payloads to Deliver, whose copy into a pooled Buf costs no
// allocation.
const BufSize = 2048

// Buf is a pooled datagram buffer, which a reader fills and hands to the
// link with DeliverBuf, without a copy (see BufSize for which readers).
type Buf struct {
	// B is the datagram. GetBuf returns it as the whole of the Buf's own
	// storage (len BufSize), to read into; the caller then reslices it to
	// the bytes to hand up (b.B = b.B[:n], or the payload after a header),
	// which must lie in that storage.
	B []byte

	from wire.Key // the sending peer, set by DeliverBuf
	peer *peer    // the sending peer's state when tracked, else nil
	data [BufSize]byte
}

var bufs = sync.Pool{New: func() any { return new(Buf) }}

// GetBuf returns a Buf from the link's pool, with B of len BufSize. Give it
// back by DeliverBuf (which takes it over) or PutBuf.
func GetBuf() *Buf {
	b := bufs.Get().(*Buf)
	b.B = b.data[:]
	return b
}

// PutBuf returns a Buf that was not delivered to the pool. The caller must
// not use b after.
func PutBuf(b *Buf) {
	b.B, b.peer = nil, nil
	bufs.Put(b)
}

// owns reports whether B lies in the Buf's own storage.
func (b *Buf) owns() bool {
	if len(b.B) == 0 {
		return true
	}
	off := BufSize - cap(b.B)
	return off >= 0 && &b.B[0] == &b.data[off]
}

// TrustWindow is how long a direct path stays trusted without a packet
// received on it.
const TrustWindow = 1500 * time.Millisecond

// peer is a tracked peer's state. The packet path reads it without locks;
// its changes, rare, are serialised by mu.
type peer struct {
	key  wire.Key
	addr net.Addr     // Addr{key}: handed to ReadFrom's callers without allocating
	udp  *net.UDPAddr // the key as ForQUIC's adapter names it, likewise

	// direct is the direct path, nil on the relay.
	direct atomic.Pointer[directPath]
	// trusted is until when (Conn.mono nanoseconds) the direct path counts
	// as proven: set when it comes up and renewed by every packet received
	// on it. Past it, each packet also goes through the relay, so a direct
	// path that died silently costs no more than the trust window while ICE
	// (3-4 s) notices, the way Tailscale's magicsock trusts a direct
	// address.
	trusted atomic.Int64
	// path is the current path, never nil (PathOf reads it).
	path atomic.Pointer[Path]

	mu sync.Mutex
	// Guarded by mu:
	gone bool // Forget dropped this peer: later changes are ignored
}

// directPath boxes a DirectPath for an atomic.Pointer.
type directPath struct{ DirectPath }

type pathEvent struct {
	peer wire.Key
	path Path
}

// reporter calls OnPath with the queued path changes, in order, one call
// at a time and with no other lock held: whichever goroutine finds the
// queue idle drains it, so a change made from OnPath itself is queued
// rather than deadlocking (Tailscale's controlclient reports to its
// observer through such a queue, never a callback under its lock).
type reporter struct {
	fn func(wire.Key, Path)

	mu sync.Mutex
	// Guarded by mu:
	q        []pathEvent
	draining bool
}

// add queues a change. Callers hold the lock that orders the peer's
// changes, so the queue keeps each peer's changes in order.
func (r *reporter) add(k wire.Key, p Path) {
	if r.fn == nil {
		return
	}
	r.mu.Lock()
	r.q = append(r.q, pathEvent{k, p})
	r.mu.Unlock()
}

// flush reports the queued changes unless another goroutine does already.
// Callers hold no lock.
func (r *reporter) flush() {
	if r.fn == nil {
		return
	}
	r.mu.Lock()
	if r.draining {
		r.mu.Unlock()
		return
	}
	r.draining = true
	for i := 0; i < len(r.q); i++ {
		ev := r.q[i]
		r.mu.Unlock()
		r.fn(ev.peer, ev.path)
		r.mu.Lock()
	}
	clear(r.q)
	r.q = r.q[:0]
	r.draining = false
	r.mu.Unlock()
}

// readDeadline is one setting of the read deadline; SetReadDeadline
// replaces it and closes changed to wake blocked readers.
type readDeadline struct {
	at      time.Time // zero: none
	changed chan struct{}
}

// Conn is the link. Safe for concurrent use. After Close, ReadFrom and
// WriteTo return net.ErrClosed.
//
// A peer is tracked from Open to Forget. Packets flow to and from any key,
// tracked or not (QUIC must be able to send its close to a peer that
// left), but only a tracked peer has a path: a direct path (SetDirect), a
// path reported through OnPath and by PathOf.
//
// The packet path (Deliver*, ReadFrom, WriteTo) allocates nothing and
// takes no lock shared by the peers: peers are looked up in a
// copy-on-write map behind an atomic pointer, and a peer's direct path
// and trust deadline are atomics. The one shared point is the receive
// queue, a channel, where every received packet meets quic-go's reader.
type Conn struct {
	opts    Options
	epoch   time.Time // origin of mono
	in      chan *Buf
	closed  chan struct{}
	closing atomic.Bool // set before closed is closed
	once    sync.Once

	dropped  atomic.Uint64
	oversize atomic.Uint64
	dl       atomic.Pointer[readDeadline]
	peers    atomic.Pointer[map[wire.Key]*peer] // replaced, never changed, under peersMu
	peersMu  sync.Mutex                         // serialises Open and Forget
	events   reporter
	onClose  []func() // set up before use (ForQUIC); run by Close
}

// New returns a Conn.
func New(o Options) *Conn {
	if o.QueueLen <= 0 {
		o.QueueLen = 1024
	}
	c := &Conn{
		opts:   o,
		in:     make(chan *Buf, o.QueueLen),
		closed: make(chan struct{}),
		events: reporter{fn: o.OnPath},
	}
	if o.Now != nil {
		c.epoch = o.Now()
	} else {
		c.epoch = time.Now()
	}
	c.dl.Store(&readDeadline{changed: make(chan struct{})})
	c.peers.Store(&map[wire.Key]*peer{})
	return c
}

var _ net.PacketConn = (*Conn)(nil)

// mono is the trust window's clock: nanoseconds since New, monotonic
// unless Options.Now says otherwise.
func (c *Conn) mono() int64 {
	if c.opts.Now != nil {
		return int64(c.opts.Now().Sub(c.epoch))
	}
	return int64(time.Since(c.epoch))
}

func (c *Conn) lookup(k wire.Key) *peer { return (*c.peers.Load())[k] }

// Open starts tracking peer k: its path is the relay, reported through
// OnPath. It does nothing when k is tracked already. Call it when the node
// starts talking to k, whichever side began.
func (c *Conn) Open(k wire.Key) {
	c.peersMu.Lock()
	old := *c.peers.Load()
	if old[k] != nil {
		c.peersMu.Unlock()
		return
	}
	p := &peer{key: k, addr: NewAddr(k), udp: quicAddr(k)}
	path := Path{Kind: Relay, Remote: c.opts.RelayRemote}
	p.path.Store(&path)
	m := make(map[wire.Key]*peer, len(old)+1)
	maps.Copy(m, old)
	m[k] = p
	c.peers.Store(&m)
	c.events.add(k, path)
	c.peersMu.Unlock()
	c.events.flush()
}

// Forget stops tracking peer k (it left) and drops its direct path; OnPath
// reports the path as None. It does nothing when k is not tracked. Packets
// to k still go through the relay, reporting nothing, until Open tracks it
// again.
func (c *Conn) Forget(k wire.Key) {
	c.peersMu.Lock()
	old := *c.peers.Load()
	p := old[k]
	if p == nil {
		c.peersMu.Unlock()
		return
	}
	// A fresh map, not maps.Clone: a clone keeps the old one's buckets,
	// and a map never gives them back.
	m := make(map[wire.Key]*peer, len(old)-1)
	for pk, pp := range old {
		if pk != k {
			m[pk] = pp
		}
	}
	c.peers.Store(&m)
	p.mu.Lock()
	p.gone = true
	p.direct.Store(nil)
	c.setPathLocked(p, Path{})
	p.mu.Unlock()
	c.peersMu.Unlock()
	c.events.flush()
}

// SetDirect makes d the path to tracked peer k (nil: back to the relay),
// trusted for TrustWindow, and reports the change through OnPath when the
// Path differs. It returns false, and does nothing, when k is not tracked
// (never opened, or forgotten: a direct path that comes up after the peer
// left must not bring it back).
func (c *Conn) SetDirect(k wire.Key, d DirectPath, remote string, rtt time.Duration) bool {
	for {
		p := c.lookup(k)
		if p == nil {
			return false
		}
		p.mu.Lock()
		if p.gone {
			// Forgotten since the lookup; it may have been opened again.
			p.mu.Unlock()
			continue
		}
		var np Path
		if d != nil {
			// Trust first: a writer that sees the new path sees it trusted.
			p.trusted.Store(c.mono() + int64(TrustWindow))
			p.direct.Store(&directPath{d})
			np = Path{Kind: Direct, Remote: remote, RTT: rtt}
		} else {
			p.direct.Store(nil)
			np = Path{Kind: Relay, Remote: c.opts.RelayRemote}
		}
		c.setPathLocked(p, np)
		p.mu.Unlock()
		c.events.flush()
		return true
	}
}

// setPathLocked records p's new path and queues its report if it changed.
// p.mu is held.
func (c *Conn) setPathLocked(p *peer, np Path) {
	if *p.path.Load() == np {
		return
	}
	p.path.Store(&np)
	c.events.add(p.key, np)
}

// PathOf returns peer k's current path: None when k is not tracked. It
// takes no lock (OnPath may call it).
func (c *Conn) PathOf(k wire.Key) Path {
	if p := c.lookup(k); p != nil {
		return *p.path.Load()
	}
	return Path{}
}

// Peers returns how many peers are tracked.
func (c *Conn) Peers() int { return len(*c.peers.Load()) }

// DeliverBuf hands up the datagram b.B that arrived from peer src, through
// the relay or, when direct is set, on the direct path (which renews the
// path's trust). It takes b over: the caller must not touch b after, and
// the link returns it to the pool once read or dropped. b.B should lie in
// b's own storage; if not, it is copied there, and when longer than BufSize
// it is dropped and counted (Oversize). DeliverBuf never blocks: when the
// queue is full the packet is dropped and counted (Dropped).
func (c *Conn) DeliverBuf(src wire.Key, b *Buf, direct bool) {
	if !b.owns() {
		if len(b.B) > BufSize {
			c.oversize.Add(1)
			PutBuf(b)
			return
		}
		b.B = b.data[:copy(b.data[:], b.B)]
	}
	b.from, b.peer = src, nil
	if p := c.lookup(src); p != nil {
		if direct && p.direct.Load() != nil {
			p.trusted.Store(c.mono() + int64(TrustWindow))
		}
		b.peer = p
	}
	if c.closing.Load() {
		PutBuf(b)
		return
	}
	select {
	case c.in <- b:
	default:
		c.dropped.Add(1)
		PutBuf(b)
	}
}

// Deliver hands up a datagram that arrived from peer src through the relay
// (see DeliverDirect). It copies b into a pooled Buf, so the caller keeps
// b; see DeliverBuf for the rest.
func (c *Conn) Deliver(src wire.Key, b []byte) { c.deliverCopy(src, b, false) }

// DeliverDirect is Deliver for a datagram that arrived on the direct path:
// it also renews the path's trust.
func (c *Conn) DeliverDirect(src wire.Key, b []byte) { c.deliverCopy(src, b, true) }

func (c *Conn) deliverCopy(src wire.Key, b []byte, direct bool) {
	if len(b) > BufSize {
		c.oversize.Add(1)
		return
	}
	buf := GetBuf()
	buf.B = buf.B[:copy(buf.B, b)]
	c.DeliverBuf(src, buf, direct)
}

// Dropped returns how many received packets were dropped on a full queue.
func (c *Conn) Dropped() uint64 { return c.dropped.Load() }

// Oversize returns how many received datagrams were dropped for being
// longer than BufSize.
func (c *Conn) Oversize() uint64 { return c.oversize.Load() }

// ReadFrom implements net.PacketConn: it copies the next received packet
// into b (truncating it to len(b)) and names its sender with an Addr.
func (c *Conn) ReadFrom(b []byte) (int, net.Addr, error) {
	p, err := c.next()
	if err != nil {
		return 0, nil, err
	}
	n := copy(b, p.B)
	var from net.Addr
	if p.peer != nil {
		from = p.peer.addr
	} else {
		from = NewAddr(p.from) // an untracked peer: rare, two allocations
	}
	PutBuf(p)
	return n, from, nil
}

// next waits for the next received packet, until the read deadline. The
// caller gives the Buf back with PutBuf.
func (c *Conn) next() (*Buf, error) {
	for {
		if c.closing.Load() {
			return nil, net.ErrClosed
		}
		dl := c.dl.Load()
		var timeout <-chan time.Time
		var timer *time.Timer
		if !dl.at.IsZero() {
			d := time.Until(dl.at)
			if d <= 0 {
				return nil, os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(d)
			timeout = timer.C
		} else {
			// A packet waiting: take it without the blocking select,
			// which would lock every channel it waits on.
			select {
			case p := <-c.in:
				return p, nil
			default:
			}
		}
		select {
		case p := <-c.in:
			stop(timer)
			return p, nil
		case <-c.closed:
			stop(timer)
			return nil, net.ErrClosed
		case <-timeout:
			return nil, os.ErrDeadlineExceeded
		case <-dl.changed:
			stop(timer)
		}
	}
}

func stop(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

var errNotAddr = errors.New("link: not a link address")

// WriteTo implements net.PacketConn: it sends b to the peer named by addr
// (an Addr) on that peer's current path. A trusted direct path carries it
// alone; past the trust window, or when the direct write fails, the relay
// carries it (too). An untracked peer's packets go through the relay.
func (c *Conn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.closing.Load() {
		return 0, net.ErrClosed
	}
	a, ok := addr.(Addr)
	if !ok {
		return 0, errNotAddr
	}
	return c.write(a.Key, b)
}

func (c *Conn) write(k wire.Key, b []byte) (int, error) {
	if c.closing.Load() {
		return 0, net.ErrClosed
	}
	if p := c.lookup(k); p != nil {
		if d := p.direct.Load(); d != nil {
			trusted := c.mono() < p.trusted.Load()
			if err := d.Write(b); err == nil && trusted {
				return len(b), nil
			}
			// The direct path failed this packet, or has been silent past
			// the trust window: the relay carries it (too).
		}
	}
	if err := c.opts.SendRelay(k, b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// writeGSO sends a burst of datagrams of seg bytes (the last may be
// shorter) to k: in one go on a trusted direct path that can, else
// datagram by datagram as write does.
func (c *Conn) writeGSO(k wire.Key, b []byte, seg int) error {
	if c.closing.Load() {
		return net.ErrClosed
	}
	if p := c.lookup(k); p != nil {
		if d := p.direct.Load(); d != nil {
			if g, ok := d.DirectPath.(GSOWriter); ok {
				trusted := c.mono() < p.trusted.Load()
				if err := g.WriteGSO(b, seg); err == nil && trusted {
					return nil
				}
				for off := 0; off < len(b); off += seg {
					if err := c.opts.SendRelay(k, b[off:min(off+seg, len(b))]); err != nil {
						return err
					}
				}
				return nil
			}
		}
	}
	for off := 0; off < len(b); off += seg {
		if _, err := c.write(k, b[off:min(off+seg, len(b))]); err != nil {
			return err
		}
	}
	return nil
}

// Close implements net.PacketConn: it wakes blocked readers and frees the
// queued packets.
func (c *Conn) Close() error {
	c.once.Do(func() {
		c.closing.Store(true)
		close(c.closed)
		for _, f := range c.onClose {
			f()
		}
		for {
			select {
			case p := <-c.in:
				PutBuf(p)
			default:
				return
			}
		}
	})
	return nil
}

// LocalAddr returns this node's Addr.
func (c *Conn) LocalAddr() net.Addr { return NewAddr(c.opts.Local) }

// SetDeadline sets the read deadline; writes never block.
func (c *Conn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline implements net.PacketConn; a change wakes blocked
// readers to apply it.
func (c *Conn) SetReadDeadline(t time.Time) error {
	old := c.dl.Swap(&readDeadline{at: t, changed: make(chan struct{})})
	close(old.changed)
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
