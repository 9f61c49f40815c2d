// Package peernet is the node's peer network: it owns the node's one UDP
// socket and demultiplexes it once — rendezvous protocol to the rendezvous
// client, relayed peer packets and direct QUIC packets to the link, STUN
// and ICE to punch — and keeps, per peer, the punching that moves the
// peer's link from the relay to a direct path and back.
//
// The read loop never waits for anything but the socket: relayed and
// direct packets reach the link without a heap allocation or a shared lock
// (the link copies them into pooled buffers), and everything slow
// (creating ICE agents, handling signals) runs on the package's own worker
// goroutine, fed through a bounded queue.
package peernet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"natchat/internal/udpgso"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v2"
	"github.com/rs/zerolog"

	"natchat/node/link"
	"natchat/punch"
	"natchat/wire"
)

// RV is the rendezvous client as the peer network uses it.
type RV interface {
	// Handle takes a rendezvous-protocol datagram from the rendezvous
	// (other than Relayed). It must not block.
	Handle(b []byte)
	// HandleSTUN takes a STUN message from src, an address on the
	// rendezvous's IP (its own, or its second STUN address), and reports
	// whether it was the client's own. It must not block.
	HandleSTUN(b []byte, src netip.AddrPort) bool
	// RelaySession returns the session for relay headers, nil when not
	// registered.
	RelaySession() *wire.SessionID
	// Signal sends a PeerSignal body to dst; false when not registered.
	Signal(dst wire.Key, body []byte) bool
}

// Options configure a Net. Conn, Rendezvous, Local and RV are required.
type Options struct {
	// Conn is the node's one UDP socket. Run reads it and closes it when
	// it returns.
	Conn net.PacketConn
	// Rendezvous is the rendezvous's address (IPv4-mapped addresses are
	// unmapped).
	Rendezvous netip.AddrPort
	// Local is this node's key.
	Local wire.Key
	// RV is the rendezvous client. It may be set after New (SetRV), before
	// Run.
	RV RV
	// NoDirect keeps every peer on the relay (no ICE).
	NoDirect bool
	// Punch tunes ICE; Conn, STUNServer, Net and Logger are set here.
	Punch punch.Options
	// Net is the network punch lists interfaces on: nil is the real one.
	Net transport.Net
	// OnPath is told each change of a peer's path (see link.Options).
	OnPath func(wire.Key, link.Path)
	// MaxDirect caps the peers punched at once (an ICE agent each). 0: 128.
	// Peers that are not ours (see Vouch) are punched only while fewer
	// than MaxDirect/2 peers are, 64 by default: strangers' introductions
	// (offers from peers we have no session with) and peers whose session
	// is only one they dialed to us (any registered key can).
	MaxDirect int
	Logger    zerolog.Logger
}

// Net is the node's peer network. Create with New, then Run.
type Net struct {
	opts  Options
	log   zerolog.Logger
	rv    RV
	rvUDP *net.UDPAddr
	link  *link.Conn
	snd   *sender        // bulk datagrams (direct and relayed QUIC); nil unless Conn is a *net.UDPConn
	ice   *iceConn       // punch's view of the socket; nil with NoDirect
	punch *punch.Manager // nil with NoDirect
	ops   chan op        // to the worker
	ctx   context.Context
	stops sync.WaitGroup // directs being stopped on the side
	// remotes maps a direct path's remote address to its peer, for the
	// read loop's fast path: replaced whole (copy on write) under mu.
	remotes atomic.Pointer[map[netip.AddrPort]*direct]
	fatal   chan error

	mu sync.Mutex
	// Guarded by mu:
	directs map[wire.Key]*direct
	opened  map[wire.Key]bool      // peers with a session
	ours    map[wire.Key]bool      // peers with a session we vouch for (Vouch); a subset of opened
	closed  map[wire.Key]time.Time // peers whose session ended: no punching for a while
	stopped bool
}

// op is work for the worker.
type op struct {
	kind int
	key  wire.Key
	body []byte
}

const (
	opOpen = iota
	opClose
	opSignal
	opOurs
)

// tombstone is how long after a peer's session ended its late signals are
// ignored.
const tombstone = 30 * time.Second

// New returns a Net.
func New(o Options) (*Net, error) {
	if o.Conn == nil || !o.Rendezvous.IsValid() {
		return nil, errors.New("peernet: Options.Conn and Options.Rendezvous are required")
	}
	if o.MaxDirect <= 0 {
		o.MaxDirect = 128
	}
	o.Rendezvous = netip.AddrPortFrom(o.Rendezvous.Addr().Unmap(), o.Rendezvous.Port())
	p := &Net{
		opts:    o,
		log:     o.Logger,
		rv:      o.RV,
		rvUDP:   net.UDPAddrFromAddrPort(o.Rendezvous),
		ops:     make(chan op, 1024),
		fatal:   make(chan error, 1),
		directs: make(map[wire.Key]*direct),
		opened:  make(map[wire.Key]bool),
		ours:    make(map[wire.Key]bool),
		closed:  make(map[wire.Key]time.Time),
	}
	p.remotes.Store(&map[netip.AddrPort]*direct{})
	lo := link.Options{Local: o.Local, SendRelay: p.sendRelay, RelayRemote: o.Rendezvous.String(), OnPath: o.OnPath}
	if rb, ok := o.Conn.(interface{ SetReadBuffer(int) error }); ok {
		lo.SetReadBuffer = rb.SetReadBuffer
	}
	if wb, ok := o.Conn.(interface{ SetWriteBuffer(int) error }); ok {
		lo.SetWriteBuffer = wb.SetWriteBuffer
	}
	p.link = link.New(lo)
	if uc, ok := o.Conn.(*net.UDPConn); ok {
		p.snd = newSender(uc)
	}
	if !o.NoDirect {
		p.ice = newICEConn(o.Conn)
		po := o.Punch
		po.Conn, po.Net, po.Logger = p.ice, o.Net, o.Logger
		if o.Rendezvous.Addr().Is4() {
			po.STUNServer = o.Rendezvous.String()
		}
		var err error
		if p.punch, err = punch.NewManager(po); err != nil {
			return nil, fmt.Errorf("peernet: %w", err)
		}
	}
	return p, nil
}

// SetRV sets the rendezvous client (before Run).
func (p *Net) SetRV(rv RV) { p.rv = rv }

// Link returns the per-peer link the sessions run on.
func (p *Net) Link() *link.Conn { return p.link }

// WriteRV sends a datagram to the rendezvous.
func (p *Net) WriteRV(b []byte) {
	if _, err := p.opts.Conn.WriteTo(b, p.rvUDP); err != nil {
		p.log.Debug().Err(err).Msg("write to rendezvous")
	}
}

// sendRelay is the link's relay path: wrap and send to the rendezvous.
// On the hot path of every relayed packet: no lock, no allocation.
func (p *Net) sendRelay(dst wire.Key, b []byte) error {
	s := p.rv.RelaySession()
	if s == nil {
		return nil // dropped like a lost packet; QUIC retransmits once we are back
	}
	bp := relayBufs.Get().(*[]byte)
	pkt := append(wire.AppendRelayHeader((*bp)[:0], *s, dst), b...)
	if p.snd != nil {
		if err := p.snd.Write(pkt, p.opts.Rendezvous); err != nil {
			p.log.Debug().Err(err).Msg("relay write")
		}
	} else {
		p.WriteRV(pkt)
	}
	*bp = pkt
	relayBufs.Put(bp)
	return nil
}

// relayBufs holds buffers for relayed packets (the socket copies them).
var relayBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1500); return &b }}

// Run reads the socket and runs the worker until ctx is done or the socket
// fails; then it stops punching, closes the link and the socket, and waits
// for every goroutine it started. Stop the sessions and the rendezvous
// client first: they write through this socket to the end.
func (p *Net) Run(ctx context.Context) error {
	if p.rv == nil {
		return errors.New("peernet: no rendezvous client")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.ctx = ctx
	if p.snd != nil {
		p.snd.start()
	}
	var reader, worker sync.WaitGroup
	reader.Add(1)
	go func() { defer reader.Done(); p.readLoop() }()
	worker.Add(1)
	go func() { defer worker.Done(); p.worker(ctx) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-p.fatal:
	}
	cancel()
	worker.Wait() // no new stops after this
	p.mu.Lock()
	p.stopped = true
	directs := p.directs
	p.directs = map[wire.Key]*direct{}
	p.mu.Unlock()
	for _, d := range directs {
		p.stopDirect(d)
	}
	// Every ICE peer must be closed before the Manager: a Manager.Close
	// racing a Peer.Close waits on that peer's sync.Once, a wait that
	// testing/synctest does not count as durable.
	p.stops.Wait()
	if p.punch != nil {
		p.punch.Close()
	}
	p.link.Close()
	if p.snd != nil {
		p.snd.Close() // what the sessions' last writes queued goes out first
	}
	p.opts.Conn.Close()
	reader.Wait()
	return err
}

// readLoop is the one place the socket is read and demultiplexed. A
// *net.UDPConn is read without allocating, and with UDP GRO where the
// kernel has it: a run of datagrams that a peer sent with GSO comes up in
// one read, cut here into its datagrams.
func (p *Net) readLoop() {
	buf := make([]byte, 64<<10)
	uc, _ := p.opts.Conn.(*net.UDPConn)
	var oob []byte
	if uc != nil && udpgso.EnableGRO(uc) {
		oob = make([]byte, udpgso.OOBLen)
	}
	for {
		var (
			n   int
			seg int // segment size of a coalesced read; 0: one datagram
			src netip.AddrPort
			err error
		)
		switch {
		case oob != nil:
			var oobn int
			n, oobn, _, src, err = uc.ReadMsgUDPAddrPort(buf, oob)
			if err == nil {
				seg = udpgso.SegmentSize(oob[:oobn])
			}
		case uc != nil:
			n, src, err = uc.ReadFromUDPAddrPort(buf)
		default:
			var from net.Addr
			n, from, err = p.opts.Conn.ReadFrom(buf)
			if ua, ok := from.(*net.UDPAddr); ok && err == nil {
				src = ua.AddrPort()
			}
		}
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			select {
			case p.fatal <- fmt.Errorf("peernet: read: %w", err):
			default:
			}
			return
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		if seg <= 0 || seg >= n {
			p.demux(buf[:n], src)
			continue
		}
		for off := 0; off < n; off += seg {
			p.demux(buf[off:min(off+seg, n)], src)
		}
	}
}

// relayedHeader is the length of a Relayed datagram's header and source key.
const relayedHeader = wire.HeaderLen + wire.KeyLen

// demux routes one datagram.
func (p *Net) demux(b []byte, src netip.AddrPort) {
	if src == p.opts.Rendezvous {
		switch {
		case wire.IsProtocol(b):
			if b[1] == wire.Version && wire.Type(b[2]) == wire.TypeRelayed && len(b) >= relayedHeader {
				// The hot path: parsed in place, copied once into a pooled buffer.
				p.link.Deliver(wire.Key(b[wire.HeaderLen:relayedHeader]), b[relayedHeader:])
				return
			}
			p.rv.Handle(b)
			return
		case wire.IsSTUN(b) && p.rv.HandleSTUN(b, src):
			return
		}
	} else if src.Addr() == p.opts.Rendezvous.Addr() && wire.IsSTUN(b) && p.rv.HandleSTUN(b, src) {
		return // the answer from the rendezvous's second STUN address (rvclient.NetCheck)
	}
	if len(b) > 0 && isQUIC(b[0]) {
		if d, ok := (*p.remotes.Load())[src]; ok {
			p.link.DeliverDirect(d.key, b)
			return
		}
	}
	if p.ice != nil {
		// STUN, ICE checks, and direct peer data before punch's fast path
		// knows the remote: punch routes them.
		p.ice.deliver(b, src)
		return
	}
	p.log.Debug().Stringer("from", src).Int("len", len(b)).Msg("dropped datagram from unknown source")
}

// isQUIC reports whether a datagram's first byte is QUIC's (RFC 9443: 64–127
// short header, 192–255 long header), not STUN (0–3) or ours (0xAC).
func isQUIC(b byte) bool { return (b >= 64 && b <= 127) || b >= 192 }

// setRemote records (or with up false, drops) d's direct remote for the
// read loop's fast path.
func (p *Net) setRemote(d *direct, remote netip.AddrPort, up bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.remotes.Load()
	next := make(map[netip.AddrPort]*direct, len(old)+1)
	for a, od := range old {
		if od != d {
			next[a] = od
		}
	}
	if up && remote.IsValid() {
		next[remote] = d
	}
	p.remotes.Store(&next)
}

// post queues work for the worker; when the queue is full the work is
// dropped (signals are retransmitted; open and close come again with the
// next session change).
func (p *Net) post(o op) {
	select {
	case p.ops <- o:
	default:
		p.log.Warn().Int("kind", o.kind).Msg("peer network worker behind; work dropped")
	}
}

// Open tracks peer k on the link and starts punching to it (we have a
// session with it). Until Vouch, it is punched only under the strangers'
// cap (Options.MaxDirect): a session the peer dialed proves nothing.
func (p *Net) Open(k wire.Key) {
	p.link.Open(k)
	p.post(op{kind: opOpen, key: k})
}

// Vouch makes peer k, opened, ours until Close: we dialed it or talk with
// it (session.Options.OnOurs), so it is punched up to MaxDirect, not only
// under the strangers' cap. Call it after Open.
func (p *Net) Vouch(k wire.Key) { p.post(op{kind: opOurs, key: k}) }

// Close stops punching to peer k and forgets its path (its session ended).
func (p *Net) Close(k wire.Key) {
	p.link.Forget(k)
	p.post(op{kind: opClose, key: k})
}

// Signaled takes a signal from peer k (from the rendezvous client). body
// may alias the read buffer: it is copied.
func (p *Net) Signaled(k wire.Key, body []byte) {
	p.post(op{kind: opSignal, key: k, body: bytes.Clone(body)})
}

// PathOf returns peer k's path.
func (p *Net) PathOf(k wire.Key) link.Path { return p.link.PathOf(k) }

// Directs returns how many peers are being punched, for leak tests.
func (p *Net) Directs() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.directs)
}

// worker does the slow work: creating and stopping ICE peers, handling
// signals. It never runs on the read loop.
func (p *Net) worker(ctx context.Context) {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case o := <-p.ops:
			p.do(o)
		case now := <-tick.C:
			p.reap(now)
		}
	}
}

// do does one op. It runs on the worker only.
func (p *Net) do(o op) {
	switch o.kind {
	case opOpen:
		p.mu.Lock()
		p.opened[o.key] = true
		delete(p.closed, o.key)
		d := p.directs[o.key]
		p.mu.Unlock()
		if d != nil {
			d.reopen() // the session came back within the grace
		} else {
			p.ensureDirect(o.key)
		}
	case opOurs:
		p.mu.Lock()
		opened := p.opened[o.key]
		if opened {
			p.ours[o.key] = true
		}
		d := p.directs[o.key]
		p.mu.Unlock()
		if opened && d == nil {
			p.ensureDirect(o.key) // refused under the strangers' cap before
		}
	case opClose:
		p.mu.Lock()
		delete(p.opened, o.key)
		delete(p.ours, o.key)
		p.closed[o.key] = time.Now()
		p.mu.Unlock()
		// The direct is stopped by reap after a grace, so that a
		// session replaced at once (a duplicate dial lost, an idle
		// close and a new message) keeps its ICE agent and path.
	case opSignal:
		p.onSignal(o.key, o.body)
	}
}

// closeGrace is how long a peer's ICE agent outlives its session.
const closeGrace = 5 * time.Second

// stopDirect stops d on the side: pion closes its agent gracefully, which
// can take a while. If the peer's session came back meanwhile, punching
// starts again once d is gone (its punch.Peer has the same id).
func (p *Net) stopDirect(d *direct) {
	p.stops.Add(1)
	go func() {
		defer p.stops.Done()
		d.stop()
		p.mu.Lock()
		again := p.opened[d.key] && p.directs[d.key] == nil && !p.stopped
		p.mu.Unlock()
		if again {
			p.post(op{kind: opOpen, key: d.key})
		}
	}()
}

// reap stops punching to peers whose session ended more than closeGrace
// ago, and to peers we never got a session with (they offered and went
// away), and forgets old tombstones.
func (p *Net) reap(now time.Time) {
	var stale []*direct
	p.mu.Lock()
	for k, d := range p.directs {
		if p.opened[k] {
			continue
		}
		at, ended := p.closed[k]
		if (ended && now.Sub(at) > closeGrace) || (!ended && now.Sub(d.created) > time.Minute) {
			delete(p.directs, k)
			stale = append(stale, d)
		}
	}
	gone := 0
	for k, at := range p.closed {
		if now.Sub(at) > tombstone {
			delete(p.closed, k)
			gone++
		}
	}
	if gone > 64 && gone > 2*len(p.closed) {
		// A map never gives its buckets back (nor does maps.Clone's copy).
		fresh := make(map[wire.Key]time.Time, len(p.closed))
		for k, at := range p.closed {
			fresh[k] = at
		}
		p.closed = fresh
	}
	p.mu.Unlock()
	for _, d := range stale {
		p.stopDirect(d)
	}
}
