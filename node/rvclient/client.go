// Package rvclient is the node's client of the rendezvous: the
// registration state machine (Hello, cookie, a Noise handshake with the
// rendezvous's pinned key, heartbeats, registering again when the
// rendezvous forgets us), presence (changes and snapshots, kept in
// sequence), name lookups, the signalling channel to peers, the offline
// mailbox (mailbox.go: deposits, draining our own, receipts), rooms
// (rooms.go: join, part, the rooms we are in, a room's members, room
// events), and the network check (netcheck.go: our public endpoint as the
// rendezvous's two STUN addresses see it, and the NAT mapping behaviour
// that follows).
// After the handshake every control message, both ways, is sealed
// (package ctrl): the client acts on nothing from the rendezvous's address
// that did not authenticate, but for the few refusals that can come before
// a session exists, which it believes only in answer to its own
// outstanding request.
//
// It does no socket I/O of its own: the node's peer network hands it every
// rendezvous datagram (Handle) and sends what it writes (Options.Send). Its
// timers run in Run; every decision takes the time as an argument, so tests
// drive it with a fake clock (testing/synctest). It reports to an Observer
// in the order it decided, never under its lock.
package rvclient

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v2"
	"github.com/rs/zerolog"

	"natchat/ctrl"
	"natchat/wire"
)

// Observer receives what the client learns, in order. Its methods are
// called one at a time, without the client's lock, from the goroutine that
// fed the client (the socket's read loop, or Run). They must not block and
// must not call back into the Client.
type Observer interface {
	// Registered: the rendezvous accepted us; public is our endpoint as it
	// sees it. Again after every re-registration.
	Registered(public netip.AddrPort)
	// Joined: a peer shares a room with us now.
	Joined(k wire.Key, name string)
	// Left: a peer left (reason "quit" or "timeout"), or is out of our
	// sight (reason "part": no longer in a room we share).
	Left(k wire.Key, name string, reason string)
	// Refused: the rendezvous refused our registration for good (code is
	// a wire.Code name such as "name_taken"). Called at most once; Run
	// returns an error after it.
	Refused(code, message string)
	// Unreachable: no answer from the rendezvous yet, or (once
	// registered) none to three heartbeats in a row; the client keeps
	// trying, and Registered follows when it is back.
	Unreachable(message string)
	// Signaled: signalling from peer k, which the rendezvous calls name;
	// body aliases the datagram: copy it to keep it.
	Signaled(k wire.Key, name string, body []byte)
	// ServerKeyChanged: the rendezvous offers another key than the one
	// pinned (or given); the client does not talk to it and keeps trying.
	// Called once per offered key.
	ServerKeyChanged(pinned, offered ctrl.PublicKey)
	// ServerKeyLearned: the first handshake with a rendezvous whose key
	// was not known completed with this key (trust on first use): pin it.
	ServerKeyLearned(k ctrl.PublicKey)
}

// DeferObserver is an Observer that also wants to hear of a registration
// refused for now (code "quota": too many new names from
// our network this hour): the client asks again every minute. Deferred is
// called once per Client.
type DeferObserver interface {
	Deferred(code, message string)
}

// deferRetry is how long after a registration refused for now the client
// asks again.
const deferRetry = time.Minute

// Options configure a Client. Name, Identity, Send and Observer are
// required.
type Options struct {
	Name     string
	Identity ed25519.PrivateKey
	// Send writes one datagram to the rendezvous. It must not block for
	// long; it is called with the client's lock held.
	Send func(b []byte)
	// Observer receives what the client learns.
	Observer Observer
	// Heartbeat is the interval of heartbeats (which also keep the NAT
	// mapping open). 0: 25 s. It is shortened to 40% of the rendezvous's
	// expiry when that is shorter.
	Heartbeat time.Duration
	// Rendezvous names the rendezvous in messages ("host:port").
	Rendezvous string
	// Addr is the rendezvous's address, where Send sends: STUN answers
	// are believed only from it (or, for NetCheck's second probe, from
	// its second STUN address, on its IP). Zero: NetCheck learns nothing,
	// and the answer to the STUN request sent with each Hello (which is
	// only logged) is taken from any address the peer network offers.
	Addr netip.AddrPort
	// SendTo writes one datagram to another address of the rendezvous's
	// (its second STUN address, netcheck.go), like Send. nil: NetCheck
	// probes only the main address.
	SendTo func(b []byte, to netip.AddrPort)
	// ServerKey is the rendezvous's key, pinned or given by the user. Zero:
	// not known yet; the first CookieReply's key is tried and, once a
	// handshake with it completes, reported through ServerKeyLearned.
	ServerKey ctrl.PublicKey
	// UnreachableAfter is how long without an answer before Unreachable.
	// 0: 10 s.
	UnreachableAfter time.Duration
	// MaxNames bounds the key→name cache of peers outside our rooms.
	// 0: 4096.
	MaxNames int
	// Now is the clock. nil: time.Now.
	Now    func() time.Time
	Logger zerolog.Logger
}

// Registration states.
type regState int

const (
	stHello      regState = iota // asking for a cookie
	stRegister                   // cookie in hand, handshake sent
	stRegistered                 // registered; heartbeating
	stRefused                    // refused for good
	stLeft                       // left; sends nothing more
)

// suspectWait is how long an authenticated answer to a heartbeat may take
// after an unauthenticated "not registered" before the client believes it.
const suspectWait = 1500 * time.Millisecond

// ErrLookupTimeout means the rendezvous did not answer a lookup in time.
var ErrLookupTimeout = errors.New("rendezvous did not answer")

// Client is the node's rendezvous client. Create with New, then Run.
type Client struct {
	opts Options
	log  zerolog.Logger
	key  wire.Key
	now  func() time.Time
	wake chan struct{} // cap 1: wakes Run
	// session is the session while registered (nil otherwise), read
	// without the lock on every relayed packet.
	session atomic.Pointer[wire.SessionID]
	emitMu  sync.Mutex // serialises observer calls, in decision order
	fatal   chan error // cap 1

	mu sync.Mutex
	// Guarded by mu:
	state      regState
	sess       wire.SessionID
	keys       *ctrl.Keys // the session's, while registered
	serverKey  ctrl.PublicKey
	tofu       bool                    // serverKey came from a CookieReply: pin it once a handshake succeeds
	told       map[ctrl.PublicKey]bool // key mismatches reported
	ini        *ctrl.Initiator         // the handshake in flight
	hsMsg      []byte                  // its Handshake datagram, retransmitted as is
	suspect    time.Time               // an unauthenticated not_registered came: a heartbeat went to check
	badCookie  time.Time               // an unauthenticated bad_cookie came for this handshake: believed if no answer follows
	hold       time.Time               // registration refused for now (quota): no Hello before this
	deferred   bool                    // DeferObserver told
	observed   netip.AddrPort
	nonce      uint64
	cookie     wire.Cookie
	missed     int           // heartbeats without an ack
	lastSend   time.Time     // of the last Hello/Register/Heartbeat
	attempts   int           // Hello/Register attempts in this state
	regWait    chan struct{} // closed when registered; replaced on loss
	expiry     time.Duration // as told by the rendezvous
	started    time.Time
	everReg    bool
	unreachErr bool
	stunTx     [stun.TransactionIDSize]byte
	altSTUN    uint16                                      // the rendezvous's second STUN port, as its last HeartbeatAck announced (0: none)
	probes     map[[stun.TransactionIDSize]byte]*stunProbe // NetCheck's STUN requests in flight, by transaction ID
	checks     map[*netCheck]struct{}                      // NetChecks running

	online  map[wire.Key]string // who shares a room with us
	names   map[wire.Key]string // names of others we looked up (bounded)
	seq     uint32              // presence sequence applied
	roomSeq uint32              // the last RoomEvent's Seq (or a HeartbeatAck's RoomSeq) seen since registering
	snap    *snapshot           // snapshot being assembled
	synced  bool                // a complete snapshot since registering
	snapAsk time.Time
	snapTry int
	stale   map[wire.Key]time.Time // online peers a snapshot lacked: when to drop them
	grace   time.Time              // until when a peer missing from a snapshot may still be re-registering
	lookups map[uint32]chan *wire.LookupReply
	asks    map[uint32]askWait // requests of ask waiting for their answer, by TxID
	txid    uint32
	pending []func(Observer) // observer calls decided, not yet made

	mb       mailState              // the drain of our mailbox
	deposits map[uint32]depositWait // Deposits waiting for their reply, by TxID
}

type snapshot struct {
	seq   uint32
	parts map[uint16][]wire.Peer
	total uint16
}

// New returns a Client; it sends nothing before Run.
func New(o Options) (*Client, error) {
	if err := wire.ValidateName(o.Name); err != nil {
		return nil, fmt.Errorf("rvclient: name %q: %w", o.Name, err)
	}
	if len(o.Identity) != ed25519.PrivateKeySize || o.Send == nil || o.Observer == nil {
		return nil, errors.New("rvclient: Identity, Send and Observer are required")
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 25 * time.Second
	}
	if o.UnreachableAfter <= 0 {
		o.UnreachableAfter = 10 * time.Second
	}
	if o.MaxNames <= 0 {
		o.MaxNames = 4096
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Client{
		opts:      o,
		serverKey: o.ServerKey,
		told:      make(map[ctrl.PublicKey]bool),
		log:       o.Logger,
		key:       wire.Key(o.Identity.Public().(ed25519.PublicKey)),
		now:       o.Now,
		wake:      make(chan struct{}, 1),
		fatal:     make(chan error, 1),
		regWait:   make(chan struct{}),
		online:    make(map[wire.Key]string),
		names:     make(map[wire.Key]string),
		stale:     make(map[wire.Key]time.Time),
		lookups:   make(map[uint32]chan *wire.LookupReply),
		asks:      make(map[uint32]askWait),
		deposits:  make(map[uint32]depositWait),
		mb:        newMailState(0),
		probes:    make(map[[stun.TransactionIDSize]byte]*stunProbe),
		checks:    make(map[*netCheck]struct{}),
	}, nil
}

// Key returns our identity key.
func (c *Client) Key() wire.Key { return c.key }

func (c *Client) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// notifyLocked queues an observer call; flush makes it.
func (c *Client) notifyLocked(f func(Observer)) { c.pending = append(c.pending, f) }

// flush makes the queued observer calls, in the order they were decided.
func (c *Client) flush() {
	c.emitMu.Lock()
	defer c.emitMu.Unlock()
	for {
		c.mu.Lock()
		p := c.pending
		c.pending = nil
		c.mu.Unlock()
		if len(p) == 0 {
			return
		}
		for _, f := range p {
			f(c.opts.Observer)
		}
	}
}

// Run registers and keeps the registration alive until ctx is done or the
// rendezvous refuses us for good (then it returns that error).
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	c.started = c.now()
	c.sendHelloLocked(c.started)
	c.mu.Unlock()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-c.fatal:
			return err
		case <-t.C:
		case <-c.wake:
		}
		now := c.now()
		c.mu.Lock()
		next := min(c.tickLocked(now), c.mailTickLocked(now))
		c.expireStaleLocked(now)
		c.mu.Unlock()
		c.flush()
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(next)
	}
}

// Leave sends a notified leave (twice: a lost leave would read as a
// timeout) when registered, and stops answering as registered.
func (c *Client) Leave() {
	c.mu.Lock()
	if c.state == stRegistered {
		c.leaveLocked()
	}
	c.mu.Unlock()
	c.flush()
}

// leaveLocked sends a notified leave when registered, and stops: no
// registration until Register.
func (c *Client) leaveLocked() {
	if c.state == stRegistered {
		c.sendSealedLocked(&wire.Leave{})
		c.sendSealedLocked(&wire.Leave{}) // a second copy (its own counter): a lost leave reads as a timeout
		c.regWait = make(chan struct{})
	}
	c.resetMailLocked()
	c.session.Store(nil)
	c.keys, c.ini, c.hsMsg = nil, nil, nil
	c.state = stLeft
}

// Deregister takes the node offline without stopping the client: a
// notified leave when registered (a registration under way is dropped),
// and no registering until Register. Peers see us leave; presence is
// forgotten (Register brings a fresh snapshot). It reports false, doing
// nothing, when already deregistered or refused for good.
func (c *Client) Deregister() bool {
	c.mu.Lock()
	if c.state == stLeft || c.state == stRefused {
		c.mu.Unlock()
		return false
	}
	c.leaveLocked()
	clear(c.online)
	clear(c.names)
	clear(c.stale)
	c.snap, c.synced = nil, false
	c.mu.Unlock()
	c.flush()
	return true
}

// Register registers again after Deregister (or Leave). It reports false,
// doing nothing, unless deregistered.
func (c *Client) Register() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stLeft {
		return false
	}
	now := c.now()
	c.state, c.attempts = stHello, 0
	c.hold = time.Time{}
	c.sendHelloLocked(now)
	c.poke()
	return true
}

// RelaySession returns the session to put in relay headers, or nil when
// not registered. Lock-free: it is on the hot path of every relayed packet.
func (c *Client) RelaySession() *wire.SessionID { return c.session.Load() }

// IsRegistered reports whether we are registered now.
func (c *Client) IsRegistered() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == stRegistered
}

// Observed returns our public endpoint as the rendezvous last saw it.
func (c *Client) Observed() netip.AddrPort {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.observed
}

// Peer is one online peer.
type Peer struct {
	Key  wire.Key
	Name string
}

// Online returns the peers online in our rooms, by name.
func (c *Client) Online() []Peer {
	c.mu.Lock()
	out := make([]Peer, 0, len(c.online))
	for k, n := range c.online {
		out = append(out, Peer{Key: k, Name: n})
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// IsOnline reports whether k is online in our rooms.
func (c *Client) IsOnline(k wire.Key) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.online[k]
	return ok
}

// KnownName returns k's name if the client knows it without asking.
func (c *Client) KnownName(k wire.Key) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.online[k]; ok {
		return n, true
	}
	n, ok := c.names[k]
	return n, ok
}

// Forget drops what the client caches about k (a peer we stopped talking
// to). Presence is unaffected.
func (c *Client) Forget(k wire.Key) {
	c.mu.Lock()
	delete(c.names, k)
	c.mu.Unlock()
}

// learnLocked caches k's name, bounded by MaxNames.
func (c *Client) learnLocked(k wire.Key, name string) {
	if k.IsZero() || wire.ValidateName(name) != nil {
		return
	}
	if _, ok := c.names[k]; !ok && len(c.names) >= c.opts.MaxNames {
		for old := range c.names { // evict one at random
			delete(c.names, old)
			break
		}
	}
	c.names[k] = name
}

// --- registration ---

func (c *Client) sendHelloLocked(now time.Time) {
	var b [8]byte
	rand.Read(b[:])
	c.nonce = binary.BigEndian.Uint64(b[:])
	c.lastSend = now
	c.attempts++
	c.opts.Send(wire.Marshal(&wire.Hello{Nonce: c.nonce}))
	// Learn our public endpoint with a standard STUN Binding request too.
	if req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint); err == nil {
		c.stunTx = req.TransactionID
		c.opts.Send(req.Raw)
	}
}

// sendRegisterLocked sends the Handshake (the first one made for this
// cookie, or the same bytes again).
func (c *Client) sendRegisterLocked(now time.Time) {
	c.lastSend = now
	c.attempts++
	if c.hsMsg == nil {
		ini, err := ctrl.NewInitiator(c.opts.Identity, c.serverKey, c.cookie)
		if err != nil {
			c.log.Error().Err(err).Msg("handshake")
			return
		}
		first, err := ini.First(wire.AppendRegisterPayload(nil, &wire.RegisterPayload{Key: c.key, Name: c.opts.Name}))
		if err != nil {
			c.log.Error().Err(err).Msg("handshake")
			return
		}
		c.ini = ini
		c.hsMsg = wire.Marshal(&wire.Handshake{Cookie: c.cookie, Noise: first})
	}
	c.opts.Send(c.hsMsg)
}

// sendSealedLocked seals m with the session's keys, padding it so that the
// datagram is at least wire.SealedMinLen (a path challenge answering it is
// never larger), and sends it.
func (c *Client) sendSealedLocked(m wire.Message) {
	if c.keys == nil {
		return
	}
	pt := wire.AppendInner(make([]byte, 0, wire.SealedMinLen), m)
	for len(pt)+wire.SealedHeaderLen+ctrl.Overhead < wire.SealedMinLen {
		pt = append(pt, 0)
	}
	c.opts.Send(c.keys.Seal(nil, c.sess, pt))
}

// lostLocked drops back to the Hello state.
func (c *Client) lostLocked(now time.Time) {
	if c.state == stRegistered {
		c.regWait = make(chan struct{})
	}
	c.resetMailLocked()
	c.session.Store(nil)
	c.keys, c.ini, c.hsMsg = nil, nil, nil
	c.state, c.attempts = stHello, 0
	c.sendHelloLocked(now)
}

func (c *Client) retryLocked() time.Duration {
	return max(min(500*time.Millisecond<<min(max(c.attempts-1, 0), 3), 3*time.Second, c.heartbeatLocked()/2), 100*time.Millisecond)
}

// heartbeatLocked is the interval in force: the option, kept under 40% of
// the rendezvous's expiry so two may be lost without expiring.
func (c *Client) heartbeatLocked() time.Duration {
	h := c.opts.Heartbeat
	if c.expiry > 0 && h > c.expiry*2/5 {
		h = c.expiry * 2 / 5
	}
	return h
}

// tickLocked does what is due at now and returns how long to wait.
func (c *Client) tickLocked(now time.Time) time.Duration {
	switch c.state {
	case stRefused, stLeft:
		return time.Hour
	case stHello, stRegister:
		if now.Before(c.hold) {
			return c.hold.Sub(now)
		}
		if c.state == stRegister && !c.badCookie.IsZero() && now.Sub(c.badCookie) >= suspectWait {
			// The cookie was refused and no answer came since: believe it.
			c.state, c.attempts = stHello, 0
			c.ini, c.hsMsg = nil, nil
			c.lastSend = time.Time{} // a Hello now
		}
		// Retransmit with backoff: 0.5 s, 1 s, 2 s, then every 3 s (or
		// half a heartbeat, if shorter, so a rendezvous back from an
		// outage sees us again within one heartbeat interval).
		if due := c.lastSend.Add(c.retryLocked()); !now.Before(due) {
			if c.state == stRegister && c.attempts >= 4 {
				c.state, c.attempts = stHello, 0 // the cookie may have aged
				c.ini, c.hsMsg = nil, nil
			}
			if !c.everReg && !c.unreachErr && now.Sub(c.started) > c.opts.UnreachableAfter {
				c.unreachErr = true
				msg := fmt.Sprintf("no answer from rendezvous %s yet; still trying", c.opts.Rendezvous)
				c.notifyLocked(func(o Observer) { o.Unreachable(msg) })
			}
			if c.state == stHello {
				c.sendHelloLocked(now)
			} else {
				c.sendRegisterLocked(now)
			}
		}
		wait := c.lastSend.Add(c.retryLocked()).Sub(now)
		if c.state == stRegister && !c.badCookie.IsZero() {
			wait = min(wait, c.badCookie.Add(suspectWait).Sub(now))
		}
		return wait
	default:
		if !c.suspect.IsZero() {
			if now.Sub(c.suspect) >= suspectWait {
				// The rendezvous did not answer the check: it forgot us.
				c.log.Info().Msg("rendezvous forgot our session; registering again")
				c.suspect = time.Time{}
				c.lostLocked(now)
				return c.retryLocked()
			}
			return c.suspect.Add(suspectWait).Sub(now)
		}
		if !c.synced {
			// The snapshot (or an event) was lost: ask again.
			if due := c.snapshotDueLocked(); !now.Before(due) {
				c.askSnapshotLocked(now)
			}
		}
		h := c.heartbeatLocked()
		if due := c.lastSend.Add(h); now.Before(due) {
			wait := due.Sub(now)
			if !c.synced {
				wait = min(wait, c.snapshotDueLocked().Sub(now))
			}
			if len(c.stale) > 0 {
				wait = min(wait, time.Second)
			}
			return wait
		}
		if c.missed >= 3 {
			c.log.Warn().Msg("rendezvous silent for three heartbeats; registering again")
			msg := fmt.Sprintf("rendezvous %s silent for three heartbeats; registering again", c.opts.Rendezvous)
			c.notifyLocked(func(o Observer) { o.Unreachable(msg) })
			c.lostLocked(now)
			return 500 * time.Millisecond
		}
		c.missed++
		c.lastSend = now
		c.sendSealedLocked(&wire.Heartbeat{})
		return h
	}
}

// WaitRegistered blocks until we are registered or ctx is done.
func (c *Client) WaitRegistered(ctx context.Context) (wire.SessionID, error) {
	for {
		c.mu.Lock()
		if c.state == stRegistered {
			s := c.sess
			c.mu.Unlock()
			return s, nil
		}
		ch := c.regWait
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return wire.SessionID{}, ctx.Err()
		}
	}
}

// --- datagrams from the rendezvous ---

// Handle takes one rendezvous-protocol datagram from the rendezvous's
// address (the peer network has checked the source; Relayed datagrams go
// to the link, not here). It never blocks. Only the replies to the
// client's own requests in the clear (CookieReply, HandshakeReply, Error)
// and sealed datagrams that authenticate with the session's keys are
// acted on.
func (c *Client) Handle(b []byte) {
	now := c.now()
	msg, err := wire.Parse(b)
	if err != nil {
		c.onBadDatagram(msg, err)
		c.flush()
		return
	}
	c.mu.Lock()
	switch m := msg.(type) {
	case *wire.CookieReply:
		c.onCookieLocked(m, now)
	case *wire.HandshakeReply:
		c.onHandshakeReplyLocked(m, now)
	case *wire.Error:
		c.onClearErrorLocked(m, now)
	case *wire.Sealed:
		c.onSealedLocked(m, b, now)
	}
	c.mu.Unlock()
	c.flush()
}

// onSealedLocked opens a sealed datagram of our session and acts on it.
func (c *Client) onSealedLocked(m *wire.Sealed, b []byte, now time.Time) {
	if c.state != stRegistered || c.keys == nil || m.Session != c.sess {
		return
	}
	pt, err := c.keys.Open(nil, b)
	if err != nil {
		c.log.Debug().Err(err).Msg("sealed datagram refused")
		return
	}
	inner, err := wire.ParseInner(pt)
	if err != nil {
		c.log.Debug().Err(err).Msg("sealed datagram did not parse")
		return
	}
	c.suspect = time.Time{} // the rendezvous knows our session
	switch m := inner.(type) {
	case *wire.HeartbeatAck:
		c.onHeartbeatAckLocked(m, now)
	case *wire.Presence:
		c.onPresenceLocked(m, now)
	case *wire.Peers:
		c.onPeersLocked(m, now)
	case *wire.LookupReply:
		if ch := c.lookups[m.TxID]; ch != nil {
			delete(c.lookups, m.TxID)
			ch <- m // cap 1, one reply per txid
		}
	case *wire.WhoReply:
		c.answerLocked(m.TxID, m)
	case *wire.RoomReply:
		c.answerLocked(m.TxID, m)
	case *wire.RoomListReply:
		c.answerLocked(m.TxID, m)
	case *wire.RoomMembersReply:
		c.answerLocked(m.TxID, m)
	case *wire.RoomEvent:
		c.onRoomEventLocked(m)
	case *wire.Signaled:
		k, name, body := m.Src, m.Name, m.Body
		if wire.ValidateName(name) == nil {
			c.learnLocked(k, name)
		}
		c.notifyLocked(func(o Observer) { o.Signaled(k, name, body) })
	case *wire.PathChallenge:
		// Our address changed (NAT rebinding): prove we receive here.
		c.sendSealedLocked(&wire.PathResponse{Data: m.Data})
	case *wire.MailPutReply:
		c.onMailPutReplyLocked(m)
	case *wire.MailNotice:
		c.onMailNoticeLocked(m, now)
	case *wire.Mail:
		c.onMailLocked(m, now)
	case *wire.MailReceipt:
		c.onMailReceiptLocked(m, now)
	case *wire.Error:
		c.log.Debug().Stringer("code", m.Code).Str("msg", m.Message).Stringer("request", m.Request).Msg("rendezvous refused a request")
		switch m.Request {
		case wire.TypeLookup:
			if ch := c.lookups[m.TxID]; ch != nil {
				delete(c.lookups, m.TxID)
				close(ch) // the lookup fails now, and is retried
			}
		case wire.TypeMailPut:
			if w, ok := c.deposits[m.TxID]; ok {
				delete(c.deposits, m.TxID)
				select {
				case w.ch <- depositResult{err: m}:
				default:
				}
			}
		default:
			c.refusedLocked(m) // Who, rooms
		}
	}
}

func (c *Client) onBadDatagram(msg wire.Message, err error) {
	var verr *wire.VersionError
	c.mu.Lock()
	defer c.mu.Unlock()
	e, isErr := msg.(*wire.Error)
	if !errors.As(err, &verr) || !isErr || c.state != stHello || e.TxID != uint32(c.nonce) {
		// A datagram of another version is believed only as the answer to
		// our own Hello, echoing its nonce: anyone who can spoof the
		// rendezvous's address could send one at any time.
		c.log.Debug().Err(err).Msg("bad datagram from rendezvous")
		return
	}
	text := fmt.Sprintf("rendezvous speaks protocol v%d, this node speaks v%d: upgrade the older side", verr.Got, wire.Version)
	if e.Message != "" {
		text += " (" + e.Message + ")"
	}
	c.refuseLocked(wire.CodeVersion.String(), text)
}

// refuseLocked ends the registration for good, once.
func (c *Client) refuseLocked(code, text string) {
	if c.state == stRefused {
		return
	}
	c.resetMailLocked()
	c.state = stRefused
	c.session.Store(nil)
	c.notifyLocked(func(o Observer) { o.Refused(code, text) })
	select {
	case c.fatal <- fmt.Errorf("rendezvous refused registration: %s", text):
	default:
	}
}

func (c *Client) onCookieLocked(m *wire.CookieReply, now time.Time) {
	if c.state != stHello || m.Nonce != c.nonce {
		return
	}
	offered := ctrl.PublicKey(m.ServerKey)
	switch {
	case c.serverKey.IsZero():
		c.serverKey, c.tofu = offered, true // first contact: tried, pinned once a handshake with it succeeds
	case offered != c.serverKey:
		// Not the rendezvous we know (or a spoofed reply): do not talk to
		// it; keep asking.
		if !c.told[offered] {
			c.told[offered] = true
			pinned := c.serverKey
			c.log.Warn().Str("pinned", pinned.Fingerprint()).Str("offered", offered.Fingerprint()).Msg("rendezvous offers another key; not registering")
			c.notifyLocked(func(o Observer) { o.ServerKeyChanged(pinned, offered) })
		}
		return
	}
	c.cookie = m.Cookie
	c.ini, c.hsMsg = nil, nil
	c.state, c.attempts = stRegister, 0
	c.badCookie = time.Time{}
	c.sendRegisterLocked(now)
}

// onHandshakeReplyLocked completes the handshake: the answer authenticates
// with the rendezvous's key, so a refusal in it is believed.
func (c *Client) onHandshakeReplyLocked(m *wire.HandshakeReply, now time.Time) {
	if c.state != stRegister || c.ini == nil {
		return
	}
	payload, keys, err := c.ini.Finish(m.Noise)
	if err != nil {
		c.log.Debug().Err(err).Msg("handshake reply refused")
		return
	}
	c.ini, c.hsMsg = nil, nil // one answer per handshake
	res, err := wire.ParseHandshakeResult(payload)
	if err != nil {
		c.log.Warn().Err(err).Msg("rendezvous answered the handshake with garbage")
		c.state, c.attempts = stHello, 0
		return
	}
	if c.tofu {
		c.tofu = false
		k := c.serverKey
		c.notifyLocked(func(o Observer) { o.ServerKeyLearned(k) })
	}
	switch res.Code {
	case 0:
	case wire.CodeNameTaken, wire.CodeBadName, wire.CodeKeyInUse, wire.CodeBadSignature, wire.CodeMalformed:
		text := res.Message
		if text == "" {
			text = res.Code.String()
		}
		c.refuseLocked(res.Code.String(), text)
		return
	case wire.CodeQuota:
		// Not final, but not soon either: say so once, and ask again in
		// a minute.
		c.log.Warn().Stringer("code", res.Code).Str("msg", res.Message).Msg("rendezvous refused the registration for now; trying again in a minute")
		c.state, c.attempts = stHello, 0
		c.hold = now.Add(deferRetry)
		if !c.deferred {
			c.deferred = true
			code, text := res.Code.String(), res.Message
			c.notifyLocked(func(o Observer) {
				if d, ok := o.(DeferObserver); ok {
					d.Deferred(code, text)
				}
			})
		}
		return
	default:
		// replay, ...: not final; try again now.
		c.log.Warn().Stringer("code", res.Code).Str("msg", res.Message).Msg("rendezvous refused the registration; trying again")
		c.state, c.attempts = stHello, 0
		return
	}
	c.keys = keys
	c.state, c.sess, c.observed, c.missed, c.attempts = stRegistered, res.Session, res.Observed, 0, 0
	s := res.Session
	c.session.Store(&s)
	c.expiry = time.Duration(res.ExpiryMS) * time.Millisecond
	c.grace = now.Add(min(max(c.expiry, time.Second), time.Minute))
	c.seq, c.snap, c.roomSeq = 0, nil, 0
	// The rendezvous sends the snapshot right after the handshake; if it
	// is lost, Run asks again.
	c.synced, c.snapAsk, c.snapTry = false, now, 0
	c.everReg, c.unreachErr = true, false
	c.suspect = time.Time{}
	c.lastSend = now
	close(c.regWait)
	c.log.Info().Stringer("public", res.Observed).Msg("registered")
	public := res.Observed
	c.notifyLocked(func(o Observer) { o.Registered(public) })
	// Drain the mailbox: fetch at once (answered with the oldest waiting
	// messages, or with an empty notice), so the node knows soon whether
	// older messages come before any live one.
	c.resetMailLocked()
	c.startDrainLocked(now)
	c.poke()
}

// onClearErrorLocked takes an Error in the clear. Nothing in it is
// authenticated: final refusals come inside the handshake; these only
// tell the client to start over, and are believed as far as that goes.
func (c *Client) onClearErrorLocked(m *wire.Error, now time.Time) {
	c.log.Debug().Stringer("code", m.Code).Str("msg", m.Message).Stringer("request", m.Request).Msg("rendezvous refused (unauthenticated)")
	switch m.Code {
	case wire.CodeBadCookie, wire.CodeBadHandshake:
		// The cookie aged, or the rendezvous restarted; or a spoofer says
		// so while the real answer is on its way: start over only if that
		// answer does not come soon.
		if c.state == stRegister && m.Request == wire.TypeHandshake && c.badCookie.IsZero() {
			c.badCookie = now
			c.poke()
		}
	case wire.CodeNotRegistered:
		// The rendezvous restarted and forgot us, or a spoofer says so:
		// ask with an authenticated heartbeat; only silence is believed.
		if c.state == stRegistered && c.suspect.IsZero() {
			c.suspect = now
			c.sendSealedLocked(&wire.Heartbeat{})
			c.poke()
		}
	case wire.CodeRateLimited:
		c.log.Warn().Msg("rendezvous rate-limits us")
	}
}

// HandleSTUN takes a STUN message from src, an address on the rendezvous's
// IP, and reports whether it was the answer to one of the client's own
// requests (others are ICE's): a Binding success with the transaction ID
// of a request the client sent to src itself. It never blocks.
func (c *Client) HandleSTUN(b []byte, src netip.AddrPort) bool {
	// Cheap checks first: ICE's checks come this way too.
	if len(b) < stunHeaderLen || binary.BigEndian.Uint16(b) != stun.BindingSuccess.Value() {
		return false
	}
	tx := [stun.TransactionIDSize]byte(b[8:stunHeaderLen])
	c.mu.Lock()
	p := c.probes[tx]
	hello := tx == c.stunTx && (src == c.opts.Addr || !c.opts.Addr.IsValid())
	c.mu.Unlock()
	if (p == nil || p.to != src) && !hello {
		return false
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if m.Decode() != nil {
		return false
	}
	var mapped netip.AddrPort
	var xa stun.XORMappedAddress
	if xa.GetFrom(m) == nil {
		if ip, ok := netip.AddrFromSlice(xa.IP); ok {
			mapped = netip.AddrPortFrom(ip.Unmap(), uint16(xa.Port))
		}
	}
	if hello {
		if mapped.IsValid() {
			c.log.Info().Stringer("public", mapped).Msg("STUN mapped address")
		}
		return true
	}
	c.mu.Lock()
	if mapped.IsValid() && c.probes[tx] == p {
		p.mapped = mapped
		p.check.poke()
	}
	c.mu.Unlock()
	return true
}

// stunHeaderLen is the length of a STUN header: type, length, magic
// cookie, transaction ID.
const stunHeaderLen = 20

func (c *Client) onHeartbeatAckLocked(m *wire.HeartbeatAck, now time.Time) {
	if c.state != stRegistered {
		return
	}
	c.missed = 0
	c.altSTUN = m.AltSTUN
	for nc := range c.checks {
		nc.acked = true
		nc.poke()
	}
	if m.Observed != c.observed {
		c.log.Info().Stringer("from", c.observed).Stringer("to", m.Observed).Msg("public endpoint changed")
		c.observed = m.Observed
	}
	if m.PresenceSeq > c.seq {
		c.synced = false // an event was lost
	}
	if m.RoomSeq > c.roomSeq {
		c.roomSeq = m.RoomSeq
		c.roomsBehindLocked() // a room event was lost
	}
	if !c.synced {
		c.askSnapshotLocked(now)
	}
}

// askSnapshotLocked asks for the presence snapshot, assembling it afresh.
func (c *Client) askSnapshotLocked(now time.Time) {
	c.snap = nil
	c.snapAsk = now
	c.snapTry++
	c.sendSealedLocked(&wire.PeersRequest{})
}

// snapshotDueLocked is when to ask again while unsynced: 1 s after the
// last ask, doubling to 8 s.
func (c *Client) snapshotDueLocked() time.Time {
	return c.snapAsk.Add(min(time.Second<<min(c.snapTry, 3), 8*time.Second))
}

// --- presence ---

func (c *Client) onPresenceLocked(m *wire.Presence, now time.Time) {
	if c.state != stRegistered || m.Seq <= c.seq {
		return
	}
	if m.Seq != c.seq+1 && c.synced {
		// We missed an update: resync from a snapshot, but apply this one.
		c.synced = false
		c.askSnapshotLocked(now)
	}
	c.seq = m.Seq
	for _, ch := range m.Changes {
		k, name := ch.Key, ch.Name
		if wire.ValidateName(name) != nil || k == c.key {
			continue
		}
		delete(c.stale, k)
		switch ch.Kind {
		case wire.PresenceJoin:
			if _, ok := c.online[k]; !ok {
				c.online[k] = name
				delete(c.names, k)
				c.notifyLocked(func(o Observer) { o.Joined(k, name) })
			}
		case wire.PresenceLeft:
			delete(c.names, k) // looked up again if it comes back
			if _, ok := c.online[k]; ok {
				delete(c.online, k)
				reason := ch.Reason.String()
				if ch.Reason == wire.ReasonNone {
					// Online still, but no longer in a room we share
					// (one of us parted) nor one we talk with.
					reason = "part"
				}
				c.notifyLocked(func(o Observer) { o.Left(k, name, reason) })
			}
		}
	}
}

func (c *Client) onPeersLocked(m *wire.Peers, now time.Time) {
	if c.state != stRegistered || m.Seq < c.seq {
		return
	}
	if c.snap == nil || c.snap.seq != m.Seq {
		c.snap = &snapshot{seq: m.Seq, parts: make(map[uint16][]wire.Peer), total: m.Parts}
	}
	c.snap.parts[m.Part] = m.Peers
	if len(c.snap.parts) < int(c.snap.total) {
		return
	}
	in := make(map[wire.Key]string)
	for _, p := range c.snap.parts {
		for _, e := range p {
			if wire.ValidateName(e.Name) == nil && e.Key != c.key {
				in[e.Key] = e.Name
			}
		}
	}
	c.seq, c.snap = m.Seq, nil
	c.synced, c.snapTry = true, 0
	var joined []Peer
	for k, name := range in {
		delete(c.stale, k)
		if _, ok := c.online[k]; !ok {
			c.online[k] = name
			delete(c.names, k)
			joined = append(joined, Peer{Key: k, Name: name})
		}
	}
	sort.Slice(joined, func(i, j int) bool { return joined[i].Name < joined[j].Name })
	for _, p := range joined {
		c.notifyLocked(func(o Observer) { o.Joined(p.Key, p.Name) })
	}
	// Peers we thought online but the snapshot lacks are gone, unless we
	// registered again lately (the rendezvous may have restarted, and they
	// may be registering again too): then they get until one expiry after
	// our registration.
	for k, name := range c.online {
		if _, ok := in[k]; ok {
			continue
		}
		if now.Before(c.grace) {
			if _, ok := c.stale[k]; !ok {
				c.stale[k] = c.grace
			}
			continue
		}
		delete(c.online, k)
		delete(c.stale, k)
		c.notifyLocked(func(o Observer) { o.Left(k, name, wire.ReasonTimeout.String()) })
	}
	c.poke()
}

func (c *Client) expireStaleLocked(now time.Time) {
	for k, at := range c.stale {
		if now.Before(at) {
			continue
		}
		delete(c.stale, k)
		if name, ok := c.online[k]; ok {
			delete(c.online, k)
			c.notifyLocked(func(o Observer) { o.Left(k, name, wire.ReasonTimeout.String()) })
		}
	}
}

// --- lookups and signals ---

// Lookup asks the rendezvous for a name (or, with name empty, a key),
// waiting until registered and retransmitting, for at most 10 s or until
// ctx is done. It fails with ErrLookupTimeout. The name of a peer found
// online is cached.
func (c *Client) Lookup(ctx context.Context, name string, key wire.Key) (*wire.LookupReply, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for attempt := 0; ; attempt++ {
		if _, err := c.WaitRegistered(ctx); err != nil {
			return nil, ErrLookupTimeout
		}
		ch := make(chan *wire.LookupReply, 1)
		c.mu.Lock()
		c.txid++
		tx := c.txid
		c.lookups[tx] = ch
		c.sendSealedLocked(&wire.Lookup{TxID: tx, Key: key, Name: name})
		c.mu.Unlock()
		t := time.NewTimer(min(500*time.Millisecond<<attempt, 2*time.Second))
		select {
		case r, ok := <-ch:
			t.Stop()
			if !ok {
				// Refused (rate limited): wait, then again.
				if !sleepCtx(ctx, min(250*time.Millisecond<<attempt, 2*time.Second)) {
					return nil, ErrLookupTimeout
				}
				continue
			}
			if r.Status != wire.LookupUnknown {
				if wire.ValidateName(r.Name) != nil || r.Key.IsZero() ||
					(name != "" && wire.NameKey(r.Name) != wire.NameKey(name)) || (name == "" && r.Key != key) {
					c.log.Warn().Str("asked", name).Msg("rendezvous answered a lookup with another binding; ignored")
					continue
				}
				// Only the names of peers online are kept: those of peers
				// gone would pile up.
				if r.Status == wire.LookupOnline {
					c.mu.Lock()
					if _, ok := c.online[r.Key]; !ok {
						c.learnLocked(r.Key, r.Name)
					}
					c.mu.Unlock()
				}
			}
			return r, nil
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		c.mu.Lock()
		delete(c.lookups, tx)
		c.mu.Unlock()
		if ctx.Err() != nil {
			return nil, ErrLookupTimeout
		}
	}
}

// ErrNotMember means the rendezvous refused a request about a room (Who,
// RoomMembers): we are not in that room.
var ErrNotMember = errors.New("not in that room")

// Who asks the rendezvous for one page of room's members: those whose
// names sort after after ("" for the first page). Members with names that
// break the naming rules are left out. It fails with ErrNotMember, or
// ErrLookupTimeout when no answer comes within 10 s (a rate-limited
// request is retried within that time).
func (c *Client) Who(ctx context.Context, room, after string) (*wire.WhoReply, error) {
	r, err := ask(ctx, c, func(tx uint32) wire.Message { return &wire.Who{TxID: tx, Room: room, After: after} },
		func(r *wire.WhoReply) bool { return wire.NameKey(r.Room) == wire.NameKey(room) })
	if err != nil {
		return nil, err
	}
	r.Members = slices.DeleteFunc(r.Members, func(p wire.Peer) bool {
		return wire.ValidateName(p.Name) != nil || p.Key.IsZero()
	})
	return r, nil
}

// askTimeout bounds one request of ask (one page, of a paged answer).
const askTimeout = 10 * time.Second

// askWait is a request of ask waiting for its answer.
type askWait struct {
	req wire.Type // the request's type: an Error refuses it when it names this type
	// answers reports whether a reply with the request's TxID answers
	// the question (its type, and what it is about). Called under mu.
	answers func(wire.Message) bool
	ch      chan askResult // cap 1; one answer per TxID
}

// askResult is the answer to a request of ask: a reply or a refusal.
type askResult struct {
	reply wire.Message
	err   *wire.Error
}

// ask sends the request that build makes for a fresh TxID, sealed, and
// waits for its answer: a reply of type R with that TxID that accept
// takes as the answer to the question (build and accept run under the
// client's lock: they must only make the request, look at the reply), or
// an Error refusing that
// request. It waits until registered; it asks again, with a fresh TxID,
// after 0.5 s, 1 s, then every 2 s without an answer, and after a pause
// (0.25 s, doubling to 2 s) when the rendezvous rate-limits it. It fails
// with ErrLookupTimeout after askTimeout or when ctx ends, with
// ErrNotMember when refused so, and with the refusal (a *wire.Error) for
// any other code. What waits is one entry per call in flight: a reply
// that no call waits for, or that does not answer its question, is
// dropped.
func ask[R wire.Message](ctx context.Context, c *Client, build func(tx uint32) wire.Message, accept func(R) bool) (R, error) {
	var zero R
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	answers := func(m wire.Message) bool {
		r, ok := m.(R)
		return ok && accept(r)
	}
	for attempt := 0; ; attempt++ {
		if _, err := c.WaitRegistered(ctx); err != nil {
			return zero, ErrLookupTimeout
		}
		ch := make(chan askResult, 1)
		c.mu.Lock()
		c.txid++
		tx := c.txid
		req := build(tx)
		c.asks[tx] = askWait{req: req.Type(), answers: answers, ch: ch}
		c.sendSealedLocked(req)
		c.mu.Unlock()
		var res askResult
		answered := false
		t := time.NewTimer(backoff(500*time.Millisecond, attempt))
		select {
		case res = <-ch:
			answered = true
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		c.mu.Lock()
		delete(c.asks, tx)
		c.mu.Unlock()
		switch {
		case !answered:
			if ctx.Err() != nil {
				return zero, ErrLookupTimeout
			}
			continue // no answer yet: ask again
		case res.err == nil:
			return res.reply.(R), nil
		case res.err.Code == wire.CodeNotMember:
			return zero, ErrNotMember
		case res.err.Code != wire.CodeRateLimited:
			return zero, fmt.Errorf("rendezvous refused the %s: %w", req.Type(), res.err)
		}
		if !sleepCtx(ctx, backoff(250*time.Millisecond, attempt)) {
			return zero, ErrLookupTimeout
		}
	}
}

// backoff is base doubled attempt times, at most 2 s.
func backoff(base time.Duration, attempt int) time.Duration {
	return min(base<<min(attempt, 4), 2*time.Second)
}

// answerLocked hands reply m, with TxID tx, to the request of ask waiting
// for it, if one does and m answers its question; else m is dropped.
func (c *Client) answerLocked(tx uint32, m wire.Message) {
	w, ok := c.asks[tx]
	if !ok || !w.answers(m) {
		c.log.Debug().Stringer("type", m.Type()).Uint32("tx", tx).Msg("rendezvous reply answers no request of ours; dropped")
		return
	}
	delete(c.asks, tx)
	w.ch <- askResult{reply: m} // cap 1, and the entry is gone: one send per channel
}

// refusedLocked hands a sealed Error to the request of ask it refuses
// (same TxID and request type), if one waits.
func (c *Client) refusedLocked(m *wire.Error) {
	w, ok := c.asks[m.TxID]
	if !ok || w.req != m.Request {
		return
	}
	delete(c.asks, m.TxID)
	w.ch <- askResult{err: m}
}

// NameOf returns the name of key k, asking the rendezvous if need be.
func (c *Client) NameOf(ctx context.Context, k wire.Key) (string, error) {
	if n, ok := c.KnownName(k); ok {
		return n, nil
	}
	r, err := c.Lookup(ctx, "", k)
	if err != nil {
		return "", err
	}
	if r.Status == wire.LookupUnknown {
		return "", fmt.Errorf("no name is registered for key %s", k.Short())
	}
	return r.Name, nil
}

// Signal sends a PeerSignal body to peer dst through the rendezvous; it
// reports false (sending nothing) when not registered.
func (c *Client) Signal(dst wire.Key, body []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stRegistered {
		return false
	}
	c.sendSealedLocked(&wire.Signal{Dst: dst, Body: body})
	return true
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
