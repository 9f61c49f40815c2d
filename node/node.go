// Package node is a natchat node: one UDP socket, demultiplexed once into
// the rendezvous protocol, STUN, and peer traffic; a registration with the
// rendezvous kept alive by heartbeats; presence; and end-to-end encrypted
// conversations with peers over QUIC on a path-agnostic per-peer link
// (package link) that starts on the rendezvous relay.
//
// A Node is driven by commands (Command, Send, Who, Quit) and reports
// everything through Options.OnEvent; package cmd/node puts a headless JSON
// or a line-based UI on top.
package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v2"
	"github.com/pion/transport/v2"
	"github.com/quic-go/quic-go"
	"github.com/rs/zerolog"

	"natchat/node/link"
	"natchat/punch"
	"natchat/wire"
)

// Options configure a Node. Name, Rendezvous, Conn and Identity are
// required; the rest have documented zero values.
type Options struct {
	// Name is the node's name, checked by wire.ValidateName.
	Name string
	// Rendezvous is the rendezvous's "host:port".
	Rendezvous string
	// Conn is the node's one UDP socket. The Node owns it from Run on and
	// closes it when Run returns.
	Conn net.PacketConn
	// Identity is the node's Ed25519 key.
	Identity ed25519.PrivateKey
	// Heartbeat is the interval of heartbeats to the rendezvous, which also
	// keep the NAT mapping open. 0: 25 s. It is shortened to stay under the
	// rendezvous's expiry when that is shorter.
	Heartbeat time.Duration
	// DeliveryTimeout is how long a message may wait for its receipt
	// before it is reported undelivered. 0: 2 minutes.
	DeliveryTimeout time.Duration
	// OnEvent receives every event, in order, from several goroutines but
	// never concurrently. It must not block for long. nil: events dropped.
	OnEvent func(Event)
	// Logger receives structured logs. Zero value: disabled.
	Logger zerolog.Logger
	// Net is the network punch lists interfaces on: nil is the real one;
	// tests pass a pion vnet.
	Net transport.Net
	// NoDirect keeps every peer on the relay (no ICE). For tests and for
	// networks where punching is unwanted.
	NoDirect bool
	// Punch tunes ICE; zero values are punch's tuned defaults. Conn,
	// STUNServer, Net and Logger are set by the node.
	Punch punch.Options
}

// Registration states.
type regState int

const (
	stHello      regState = iota // asking for a cookie
	stRegister                   // cookie in hand, registering
	stRegistered                 // registered; heartbeating
)

// ErrQuit is the cause Run's context gets after Quit.
var ErrQuit = errors.New("quit")

// Node is a running natchat node.
type Node struct {
	opts  Options
	log   zerolog.Logger
	key   wire.Key
	rv    *net.UDPAddr
	rvAP  netip.AddrPort
	link  *link.Conn
	ice   *iceConn       // punch's view of the socket; nil with NoDirect
	punch *punch.Manager // nil with NoDirect
	cert  tls.Certificate
	tr    *quic.Transport
	ctx   context.Context
	stop  context.CancelCauseFunc
	wg    sync.WaitGroup
	wake  chan struct{} // wakes the control loop; cap 1
	evMu  sync.Mutex    // serialises OnEvent
	// relaySession is the session while registered, nil otherwise: read
	// without the lock on every relayed packet, written under mu.
	relaySession atomic.Pointer[wire.SessionID]
	fatal        chan error // cap 1: the first unrecoverable error

	mu sync.Mutex
	// Guarded by mu:
	state      regState
	session    wire.SessionID
	observed   netip.AddrPort
	nonce      uint64
	cookie     wire.Cookie
	missed     int           // heartbeats without an ack
	lastSend   time.Time     // of the last Hello/Register/Heartbeat
	attempts   int           // Hello/Register attempts in this state
	regWait    chan struct{} // closed when registered; replaced on loss
	expiry     time.Duration // as told by the rendezvous
	everReg    bool
	unreachErr bool
	stunTx     [stun.TransactionIDSize]byte

	online   map[wire.Key]string // presence: who shares a room with us
	names    map[wire.Key]string // every key→name we have learned
	keys     map[string]wire.Key // NameKey→key, every name we have learned
	seq      uint32              // presence sequence applied
	snap     *snapshot           // snapshot being assembled
	synced   bool                // a complete snapshot has been applied since registering
	snapAsk  time.Time           // when the snapshot was last asked for
	snapTry  int                 // how often, since the last complete one
	stale    map[wire.Key]time.Time
	lookups  map[uint32]chan *wire.LookupReply
	txid     uint32
	convs    map[string]*conv // by NameKey
	seen     map[wire.Key]*dedup
	conns    map[wire.Key]map[*quic.Conn]struct{} // live session connections per peer
	directs  map[wire.Key]*direct
	gone     map[wire.Key]bool // left peers: no punching until they are back
	naming   map[wire.Key]bool // peers whose name is being looked up for a path event
	lastTo   string
	quitting bool
	pending  []Event // events decided under mu, emitted after it is released
}

type snapshot struct {
	seq   uint32
	parts map[uint16][]wire.Peer
	total uint16
}

// New checks opts and returns a Node ready to Run.
func New(opts Options) (*Node, error) {
	if err := wire.ValidateName(opts.Name); err != nil {
		return nil, fmt.Errorf("bad name %q: %w", opts.Name, err)
	}
	if opts.Conn == nil {
		return nil, errors.New("node: Options.Conn is nil")
	}
	if len(opts.Identity) != ed25519.PrivateKeySize {
		return nil, errors.New("node: Options.Identity is not an Ed25519 private key")
	}
	rv, err := net.ResolveUDPAddr("udp", opts.Rendezvous)
	if err != nil {
		return nil, fmt.Errorf("rendezvous address %q: %w", opts.Rendezvous, err)
	}
	if rv.Port == 0 {
		return nil, fmt.Errorf("rendezvous address %q: port 0", opts.Rendezvous)
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 25 * time.Second
	}
	if opts.DeliveryTimeout <= 0 {
		opts.DeliveryTimeout = 2 * time.Minute
	}
	cert, err := selfCert(opts.Identity)
	if err != nil {
		return nil, fmt.Errorf("node: certificate: %w", err)
	}
	n := &Node{
		opts:    opts,
		log:     opts.Logger,
		key:     wire.Key(opts.Identity.Public().(ed25519.PublicKey)),
		rv:      rv,
		rvAP:    unmap(rv.AddrPort()),
		cert:    cert,
		wake:    make(chan struct{}, 1),
		fatal:   make(chan error, 1),
		regWait: make(chan struct{}),
		online:  make(map[wire.Key]string),
		names:   make(map[wire.Key]string),
		keys:    make(map[string]wire.Key),
		stale:   make(map[wire.Key]time.Time),
		lookups: make(map[uint32]chan *wire.LookupReply),
		convs:   make(map[string]*conv),
		seen:    make(map[wire.Key]*dedup),
		conns:   make(map[wire.Key]map[*quic.Conn]struct{}),
		directs: make(map[wire.Key]*direct),
		gone:    make(map[wire.Key]bool),
		naming:  make(map[wire.Key]bool),
	}
	lo := link.Options{Local: n.key, SendRelay: n.sendRelay, RelayRemote: n.rvAP.String(), OnPath: n.onPath}
	if rb, ok := opts.Conn.(interface{ SetReadBuffer(int) error }); ok {
		lo.SetReadBuffer = rb.SetReadBuffer
	}
	if wb, ok := opts.Conn.(interface{ SetWriteBuffer(int) error }); ok {
		lo.SetWriteBuffer = wb.SetWriteBuffer
	}
	n.link = link.New(lo)
	if !opts.NoDirect {
		n.ice = newICEConn(opts.Conn)
		po := opts.Punch
		po.Conn, po.Net, po.Logger = n.ice, opts.Net, opts.Logger
		if rv.IP.To4() != nil {
			po.STUNServer = rv.String()
		}
		if n.punch, err = punch.NewManager(po); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
	}
	return n, nil
}

// Key returns the node's identity key.
func (n *Node) Key() wire.Key { return n.key }

func unmap(ap netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) }

func (n *Node) emit(e Event) {
	if n.opts.OnEvent == nil {
		return
	}
	n.evMu.Lock()
	defer n.evMu.Unlock()
	n.opts.OnEvent(e)
}

func (n *Node) poke() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// Run runs the node until ctx is done, Quit is called, or an unrecoverable
// error (such as "name taken"). It sends a leave on the way out when it was
// registered, closes the socket and waits for every goroutine it started.
// It returns nil after ctx is done or Quit.
func (n *Node) Run(ctx context.Context) error {
	n.ctx, n.stop = context.WithCancelCause(ctx)
	defer n.stop(nil)
	n.tr = &quic.Transport{Conn: n.link}
	ln, err := n.tr.Listen(serverTLS(n.cert), quicConfig())
	if err != nil {
		return fmt.Errorf("node: listen: %w", err)
	}
	n.wg.Add(3)
	go func() { defer n.wg.Done(); n.readLoop() }()
	go func() { defer n.wg.Done(); n.controlLoop() }()
	go func() { defer n.wg.Done(); n.acceptLoop(ln) }()

	var runErr error
	select {
	case <-n.ctx.Done():
	case runErr = <-n.fatal:
	}
	n.mu.Lock()
	n.quitting = true
	registered, session := n.state == stRegistered, n.session
	n.mu.Unlock()
	if registered {
		leave := wire.Marshal(&wire.Leave{Session: session})
		n.writeRV(leave)
		n.writeRV(leave) // a second copy: a lost leave would read as a timeout
	}
	n.stop(ErrQuit)
	ln.Close()
	n.tr.Close()
	n.link.Close()
	n.mu.Lock()
	directs := n.directs
	n.directs = map[wire.Key]*direct{}
	n.mu.Unlock()
	var stops sync.WaitGroup
	for _, d := range directs {
		stops.Add(1)
		go func() { defer stops.Done(); d.stop() }()
	}
	stops.Wait()
	if n.punch != nil {
		n.punch.Close()
	}
	n.opts.Conn.Close()
	n.wg.Wait()
	return runErr
}

// Quit ends Run as /quit does: a notified leave.
func (n *Node) Quit() {
	if n.stop != nil {
		n.stop(ErrQuit)
	}
}

func (n *Node) fail(err error) {
	select {
	case n.fatal <- err:
	default:
	}
}

func (n *Node) writeRV(b []byte) {
	if _, err := n.opts.Conn.WriteTo(b, n.rv); err != nil && n.ctx.Err() == nil {
		n.log.Debug().Err(err).Msg("write to rendezvous")
	}
}

// readLoop is the one place the socket is read and demultiplexed.
func (n *Node) readLoop() {
	buf := make([]byte, 64<<10)
	for {
		sz, from, err := n.opts.Conn.ReadFrom(buf)
		if err != nil {
			if n.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			n.fail(fmt.Errorf("node: read: %w", err))
			return
		}
		b := buf[:sz]
		src, ok := from.(*net.UDPAddr)
		if !ok {
			continue
		}
		fromRV := unmap(src.AddrPort()) == n.rvAP
		switch {
		case fromRV && wire.IsProtocol(b):
			n.handleRV(b)
		case fromRV && wire.IsSTUN(b) && n.handleSTUN(b):
		case n.ice != nil:
			// STUN, ICE checks and direct peer data: punch routes them.
			n.ice.deliver(b, src)
		default:
			n.log.Debug().Stringer("from", src).Int("len", sz).Msg("dropped datagram from unknown source")
		}
	}
}

func (n *Node) handleRV(b []byte) {
	msg, err := wire.Parse(b)
	if err != nil {
		var verr *wire.VersionError
		if errors.As(err, &verr) && n.registering() {
			// Believed only while we are registering: once registered, a
			// datagram from the rendezvous's address with another version
			// can only be spoofed, and must not stop the node.
			text := fmt.Sprintf("rendezvous speaks protocol v%d, this node speaks v%d: upgrade the older side", verr.Got, wire.Version)
			if e, ok := msg.(*wire.Error); ok && e.Message != "" {
				text += " (" + e.Message + ")"
			}
			n.emit(&Error{Header: hdr("error"), Code: CodeVersion, Message: text})
			n.fail(errors.New(text))
			return
		}
		n.log.Debug().Err(err).Msg("bad datagram from rendezvous")
		return
	}
	switch m := msg.(type) {
	case *wire.CookieReply:
		n.onCookie(m)
	case *wire.Registered:
		n.onRegistered(m)
	case *wire.HeartbeatAck:
		n.onHeartbeatAck(m)
	case *wire.Error:
		n.onError(m)
	case *wire.Presence:
		n.onPresence(m)
	case *wire.Peers:
		n.onPeers(m)
	case *wire.LookupReply:
		n.mu.Lock()
		ch := n.lookups[m.TxID]
		delete(n.lookups, m.TxID)
		n.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	case *wire.Relayed:
		n.link.Deliver(m.Src, m.Payload)
	case *wire.Signaled:
		n.onSignaled(m)
	}
}

// learn records a key→name binding told by the rendezvous.
func (n *Node) learn(k wire.Key, name string) {
	if name == "" || k.IsZero() {
		return
	}
	n.mu.Lock()
	n.learnLocked(k, name)
	n.mu.Unlock()
}

// learnLocked records a binding; every source of one (presence, lookup,
// signaling) also means the peer is around, so punching may resume.
func (n *Node) learnLocked(k wire.Key, name string) {
	n.names[k] = name
	n.keys[wire.NameKey(name)] = k
}

// --- registration ---

func (n *Node) onCookie(m *wire.CookieReply) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state != stHello || m.Nonce != n.nonce {
		return
	}
	n.cookie = m.Cookie
	n.state, n.attempts = stRegister, 0
	n.sendRegisterLocked()
}

func (n *Node) sendRegisterLocked() {
	r := &wire.Register{Cookie: n.cookie, Key: n.key, Name: n.opts.Name}
	copy(r.Sig[:], ed25519.Sign(n.opts.Identity, wire.RegisterSigned(r.Cookie, r.Key, r.Name)))
	n.lastSend = time.Now()
	n.attempts++
	n.writeRV(wire.Marshal(r))
}

func (n *Node) sendHelloLocked() {
	var b [8]byte
	rand.Read(b[:])
	n.nonce = binary.BigEndian.Uint64(b[:])
	n.lastSend = time.Now()
	n.attempts++
	n.writeRV(wire.Marshal(&wire.Hello{Nonce: n.nonce}))
	// Learn our public endpoint with a standard STUN Binding request too.
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err == nil {
		n.stunTx = req.TransactionID
		n.writeRV(req.Raw)
	}
}

// handleSTUN takes the answer to the node's own STUN query and reports
// whether it was that; other STUN (punch's) goes on to punch.
func (n *Node) handleSTUN(b []byte) bool {
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if m.Decode() != nil || m.Type != stun.BindingSuccess {
		return false
	}
	n.mu.Lock()
	mine := m.TransactionID == n.stunTx
	n.mu.Unlock()
	if !mine {
		return false
	}
	var xa stun.XORMappedAddress
	if xa.GetFrom(m) != nil {
		return true
	}
	if ip, ok := netip.AddrFromSlice(xa.IP); ok {
		n.log.Info().Stringer("public", netip.AddrPortFrom(ip.Unmap(), uint16(xa.Port))).Msg("STUN mapped address")
	}
	return true
}

func (n *Node) onRegistered(m *wire.Registered) {
	n.mu.Lock()
	if n.state == stRegistered && m.Session == n.session {
		n.mu.Unlock()
		return // a duplicate
	}
	if n.state != stRegister {
		n.mu.Unlock()
		return
	}
	n.state, n.session, n.observed, n.missed, n.attempts = stRegistered, m.Session, m.Observed, 0, 0
	session := m.Session
	n.relaySession.Store(&session)
	n.expiry = time.Duration(m.ExpiryMS) * time.Millisecond
	n.seq, n.snap = 0, nil
	// The rendezvous sends the snapshot right after Registered; if it is
	// lost, the control loop asks again.
	n.synced, n.snapAsk, n.snapTry = false, time.Now(), 0
	n.everReg, n.unreachErr = true, false
	n.lastSend = time.Now()
	close(n.regWait)
	n.mu.Unlock()
	n.log.Info().Stringer("public", m.Observed).Msg("registered")
	n.emit(&Registered{Header: hdr("registered"), Name: n.opts.Name, Public: m.Observed.String()})
	n.poke()
}

// registering reports whether a Hello or Register is outstanding.
func (n *Node) registering() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state != stRegistered
}

// lostLocked drops back to the Hello state.
func (n *Node) lostLocked() {
	if n.state == stRegistered {
		n.regWait = make(chan struct{})
	}
	n.relaySession.Store(nil)
	n.state, n.attempts = stHello, 0
	n.sendHelloLocked()
}

func (n *Node) onError(m *wire.Error) {
	n.log.Debug().Stringer("code", m.Code).Str("msg", m.Message).Stringer("request", m.Request).Msg("rendezvous refused")
	switch m.Code {
	case wire.CodeNotRegistered, wire.CodeBadCookie, wire.CodeReplay:
		// The rendezvous restarted or forgot us, or the cookie aged: again.
		n.mu.Lock()
		if n.state == stRegistered || m.Code != wire.CodeNotRegistered {
			n.log.Info().Stringer("why", m.Code).Msg("registering again")
			n.lostLocked()
		}
		n.mu.Unlock()
	case wire.CodeNameTaken, wire.CodeBadName, wire.CodeKeyInUse, wire.CodeBadSignature, wire.CodeVersion:
		// Final refusals of our registration, believed only in answer to
		// our outstanding Register (or Hello, for the version): anyone who
		// can spoof the rendezvous's address could send these at any time.
		n.mu.Lock()
		st := n.state
		n.mu.Unlock()
		if !(st == stRegister && m.Request == wire.TypeRegister) &&
			!(st != stRegistered && m.Code == wire.CodeVersion) {
			n.log.Debug().Stringer("code", m.Code).Msg("ignored a refusal we did not ask for")
			return
		}
		text := m.Message
		if text == "" {
			text = m.Code.String()
		}
		n.emit(&Error{Header: hdr("error"), Code: m.Code.String(), Message: text})
		n.fail(fmt.Errorf("rendezvous refused registration: %s", text))
	case wire.CodeRateLimited:
		n.log.Warn().Msg("rendezvous rate-limits us")
	}
}

func (n *Node) onHeartbeatAck(m *wire.HeartbeatAck) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state != stRegistered {
		return
	}
	n.missed = 0
	if m.Observed != n.observed {
		n.log.Info().Stringer("from", n.observed).Stringer("to", m.Observed).Msg("public endpoint changed")
		n.observed = m.Observed
	}
	if m.PresenceSeq > n.seq {
		n.synced = false // an event was lost
	}
	if !n.synced {
		n.askSnapshotLocked(time.Now())
	}
}

// askSnapshotLocked asks the rendezvous for the presence snapshot,
// starting its assembly afresh.
func (n *Node) askSnapshotLocked(now time.Time) {
	n.snap = nil
	n.snapAsk = now
	n.snapTry++
	n.writeRV(wire.Marshal(&wire.PeersRequest{Session: n.session}))
}

// snapshotDueLocked is when to ask for the snapshot again while unsynced:
// 1 s after the last ask, doubling to 8 s.
func (n *Node) snapshotDueLocked() time.Time {
	return n.snapAsk.Add(min(time.Second<<min(n.snapTry, 3), 8*time.Second))
}

// controlLoop sends Hello/Register retransmissions and heartbeats, and
// expires stale presence, on one timer.
func (n *Node) controlLoop() {
	n.mu.Lock()
	n.sendHelloLocked()
	n.mu.Unlock()
	start := time.Now()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		case <-n.wake:
		}
		now := time.Now()
		n.mu.Lock()
		next := n.tickLocked(now, start)
		evs := n.pending
		n.pending = nil
		n.mu.Unlock()
		for _, e := range evs {
			n.emit(e)
		}
		n.expireStale(now)
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(next)
	}
}

func (n *Node) retryLocked() time.Duration {
	return max(min(500*time.Millisecond<<min(max(n.attempts-1, 0), 3), 3*time.Second, n.heartbeatLocked()/2), 100*time.Millisecond)
}

// heartbeat is the interval in force: the option, kept under 40% of the
// rendezvous's expiry so two may be lost without expiring.
func (n *Node) heartbeatLocked() time.Duration {
	h := n.opts.Heartbeat
	if n.expiry > 0 && h > n.expiry*2/5 {
		h = n.expiry * 2 / 5
	}
	return h
}

// tickLocked does what is due and returns how long to wait.
func (n *Node) tickLocked(now, start time.Time) time.Duration {
	switch n.state {
	case stHello, stRegister:
		// Retransmit with backoff: 0.5 s, 1 s, 2 s, then every 3 s (or
		// half a heartbeat, if shorter, so a rendezvous back from an
		// outage sees us again within one heartbeat interval).
		backoff := n.retryLocked()
		if due := n.lastSend.Add(backoff); now.Before(due) {
			return due.Sub(now)
		}
		if n.state == stRegister && n.attempts >= 4 {
			n.state, n.attempts = stHello, 0 // the cookie may have aged
		}
		if !n.everReg && !n.unreachErr && now.Sub(start) > 10*time.Second {
			n.unreachErr = true
			n.pending = append(n.pending, &Error{Header: hdr("error"), Code: CodeUnreachable,
				Message: fmt.Sprintf("no answer from rendezvous %s yet; still trying", n.opts.Rendezvous)})
		}
		if n.state == stHello {
			n.sendHelloLocked()
		} else {
			n.sendRegisterLocked()
		}
		return n.retryLocked()
	default:
		if !n.synced {
			// The snapshot (or an event) was lost: ask again.
			if due := n.snapshotDueLocked(); !now.Before(due) {
				n.askSnapshotLocked(now)
			}
		}
		h := n.heartbeatLocked()
		if due := n.lastSend.Add(h); now.Before(due) {
			wait := due.Sub(now)
			if !n.synced {
				wait = min(wait, n.snapshotDueLocked().Sub(now))
			}
			return wait
		}
		if n.missed >= 3 {
			n.log.Warn().Msg("rendezvous silent for three heartbeats; registering again")
			n.lostLocked()
			return 500 * time.Millisecond
		}
		n.missed++
		n.lastSend = now
		n.writeRV(wire.Marshal(&wire.Heartbeat{Session: n.session}))
		return h
	}
}

// waitRegistered blocks until the node is registered or ctx is done.
func (n *Node) waitRegistered(ctx context.Context) (wire.SessionID, error) {
	for {
		n.mu.Lock()
		if n.state == stRegistered {
			s := n.session
			n.mu.Unlock()
			return s, nil
		}
		ch := n.regWait
		n.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return wire.SessionID{}, ctx.Err()
		}
	}
}

// sendRelay is the link's relay path: wrap and send to the rendezvous.
// It is on the hot path of every relayed packet: no lock, no allocation.
func (n *Node) sendRelay(dst wire.Key, b []byte) error {
	s := n.relaySession.Load()
	if s == nil {
		return nil // dropped like a lost packet; QUIC retransmits once we are back
	}
	bp := relayBufs.Get().(*[]byte)
	pkt := append(wire.AppendRelayHeader((*bp)[:0], *s, dst), b...)
	n.writeRV(pkt)
	*bp = pkt
	relayBufs.Put(bp)
	return nil
}

// relayBufs holds buffers for relayed packets (the socket copies them).
var relayBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1500); return &b }}

// --- presence ---

func (n *Node) onPresence(m *wire.Presence) {
	n.mu.Lock()
	if n.state != stRegistered || m.Seq <= n.seq {
		n.mu.Unlock()
		return
	}
	if m.Seq != n.seq+1 && n.synced {
		// We missed an event: resync from a snapshot, but apply this one.
		n.synced = false
		n.askSnapshotLocked(time.Now())
	}
	n.seq = m.Seq
	n.learnLocked(m.Key, m.Name)
	if m.Kind == wire.PresenceJoin {
		delete(n.gone, m.Key)
	}
	var ev Event
	switch m.Kind {
	case wire.PresenceJoin:
		delete(n.stale, m.Key)
		if _, ok := n.online[m.Key]; !ok {
			n.online[m.Key] = m.Name
			ev = &PeerJoined{Header: hdr("peer_joined"), Name: m.Name}
		}
	case wire.PresenceLeft:
		delete(n.stale, m.Key)
		if _, ok := n.online[m.Key]; ok {
			delete(n.online, m.Key)
			ev = &PeerLeft{Header: hdr("peer_left"), Name: m.Name, Reason: m.Reason.String()}
		}
	}
	n.mu.Unlock()
	if ev != nil {
		n.emit(ev)
	}
	if m.Kind == wire.PresenceLeft {
		n.forgetPeer(m.Key)
	}
}

func (n *Node) onPeers(m *wire.Peers) {
	n.mu.Lock()
	if n.state != stRegistered || m.Seq < n.seq {
		n.mu.Unlock()
		return
	}
	if n.snap == nil || n.snap.seq != m.Seq {
		n.snap = &snapshot{seq: m.Seq, parts: make(map[uint16][]wire.Peer), total: m.Parts}
	}
	n.snap.parts[m.Part] = m.Peers
	if len(n.snap.parts) < int(n.snap.total) {
		n.mu.Unlock()
		return
	}
	in := make(map[wire.Key]string)
	for _, p := range n.snap.parts {
		for _, e := range p {
			in[e.Key] = e.Name
		}
	}
	n.seq, n.snap = m.Seq, nil
	n.synced, n.snapTry = true, 0
	var evs []Event
	for k, name := range in {
		n.learnLocked(k, name)
		delete(n.gone, k)
		delete(n.stale, k)
		if _, ok := n.online[k]; !ok {
			n.online[k] = name
			evs = append(evs, &PeerJoined{Header: hdr("peer_joined"), Name: name})
		}
	}
	// Peers we thought online but the snapshot lacks may be re-registering
	// after a rendezvous restart: give them one expiry before saying so.
	for k := range n.online {
		if _, ok := in[k]; !ok {
			if _, ok := n.stale[k]; !ok {
				n.stale[k] = time.Now().Add(max(n.expiry, time.Second))
			}
		}
	}
	n.mu.Unlock()
	sort.Slice(evs, func(i, j int) bool { return evs[i].(*PeerJoined).Name < evs[j].(*PeerJoined).Name })
	for _, e := range evs {
		n.emit(e)
	}
	n.poke()
}

func (n *Node) expireStale(now time.Time) {
	var evs []Event
	n.mu.Lock()
	for k, at := range n.stale {
		if now.After(at) {
			delete(n.stale, k)
			if name, ok := n.online[k]; ok {
				delete(n.online, k)
				evs = append(evs, &PeerLeft{Header: hdr("peer_left"), Name: name, Reason: wire.ReasonTimeout.String()})
			}
		}
	}
	n.mu.Unlock()
	for _, e := range evs {
		n.emit(e)
		n.forgetPeer(n.keyOf(e.(*PeerLeft).Name))
	}
}

func (n *Node) keyOf(name string) wire.Key {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.keys[wire.NameKey(name)]
}

// forgetPeer stops punching to a peer that left and resets its path; its
// session connection times out by itself, and talking to it again starts
// over on the relay.
func (n *Node) forgetPeer(k wire.Key) {
	n.mu.Lock()
	d := n.directs[k]
	delete(n.directs, k)
	n.gone[k] = true
	conns := n.conns[k]
	delete(n.conns, k)
	quitting := n.quitting
	n.mu.Unlock()
	for qc := range conns {
		qc.CloseWithError(0, "peer left")
	}
	n.link.Forget(k)
	if d != nil && !quitting {
		// Closing the ICE agent may wait for a STUN answer that only the
		// read loop (our caller) can deliver: close it on the side.
		n.wg.Add(1)
		go func() { defer n.wg.Done(); d.stop() }()
	}
}

// addConn tracks a live session connection to peer k until it closes.
func (n *Node) addConn(k wire.Key, qc *quic.Conn) {
	n.mu.Lock()
	if n.conns[k] == nil {
		n.conns[k] = make(map[*quic.Conn]struct{})
	}
	n.conns[k][qc] = struct{}{}
	n.mu.Unlock()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		<-qc.Context().Done()
		n.mu.Lock()
		delete(n.conns[k], qc)
		if len(n.conns[k]) == 0 {
			delete(n.conns, k)
		}
		n.mu.Unlock()
	}()
}

// rtt returns the smoothed RTT of a live session with k, or 0.
func (n *Node) rtt(k wire.Key) time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	for qc := range n.conns[k] {
		if r := qc.ConnectionStats().SmoothedRTT; r > 0 {
			return r
		}
	}
	return 0
}

// --- lookups ---

// errLookupTimeout means the rendezvous did not answer a lookup.
var errLookupTimeout = errors.New("rendezvous did not answer")

// lookup asks the rendezvous for a name (or key), retransmitting, once
// registered.
func (n *Node) lookup(ctx context.Context, name string, key wire.Key) (*wire.LookupReply, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for attempt := 0; ; attempt++ {
		session, err := n.waitRegistered(ctx)
		if err != nil {
			return nil, errLookupTimeout
		}
		ch := make(chan *wire.LookupReply, 1)
		n.mu.Lock()
		n.txid++
		tx := n.txid
		n.lookups[tx] = ch
		n.mu.Unlock()
		n.writeRV(wire.Marshal(&wire.Lookup{Session: session, TxID: tx, Key: key, Name: name}))
		t := time.NewTimer(min(500*time.Millisecond<<attempt, 2*time.Second))
		select {
		case r := <-ch:
			t.Stop()
			if r.Status != wire.LookupUnknown {
				n.learn(r.Key, r.Name)
			}
			if r.Status == wire.LookupOnline {
				n.mu.Lock()
				delete(n.gone, r.Key)
				n.mu.Unlock()
			}
			return r, nil
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		n.mu.Lock()
		delete(n.lookups, tx)
		n.mu.Unlock()
		if ctx.Err() != nil {
			return nil, errLookupTimeout
		}
	}
}

// nameOf returns the name of key k, asking the rendezvous if need be.
func (n *Node) nameOf(ctx context.Context, k wire.Key) (string, error) {
	n.mu.Lock()
	name, ok := n.names[k]
	n.mu.Unlock()
	if ok {
		return name, nil
	}
	r, err := n.lookup(ctx, "", k)
	if err != nil {
		return "", err
	}
	if r.Status == wire.LookupUnknown {
		return "", fmt.Errorf("no name is registered for key %s", k.Short())
	}
	return r.Name, nil
}

// --- paths ---

func (n *Node) onPath(k wire.Key, p link.Path) {
	n.mu.Lock()
	name, quitting, resolving := n.names[k], n.quitting, n.naming[k]
	if name == "" && !resolving && !quitting {
		n.naming[k] = true
	}
	n.mu.Unlock()
	if quitting {
		return // tearing down: paths end with the process
	}
	if p.Kind == link.Relay {
		// First traffic to this peer: start punching alongside the relay
		// (a no-op when it runs already; it retries by itself).
		n.ensureDirect(k)
	}
	switch {
	case name != "":
		n.emitPath(name, p)
	case !resolving:
		// A peer we know only by key (it contacted us first): ask the
		// rendezvous for its name, then report the path it has by then.
		// Changes meanwhile are folded into that one report.
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			name, err := n.nameOf(n.ctx, k)
			n.mu.Lock()
			delete(n.naming, k)
			n.mu.Unlock()
			if err != nil {
				n.log.Info().Err(err).Str("key", k.Short()).Msg("path to a peer of unknown name")
				return
			}
			if p := n.link.PathOf(k); p.Kind != link.None {
				n.emitPath(name, p)
			}
		}()
	}
}

func (n *Node) emitPath(name string, p link.Path) {
	n.log.Info().Str("peer", name).Stringer("path", p.Kind).Str("remote", p.Remote).Msg("path")
	n.emit(&PathChanged{Header: hdr("path"), Peer: name, Path: p.Kind.String(), Remote: p.Remote, RTTMS: rttMS(p.RTT)})
}

// Who emits the Peers event.
func (n *Node) Who() {
	n.mu.Lock()
	rows := make(map[wire.Key]*PeerInfo)
	for k, name := range n.online {
		rows[k] = &PeerInfo{Name: name, Online: true}
	}
	for k := range n.conns {
		if name, ok := n.names[k]; ok && rows[k] == nil {
			rows[k] = &PeerInfo{Name: name}
		}
	}
	n.mu.Unlock()
	out := make([]PeerInfo, 0, len(rows))
	for k, r := range rows {
		p := n.link.PathOf(k)
		r.Path = p.Kind.String()
		if p.Kind != link.None {
			rtt := n.rtt(k)
			if rtt == 0 {
				rtt = p.RTT
			}
			r.RTTMS = rttMS(rtt)
		}
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	n.emit(&Peers{Header: hdr("peers"), Peers: out})
}
