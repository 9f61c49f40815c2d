// Package rendezvous is natchat's meeting point: one UDP port that answers
// STUN Binding requests, registers nodes (name, Ed25519 key, public
// endpoint), keeps presence, forwards signaling between nodes and relays
// their packets when no direct path exists. It shares only wire types with
// the node.
//
// A Server reads its socket on one goroutine and handles every datagram
// there, under one mutex that also guards the expiry sweep and lookups from
// other goroutines. Replies to a source that has not yet proved it can
// receive at its address are never larger than the datagram that caused
// them (see docs/PROTOCOL.md).
package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"natchat/relay"
	"natchat/wire"
)

// Options configure a Server. Conn and Store are required; every other
// field has a documented zero value.
type Options struct {
	// Conn is the server's one UDP socket. The Server owns it from Run on
	// and closes it when Run returns.
	Conn net.PacketConn
	// Store holds name bindings: the bbolt Store (OpenStore), or another
	// implementation of Names. The caller closes it after Run returns.
	Store Names
	// Logger receives structured logs. Zero value: zerolog's disabled logger.
	Logger zerolog.Logger
	// Now is the clock. nil: time.Now.
	Now func() time.Time
	// Expiry is the silence after which a node is dropped. 0: 60 s.
	Expiry time.Duration
	// Heartbeat is the interval suggested to nodes. 0: 25 s (or Expiry/2.4
	// when that is shorter).
	Heartbeat time.Duration
	// DefaultRoom is the room every node joins on registration, such as
	// "#lobby". Empty: no default room, and so no presence.
	DefaultRoom string
	// Relay bounds each node's relayed traffic. Zero value: relay defaults.
	Relay relay.Limits
	// SourceRate bounds unauthenticated replies (STUN, cookies, errors) per
	// source IP per second. 0: 50, with a burst of 100. Negative: unlimited.
	SourceRate int
	// Software is the STUN SOFTWARE attribute. Empty: "natchat-rendezvous".
	Software string
}

// DefaultRoom is the room the command-line rendezvous puts every node in.
const DefaultRoom = "#lobby"

// client is one registered node.
type client struct {
	key      wire.Key
	name     string // canonical spelling
	addr     netip.AddrPort
	session  wire.SessionID
	cookie   wire.Cookie // the cookie of the accepted registration
	lastSeen time.Time
	seq      uint32 // last presence sequence number sent to this node
	rooms    []string
	limiter  *relay.Limiter
	udp      *net.UDPAddr   // addr as a *net.UDPAddr, for the relay hot path
	udpFor   netip.AddrPort // the addr udp was made for
}

// udpAddr returns c.addr as a *net.UDPAddr, made once per address.
func (c *client) udpAddr() *net.UDPAddr {
	if c.udp == nil || c.udpFor != c.addr {
		c.udp, c.udpFor = net.UDPAddrFromAddrPort(c.addr), c.addr
	}
	return c.udp
}

// Server is a running rendezvous. Create with New, then Run.
type Server struct {
	opts    Options
	log     zerolog.Logger
	now     func() time.Time
	cookies *cookieJar
	m       *metrics

	mu sync.Mutex
	// The fields below are guarded by mu.
	byKey     map[wire.Key]*client
	bySession map[wire.SessionID]*client
	rooms     map[string]map[*client]struct{}
	// spent holds, per key, the cookies of its registrations that ended or
	// were replaced, kept for the cookie lifetime so a replayed
	// registration cannot come back (after leave) or reset a newer session.
	spent   map[wire.Key][]spentCookie
	sources map[netip.Addr]*sourceLimit
	scratch []byte // relayed datagrams are built here
}

// maxSpent bounds the spent cookies remembered per key.
const maxSpent = 32

type spentCookie struct {
	cookie wire.Cookie
	at     time.Time
}

type sourceLimit struct {
	lim  *rate.Limiter
	last time.Time
}

// New validates opts and returns a Server.
func New(opts Options) (*Server, error) {
	if opts.Conn == nil {
		return nil, errors.New("rendezvous: Options.Conn is nil")
	}
	if opts.Store == nil {
		return nil, errors.New("rendezvous: Options.Store is nil")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Expiry <= 0 {
		opts.Expiry = 60 * time.Second
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = min(25*time.Second, opts.Expiry*10/24)
	}
	if opts.SourceRate == 0 {
		opts.SourceRate = 50
	}
	if opts.Software == "" {
		opts.Software = "natchat-rendezvous"
	}
	return &Server{
		opts:      opts,
		log:       opts.Logger,
		now:       opts.Now,
		cookies:   newCookieJar(),
		m:         newMetrics(),
		byKey:     make(map[wire.Key]*client),
		bySession: make(map[wire.SessionID]*client),
		rooms:     make(map[string]map[*client]struct{}),
		spent:     make(map[wire.Key][]spentCookie),
		sources:   make(map[netip.Addr]*sourceLimit),
	}, nil
}

// MetricsHandler serves the Prometheus text format.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{})
}

// Run serves until ctx is done or the socket fails, then closes the socket
// and returns. It returns nil after ctx is done.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		s.opts.Conn.Close()
		wg.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.sweepLoop(ctx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		s.opts.Conn.Close() // unblocks ReadFrom
	}()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := s.opts.Conn.ReadFrom(buf)
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
		src, ok := addrPort(from)
		if !ok {
			continue
		}
		s.Handle(buf[:n], src)
	}
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	if ua, ok := a.(*net.UDPAddr); ok {
		ap := ua.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ap.IsValid()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

func (s *Server) send(b []byte, to netip.AddrPort) { s.sendUDP(b, net.UDPAddrFromAddrPort(to)) }

func (s *Server) sendUDP(b []byte, to *net.UDPAddr) {
	if _, err := s.opts.Conn.WriteTo(b, to); err != nil {
		s.log.Debug().Err(err).Stringer("to", to).Msg("write failed")
	}
}

func (s *Server) drop(reason string) { s.m.dropped.WithLabelValues(reason).Inc() }

func (s *Server) sweepLoop(ctx context.Context) {
	interval := min(max(s.opts.Expiry/8, 50*time.Millisecond), time.Second)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Sweep(s.now())
		}
	}
}

// Sweep expires nodes silent for longer than Expiry as of now, and forgets
// stale per-source state. Run calls it periodically; tests call it with a
// stepped clock.
func (s *Server) Sweep(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.byKey {
		if now.Sub(c.lastSeen) > s.opts.Expiry {
			s.log.Info().Str("peer", c.name).Msg("expired")
			s.removeLocked(c, wire.ReasonTimeout, now)
		}
	}
	gone := 0
	for k, rs := range s.spent {
		// A cookie's issue time is kept in whole seconds, so it stays
		// valid for up to CookieLifetime+1s after it was issued (≤ r.at).
		rs = slices.DeleteFunc(rs, func(r spentCookie) bool { return now.Sub(r.at) > CookieLifetime+time.Second })
		if len(rs) == 0 {
			delete(s.spent, k)
			gone++
		} else {
			s.spent[k] = rs
		}
	}
	s.spent = compact(s.spent, gone)
	gone = 0
	for ip, l := range s.sources {
		if now.Sub(l.last) > 10*time.Second {
			delete(s.sources, ip)
			gone++
		}
	}
	s.sources = compact(s.sources, gone)
}

// compact returns m, or a new map with its entries when most of it was
// just deleted: a Go map never gives back its buckets (maps.Clone keeps
// them too), so a burst of departed nodes or sources would otherwise stay
// allocated for good.
func compact[K comparable, V any](m map[K]V, deleted int) map[K]V {
	if deleted <= 64 || deleted <= 2*len(m) {
		return m
	}
	n := make(map[K]V, len(m))
	for k, v := range m {
		n[k] = v
	}
	return n
}

// allowSourceLocked meters unauthenticated replies per source IP.
func (s *Server) allowSourceLocked(ip netip.Addr, now time.Time) bool {
	if s.opts.SourceRate < 0 {
		return true
	}
	l := s.sources[ip]
	if l == nil {
		if len(s.sources) > 100000 {
			return false // under a spoofed flood, stop answering new sources
		}
		l = &sourceLimit{lim: rate.NewLimiter(rate.Limit(s.opts.SourceRate), 2*s.opts.SourceRate)}
		s.sources[ip] = l
	}
	l.last = now
	return l.lim.AllowN(now, 1)
}

// Handle processes one datagram from src. Run calls it for every datagram;
// it is exported for in-memory tests and benchmarks.
func (s *Server) Handle(b []byte, src netip.AddrPort) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if wire.IsSTUN(b) {
		s.handleSTUNLocked(b, src, now)
		return
	}
	msg, err := wire.Parse(b)
	if err != nil {
		var verr *wire.VersionError
		switch {
		case errors.As(err, &verr):
			s.drop(relay.DropVersion)
			s.log.Warn().Stringer("src", src).Uint8("theirs", verr.Got).Uint8("ours", wire.Version).Msg("protocol version mismatch: refused")
			if verr.Type != wire.TypeError {
				s.replyErrorLocked(src, now, len(b), &wire.Error{Code: wire.CodeVersion, Request: verr.Type,
					Message: fmt.Sprintf("rendezvous speaks protocol v%d, you sent v%d", wire.Version, verr.Got)})
			}
		case errors.Is(err, wire.ErrUnknownType):
			s.drop(relay.DropUnknownType)
		default:
			s.drop(relay.DropMalformed)
		}
		return
	}
	switch m := msg.(type) {
	case *wire.Hello:
		if !s.allowSourceLocked(src.Addr(), now) {
			s.drop(relay.DropSourceLimited)
			return
		}
		s.send(wire.Marshal(&wire.CookieReply{Nonce: m.Nonce, Cookie: s.cookies.issue(now, src)}), src)
	case *wire.Register:
		s.handleRegisterLocked(m, src, now, len(b))
	case *wire.Heartbeat:
		if c := s.sessionLocked(m.Session, src, now, len(b), wire.TypeHeartbeat, 0); c != nil {
			s.send(wire.Marshal(&wire.HeartbeatAck{Observed: c.addr, PresenceSeq: c.seq}), c.addr)
		}
	case *wire.Leave:
		if c := s.sessionLocked(m.Session, src, now, len(b), wire.TypeLeave, 0); c != nil {
			s.log.Info().Str("peer", c.name).Msg("left")
			s.removeLocked(c, wire.ReasonQuit, now)
		}
	case *wire.PeersRequest:
		if c := s.sessionLocked(m.Session, src, now, len(b), wire.TypePeersRequest, 0); c != nil {
			s.sendSnapshotLocked(c)
		}
	case *wire.Lookup:
		if c := s.sessionLocked(m.Session, src, now, len(b), wire.TypeLookup, m.TxID); c != nil {
			s.send(wire.Marshal(s.lookupLocked(m)), c.addr)
		}
	case *wire.Relay:
		if c := s.sessionLocked(m.Session, src, now, len(b), wire.TypeRelay, 0); c != nil {
			if d := s.forwardableLocked(c, m.Dst, len(m.Payload), now); d != nil {
				s.scratch = append(wire.AppendRelayedHeader(s.scratch[:0], c.key), m.Payload...)
				s.sendUDP(s.scratch, d.udpAddr())
				s.m.relayedPkts.Inc()
				s.m.relayedBytes.Add(float64(len(m.Payload)))
			}
		}
	case *wire.Signal:
		if c := s.sessionLocked(m.Session, src, now, len(b), wire.TypeSignal, 0); c != nil {
			if d := s.forwardableLocked(c, m.Dst, len(m.Body), now); d != nil {
				s.scratch = wire.Append(s.scratch[:0], &wire.Signaled{Src: c.key, Name: c.name, Body: m.Body})
				s.sendUDP(s.scratch, d.udpAddr())
				s.m.signals.Inc()
			}
		}
	default:
		// Messages the rendezvous sends, not receives.
		s.drop(relay.DropUnknownType)
	}
}

// replyErrorLocked sends e to an unproven source, no larger than the
// datagram that caused it, within the source's budget.
func (s *Server) replyErrorLocked(src netip.AddrPort, now time.Time, reqLen int, e *wire.Error) {
	if !s.allowSourceLocked(src.Addr(), now) {
		s.drop(relay.DropSourceLimited)
		return
	}
	if b := wire.ErrorFits(e, reqLen); b != nil {
		s.send(b, src)
	}
}

// sessionLocked returns the client of session id, refreshing its lastSeen
// and roaming it to src, or replies not_registered and returns nil.
func (s *Server) sessionLocked(id wire.SessionID, src netip.AddrPort, now time.Time, reqLen int, t wire.Type, txid uint32) *client {
	c := s.bySession[id]
	if c == nil {
		s.drop(relay.DropNotRegistered)
		s.replyErrorLocked(src, now, reqLen, &wire.Error{Code: wire.CodeNotRegistered, Request: t, TxID: txid, Message: "register again"})
		return nil
	}
	if c.addr != src {
		// The session ID is the secret; a new source address is the node's
		// NAT rebinding or the node moving (like WireGuard roaming).
		s.log.Info().Str("peer", c.name).Stringer("from", c.addr).Stringer("to", src).Msg("roamed")
		c.addr = src
	}
	c.lastSeen = now
	return c
}

func (s *Server) removeLocked(c *client, reason wire.LeaveReason, now time.Time) {
	others := s.coMembersLocked(c)
	for _, r := range c.rooms {
		delete(s.rooms[r], c)
		if len(s.rooms[r]) == 0 {
			delete(s.rooms, r)
		}
	}
	c.rooms = nil
	delete(s.byKey, c.key)
	delete(s.bySession, c.session)
	s.spendLocked(c, now)
	s.m.online.Set(float64(len(s.byKey)))
	for _, o := range others {
		s.presenceLocked(o, wire.PresenceLeft, reason, c)
	}
}

// Online returns the names online now, sorted. For tests and the operator.
func (s *Server) Online() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.byKey))
	for _, c := range s.byKey {
		out = append(out, c.name)
	}
	sort.Strings(out)
	return out
}
