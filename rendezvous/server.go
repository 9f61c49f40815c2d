// Package rendezvous is natchat's meeting point: one UDP port that answers
// STUN Binding requests, registers nodes (name, Ed25519 key, public
// endpoint), keeps presence, forwards signaling between nodes, relays
// their packets when no direct path exists, and keeps sealed messages for
// offline nodes in their mailboxes until they take them, and keeps who is
// in which chat room. It shares only wire and ctrl (the authenticated
// control channel) with the node.
//
// A node registers with a Noise handshake (package ctrl) after proving its
// address with a stateless cookie; every control message after that, both
// ways, is sealed with the session's keys. A Server reads each of its
// sockets (one, or several on one port: Options.MoreConns) on one
// goroutine and handles every datagram there, under one mutex that
// also guards the expiry sweep and presence; the costly work of a
// registration (the handshake's Diffie-Hellman and the durable name
// binding) runs on registration workers, off the packet path, and the
// mailbox's and the rooms' writes run on the store's committer, which
// answers them when they are durable (mailbox.go, rooms.go). Replies to a
// source that has not yet proved it can receive at its address are never
// larger than the datagram that caused them (see docs/PROTOCOL.md).
package rendezvous

import (
	"context"
	"crypto/rand"
	"encoding/binary"
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

	"natchat/ctrl"
	"natchat/relay"
	"natchat/wire"
)

// Options configure a Server. Conn and Store are required; every other
// field has a documented zero value.
type Options struct {
	// Conn is the server's UDP socket. The Server owns it from Run on
	// and closes it when Run returns.
	Conn net.PacketConn
	// MoreConns are more sockets on Conn's address (SO_REUSEPORT:
	// ListenUDP), each read by a loop of its own, so that more than one
	// core reads and answers. The kernel spreads sources over the
	// sockets by address, so that one source stays on one. They all
	// have Conn's address, so any may send: a datagram's replies go out
	// of the socket it came in by when they are batched (serve),
	// everything else out of Conn. The state the loops share is under mu
	// as before, and per-source limits stay per source. nil: Conn alone.
	// The Server owns them from Run on and closes them when Run returns.
	MoreConns []net.PacketConn
	// AltSTUN is a second UDP socket, on the same IP address as Conn and
	// another port, that answers STUN Binding requests only, exactly as
	// Conn does and under the same per-source budget; everything else
	// arriving there is dropped (reason alt_other). Nodes learn its port
	// from their HeartbeatAcks and compare their public endpoint toward
	// both ports to tell whether their NAT's mapping depends on the
	// destination (stunalt.go). nil: none (HeartbeatAcks announce port 0).
	// The Server owns it from Run on and closes it when Run returns.
	AltSTUN net.PacketConn
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
	// DefaultRoom is the room every key is put in when it first
	// registers, such as "#lobby" (once: a node that parts it stays out).
	// It holds everyone, so the members-per-room limit does not apply to
	// it, and it does not count toward a node's rooms. Empty: no default
	// room; nodes then see only the members of rooms they join and the
	// peers they talk with. New fails if it is not a valid room name
	// (wire.ValidateRoom).
	DefaultRoom string
	// Relay bounds each node's relayed traffic. Zero value: relay defaults.
	Relay relay.Limits
	// SourceRate bounds unauthenticated replies (STUN, cookies, errors) per
	// source network (/24 or /56) per second. 0: 50, with a burst of 100. Negative: unlimited.
	SourceRate int
	// Software is the STUN SOFTWARE attribute. Empty: "natchat-rendezvous".
	Software string
	// SocketBuffer is the receive and send buffer Run asks for on Conn,
	// in bytes, so that bursts (heartbeats after a network blip, relayed
	// file transfers) wait in the kernel instead of being dropped while
	// the read loop is busy. 0: DefaultSocketBuffer. Negative: leave the
	// system's default (208 KiB on Linux). The kernel caps it at
	// net.core.rmem_max and wmem_max; Run logs what it got.
	SocketBuffer int
	// Key is the rendezvous's long-term key: nodes pin its public half.
	// Required (LoadOrCreateKey keeps one in the data directory).
	Key ctrl.ServerKey
	// RegisterWorkers run registrations off the packet path. 0: 16. A
	// worker spends most of a new name's registration waiting for its
	// binding to be durable; the store commits the bindings of every
	// waiting worker with one fsync, so workers beyond the cores buy
	// throughput, not CPU.
	RegisterWorkers int
	// NewNames bounds the new names registered from one network (/24 for
	// IPv4, /56 for IPv6) per hour. 0: 30. Negative: unlimited.
	NewNames int
	// LookupRate bounds each node's lookups per second (burst: twice
	// that). 0: 20. Negative: unlimited.
	LookupRate int
	// IntroRate bounds each node's introductions (signalling to a peer it
	// has not signalled before) per second (burst: twice that). 0: 10.
	// Negative: unlimited.
	IntroRate int
	// BindingTTL releases a name binding not used (registered) for this
	// long, and takes its key out of its rooms. 0: 180 days. Negative:
	// never.
	BindingTTL time.Duration
	// BigRoom is the room size above which joins and leaves are no longer
	// broadcast to every member: members of a bigger room see only the
	// presence of peers they talk with (looked up or signalled), which
	// keeps a join's cost bounded by BigRoom, not by the room. 0: 200.
	BigRoom int
	// PresenceDelay gathers presence changes for a member before sending
	// them in one datagram. 0: 50 ms.
	PresenceDelay time.Duration
	// Mail keeps the offline mailbox. nil: Store, which must then
	// implement Mailboxes (the bbolt Store does). The caller closes it
	// after Run returns.
	Mail Mailboxes
	// MailboxCount bounds the messages waiting in one node's mailbox.
	// 0: 10,000. Negative: unlimited.
	MailboxCount int
	// MailboxBytes bounds the bytes (sealed blobs) waiting in one node's
	// mailbox. 0: 64 MiB. Negative: unlimited.
	MailboxBytes int64
	// MailboxShare is the part of a mailbox's count and bytes, in percent,
	// that one sender may fill, so that one sender cannot fill it alone.
	// 0: 25. Negative or 100: no share limit. Over 100: New fails.
	MailboxShare int
	// MailboxSenderCount and MailboxSenderBytes bound what one sender has
	// waiting in all mailboxes together, so that one registered node
	// cannot fill every offline node's share. 0: 10,000 messages and
	// 64 MiB. Negative: unlimited.
	MailboxSenderCount int
	MailboxSenderBytes int64
	// MailboxAge is how long a message waits for its recipient: older
	// ones are deleted unread and their senders get an expired receipt.
	// It also bounds how long a room keeps a member that is away: one not
	// online whose name binding was last used longer ago (or is no longer
	// bound) is taken out of its rooms. 0: 30 days. Negative: messages
	// never expire, and room members are not taken out for being away
	// (only when their binding is released: BindingTTL).
	MailboxAge time.Duration
	// Rooms keeps the rooms' members. nil: Store, which must then
	// implement Rooms (the bbolt Store does). The caller closes it after
	// Run returns.
	Rooms Rooms
	// RoomMembers bounds the members of one room (the default room
	// excepted). 0: 256. Negative: unlimited.
	RoomMembers int
	// RoomsPerNode bounds the rooms one node is in (the default room not
	// counted). 0: 32. Negative: unlimited.
	RoomsPerNode int
}

// DefaultRoom is the room the command-line rendezvous puts every node in.
const DefaultRoom = "#lobby"

// client is one registered node: what every node online needs. What
// only some need (those that relay, look peers up, follow or are told of
// presence, deposit or acknowledge mail) is in x, made on first use: a
// node that only heartbeats, as most of a large fleet does at any time,
// costs 256 bytes here, its record in the rooms' copy and its session
// keys included (TestClientRecordSize), rather than 384, a member record
// of 96 and two AEAD objects of 32 each. What only a recent registration
// needs (reg) is behind a pointer, nil for most nodes.
type client struct {
	// member is its key, canonical name and rooms: its record in the
	// rooms' durable copy (rooms.go) while it is online.
	member
	addr    netip.AddrPort // validated: the address replies go to
	session wire.SessionID
	seq     uint32 // last presence sequence number sent to this node
	roomSeq uint32 // last RoomEvent sequence number sent to this node
	roomOps uint8  // its room writes queued and not answered yet (≤ maxRoomOps)
	// inDefault: it is in the default room's online view, which keeps
	// no list of its own while it is big (online.go).
	inDefault bool
	wIn       uint32 // the list of Server.expiry it is in (expiry.go)
	// reg is its registration's cookie and reply while the cookie can
	// still be valid; nil after (Sweep drops it).
	reg      *registration
	keys     ctrl.Keys    // the session's: this copy alone is used
	lastSeen int64        // when it was last heard from (Server.mono)
	x        *clientExtra // nil until first used: use extra

	// Its neighbours in its list of Server.expiry (expiry.go); which list
	// is wIn.
	wPrev, wNext *client
}

// registration is what a client keeps of its registration only while
// the registration's cookie can still be valid (CookieLifetime and a
// margin: Sweep drops it with the cookie's byCookie entry): the cookie,
// which a retransmitted or replayed Handshake carries and which its
// session's end spends, and the HandshakeReply.
type registration struct {
	cookie wire.Cookie
	// reply is the HandshakeReply datagram, resent to a retransmitted
	// Handshake until the node is heard from on its session (it has it
	// then): nil after.
	reply []byte
}

// clientExtra holds the parts of a client that a node needs only once it
// does more than heartbeat. Reads go through nil-safe accessors (watched,
// or a check of client.x), writes through client.extra.
type clientExtra struct {
	limiter  *relay.Limiter       // nil until it first relays: use relayLimiter
	lookups  *rate.Limiter        // nil until it first looks up: use lookupLimiter
	intros   *rate.Limiter        // nil until it first introduces itself: use introLimiter
	udp      *net.UDPAddr         // addr as a *net.UDPAddr, for a Conn without WriteToUDPAddrPort: use udpAddr
	udpFor   netip.AddrPort       // the addr udp was made for
	pending  []wire.Change        // presence changes not sent yet
	watching map[wire.Key]*client // peers it talks with (bounded by maxWatch)
	mail     clientMail           // its deposits in progress and mailbox writes
	// challenge is the path challenge sent to an address the node spoke
	// from that is not addr (NAT rebinding): the session moves there once
	// the node echoes it from there. nil until the first (most nodes
	// never roam): use client.challenge to read it.
	challenge *pathChallenge
	// rooms are the rooms (wire.NameKey) it is in in the online view, the
	// default room excepted (inDefault); nil for none, as for most nodes.
	// Read with viewRooms.
	rooms []string
}

// extra returns c's clientExtra, made on first use.
func (c *client) extra() *clientExtra {
	if c.x == nil {
		c.x = new(clientExtra)
	}
	return c.x
}

// challenge returns c's last path challenge, nil if it has had none.
func (c *client) challenge() *pathChallenge {
	if c.x == nil {
		return nil
	}
	return c.x.challenge
}

// watched returns the peers c talks with (nil for none): read only.
func (c *client) watched() map[wire.Key]*client {
	if c.x == nil {
		return nil
	}
	return c.x.watching
}

// pathChallenge is a client's last path challenge.
type pathChallenge struct {
	addr netip.AddrPort
	data [8]byte
	at   time.Time
	// authed: sent for a datagram sealed by the session itself, not
	// for a Relay (whose session ID anyone on the path has seen).
	authed bool
}

// maxWatch bounds the peers whose presence one node follows outside its
// small rooms.
const maxWatch = 256

// udpAddr returns c.addr as a *net.UDPAddr, made once per address.
func (c *client) udpAddr() *net.UDPAddr {
	x := c.extra()
	if x.udp == nil || x.udpFor != c.addr {
		x.udp, x.udpFor = net.UDPAddrFromAddrPort(c.addr), c.addr
	}
	return x.udp
}

// Server is a running rendezvous. Create with New, then Run.
type Server struct {
	opts    Options
	log     zerolog.Logger
	now     func() time.Time
	cookies *cookieJar
	m       *metrics
	sources *sourceLimiter // nil: unlimited
	hot     hotPath        // the allocation-free packet path (hotpath.go)

	mu sync.Mutex
	// altPort is AltSTUN's port, announced in HeartbeatAcks: 0 when there
	// is none or its socket failed.
	altPort uint16
	// The fields below are guarded by mu.
	byKey     *clientTable[wire.Key]          // the clients online (table.go)
	bySession *clientTable[wire.SessionID]    // the same, by session
	rooms     map[string]map[*client]struct{} // each room's members online, by wire.NameKey, the default room excepted (online.go)
	defOnline int                             // the default room's members online (online.go)
	defIndex  map[*client]struct{}            // the default room's members online, while it has at most defIndexMaxLocked (online.go)
	// spent holds, per key, the cookies of its registrations that ended or
	// were replaced, kept for the cookie lifetime so a replayed
	// registration cannot come back (after leave) or reset a newer session.
	spent    map[wire.Key][]spentCookie
	scratch  []byte                            // relayed datagrams are built here
	plain    []byte                            // sealed plaintexts are built here
	opened   []byte                            // sealed datagrams are opened here
	byCookie map[wire.Cookie]*client           // by the cookie of the registration, while it can be valid
	watchers map[wire.Key]map[*client]struct{} // who follows whose presence
	dirty    map[*client]struct{}              // clients with presence changes to send
	newNames map[netip.Prefix]*nameQuota
	epoch    time.Time               // opts.Now() at New: the origin of client.lastSeen (expiry.go)
	expiry   *wheel                  // registered clients by due second (expiry.go)
	spentQ   agedQueue[wire.Key]     // the keys of spent, in the order their cookies were spent
	nameQ    agedQueue[netip.Prefix] // the prefixes of newNames, in the order their quotas began
	cookieQ  agedQueue[wire.Cookie]  // the cookies of byCookie, in the order they registered

	mailHeld    int                  // bytes reserved by deposits in progress, every session's
	mailHeldMax int                  // the most mailHeld may reach: maxMailHeld (tests lower it)
	mailPutters map[*client]struct{} // clients with deposits in progress
	mailWrites  int                  // mailbox writes queued and not answered yet
	mailIdle    *sync.Cond           // signalled (with mu) when mailWrites falls to 0

	// The durable rooms, as committed (rooms.go).
	byRoom      map[string]*room     // rooms with members, by wire.NameKey
	members     map[wire.Key]*member // keys offline in one room or more (an online node's record is its client's)
	membersGone int                  // entries deleted from members since it was last compacted
	roomSkel    map[string]skelOwner // confusable skeletons of the rooms, and of rooms being created
	memberships int                  // members of all rooms together
	roomWrites  int                  // room writes queued by requests and not answered yet
	roomIdle    *sync.Cond           // signalled (with mu) when roomWrites falls to 0
	defaultRK   string               // wire.NameKey(DefaultRoom); set by New

	regQ     chan regJob          // registrations for the workers, from networks that registered little of late
	regSlowQ chan regJob          // registrations from networks that registered more: served when regQ is empty
	regFresh *sourceLimiter       // which queue: registrations per network (/24, /56), in fixed memory
	inflight map[wire.Cookie]bool // cookies of the handshakes queued or being run
}

// nameQuota counts the new names one network registered this hour.
type nameQuota struct {
	count int
	since time.Time
}

// maxSpent bounds the spent cookies remembered per key.
const maxSpent = 32

type spentCookie struct {
	cookie wire.Cookie
	at     time.Time
}

// New validates opts and returns a Server.
func New(opts Options) (*Server, error) {
	if opts.Conn == nil || slices.Contains(opts.MoreConns, nil) {
		return nil, errors.New("rendezvous: Options.Conn or one of Options.MoreConns is nil")
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
	if opts.Key.Public.IsZero() {
		return nil, errors.New("rendezvous: Options.Key is not set")
	}
	if opts.RegisterWorkers <= 0 {
		opts.RegisterWorkers = 16
	}
	if opts.NewNames == 0 {
		opts.NewNames = 30
	}
	if opts.LookupRate == 0 {
		opts.LookupRate = 20
	}
	if opts.IntroRate == 0 {
		opts.IntroRate = 10
	}
	if opts.BindingTTL == 0 {
		opts.BindingTTL = 180 * 24 * time.Hour
	}
	if opts.BigRoom <= 0 {
		opts.BigRoom = 200
	}
	if opts.PresenceDelay <= 0 {
		opts.PresenceDelay = 50 * time.Millisecond
	}
	if opts.Mail == nil {
		mb, ok := opts.Store.(Mailboxes)
		if !ok {
			return nil, errors.New("rendezvous: Options.Mail is nil and Options.Store does not implement Mailboxes")
		}
		opts.Mail = mb
	}
	if opts.MailboxCount == 0 {
		opts.MailboxCount = DefaultMailboxCount
	}
	if opts.MailboxBytes == 0 {
		opts.MailboxBytes = DefaultMailboxBytes
	}
	if opts.MailboxShare == 0 {
		opts.MailboxShare = DefaultMailboxShare
	}
	if opts.MailboxShare > 100 {
		return nil, fmt.Errorf("rendezvous: Options.MailboxShare %d%% is over 100%%", opts.MailboxShare)
	}
	if opts.MailboxAge == 0 {
		opts.MailboxAge = DefaultMailboxAge
	}
	if opts.MailboxSenderCount == 0 {
		opts.MailboxSenderCount = DefaultMailboxSenderCount
	}
	if opts.MailboxSenderBytes == 0 {
		opts.MailboxSenderBytes = DefaultMailboxSenderBytes
	}
	if opts.Rooms == nil {
		rs, ok := opts.Store.(Rooms)
		if !ok {
			return nil, errors.New("rendezvous: Options.Rooms is nil and Options.Store does not implement Rooms")
		}
		opts.Rooms = rs
	}
	if opts.RoomMembers == 0 {
		opts.RoomMembers = DefaultRoomMembers
	}
	if opts.RoomsPerNode == 0 {
		opts.RoomsPerNode = DefaultRoomsPerNode
	}
	if opts.DefaultRoom != "" {
		if err := wire.ValidateRoom(opts.DefaultRoom); err != nil {
			return nil, fmt.Errorf("rendezvous: Options.DefaultRoom %q: %w", opts.DefaultRoom, err)
		}
	}
	var sources *sourceLimiter
	if opts.SourceRate > 0 {
		sources = newSourceLimiter(opts.SourceRate, 2*opts.SourceRate, 0)
	}
	s := &Server{
		sources:   sources,
		opts:      opts,
		log:       opts.Logger,
		now:       opts.Now,
		cookies:   newCookieJar(),
		m:         newMetrics(opts.Store, opts.Mail),
		byKey:     newKeyTable(),
		bySession: newSessionTable(),
		rooms:     make(map[string]map[*client]struct{}),
		spent:     make(map[wire.Key][]spentCookie),
		byCookie:  make(map[wire.Cookie]*client),
		watchers:  make(map[wire.Key]map[*client]struct{}),
		dirty:     make(map[*client]struct{}),
		newNames:  make(map[netip.Prefix]*nameQuota),
		epoch:     opts.Now(),
		expiry:    newWheel(opts.Expiry, 0),
		regQ:      make(chan regJob, 256),
		regSlowQ:  make(chan regJob, 1024),
		regFresh:  newPrefixMeter(freshEvery, freshBurst, 0),
		inflight:  make(map[wire.Cookie]bool),

		mailHeldMax: maxMailHeld,
		mailPutters: make(map[*client]struct{}),

		byRoom:    make(map[string]*room),
		members:   make(map[wire.Key]*member),
		roomSkel:  make(map[string]skelOwner),
		defaultRK: wire.NameKey(opts.DefaultRoom),
		defIndex:  make(map[*client]struct{}),
	}
	s.initHotPath()
	s.mailIdle = sync.NewCond(&s.mu)
	s.roomIdle = sync.NewCond(&s.mu)
	if err := s.initAltSTUN(); err != nil {
		return nil, err
	}
	if err := s.loadRooms(); err != nil {
		return nil, err
	}
	return s, nil
}

// MetricsHandler serves the Prometheus text format.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{})
}

// Run serves until ctx is done or a socket fails, then closes the sockets
// and returns. It returns nil after ctx is done.
func (s *Server) Run(ctx context.Context) error {
	s.sizeBuffers()
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
		s.presenceLoop(ctx)
	}()
	if s.opts.BindingTTL > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.releaseLoop(ctx)
		}()
	}
	if s.opts.MailboxAge > 0 || s.opts.BindingTTL > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.expireLoop(ctx)
		}()
	}
	for range s.opts.RegisterWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.registerWorker(ctx)
		}()
	}
	if s.opts.AltSTUN != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.altLoop(ctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		s.opts.Conn.Close() // unblocks ReadFrom
		if s.opts.AltSTUN != nil {
			s.opts.AltSTUN.Close()
		}
	}()
	return s.serveAll(ctx)
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

// send sends b to to: queued for the read loop's batched write while it
// handles a batch (hotPath.out), else with WriteToUDPAddrPort when Conn
// has it (a *net.UDPConn), which allocates nothing, else with WriteTo.
func (s *Server) send(b []byte, to netip.AddrPort) {
	if s.hot.out != nil && s.hot.out.queue(b, to) {
		return
	}
	if s.hot.w == nil {
		s.sendUDP(b, net.UDPAddrFromAddrPort(to))
		return
	}
	if _, err := s.hot.w.WriteToUDPAddrPort(b, to); err != nil {
		s.log.Debug().Err(err).Stringer("to", to).Msg("write failed")
	}
}

func (s *Server) sendUDP(b []byte, to *net.UDPAddr) {
	if _, err := s.opts.Conn.WriteTo(b, to); err != nil {
		s.log.Debug().Err(err).Stringer("to", to).Msg("write failed")
	}
}

// drop counts a dropped datagram, with the counter looked up at New for
// every known reason (a label lookup hashes the label each time).
func (s *Server) drop(reason string) {
	if c, ok := s.hot.drops[reason]; ok {
		c.Inc()
		return
	}
	s.m.dropped.WithLabelValues(reason).Inc()
}

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

// releaseLoop releases name bindings unused for BindingTTL, at start and
// then hourly.
func (s *Server) releaseLoop(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if _, err := s.ReleaseUnused(s.now()); err != nil {
			s.log.Error().Err(err).Msg("releasing unused names")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ReleaseUnused releases the name bindings not used for BindingTTL as of
// now: names whose node has not registered in that time and is not online
// (an online node counts as using its name now), and takes their keys out
// of their rooms (RoomEvent left, expired). It returns the names released.
// Run calls it hourly; tests call it with a stepped clock.
func (s *Server) ReleaseUnused(now time.Time) ([]string, error) {
	if s.opts.BindingTTL <= 0 {
		return nil, nil
	}
	// A shard of the online table at a time, letting the packet path in
	// between: a million nodes online take a while. The table may change
	// between shards: the nodes online throughout are all visited (a
	// shard's clients stay in it), and those registering touch their own
	// names.
	var cs []*client
	for i := range tableShards {
		s.mu.Lock()
		cs = s.byKey.appendShard(cs[:0], i)
		for _, c := range cs {
			s.opts.Store.Touch(c.key, now)
		}
		s.mu.Unlock()
	}
	clear(cs)
	names, err := s.opts.Store.Release(now.Add(-s.opts.BindingTTL))
	for _, n := range names {
		s.log.Info().Str("name", n).Msg("name released: unused")
	}
	if len(names) > 0 {
		s.dropReleased(names)
	}
	return names, err
}

// Sweep expires nodes silent for longer than Expiry as of now, and forgets
// stale per-source state. Run calls it periodically; tests call it with a
// stepped clock. It processes everything due up to now, looking only at
// what is due (the expiry wheel and the aged queues of expiry.go), not at
// every node or key.
func (s *Server) Sweep(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(now)
	t := s.mono(now)
	gone := 0
	for {
		// A cookie's issue time is kept in whole seconds, so it stays
		// valid for up to CookieLifetime+1s after it was issued (≤ r.at).
		k, ok := s.spentQ.popBefore(t - int64(CookieLifetime+time.Second))
		if !ok {
			break
		}
		rs, ok := s.spent[k]
		if !ok {
			continue // forgotten already
		}
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
	for {
		p, ok := s.nameQ.popBefore(t - int64(time.Hour) + 1)
		if !ok {
			break
		}
		if q := s.newNames[p]; q != nil && now.Sub(q.since) >= time.Hour {
			delete(s.newNames, p)
			gone++
		}
	}
	s.newNames = compact(s.newNames, gone)
	gone = 0
	for {
		// A registration's cookie, once it can no longer be valid, is
		// refused before byCookie is read: its entry goes. (Issued before
		// the registration, it is valid for under CookieLifetime+1s after,
		// by the wall clock, which may step back up to 5 s unrefused:
		// 10 s of margin.)
		ck, ok := s.cookieQ.popBefore(t - int64(CookieLifetime+10*time.Second))
		if !ok {
			break
		}
		if c, ok := s.byCookie[ck]; ok {
			delete(s.byCookie, ck)
			gone++
			if c.reg != nil && c.reg.cookie == ck {
				// Its cookie is refused from now on: nothing needs it.
				c.reg = nil
			}
		}
	}
	s.byCookie = compact(s.byCookie, gone)
	s.sweepMailLocked(now)
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

// allowSourceLocked meters unauthenticated replies per source network
// (/24 or /56) in fixed memory.
func (s *Server) allowSourceLocked(ip netip.Addr, now time.Time) bool {
	return s.sources == nil || s.sources.allow(ip, now)
}

// Handle processes one datagram from src. Run calls it for every datagram;
// it is exported for in-memory tests and benchmarks.
func (s *Server) Handle(b []byte, src netip.AddrPort) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handleLocked(b, src, now)
}

// handleLocked is Handle with mu held; Run's loop calls it for each
// datagram of a read batch (serve).
func (s *Server) handleLocked(b []byte, src netip.AddrPort, now time.Time) {
	if wire.IsSTUN(b) {
		s.handleSTUNLocked(b, src, now, false)
		return
	}
	if m, ok := relayView(b); ok {
		// Most datagrams: read in place, not on the heap as wire.Parse
		// would put it.
		s.handleRelayLocked(&m, src, now, len(b))
		return
	}
	msg, err := wire.Parse(b)
	if err != nil {
		var verr *wire.VersionError
		switch {
		case errors.As(err, &verr):
			s.drop(relay.DropVersion)
			if verr.Type != wire.TypeError {
				// A Hello's nonce (its first 8 body bytes in every version)
				// is echoed, so that the node believes only an answer to
				// its own request.
				var tx uint32
				if verr.Type == wire.TypeHello && len(b) >= wire.HeaderLen+8 {
					tx = binary.BigEndian.Uint32(b[wire.HeaderLen+4 : wire.HeaderLen+8])
				}
				// Logged only when answered: the source meter bounds the
				// log lines a flood of spoofed datagrams can cause.
				if s.replyErrorLocked(src, now, len(b), &wire.Error{Code: wire.CodeVersion, Request: verr.Type, TxID: tx,
					Message: fmt.Sprintf("rendezvous speaks protocol v%d, you sent v%d", wire.Version, verr.Got)}) {
					s.log.Warn().Stringer("src", src).Uint8("theirs", verr.Got).Uint8("ours", wire.Version).Msg("protocol version mismatch: refused")
				}
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
		s.send(wire.Marshal(&wire.CookieReply{Nonce: m.Nonce, Cookie: s.cookies.issue(now, src), ServerKey: s.opts.Key.Public}), src)
	case *wire.Handshake:
		s.handleHandshakeLocked(m, src, now, len(b))
	case *wire.Relay:
		s.handleRelayLocked(m, src, now, len(b)) // relayView reads every Relay that parses: not reached
	case *wire.Sealed:
		s.handleSealedLocked(m, b, src, now)
	default:
		// Messages the rendezvous sends, not receives, and control
		// messages outside a Sealed datagram.
		s.drop(relay.DropUnknownType)
	}
}

// handleSealedLocked opens a sealed control datagram and acts on it.
func (s *Server) handleSealedLocked(m *wire.Sealed, b []byte, src netip.AddrPort, now time.Time) {
	c := s.bySession.get(m.Session)
	if c == nil {
		s.drop(relay.DropNotRegistered)
		s.replyErrorLocked(src, now, len(b), &wire.Error{Code: wire.CodeNotRegistered, Request: wire.TypeSealed, Message: "register again"})
		return
	}
	pt, err := c.keys.Open(s.opened[:0], b)
	if err != nil {
		s.drop(relay.DropOpen)
		return
	}
	s.opened = pt[:0]
	inner, err := wire.ParseInner(pt)
	if err != nil {
		s.drop(relay.DropMalformed)
		return
	}
	// Authentic: the node itself (or a replay, which the window refused).
	s.heardLocked(c, now)
	if src != c.addr {
		if r, ok := inner.(*wire.PathResponse); ok && c.challenge() != nil && src == c.x.challenge.addr && r.Data == c.x.challenge.data {
			s.log.Info().Str("peer", c.name).Stringer("from", c.addr).Stringer("to", src).Msg("roamed")
			c.addr = src
			c.x.challenge.addr = netip.AddrPort{}
			s.m.roams.Inc()
		} else {
			// Until the new address answers a challenge, nothing larger
			// than this datagram goes there; replies go to the old one.
			s.challengeLocked(c, src, now, len(b), true)
		}
	}
	switch m := inner.(type) {
	case *wire.Heartbeat:
		s.sendSealedLocked(c, &wire.HeartbeatAck{Observed: c.addr, PresenceSeq: c.seq, RoomSeq: c.roomSeq, AltSTUN: s.altPort})
		s.sendReceiptsLocked(c) // again, while any wait
	case *wire.Leave:
		s.log.Info().Str("peer", c.name).Msg("left")
		s.removeLocked(c, wire.ReasonQuit, now)
	case *wire.PeersRequest:
		s.sendSnapshotLocked(c)
	case *wire.Lookup:
		if s.opts.LookupRate > 0 && !s.lookupLimiter(c).AllowN(now, 1) {
			s.drop(relay.DropQuota)
			s.sendSealedLocked(c, &wire.Error{Code: wire.CodeRateLimited, Request: wire.TypeLookup, TxID: m.TxID, Message: "too many lookups"})
			return
		}
		r := s.lookupLocked(m)
		if r.Status != wire.LookupUnknown {
			s.watchLocked(c, r.Key)
		}
		s.sendSealedLocked(c, r)
	case *wire.Signal:
		if !s.acquaintedLocked(c, m.Dst) && s.opts.IntroRate > 0 && !s.introLimiter(c).AllowN(now, 1) {
			s.drop(relay.DropQuota)
			return
		}
		if d := s.forwardableLocked(c, m.Dst, len(m.Body), now); d != nil {
			s.watchLocked(c, d.key)
			s.sendSealedLocked(d, &wire.Signaled{Src: c.key, Name: c.name, Body: m.Body})
			s.m.signals.Inc()
		}
	case *wire.Who:
		if s.opts.LookupRate > 0 && !s.lookupLimiter(c).AllowN(now, 1) {
			s.drop(relay.DropQuota)
			s.sendSealedLocked(c, &wire.Error{Code: wire.CodeRateLimited, Request: wire.TypeWho, TxID: m.TxID, Message: "too many requests"})
			return
		}
		rk := wire.NameKey(m.Room)
		if !s.onlineHasLocked(rk, c) {
			s.sendSealedLocked(c, &wire.Error{Code: wire.CodeNotMember, Request: wire.TypeWho, TxID: m.TxID, Message: "you are not in " + m.Room})
			return
		}
		s.sendSealedLocked(c, whoPage(m, s.onlineLocked(rk), s.onlineLenLocked(rk)))
	case *wire.PathResponse:
		// Handled above, or stale.
	case *wire.MailPut:
		s.handleMailPutLocked(c, m, now)
	case *wire.MailFetch:
		if s.opts.LookupRate > 0 && !s.lookupLimiter(c).AllowN(now, 1) {
			s.drop(relay.DropQuota)
			s.sendSealedLocked(c, &wire.Error{Code: wire.CodeRateLimited, Request: wire.TypeMailFetch, Message: "too many requests"})
			return
		}
		s.handleMailFetchLocked(c, m)
	case *wire.MailAck:
		s.handleMailAckLocked(c, m, now)
	case *wire.MailReceiptAck:
		s.handleMailReceiptAckLocked(c, m)
	case *wire.RoomJoin:
		if s.allowRoomRequestLocked(c, wire.TypeRoomJoin, m.TxID, now) {
			s.handleRoomJoinLocked(c, m.TxID, m.Room)
		}
	case *wire.RoomPart:
		if s.allowRoomRequestLocked(c, wire.TypeRoomPart, m.TxID, now) {
			s.handleRoomPartLocked(c, m.TxID, m.Room)
		}
	case *wire.RoomList:
		if s.allowRoomRequestLocked(c, wire.TypeRoomList, m.TxID, now) {
			s.sendSealedLocked(c, s.roomListLocked(c, m))
		}
	case *wire.RoomMembers:
		if s.allowRoomRequestLocked(c, wire.TypeRoomMembers, m.TxID, now) {
			s.handleRoomMembersLocked(c, m)
		}
	default:
		s.drop(relay.DropUnknownType)
	}
}

// sendSealedLocked seals m with c's keys and sends it to c's validated
// address.
func (s *Server) sendSealedLocked(c *client, m wire.Message) {
	s.sendSealedToLocked(c, m, c.addr)
}

func (s *Server) sendSealedToLocked(c *client, m wire.Message, to netip.AddrPort) {
	pt := wire.AppendInner(s.plain[:0], m)
	s.scratch = c.keys.Seal(s.scratch[:0], c.session, pt)
	s.plain = pt[:0]
	if to == c.addr {
		s.sendClient(s.scratch, c)
		return
	}
	s.send(s.scratch, to)
}

// challengeLocked sends a path challenge to src, an address the node spoke
// from that is not its validated one, unless one went there very recently;
// never larger than the reqLen bytes that came from there. authed says the
// datagram from src was sealed by the session: a challenge for one may
// replace a challenge for a Relay at once, but not the other way round
// while it can still be answered, so that Relays spoofed with a session ID
// seen on the path cannot keep the node's own move from validating.
func (s *Server) challengeLocked(c *client, src netip.AddrPort, now time.Time, reqLen int, authed bool) {
	x := c.extra()
	if x.challenge == nil {
		x.challenge = new(pathChallenge)
	}
	ch := x.challenge
	since := now.Sub(ch.at)
	switch {
	case !authed && ch.authed && ch.addr.IsValid() && since < challengeLife:
		return
	case since < 200*time.Millisecond && (!authed || ch.authed):
		return // at most five a second per session, to any address
	}
	if wire.SealedHeaderLen+1+8+ctrl.Overhead > reqLen {
		return
	}
	ch.addr, ch.at, ch.authed = src, now, authed
	rand.Read(ch.data[:])
	s.sendSealedToLocked(c, &wire.PathChallenge{Data: ch.data}, src)
}

// challengeLife is how long a challenge for a sealed datagram is kept
// from being replaced by one for a Relay: a few round trips.
const challengeLife = 2 * time.Second

// replyErrorLocked sends e to an unproven source, no larger than the
// datagram that caused it, within the source's budget, and reports
// whether it did.
func (s *Server) replyErrorLocked(src netip.AddrPort, now time.Time, reqLen int, e *wire.Error) bool {
	if !s.allowSourceLocked(src.Addr(), now) {
		s.drop(relay.DropSourceLimited)
		return false
	}
	b := wire.ErrorFits(e, reqLen)
	if b == nil {
		return false
	}
	s.send(b, src)
	return true
}

// Online returns the names online now, sorted. For tests and the operator.
func (s *Server) Online() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, s.byKey.len())
	for c := range s.byKey.all() {
		out = append(out, c.name)
	}
	sort.Strings(out)
	return out
}
