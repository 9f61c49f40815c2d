// Package session runs the node's end-to-end encrypted sessions: QUIC
// (TLS 1.3, each side's certificate pinned to its Ed25519 identity key) on
// the path-agnostic per-peer link, exactly one connection per peer whichever
// side dialed, with streams by kind, a handler per kind, and connections
// that close when idle and reopen on demand.
//
// # One connection per peer
//
// A node dials a peer only when it has no connection to it, so two
// connections to one peer exist only when both sides dialed at about the
// same time, or when the peer restarted and dialed us while we still hold a
// connection to its previous incarnation. The Manager tells them apart by
// age: a connection we dialed less than SimultaneousWindow ago meets the
// peer's as a simultaneous dial, and both sides keep the connection dialed
// by the smaller key (each side applies the same rule to the same pair, so
// they agree); otherwise the peer's new connection replaces ours (it has no
// other in its view). The loser is closed at once; its users reopen their
// streams on the winner (the messenger resends what was not acknowledged,
// so no message is lost). The stateless-reset key is derived from the
// identity, so a peer that restarted resets our old connection as soon as
// we send on it.
//
// # Idle connections
//
// A connection with no open stream for IdleTimeout is closed; the next
// OpenStream dials again.
package session

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/rs/zerolog"

	"natchat/node/link"
	"natchat/wire"
)

// Application error codes a connection is closed with.
const (
	codeNormal    quic.ApplicationErrorCode = 0 // idle, leaving
	codeIdentity  quic.ApplicationErrorCode = 1 // certificate does not match the link address
	codeDuplicate quic.ApplicationErrorCode = 2 // another connection to the same peer won
)

// Defaults.
const (
	DefaultIdleTimeout        = 2 * time.Minute
	DefaultSimultaneousWindow = 10 * time.Second
	// preambleTimeout bounds how long a new stream may take to say its kind.
	preambleTimeout = 10 * time.Second
	// dialTimeout bounds one dial (handshake over the relay).
	dialTimeout = 10 * time.Second
)

// ErrClosed is returned after the Manager stopped.
var ErrClosed = errors.New("session: closed")

// Handler serves one incoming stream of its kind from peer (its identity
// verified). It owns the stream; the stream is closed when it returns.
// ctx ends when the connection or the Manager does.
type Handler func(ctx context.Context, peer wire.Key, st *Stream)

// Options configure a Manager. Link and Identity are required.
type Options struct {
	// Link carries QUIC packets: the link, or its ForQUIC adapter (see
	// link.AddrOf and link.KeyOf for its addresses).
	// The Manager reads it from Run on and does not close it.
	Link net.PacketConn
	// Identity is the node's Ed25519 key: the TLS certificate's key.
	Identity ed25519.PrivateKey
	// IdleTimeout closes a connection with no open stream. 0: 2 min.
	IdleTimeout time.Duration
	// SimultaneousWindow: see the package doc. 0: 10 s.
	SimultaneousWindow time.Duration
	// OnPeer is called when the Manager gets its first connection to a
	// peer (up) and when it has none left (down), in that order per peer,
	// one call at a time, without locks held. It must not block. May be nil.
	OnPeer func(peer wire.Key, up bool)
	// OnOurs is called, at most once between a peer's up and down and
	// after its up, when the peer becomes one this node talks with rather
	// than one that merely connected to it: we opened a stream to it (we
	// dialed it, or answered on its connection), or Vouch was called for
	// it. A peer that only dialed us is not ours: any registered key can.
	// Same rules as OnPeer (in order with it). May be nil.
	OnOurs func(peer wire.Key)
	// Logger receives structured logs. Zero value: disabled.
	Logger zerolog.Logger
	// Now is the clock. nil: time.Now.
	Now func() time.Time
	// QUIC overrides the QUIC configuration (tests). nil: the default.
	QUIC *quic.Config
}

// Manager keeps the node's sessions. Create with New, register handlers
// with Handle, then Run.
type Manager struct {
	opts     Options
	log      zerolog.Logger
	local    wire.Key
	cert     tls.Certificate
	tr       *quic.Transport
	handlers map[wire.StreamKind]Handler
	ctx      context.Context // Run's; set before Run starts any goroutine
	wg       sync.WaitGroup
	ready    chan struct{} // closed when Run has set up the transport
	done     chan struct{} // closed when Run is over
	emitMu   sync.Mutex    // serialises OnPeer calls in decision order

	mu sync.Mutex
	// Guarded by mu:
	peers   map[wire.Key]*peer
	pending []peerEvent
	closed  bool
}

type peerEvent struct {
	key  wire.Key
	up   bool
	ours bool // an OnOurs call (up is then ignored)
}

// peer is what the Manager holds for one peer.
type peer struct {
	cur     *conn         // the connection in use, nil if none
	dialing chan struct{} // closed when our dial in flight ends; nil if none
	// cancelDial ends the dial in flight (Close: the peer left, so the
	// dial would only wait for its timeout). Set with dialing.
	cancelDial context.CancelFunc
	conns      int // live connections, cur and losers not yet gone
	// downDue: the last connection closed as a duplicate; the winner is on
	// its way, so the peer is not reported down unless none comes within
	// duplicateGrace.
	downDue bool
	// ours: reported through OnOurs since the peer was last reported up.
	ours bool
}

// duplicateGrace is how long a peer whose last connection closed as a
// duplicate stays up, waiting for the connection that won.
const duplicateGrace = 2 * time.Second

// conn is one QUIC connection to a peer.
type conn struct {
	qc       *quic.Conn
	key      wire.Key
	outbound bool      // we dialed it
	started  time.Time // when we started dialing it, or accepted it
	// Guarded by Manager.mu:
	active    int       // open streams
	idleSince time.Time // when active last dropped to 0
}

func (c *conn) dialer(local wire.Key) wire.Key {
	if c.outbound {
		return local
	}
	return c.key
}

func (c *conn) alive() bool { return c.qc.Context().Err() == nil }

// New returns a Manager.
func New(o Options) (*Manager, error) {
	if o.Link == nil || len(o.Identity) != ed25519.PrivateKeySize {
		return nil, errors.New("session: Options.Link and Options.Identity are required")
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.SimultaneousWindow <= 0 {
		o.SimultaneousWindow = DefaultSimultaneousWindow
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	cert, err := selfCert(o.Identity)
	if err != nil {
		return nil, fmt.Errorf("session: certificate: %w", err)
	}
	return &Manager{
		opts:     o,
		log:      o.Logger,
		local:    wire.Key(o.Identity.Public().(ed25519.PublicKey)),
		cert:     cert,
		handlers: make(map[wire.StreamKind]Handler),
		ready:    make(chan struct{}),
		done:     make(chan struct{}),
		peers:    make(map[wire.Key]*peer),
	}, nil
}

// Handle sets the handler for incoming streams of kind. Call before Run.
func (m *Manager) Handle(kind wire.StreamKind, h Handler) { m.handlers[kind] = h }

func (m *Manager) quicConfig() *quic.Config {
	if m.opts.QUIC != nil {
		return m.opts.QUIC.Clone()
	}
	return QUICConfig()
}

// resetKey derives the stateless-reset key from the identity, so that a
// restarted node resets connections to its previous incarnation.
func resetKey(priv ed25519.PrivateKey) *quic.StatelessResetKey {
	h := sha256.New()
	h.Write([]byte("natchat quic stateless reset key v1\x00"))
	h.Write(priv.Seed())
	var k quic.StatelessResetKey
	copy(k[:], h.Sum(nil))
	return &k
}

// Run accepts connections and closes idle ones until ctx is done; then it
// closes every connection and waits for every handler. It returns ctx's
// error only if it could not listen.
func (m *Manager) Run(ctx context.Context) error {
	defer close(m.done)
	m.ctx = ctx
	m.tr = &quic.Transport{Conn: m.opts.Link, StatelessResetKey: resetKey(m.opts.Identity)}
	ln, err := m.tr.Listen(serverTLS(m.cert), m.quicConfig())
	if err != nil {
		close(m.ready)
		return fmt.Errorf("session: listen: %w", err)
	}
	close(m.ready)
	m.wg.Add(2)
	go func() { defer m.wg.Done(); m.acceptLoop(ln) }()
	go func() { defer m.wg.Done(); m.idleLoop(ctx) }()
	<-ctx.Done()
	m.mu.Lock()
	m.closed = true
	var all []*quic.Conn
	for _, p := range m.peers {
		if p.cur != nil {
			all = append(all, p.cur.qc)
		}
	}
	m.mu.Unlock()
	for _, qc := range all {
		qc.CloseWithError(codeNormal, "leaving")
	}
	ln.Close()
	m.tr.Close()
	m.wg.Wait()
	return nil
}

func (m *Manager) acceptLoop(ln *quic.Listener) {
	for {
		qc, err := ln.Accept(m.ctx)
		if err != nil {
			return
		}
		addrKey, ok := link.KeyOf(qc.RemoteAddr())
		var raw [][]byte
		for _, c := range qc.ConnectionState().TLS.PeerCertificates {
			raw = append(raw, c.Raw)
		}
		k, err := certKey(raw)
		if !ok || err != nil || k != addrKey || k == m.local {
			m.log.Warn().Err(err).Msg("peer certificate does not match its link address; closed")
			qc.CloseWithError(codeIdentity, "identity mismatch")
			continue
		}
		c := &conn{qc: qc, key: k, started: m.opts.Now()}
		if !m.adopt(c) {
			continue
		}
		m.wg.Add(1)
		go func() { defer m.wg.Done(); m.serveConn(c) }()
	}
}

// adopt makes c a connection of its peer, settling a duplicate (package
// doc). It reports false when c lost and was closed (or the Manager is
// closed).
func (m *Manager) adopt(c *conn) bool {
	now := m.opts.Now()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		c.qc.CloseWithError(codeNormal, "leaving")
		return false
	}
	p := m.peers[c.key]
	if p == nil {
		p = &peer{}
		m.peers[c.key] = p
	}
	var loser *conn
	old := p.cur
	switch {
	case old == nil || !old.alive():
		p.cur = c
	case m.keepNew(old, c, now):
		p.cur, loser = c, old
	default:
		loser = c
	}
	p.conns++
	if p.conns == 1 && !p.downDue {
		m.pending = append(m.pending, peerEvent{key: c.key, up: true})
	}
	p.downDue = false
	if p.cur == c {
		c.idleSince = now
	}
	keptOutbound := p.cur.outbound
	m.mu.Unlock()
	m.flush()
	// Watch c until it closes, then forget it.
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		<-c.qc.Context().Done()
		m.gone(c)
	}()
	if loser != nil {
		m.log.Debug().Str("peer", c.key.Short()).Bool("kept_outbound", keptOutbound).Msg("duplicate connection closed")
		loser.qc.CloseWithError(codeDuplicate, "duplicate connection")
	}
	return loser != c
}

// keepNew decides between the peer's connection in use (old) and a new one.
func (m *Manager) keepNew(old, c *conn, now time.Time) bool {
	simultaneous := c.outbound || (old.outbound && now.Sub(old.started) < m.opts.SimultaneousWindow)
	if !simultaneous {
		return true // the peer dialed anew: it holds no other connection
	}
	a, b := c.dialer(m.local), old.dialer(m.local)
	if a == b {
		return true
	}
	return bytes.Compare(a[:], b[:]) < 0
}

// gone forgets connection c after it closed.
func (m *Manager) gone(c *conn) {
	var appErr *quic.ApplicationError
	dup := errors.As(context.Cause(c.qc.Context()), &appErr) && appErr.ErrorCode == codeDuplicate
	m.mu.Lock()
	p := m.peers[c.key]
	if p != nil {
		if p.cur == c {
			p.cur = nil
		}
		p.conns--
		switch {
		case p.conns > 0:
		case dup && !m.closed:
			// Both sides dialed and this side lost its connection before
			// the winner arrived: do not report the peer down and up again.
			p.downDue = true
			key := c.key
			m.wg.Add(1)
			time.AfterFunc(duplicateGrace, func() {
				defer m.wg.Done()
				m.mu.Lock()
				if pp := m.peers[key]; pp == p && p.downDue && p.conns == 0 {
					m.downLocked(key, p)
				}
				m.mu.Unlock()
				m.flush()
			})
		default:
			m.downLocked(c.key, p)
		}
	}
	m.mu.Unlock()
	m.flush()
}

// downLocked reports peer key down and forgets it unless a dial is in
// flight.
func (m *Manager) downLocked(key wire.Key, p *peer) {
	p.downDue, p.ours = false, false
	m.pending = append(m.pending, peerEvent{key: key})
	if p.dialing == nil {
		delete(m.peers, key)
	}
}

// flush makes the queued OnPeer calls in order.
func (m *Manager) flush() {
	m.emitMu.Lock()
	defer m.emitMu.Unlock()
	for {
		m.mu.Lock()
		evs := m.pending
		m.pending = nil
		m.mu.Unlock()
		if len(evs) == 0 {
			return
		}
		for _, e := range evs {
			switch {
			case e.ours:
				if m.opts.OnOurs != nil {
					m.opts.OnOurs(e.key)
				}
			case m.opts.OnPeer != nil:
				m.opts.OnPeer(e.key, e.up)
			}
		}
	}
}

// serveConn accepts the peer's streams on c until it closes.
func (m *Manager) serveConn(c *conn) {
	ctx := c.qc.Context()
	for {
		st, err := c.qc.AcceptStream(ctx)
		if err != nil {
			return
		}
		if !m.hold(c) {
			st.CancelRead(1)
			st.CancelWrite(1)
			continue
		}
		s := &Stream{Stream: st, Peer: c.key, m: m, c: c}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer s.Close()
			m.serveStream(ctx, s)
		}()
	}
}

func (m *Manager) serveStream(ctx context.Context, s *Stream) {
	var pre [wire.PreambleLen]byte
	s.SetReadDeadline(m.opts.Now().Add(preambleTimeout))
	if _, err := io.ReadFull(s, pre[:]); err != nil {
		return
	}
	s.SetReadDeadline(time.Time{})
	kind, err := wire.ParsePreamble(pre[:])
	h := m.handlers[kind]
	if err != nil || h == nil {
		m.log.Info().Err(err).Uint8("kind", uint8(kind)).Str("peer", s.Peer.Short()).Msg("unsupported stream refused")
		return
	}
	h(ctx, s.Peer, s)
}

// hold counts a new stream on c; false if c is no longer the peer's
// connection in use.
func (m *Manager) hold(c *conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p := m.peers[c.key]; p == nil || p.cur != c {
		return false
	}
	c.active++
	return true
}

func (m *Manager) release(c *conn) {
	m.mu.Lock()
	c.active--
	if c.active == 0 {
		c.idleSince = m.opts.Now()
	}
	m.mu.Unlock()
}

// idleLoop closes connections idle for IdleTimeout.
func (m *Manager) idleLoop(ctx context.Context) {
	t := time.NewTicker(max(m.opts.IdleTimeout/8, 50*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := m.opts.Now()
		var idle []*conn
		m.mu.Lock()
		for _, p := range m.peers {
			if c := p.cur; c != nil && c.active == 0 && now.Sub(c.idleSince) >= m.opts.IdleTimeout {
				idle = append(idle, c)
				p.cur = nil // no new streams on it
			}
		}
		m.mu.Unlock()
		for _, c := range idle {
			m.log.Debug().Str("peer", c.key.Short()).Msg("idle connection closed")
			c.qc.CloseWithError(codeNormal, "idle")
		}
	}
}

// OpenStream opens a stream of kind to peer, dialing a connection if there
// is none, and writes the stream's preamble.
func (m *Manager) OpenStream(ctx context.Context, key wire.Key, kind wire.StreamKind) (*Stream, error) {
	select {
	case <-m.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if key == m.local {
		return nil, errors.New("session: a stream to ourselves")
	}
	for attempt := 0; ; attempt++ {
		c, wait, err := m.current(key)
		if c != nil {
			m.flush() // OnOurs, the first time
		}
		switch {
		case err != nil:
			return nil, err
		case wait != nil:
			select {
			case <-wait:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			continue
		case c == nil:
			if err := m.dial(ctx, key); err != nil {
				return nil, err
			}
			continue
		}
		st, err := c.qc.OpenStreamSync(ctx)
		if err != nil {
			m.release(c)
			if c.alive() || attempt >= 2 || ctx.Err() != nil {
				return nil, err
			}
			continue // the connection just closed (lost a duplicate): again
		}
		s := &Stream{Stream: st, Peer: key, m: m, c: c}
		if _, err := s.Write(wire.AppendPreamble(nil, kind)); err != nil {
			s.Close()
			return nil, err
		}
		return s, nil
	}
}

// current returns the peer's connection in use, held for a new stream; or
// a channel to wait on while a dial is in flight; or neither (dial).
func (m *Manager) current(key wire.Key) (*conn, <-chan struct{}, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, nil, ErrClosed
	}
	p := m.peers[key]
	if p == nil {
		return nil, nil, nil
	}
	if c := p.cur; c != nil && c.alive() {
		c.active++
		m.oursLocked(key, p) // we talk to it: dialed or answering
		return c, nil, nil
	}
	if p.dialing != nil {
		return nil, p.dialing, nil
	}
	return nil, nil, nil
}

// dial dials peer key, unless a dial is already in flight.
func (m *Manager) dial(ctx context.Context, key wire.Key) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	p := m.peers[key]
	if p == nil {
		p = &peer{}
		m.peers[key] = p
	}
	if p.dialing != nil || (p.cur != nil && p.cur.alive()) {
		m.mu.Unlock()
		return nil
	}
	done := make(chan struct{})
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	p.dialing, p.cancelDial = done, cancel
	m.mu.Unlock()
	started := m.opts.Now()
	qc, err := m.tr.Dial(dctx, link.AddrOf(m.opts.Link, key), clientTLS(m.cert, key), m.quicConfig())
	cancel()
	m.mu.Lock()
	p.dialing, p.cancelDial = nil, nil
	close(done)
	if err != nil && p.cur == nil && p.conns == 0 && !p.downDue {
		delete(m.peers, key)
	}
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("session: dial %s: %w", key.Short(), err)
	}
	c := &conn{qc: qc, key: key, outbound: true, started: started}
	if m.adopt(c) {
		m.wg.Add(1)
		go func() { defer m.wg.Done(); m.serveConn(c) }()
	}
	return nil
}

// Close closes the connection to peer (it left), and ends a dial to it in
// flight: its OpenStream fails now rather than at the dial's timeout.
func (m *Manager) Close(key wire.Key, why string) {
	m.mu.Lock()
	var qc *quic.Conn
	if p := m.peers[key]; p != nil {
		if p.cur != nil {
			qc = p.cur.qc
			p.cur = nil
		}
		if p.cancelDial != nil {
			p.cancelDial()
		}
	}
	m.mu.Unlock()
	if qc != nil {
		qc.CloseWithError(codeNormal, why)
	}
}

// oursLocked reports peer key ours (OnOurs) unless it was already since
// it came up. The peer is up: it has a connection in use.
func (m *Manager) oursLocked(key wire.Key, p *peer) {
	if !p.ours {
		p.ours = true
		m.pending = append(m.pending, peerEvent{key: key, ours: true})
	}
}

// Vouch makes a peer that dialed us ours (OnOurs), as opening a stream to
// it would: call it when the node accepts what the peer sent (the
// messenger checked its name and pinned key). It does nothing when the
// peer has no connection in use.
func (m *Manager) Vouch(key wire.Key) {
	m.mu.Lock()
	if p := m.peers[key]; p != nil && p.cur != nil && !m.closed {
		m.oursLocked(key, p)
	}
	m.mu.Unlock()
	m.flush()
}

// Connected reports whether a connection to peer is in use now.
func (m *Manager) Connected(key wire.Key) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.peers[key]
	return p != nil && p.cur != nil && p.cur.alive()
}

// RTT returns the smoothed round trip of the connection to peer, or 0.
func (m *Manager) RTT(key wire.Key) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p := m.peers[key]; p != nil && p.cur != nil {
		return p.cur.qc.ConnectionStats().SmoothedRTT
	}
	return 0
}

// Peers returns the peers with a connection in use, in key order.
func (m *Manager) Peers() []wire.Key {
	m.mu.Lock()
	out := make([]wire.Key, 0, len(m.peers))
	for k, p := range m.peers {
		if p.cur != nil {
			out = append(out, k)
		}
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i][:], out[j][:]) < 0 })
	return out
}

// Conns returns the number of live connections (including losers of a
// duplicate not yet gone), for tests.
func (m *Manager) Conns() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, p := range m.peers {
		n += p.conns
	}
	return n
}

// Stream is a QUIC stream to a peer, counted against its connection's
// idleness until closed.
type Stream struct {
	*quic.Stream
	Peer wire.Key
	m    *Manager
	c    *conn
	once sync.Once
}

// Close ends the stream both ways and releases its hold on the connection.
// Idempotent.
func (s *Stream) Close() error {
	s.once.Do(func() {
		s.Stream.CancelRead(0)
		s.Stream.Close()
		s.m.release(s.c)
	})
	return nil
}

// CloseWrite ends our direction gracefully (the peer reads EOF); reading
// goes on until Close.
func (s *Stream) CloseWrite() error { return s.Stream.Close() }

// Conn returns the connection the stream is on (for path and RTT).
func (s *Stream) Conn() *quic.Conn { return s.c.qc }
