// Package node is a natchat node, composed of layers with one job each:
//
//	rvclient   the rendezvous client: registration, heartbeats, presence,
//	           lookups, signalling
//	peernet    the one UDP socket, demultiplexed once; the per-peer link
//	           (relay first, direct when punched) and the punching
//	session    QUIC on the link: one connection per peer, streams by kind
//	messenger  conversations, the durable outbox, receipts, trust on first use,
//	           offline messages through the rendezvous's mailboxes
//	mailbox    sealing a message for a peer's mailbox, and opening one
//	store      the node's durable state (outbox, shown messages, pinned keys)
//	api        the events and commands every front end uses, and the bus
//
// A Node wires them together and owns every goroutine's lifetime: Run
// starts them and does not return before they have all ended. Front ends
// (package ui and its subpackages) Subscribe to events and send commands
// with Do; nothing in the network layers ever waits for a front end.
package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pion/transport/v2"
	"github.com/rs/zerolog"

	"natchat/ctrl"
	"natchat/node/api"
	"natchat/node/link"
	"natchat/node/messenger"
	"natchat/node/peernet"
	"natchat/node/rvclient"
	"natchat/node/session"
	"natchat/node/store"
	"natchat/node/transfer"
	"natchat/punch"
	"natchat/wire"
)

// Options configure a Node. Name, Rendezvous, Conn, Identity and Store are
// required; the rest have documented zero values.
type Options struct {
	// Name is the node's name, checked by wire.ValidateName.
	Name string
	// Rendezvous is the rendezvous's "host:port".
	Rendezvous string
	// RendezvousKey is the rendezvous's key as the user gave it. Zero: the
	// key pinned in Store for Rendezvous, or, on first contact, the one the
	// rendezvous offers (then pinned). A given key replaces a pinned one.
	RendezvousKey ctrl.PublicKey
	// Conn is the node's one UDP socket. The Node owns it from Run on and
	// closes it when Run returns.
	Conn net.PacketConn
	// Identity is the node's Ed25519 key.
	Identity ed25519.PrivateKey
	// Store is the node's durable state, opened for Identity. The caller
	// closes it after Run returns.
	Store *store.Store
	// Heartbeat is the interval of heartbeats to the rendezvous, which also
	// keep the NAT mapping open. 0: 25 s. It is shortened to stay under the
	// rendezvous's expiry when that is shorter.
	Heartbeat time.Duration
	// DeliveryTimeout is how long a message may wait for its receipt
	// before it is reported undelivered (unless it is stored in its
	// recipient's mailbox by then). 0: 2 minutes.
	DeliveryTimeout time.Duration
	// OfflineGrace is how long after live delivery to a peer failed (its
	// session could not be opened or ended with messages unacknowledged)
	// the node waits for receipts before it deposits the messages in the
	// peer's mailbox. 0: 500 ms.
	OfflineGrace time.Duration
	// MailboxAge is the age limit of the rendezvous's mailboxes: a
	// message created longer ago is not deposited (error too_old). 0: 30
	// days.
	MailboxAge time.Duration
	// RoomRate bounds our messages to one room per second, in bursts of
	// RoomBurst (more are refused: rate_limited); members are held to
	// twice that when we receive. 0: 5 a second, bursts of 20.
	RoomRate  float64
	RoomBurst int
	// Downloads is the directory received files are saved in (created
	// if missing). Empty: no file is accepted (offers are rejected).
	Downloads string
	// AcceptFrom names peers whose file offers are accepted without
	// asking.
	AcceptFrom []string
	// MaxFileSize bounds a file offered or accepted. 0: 4 GiB.
	MaxFileSize int64
	// IdleTimeout closes a session with no open stream. 0: 2 minutes.
	IdleTimeout time.Duration
	// Logger receives structured logs. Zero value: disabled.
	Logger zerolog.Logger
	// Net is the network punch lists interfaces on: nil is the real one;
	// tests pass a pion vnet.
	Net transport.Net
	// NoDirect keeps every peer on the relay (no ICE).
	NoDirect bool
	// Punch tunes ICE; zero values are punch's tuned defaults.
	Punch punch.Options
	// NoHistory turns the history off: nothing is recorded in Store, and
	// api.History is answered with no entries (what earlier runs recorded
	// stays in Store, untouched).
	NoHistory bool
	// HistoryMax bounds the history of one conversation, in messages
	// (the oldest go first). 0: 1000.
	HistoryMax int
	// HistoryAge is how long a message stays in the history. 0: 30 days;
	// negative: no age limit.
	HistoryAge time.Duration
}

// ErrStopped is returned by Do once the node has stopped.
var ErrStopped = errors.New("node: stopped")

// Node is a natchat node. Create with New, then Run.
type Node struct {
	opts  Options
	log   zerolog.Logger
	key   wire.Key
	bus   *api.Bus
	rv    *rvclient.Client
	pn    *peernet.Net
	sess  *session.Manager
	msgr  *messenger.Messenger
	xfer  *transfer.Manager
	rec   *recorder // nil: no history
	cmds  chan api.Command
	tasks chan func() // ordered work off the network's goroutines
	quit  chan struct{}
	once  sync.Once // closes quit
	done  chan struct{}
	wg    sync.WaitGroup
	paths pathLog // when each peer's path last changed, for /netcheck (netcheck.go)
}

// New checks opts and builds the layers; nothing runs before Run.
func New(o Options) (*Node, error) {
	if err := wire.ValidateName(o.Name); err != nil {
		return nil, fmt.Errorf("bad name %q: %w", o.Name, err)
	}
	if o.Conn == nil || o.Store == nil {
		return nil, errors.New("node: Options.Conn and Options.Store are required")
	}
	if len(o.Identity) != ed25519.PrivateKeySize {
		return nil, errors.New("node: Options.Identity is not an Ed25519 private key")
	}
	rva, err := net.ResolveUDPAddr("udp", o.Rendezvous)
	if err != nil {
		return nil, fmt.Errorf("rendezvous address %q: %w", o.Rendezvous, err)
	}
	if rva.Port == 0 {
		return nil, fmt.Errorf("rendezvous address %q: port 0", o.Rendezvous)
	}
	rvAP := rva.AddrPort()
	rvAP = netip.AddrPortFrom(rvAP.Addr().Unmap(), rvAP.Port())
	n := &Node{
		opts:  o,
		log:   o.Logger,
		key:   wire.Key(o.Identity.Public().(ed25519.PublicKey)),
		bus:   api.NewBus(nil),
		cmds:  make(chan api.Command, 64),
		tasks: make(chan func(), 1024),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	if n.rec = newRecorder(o.Store, o.Name, o); n.rec != nil {
		n.bus.Tap(n.rec.tap)
	}
	n.pn, err = peernet.New(peernet.Options{
		Conn: o.Conn, Rendezvous: rvAP, Local: n.key, NoDirect: o.NoDirect, Punch: o.Punch, Net: o.Net,
		OnPath: n.onPath, Logger: o.Logger,
	})
	if err != nil {
		return nil, err
	}
	rvKey := o.RendezvousKey
	if rvKey.IsZero() {
		k, ok, err := o.Store.RendezvousKey(o.Rendezvous)
		if err != nil {
			return nil, fmt.Errorf("node: pinned rendezvous key: %w", err)
		}
		if ok {
			rvKey = k
		}
	} else if err := o.Store.SetRendezvousKey(o.Rendezvous, rvKey); err != nil {
		return nil, fmt.Errorf("node: pin the rendezvous key: %w", err)
	}
	n.rv, err = rvclient.New(rvclient.Options{
		Name: o.Name, Identity: o.Identity, Send: n.pn.WriteRV, Observer: (*observer)(n),
		Heartbeat: o.Heartbeat, Rendezvous: o.Rendezvous, ServerKey: rvKey, Logger: o.Logger,
		Addr: rvAP, SendTo: n.sendTo,
	})
	if err != nil {
		return nil, err
	}
	n.pn.SetRV(n.rv)
	n.sess, err = session.New(session.Options{
		Link: n.pn.Link().ForQUIC(), Identity: o.Identity, IdleTimeout: o.IdleTimeout, Logger: o.Logger,
		OnPeer: n.onPeer,
		OnOurs: n.pn.Vouch, // a peer we dialed or answered: past the strangers' cap
	})
	if err != nil {
		return nil, err
	}
	n.msgr, err = messenger.New(messenger.Options{
		Self: n.key, SelfName: o.Name, Store: o.Store, Dir: n.rv, Sessions: chatOpener{n.sess}, Bus: n.bus,
		Identity:        o.Identity,
		PathOf:          func(k wire.Key) string { return n.pn.PathOf(k).Kind.String() },
		DeliveryTimeout: o.DeliveryTimeout, OfflineGrace: o.OfflineGrace, MailboxAge: o.MailboxAge, Logger: o.Logger,
		Rooms: roomDir{n.rv}, RoomRate: o.RoomRate, RoomBurst: o.RoomBurst,
	})
	if err != nil {
		return nil, err
	}
	n.sess.Handle(wire.StreamChat, func(ctx context.Context, peer wire.Key, st *session.Stream) {
		n.msgr.ServeChat(ctx, peer, st)
	})
	n.xfer, err = transfer.New(transfer.Options{
		Self: n.key, Bus: n.bus, Sessions: fileOpener{n.sess}, Peers: n.msgr,
		Downloads: o.Downloads, AcceptFrom: o.AcceptFrom, MaxSize: o.MaxFileSize, Outbox: o.Store,
		PathOf: func(k wire.Key) string { return n.pn.PathOf(k).Kind.String() },
		Logger: o.Logger,
	})
	if err != nil {
		return nil, err
	}
	n.sess.Handle(wire.StreamFile, func(ctx context.Context, peer wire.Key, st *session.Stream) {
		n.xfer.Serve(ctx, peer, st)
	})
	return n, nil
}

// roomDir is the rendezvous client as the messenger's RoomDirectory.
type roomDir struct{ c *rvclient.Client }

func (d roomDir) JoinRoom(ctx context.Context, room string) (*wire.RoomReply, error) {
	return d.c.JoinRoom(ctx, room)
}

func (d roomDir) PartRoom(ctx context.Context, room string) (*wire.RoomReply, error) {
	return d.c.PartRoom(ctx, room)
}

func (d roomDir) Rooms(ctx context.Context) ([]wire.RoomInfo, error) { return d.c.Rooms(ctx) }

func (d roomDir) RoomMembers(ctx context.Context, room string) (*messenger.RoomView, error) {
	v, err := d.c.RoomMembers(ctx, room)
	switch {
	case errors.Is(err, rvclient.ErrNotMember):
		return nil, messenger.ErrNotMember
	case err != nil:
		return nil, err
	}
	return &messenger.RoomView{Room: v.Room, Version: v.Version, Members: v.Members}, nil
}

// fileOpener opens file streams for the transfers.
type fileOpener struct{ m *session.Manager }

func (f fileOpener) OpenFile(ctx context.Context, k wire.Key) (transfer.Stream, error) {
	st, err := f.m.OpenStream(ctx, k, wire.StreamFile)
	if err != nil {
		return nil, err
	}
	return st, nil
}

// chatOpener opens chat streams for the messenger.
type chatOpener struct{ m *session.Manager }

func (c chatOpener) Connected(k wire.Key) bool { return c.m.Connected(k) }

func (c chatOpener) OpenChat(ctx context.Context, k wire.Key) (messenger.Stream, error) {
	st, err := c.m.OpenStream(ctx, k, wire.StreamChat)
	if err != nil {
		return nil, err
	}
	return st, nil
}

// Key returns the node's identity key.
func (n *Node) Key() wire.Key { return n.key }

// Subscribe returns a subscription to the node's events (see api.Bus).
// Subscribe before Run to see every event.
func (n *Node) Subscribe() *api.Sub { return n.bus.Subscribe() }

// Do queues a command. It may be called before Run: commands wait for it.
// It blocks while the queue is full or a subscriber is far behind (so a
// front end that does not read its events holds up its own commands), and
// fails with ErrStopped once the node has stopped.
func (n *Node) Do(ctx context.Context, c api.Command) error {
	if err := n.bus.WaitRoom(ctx); err != nil {
		return err
	}
	select {
	case n.cmds <- c:
		return nil
	case <-n.done:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// post queues ordered work for the node's task goroutine; it never blocks.
func (n *Node) post(f func()) {
	select {
	case n.tasks <- f:
	default:
		n.log.Warn().Msg("node task queue full; an event was dropped")
	}
}

// Run runs the node until ctx is done, a Quit command, or an unrecoverable
// error (such as "name taken", returned). On the way out it closes its
// sessions, sends a notified leave when registered, closes the socket, and
// waits for every goroutine it started. Then the event bus closes.
func (n *Node) Run(ctx context.Context) (err error) {
	defer close(n.done)
	defer n.bus.Close()
	netCtx, stopNet := context.WithCancel(context.Background())
	rvCtx, stopRV := context.WithCancel(context.Background())
	sessCtx, stopSess := context.WithCancel(context.Background())
	msgCtx, stopMsg := context.WithCancel(context.Background())
	defer stopNet()
	defer stopRV()
	defer stopSess()
	defer stopMsg()

	fatal := make(chan error, 3)
	var netWG, rvWG, sessWG sync.WaitGroup
	netWG.Add(1)
	go func() {
		defer netWG.Done()
		if err := n.pn.Run(netCtx); err != nil {
			fatal <- err
		}
	}()
	rvWG.Add(1)
	go func() {
		defer rvWG.Done()
		if err := n.rv.Run(rvCtx); err != nil {
			fatal <- err
		}
	}()
	sessWG.Add(1)
	go func() {
		defer sessWG.Done()
		if err := n.sess.Run(sessCtx); err != nil {
			fatal <- err
		}
	}()
	n.wg.Add(1)
	go func() { defer n.wg.Done(); n.taskLoop(msgCtx) }()
	n.rec.start()
	if err := n.msgr.Start(msgCtx); err != nil {
		fatal <- err
	}
	n.xfer.Start(msgCtx)

loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-n.quit:
			break loop
		case err = <-fatal:
			break loop
		case c := <-n.cmds:
			n.do(msgCtx, c)
		}
	}
	// Stop from the top down: conversations, sessions (their closes go
	// out through the link), the registration (a notified leave), and the
	// socket last.
	stopMsg()
	n.msgr.Wait()
	n.xfer.Wait()
	n.rec.close() // the history's last batch, after the last message event
	stopSess()
	sessWG.Wait()
	n.rv.Leave()
	stopRV()
	rvWG.Wait()
	n.wg.Wait()
	stopNet()
	netWG.Wait()
	return err
}

// do runs one command. Commands that wait on the network run on their own
// goroutine; none blocks the loop.
func (n *Node) do(ctx context.Context, c api.Command) {
	switch c := c.(type) {
	case api.Send:
		kind, ok := messenger.WireKind(c.Kind)
		if !ok {
			n.bus.Publish(&api.Error{Code: api.CodeBadCommand, Message: "unknown message kind " + c.Kind, To: c.To})
			return
		}
		n.msgr.SendKind(c.To, kind, c.Text)
	case api.SendFile:
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.xfer.Send(ctx, c.To, c.Path) }()
	case api.AcceptFile:
		n.xfer.Accept(strings.ToLower(c.ID))
	case api.RejectFile:
		n.xfer.Reject(strings.ToLower(c.ID))
	case api.CancelFile:
		n.xfer.Cancel(strings.ToLower(c.ID))
	case api.Join:
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.msgr.JoinRoom(ctx, c.Room) }()
	case api.Part:
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.msgr.PartRoom(ctx, c.Room) }()
	case api.ListRooms:
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.msgr.ListRooms(ctx) }()
	case api.Who:
		if c.Room == "" {
			n.who()
			return
		}
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.whoRoom(ctx, c) }()
	case api.ShowFingerprint:
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.msgr.Fingerprint(ctx, c.Name) }()
	case api.Trust:
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.msgr.Trust(ctx, c.Name) }()
	case api.History:
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.history(c) }()
	case api.CheckNet:
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.netCheck(ctx) }()
	case api.Deregister:
		if !n.rv.Deregister() {
			n.bus.Publish(&api.Error{Code: api.CodeBadCommand, Message: "not registered: /reg registers again"})
			return
		}
		// Our sessions end (peers see us leave, and deposit what they
		// send us from now on).
		peers := n.sess.Peers()
		n.post(func() {
			for _, k := range peers {
				n.sess.Close(k, "deregistered")
			}
		})
		n.log.Info().Msg("deregistered")
		n.bus.Publish(&api.Deregistered{Name: n.opts.Name})
	case api.Register:
		if !n.rv.Register() {
			n.bus.Publish(&api.Error{Code: api.CodeBadCommand, Message: "already registered (or registering): /dereg first"})
		}
	case api.Quit:
		if !c.Drain {
			n.once.Do(func() { close(n.quit) })
			return
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			dctx, cancel := context.WithTimeout(ctx, n.deliveryTimeout()+time.Second)
			n.msgr.Drain(dctx)
			cancel()
			n.once.Do(func() { close(n.quit) })
		}()
	default:
		n.bus.Publish(&api.Error{Code: api.CodeBadCommand, Message: fmt.Sprintf("unsupported command %T", c)})
	}
}

func (n *Node) deliveryTimeout() time.Duration {
	if n.opts.DeliveryTimeout > 0 {
		return n.opts.DeliveryTimeout
	}
	return 2 * time.Minute
}

// taskLoop runs posted work in order until ctx is done.
func (n *Node) taskLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-n.tasks:
			f()
		}
	}
}

// who publishes the Peers event: everyone online in our rooms and everyone
// we have a session with.
// whoRoom asks the rendezvous for a page of a room's members.
func (n *Node) whoRoom(ctx context.Context, c api.Who) {
	r, err := n.rv.Who(ctx, c.Room, c.After)
	switch {
	case errors.Is(err, rvclient.ErrNotMember):
		n.bus.Publish(&api.Error{Code: api.CodeNotMember, Message: "you are not in " + c.Room})
		return
	case err != nil:
		n.bus.Publish(&api.Error{Code: api.CodeRendezvousUnreachable, Message: "/who " + c.Room + ": " + err.Error()})
		return
	}
	e := &api.Members{Room: r.Room, Total: int(r.Total), Members: make([]api.Member, 0, len(r.Members))}
	for _, m := range r.Members {
		e.Members = append(e.Members, api.Member{Name: m.Name})
	}
	if r.More && len(r.Members) > 0 {
		e.Next = r.Members[len(r.Members)-1].Name
	}
	n.bus.Publish(e)
}

func (n *Node) who() {
	rows := make(map[wire.Key]*api.PeerInfo)
	for _, p := range n.rv.Online() {
		rows[p.Key] = &api.PeerInfo{Name: p.Name, Online: true}
	}
	for _, k := range n.sess.Peers() {
		if rows[k] == nil {
			if name, ok := n.rv.KnownName(k); ok {
				rows[k] = &api.PeerInfo{Name: name}
			}
		}
	}
	out := make([]api.PeerInfo, 0, len(rows))
	for k, r := range rows {
		p := n.pn.PathOf(k)
		r.Path = p.Kind.String()
		if p.Kind != link.None {
			rtt := n.sess.RTT(k)
			if rtt == 0 {
				rtt = p.RTT
			}
			r.RTTMS = api.RTTMS(rtt)
		}
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	n.bus.Publish(&api.Peers{Peers: out})
}

// onPeer follows the sessions: a peer with a session is punched and
// tracked on the link; without one it is forgotten.
func (n *Node) onPeer(k wire.Key, up bool) {
	if up {
		n.pn.Open(k)
		return
	}
	n.pn.Close(k)
	if !n.rv.IsOnline(k) {
		n.rv.Forget(k) // its name is looked up again if it comes back
	}
}

// onPath reports a path change, with the peer's name (looked up off the
// network's goroutines when not known yet).
func (n *Node) onPath(k wire.Key, p link.Path) {
	n.paths.note(k, p, time.Now())
	n.post(func() {
		name, ok := n.rv.KnownName(k)
		if !ok {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			var err error
			name, err = n.rv.NameOf(ctx, k)
			cancel()
			if err != nil {
				n.log.Info().Err(err).Str("key", k.Short()).Msg("path to a peer of unknown name")
				return
			}
		}
		n.log.Info().Str("peer", name).Stringer("path", p.Kind).Str("remote", p.Remote).Msg("path")
		n.bus.Publish(&api.PathChanged{Peer: name, Path: p.Kind.String(), Remote: p.Remote, RTTMS: api.RTTMS(p.RTT)})
	})
}

// observer turns what the rendezvous client learns into events. Its
// methods never block (rvclient.Observer).
type observer Node

var (
	_ rvclient.DeferObserver = (*observer)(nil)
	_ rvclient.MailObserver  = (*observer)(nil)
	_ rvclient.RoomObserver  = (*observer)(nil)
)

func (o *observer) Registered(public netip.AddrPort) {
	o.bus.Publish(&api.Registered{Name: o.opts.Name, Public: public.String()})
	o.msgr.Registered()
}

func (o *observer) RoomEvent(ev *wire.RoomEvent) { o.msgr.RoomEvent(ev) }

func (o *observer) RoomsBehind() { o.msgr.RoomsBehind() }

func (o *observer) Joined(k wire.Key, name string) {
	o.bus.Publish(&api.PeerJoined{Name: name})
}

func (o *observer) Left(k wire.Key, name, reason string) {
	o.bus.Publish(&api.PeerLeft{Name: name, Reason: reason})
	// Its session ends now (not at QUIC's idle timeout); the path goes
	// with it, reported as none after peer_left.
	n := (*Node)(o)
	n.post(func() { n.sess.Close(k, "peer left") })
}

func (o *observer) Refused(code, message string) {
	o.bus.Publish(&api.Error{Code: code, Message: message})
}

// Deferred implements rvclient.DeferObserver.
func (o *observer) Deferred(code, message string) {
	o.bus.Publish(&api.Error{Code: code, Message: "rendezvous: " + message + " (trying again every minute)"})
}

func (o *observer) Unreachable(message string) {
	o.bus.Publish(&api.Error{Code: api.CodeRendezvousUnreachable, Message: message})
}

func (o *observer) Signaled(k wire.Key, name string, body []byte) {
	o.pn.Signaled(k, body)
}

func (o *observer) ServerKeyChanged(pinned, offered ctrl.PublicKey) {
	o.bus.Publish(&api.Error{Code: api.CodeRendezvousKeyChanged, Fingerprint: pinned.Fingerprint(), NewFingerprint: offered.Fingerprint(),
		Message: fmt.Sprintf("the rendezvous at %s offers key %s (fingerprint %s), not the one pinned (fingerprint %s); not registering. "+
			"If its operator changed it, run with -rv %s#%s", o.opts.Rendezvous, offered, offered.Fingerprint(), pinned.Fingerprint(), o.opts.Rendezvous, offered)})
}

// MailWaiting implements rvclient.MailObserver.
func (o *observer) MailWaiting(count, bytes uint32) {
	o.log.Info().Uint32("count", count).Uint32("bytes", bytes).Msg("messages wait in our mailbox")
	o.bus.Publish(&api.Mailbox{Count: int(count)})
}

// Mail implements rvclient.MailObserver.
func (o *observer) Mail(from wire.Key, id wire.MsgID, storedMS int64, blob []byte) bool {
	return o.msgr.ReceiveMail(from, id, storedMS, blob)
}

// MailDrain implements rvclient.MailObserver.
func (o *observer) MailDrain(active bool) { o.msgr.MailDrain(active) }

// MailReceipt implements rvclient.MailObserver.
func (o *observer) MailReceipt(r wire.Receipt) { o.msgr.MailReceipt(r) }

func (o *observer) ServerKeyLearned(k ctrl.PublicKey) {
	// Called on the read loop: the pin is written off it.
	n := (*Node)(o)
	n.post(func() {
		if err := n.opts.Store.SetRendezvousKey(n.opts.Rendezvous, k); err != nil {
			n.log.Error().Err(err).Msg("pinning the rendezvous key")
			return
		}
		n.log.Info().Str("key", k.String()).Str("fingerprint", k.Fingerprint()).Msg("pinned the rendezvous's key (first contact)")
	})
}

// Stats counts what the node holds per peer, for tests and diagnostics.
type Stats struct {
	Online    int // peers online in our rooms
	Sessions  int // live session connections
	Inboxes   int // peers with receiving state
	Convs     int // open conversations (sending)
	Directs   int // peers being punched
	LinkPeers int // peers tracked on the link
}

// Stats returns the node's per-peer state counts.
func (n *Node) Stats() Stats {
	in, convs := n.msgr.Peers()
	return Stats{
		Online:    len(n.rv.Online()),
		Sessions:  n.sess.Conns(),
		Inboxes:   in,
		Convs:     convs,
		Directs:   n.pn.Directs(),
		LinkPeers: n.pn.Link().Peers(),
	}
}
