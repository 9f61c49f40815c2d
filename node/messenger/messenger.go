// Package messenger is the node's conversations: the durable outbox and the
// sending of each conversation's messages, in order, over the peer's
// session; receipts; the receiving side, which shows each message once and
// acknowledges it only after the front end showed it and the store
// recorded it; and trust on first use of peers' keys.
//
// # Exactly once, in order, across restarts
//
// The sender stores a message in its outbox (fsync'd) before it says Sent,
// and writes every unacknowledged message, in order, on each new stream to
// the peer until its receipt comes or its deadline passes. A sender that
// restarts resends its outbox (Sent again, with Resumed).
//
// The receiver drops a message whose ID it has already shown (the store's
// shown filter survives restarts), and shows a new one through the event
// bus. When the front end has shown it, the store records it (MarkShown,
// durable against a crash the moment it returns), and only then is the
// receipt written: "delivered" means shown, and a receiver killed at any
// point shows nothing twice and loses nothing (the sender resends what was
// not acknowledged). A message that arrives again while its first copy
// waits to be shown (a resend on a new stream) waits for that copy.
//
// # Offline delivery
//
// When the Directory is also a Mailbox (the rendezvous client) and the
// node's Identity is given, a message whose recipient is offline, or whose
// live delivery failed (no session could be opened, or its stream ended
// unacknowledged) and no receipt came within OfflineGrace, is sealed to
// the recipient (package node/mailbox) and deposited in its mailbox on the
// rendezvous, the conversation's unacknowledged messages in order, one at
// a time. Once the rendezvous has it durably the outbox records it
// (durably: a restart neither loses it nor deposits it again) and the
// front end sees Stored; the message then waits, without a deadline, for
// the rendezvous's receipt: Delivered when the recipient took it, Expired
// when it aged out unread. A rendezvous that says the recipient is online
// after all sends the conversation back to live delivery.
//
// The receiving side takes the messages of its own mailbox from the
// rendezvous client (ReceiveMail), opens each (a blob that does not open,
// or whose ID is not the one it came with, is refused with a warning, and
// acknowledged so that it does not block the mailbox), checks the sender
// against its pinned key, and shows it like a live message, with Via
// "mailbox" and the sender's original time; it is acknowledged to the
// rendezvous only once shown and recorded, exactly as a live receipt. While
// the mailbox is being drained (MailDrain), live messages wait (at most
// DrainWait) so that older stored messages are shown first.
//
// # Trust on first use
//
// The first time a name and a key meet (a lookup to send, or a peer's
// incoming stream), the pair is pinned in the store. If the rendezvous later
// gives another key for a pinned name (or another name for a pinned key),
// nothing is sent to or shown from it: the user sees a key_changed error
// with both fingerprints until they run /trust NAME.
package messenger

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"natchat/node/api"
	"natchat/node/store"
	"natchat/node/ui"
	"natchat/wire"
)

// Stream is a session stream to one peer (a session.Stream in the node).
type Stream interface {
	io.Reader
	io.Writer
	// CloseWrite ends our direction; the peer reads EOF.
	CloseWrite() error
	// SetWriteDeadline bounds writes (zero: none).
	SetWriteDeadline(t time.Time) error
	// Close ends the stream both ways; idempotent.
	Close() error
}

// Sessions opens streams to peers.
type Sessions interface {
	OpenChat(ctx context.Context, peer wire.Key) (Stream, error)
	// Connected reports whether a session with peer is up now.
	Connected(peer wire.Key) bool
}

// Directory finds peers by name and names by key: the rendezvous client.
type Directory interface {
	// Lookup finds name (or, with name empty, key).
	Lookup(ctx context.Context, name string, key wire.Key) (*wire.LookupReply, error)
	// NameOf returns the name of key.
	NameOf(ctx context.Context, key wire.Key) (string, error)
}

// Mailbox is the offline mailbox on the rendezvous: the rendezvous client.
// A Directory that is also a Mailbox turns offline delivery on.
type Mailbox interface {
	// Deposit puts a sealed message into peer to's mailbox and returns the
	// outcome (rvclient.Client.Deposit).
	Deposit(ctx context.Context, to wire.Key, id wire.MsgID, blob []byte) (wire.MailStatus, error)
	// AckMail says a message from our mailbox is durably ours.
	AckMail(from wire.Key, id wire.MsgID)
	// KeepMail leaves a message in our mailbox, set aside until the next
	// registration.
	KeepMail(from wire.Key, id wire.MsgID)
	// LeaveMail leaves a message in our mailbox, not taken for now: it
	// is fetched again.
	LeaveMail(from wire.Key, id wire.MsgID)
	// AckReceipt says the outcome of a receipt (MailReceipt) is durably
	// recorded: the rendezvous may forget it.
	AckReceipt(ref wire.MailRef)
}

// Store is the durable state the messenger keeps (package store).
type Store interface {
	Enqueue(msgs ...store.OutMsg) ([]store.OutMsg, error)
	Outbox() ([]store.OutMsg, error)
	MarkStored(id wire.MsgID) error
	Done(ids ...wire.MsgID)
	// Flush commits what is queued (Done) durably.
	Flush() error
	Shown(peer wire.Key, id wire.MsgID) bool
	MarkShown(peer wire.Key, id wire.MsgID) error
	PinByName(name string) (store.Pin, bool, error)
	PinByKey(k wire.Key) (store.Pin, bool, error)
	SetPin(name string, k wire.Key) error
}

var _ Store = (*store.Store)(nil)

// Options configure a Messenger. Every field but Identity, Logger, Now,
// PathOf and the durations is required.
type Options struct {
	Self     wire.Key
	SelfName string
	Store    Store
	// Dir finds peers. If it is also a Mailbox and Identity is set,
	// messages to offline peers go to their mailboxes, and ReceiveMail
	// takes ours; else a message to an offline peer fails (peer_offline).
	Dir      Directory
	Sessions Sessions
	Bus      *api.Bus
	// Identity is the node's Ed25519 private key (Self's): it seals what
	// we deposit and opens our mailbox.
	Identity ed25519.PrivateKey
	// OfflineGrace is how long after live delivery failed (no session, or
	// the stream ended with messages unacknowledged) a conversation waits
	// for receipts before it deposits. 0: 500 ms.
	OfflineGrace time.Duration
	// MailboxAge is the mailbox's age limit: a message created longer ago
	// is not deposited (error too_old). 0: 30 days.
	MailboxAge time.Duration
	// DrainWait bounds how long a live message waits for a drain of our
	// mailbox to end before it is shown. 0: 10 s.
	DrainWait time.Duration
	// PathOf names the path to a peer for message events ("direct",
	// "relay"). nil: "relay".
	PathOf func(wire.Key) string
	// DeliveryTimeout is how long a message may wait for its receipt
	// before it is reported undelivered. 0: 2 minutes.
	DeliveryTimeout time.Duration
	// Linger is how long a conversation keeps its stream open after its
	// last receipt. 0: 5 s.
	Linger time.Duration
	// Window bounds the messages from one peer waiting to be shown (on
	// all its streams): past it the receiver stops reading, and QUIC's
	// flow control holds the sender. So a peer cannot make us hold more
	// than Window of its messages. 0: 64.
	Window int
	// Rooms is the rendezvous's side of rooms. nil: no rooms (a message
	// to "#room" is refused).
	Rooms RoomDirectory
	// RoomRate bounds our messages to one room per second (a burst of
	// RoomBurst): more are refused (rate_limited). A receiver holds each
	// member to twice that. 0: 5 a second, bursts of 20.
	RoomRate  float64
	RoomBurst int
	// MaxFanout bounds the members a room message goes to (its copies):
	// a message to a bigger room is refused (room_full). 0: 256.
	MaxFanout int
	Logger    zerolog.Logger
	Now       func() time.Time
}

// Messenger runs the node's conversations. Create with New, then Start.
type Messenger struct {
	opts Options
	log  zerolog.Logger
	now  func() time.Time
	bus  *api.Bus
	ctx  context.Context
	wg   sync.WaitGroup

	mu sync.Mutex
	// Guarded by mu:
	convs     map[string]*conv    // by wire.NameKey(to)
	inboxes   map[wire.Key]*inbox // receiving state per peer with a stream or a message in flight
	conflicts map[string]conflict // by NameKey: a key the rendezvous offered against a pin
	reported  map[string]wire.Key // key_changed already reported for an incoming stream, by NameKey
	pending   int                 // messages not yet delivered or failed
	drained   chan struct{}       // closed when pending is 0
	incoming  []*outMsg           // accepted by Send, not yet in the outbox
	stopped   bool
	// drainDone is closed when the drain of our mailbox ends (nil: none
	// under way); live messages wait for it until drainUntil.
	drainDone  chan struct{}
	drainUntil time.Time

	persistWake chan struct{} // cap 1: incoming has messages
	mail        Mailbox       // nil: no offline delivery
	mailQ       chan mailIn   // ReceiveMail → the mail goroutine
	// box acknowledges receipts: the Dir, if it is a Mailbox (nil: none).
	box Mailbox
	// receipts wait for the receipt goroutine (guarded by mu), which
	// starts once the outbox is loaded; receiptWake (cap 1) says some do.
	receipts    []wire.Receipt
	receiptWake chan struct{}
	// drainGen counts the drains of our mailbox that ended (guarded by
	// mu).
	drainGen uint64

	roomsState
}

type conflict struct {
	name    string
	offered wire.Key
}

// New returns a Messenger.
func New(o Options) (*Messenger, error) {
	if o.Store == nil || o.Dir == nil || o.Sessions == nil || o.Bus == nil || o.SelfName == "" {
		return nil, errors.New("messenger: Store, Dir, Sessions, Bus and SelfName are required")
	}
	if o.DeliveryTimeout <= 0 {
		o.DeliveryTimeout = 2 * time.Minute
	}
	if o.Linger <= 0 {
		o.Linger = 5 * time.Second
	}
	if o.Window <= 0 {
		o.Window = 64
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.PathOf == nil {
		o.PathOf = func(wire.Key) string { return api.PathRelay }
	}
	if o.OfflineGrace <= 0 {
		o.OfflineGrace = 500 * time.Millisecond
	}
	if o.MailboxAge <= 0 {
		o.MailboxAge = 30 * 24 * time.Hour
	}
	if o.DrainWait <= 0 {
		o.DrainWait = 10 * time.Second
	}
	if o.RoomRate <= 0 {
		o.RoomRate = 5
	}
	if o.RoomBurst <= 0 {
		o.RoomBurst = 20
	}
	if o.MaxFanout <= 0 {
		o.MaxFanout = 256
	}
	d := make(chan struct{})
	close(d)
	m := &Messenger{
		opts: o, log: o.Logger, now: o.Now, bus: o.Bus,
		convs:     make(map[string]*conv),
		inboxes:   make(map[wire.Key]*inbox),
		conflicts: make(map[string]conflict),
		reported:  make(map[string]wire.Key),
		drained:   d,

		persistWake: make(chan struct{}, 1),
		mailQ:       make(chan mailIn, mailQueue),
		receiptWake: make(chan struct{}, 1),
	}
	m.rooms = make(map[string]*room)
	m.roomsReady = make(chan struct{})
	m.groups = make(map[wire.MsgID]*group)
	if mb, ok := o.Dir.(Mailbox); ok {
		m.box = mb
		if len(o.Identity) == ed25519.PrivateKeySize {
			m.mail = mb
		}
	}
	return m, nil
}

// Start resumes the outbox (each message is announced again with Sent,
// Resumed) and runs conversations until ctx is done; Wait waits for them.
func (m *Messenger) Start(ctx context.Context) error {
	out, err := m.opts.Store.Outbox()
	if err != nil {
		return fmt.Errorf("messenger: outbox: %w", err)
	}
	m.mu.Lock()
	m.ctx = ctx
	load := m.loadOnStart
	m.mu.Unlock()
	if load {
		m.Registered()
	}
	m.wg.Add(1)
	go func() { defer m.wg.Done(); m.persister(ctx) }()
	if m.mail != nil {
		m.wg.Add(1)
		go func() { defer m.wg.Done(); m.mailLoop(ctx) }()
	}
	resumed := make(map[wire.MsgID]int)      // copies of each room message
	roomMsgs := make(map[wire.MsgID]*outMsg) // a copy of each
	var msgs []*outMsg
	for _, om := range out {
		msg := &outMsg{id: om.ID, to: om.To, seq: om.Seq, kind: wire.MsgKind(om.Kind), text: om.Text, created: om.Created, deadline: om.Deadline, stored: om.Stored,
			room: om.Room, group: om.Group, members: om.Members}
		msgs = append(msgs, msg)
		if msg.group != (wire.MsgID{}) {
			m.resumeGroup(msg, resumed)
			roomMsgs[msg.group] = msg
			continue
		}
		// Only kinds APIKind knows are ever enqueued; were another found,
		// it would be resent as it was, and Sent would say text.
		kind, _ := APIKind(msg.kind)
		m.bus.Publish(&api.Sent{ID: om.ID.String(), To: om.To, Text: om.Text, Kind: kind, Resumed: true})
	}
	m.finishResume(resumed, roomMsgs)
	for _, msg := range msgs {
		if msg.stored {
			// In the recipient's mailbox: waiting for its receipt, which
			// the rendezvous sends after we register.
			msg.settled.Store(true)
			m.outcome(msg, &api.Stored{ID: msg.id.String(), To: msg.to})
		} else {
			m.addPending(1)
		}
		m.add(msg)
	}
	// Only now are receipts taken: one that came before would find its
	// message not yet back in its conversation.
	m.wg.Add(1)
	go func() { defer m.wg.Done(); m.receiptLoop(ctx) }()
	return nil
}

// Wait waits for every goroutine of the messenger after Start's ctx ended.
func (m *Messenger) Wait() {
	m.mu.Lock()
	m.stopped = true
	m.mu.Unlock()
	m.wg.Wait()
}

// addPending counts n more (or, negative, fewer) messages in flight.
func (m *Messenger) addPending(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pending == 0 && n > 0 {
		m.drained = make(chan struct{})
	}
	m.pending += n
	if m.pending == 0 && n < 0 {
		close(m.drained)
	}
}

// Drain waits until every message sent so far is delivered, stored in its
// recipient's mailbox, or has failed, or ctx is done.
func (m *Messenger) Drain(ctx context.Context) {
	m.mu.Lock()
	d := m.drained
	m.mu.Unlock()
	select {
	case <-d:
	case <-ctx.Done():
	}
}

// add adds msg, stored in the outbox, to the conversation with msg.to,
// creating and starting it. It holds m.mu throughout, so a conversation
// retiring (conv.retire) cannot lose it.
func (m *Messenger) add(msg *outMsg) {
	nk := wire.NameKey(msg.to)
	m.mu.Lock()
	c := m.convs[nk]
	if c == nil {
		c = &conv{m: m, to: msg.to, nk: nk, wake: make(chan struct{}, 1)}
		m.convs[nk] = c
		m.wg.Add(1)
		go func() { defer m.wg.Done(); c.run(m.ctx) }()
	}
	c.mu.Lock()
	c.queue = append(c.queue, msg)
	c.mu.Unlock()
	m.mu.Unlock()
	c.poke()
}

// persister stores what Send accepted in the outbox, in order and in
// batches (one fsync for many), announces each (Sent) and hands it to its
// conversation. It runs apart from the conversations, so one stuck on the
// network delays no one's Sent.
func (m *Messenger) persister(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.persistWake:
		}
		m.mu.Lock()
		taken := m.incoming
		m.incoming = nil
		m.mu.Unlock()
		// A room message becomes its copies, one per member (fanOut says
		// Sent for it).
		var in []*outMsg
		for _, msg := range taken {
			if wire.IsRoom(msg.to) {
				in = append(in, m.fanOut(ctx, msg)...)
			} else {
				in = append(in, msg)
			}
		}
		if len(in) == 0 {
			continue
		}
		recs := make([]store.OutMsg, len(in))
		for i, msg := range in {
			recs[i] = store.OutMsg{ID: msg.id, To: msg.to, Kind: uint8(msg.kind), Text: msg.text, Created: msg.created, Deadline: msg.deadline,
				Room: msg.room, Group: msg.group, Members: msg.members}
		}
		stored, err := m.opts.Store.Enqueue(recs...)
		for i, msg := range in {
			if err != nil {
				m.log.Error().Err(err).Msg("storing messages in the outbox")
				m.outcome(msg, &api.Error{Code: api.CodeState, Message: "cannot store the message: " + err.Error(), ID: msg.id.String(), To: msg.to})
				m.addPending(-1)
				continue
			}
			msg.seq = stored[i].Seq
			if msg.group == (wire.MsgID{}) {
				kind, _ := APIKind(msg.kind)
				m.bus.Publish(&api.Sent{ID: msg.id.String(), To: msg.to, Text: msg.text, Kind: kind})
			} else {
				m.announce(msg)
			}
			m.add(msg)
		}
	}
}

// Send sends text to the peer called to: Sent once it is in the outbox,
// then Delivered or an Error. Bad input is refused with an Error at once.
func (m *Messenger) Send(to, text string) { m.SendKind(to, wire.MsgText, text) }

// WireKind returns the wire kind of a message kind in the api (Send.Kind),
// and false for a kind this node cannot send.
func WireKind(kind string) (wire.MsgKind, bool) {
	switch kind {
	case api.KindText:
		return wire.MsgText, true
	case api.KindEmote:
		return wire.MsgEmote, true
	}
	return 0, false
}

// APIKind returns the api's name of a wire kind (the kind field of message
// and sent events), and false for a kind this node does not show.
func APIKind(k wire.MsgKind) (string, bool) {
	switch k {
	case wire.MsgText:
		return api.KindText, true
	case wire.MsgEmote:
		return api.KindEmote, true
	}
	return "", false
}

// SendKind is Send for a message of any kind this node knows (APIKind);
// another kind is refused with bad_command. The kind travels with the
// message: live, sealed in the peer's mailbox, and in the outbox across
// restarts.
func (m *Messenger) SendKind(to string, kind wire.MsgKind, text string) {
	if _, ok := APIKind(kind); !ok {
		m.bus.Publish(&api.Error{Code: api.CodeBadCommand, Message: fmt.Sprintf("messages of kind %d cannot be sent", kind), To: to})
		return
	}
	if e := ui.CheckText(text); e != nil {
		e.To = to
		if wire.IsRoom(to) {
			e.Room = to
		}
		m.bus.Publish(e)
		return
	}
	if wire.IsRoom(to) {
		if !m.checkRoomSend(to) {
			return
		}
	} else if err := wire.ValidateName(to); err != nil {
		m.bus.Publish(&api.Error{Code: api.CodeBadName, Message: err.Error(), To: to})
		return
	} else if wire.NameKey(to) == wire.NameKey(m.opts.SelfName) {
		m.bus.Publish(&api.Error{Code: api.CodeBadName, Message: "that is this node's own name", To: to})
		return
	}
	var id wire.MsgID
	rand.Read(id[:])
	now := m.now()
	m.addPending(1)
	m.mu.Lock()
	m.incoming = append(m.incoming, &outMsg{id: id, to: to, kind: kind, text: text, created: now, deadline: now.Add(m.opts.DeliveryTimeout)})
	m.mu.Unlock()
	select {
	case m.persistWake <- struct{}{}:
	default:
	}
}

// failed, delivered and expired publish a message's outcome and take it
// out of the outbox; the caller took it out of its conversation.

func (m *Messenger) failed(msg *outMsg, code, text string) {
	m.opts.Store.Done(msg.id)
	m.outcome(msg, &api.Error{Code: code, Message: text, ID: msg.id.String(), To: msg.to})
	m.settle(msg)
}

func (m *Messenger) delivered(msg *outMsg) {
	m.opts.Store.Done(msg.id)
	m.outcome(msg, &api.Delivered{ID: msg.id.String(), To: msg.to})
	m.settle(msg)
}

func (m *Messenger) expired(msg *outMsg) {
	m.opts.Store.Done(msg.id)
	m.outcome(msg, &api.Expired{ID: msg.id.String(), To: msg.to})
	m.settle(msg)
}

// settle counts msg out of the messages Drain waits for, once: at its
// outcome, or when it is stored in its recipient's mailbox.
func (m *Messenger) settle(msg *outMsg) {
	if msg.settled.CompareAndSwap(false, true) {
		m.addPending(-1)
	}
}

// maxReceipts bounds the receipts waiting for the receipt goroutine; the
// rendezvous repeats those dropped (they are not acknowledged).
const maxReceipts = 1024

// MailReceipt takes the rendezvous's receipt for a message we deposited
// (rvclient.MailObserver): delivered or expired. It never blocks: the
// receipt goroutine (once Start has loaded the outbox) takes the message
// out of its conversation, records its outcome durably, publishes it, and
// only then acknowledges the receipt (Mailbox.AckReceipt). One for a
// message not in flight (an outcome came already, or an earlier run gave
// up on it) is acknowledged once the message is durably out of the
// outbox.
func (m *Messenger) MailReceipt(r wire.Receipt) {
	m.mu.Lock()
	if len(m.receipts) >= maxReceipts {
		m.mu.Unlock()
		m.log.Debug().Stringer("id", r.ID).Msg("receipts behind; this one comes again")
		return
	}
	m.receipts = append(m.receipts, r)
	m.mu.Unlock()
	select {
	case m.receiptWake <- struct{}{}:
	default:
	}
}

// receiptLoop takes the receipts MailReceipt queued, until ctx is done.
func (m *Messenger) receiptLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.receiptWake:
		}
		m.takeReceipts()
	}
}

// takeReceipts records the outcomes of the receipts queued, durably
// (one commit for them all), publishes them, and acknowledges them.
func (m *Messenger) takeReceipts() {
	type taken struct {
		r     wire.Receipt
		msg   *outMsg // nil: not in flight
		owner *conv
	}
	m.mu.Lock()
	rs := m.receipts
	m.receipts = nil
	ts := make([]taken, len(rs))
	for i, r := range rs {
		ts[i].r = r
		for _, c := range m.convs {
			if msg := c.take(r.ID); msg != nil {
				ts[i].msg, ts[i].owner = msg, c
				break
			}
		}
	}
	m.mu.Unlock()
	if len(ts) == 0 {
		return
	}
	ids := make([]wire.MsgID, len(ts))
	for i, t := range ts {
		ids[i] = t.r.ID
	}
	m.opts.Store.Done(ids...)
	err := m.opts.Store.Flush()
	for _, t := range ts {
		msg, r := t.msg, t.r
		if msg == nil {
			m.log.Debug().Stringer("id", r.ID).Stringer("status", r.Status).Msg("receipt for a message not in flight")
			continue
		}
		switch r.Status {
		case wire.ReceiptDelivered:
			m.outcome(msg, &api.Delivered{ID: msg.id.String(), To: msg.to})
		case wire.ReceiptExpired:
			m.log.Info().Str("peer", msg.to).Stringer("id", msg.id).Msg("message expired unread in the mailbox")
			m.outcome(msg, &api.Expired{ID: msg.id.String(), To: msg.to})
		default:
			m.outcome(msg, &api.Error{Code: api.CodeUndelivered, ID: msg.id.String(), To: msg.to,
				Message: "the rendezvous gave an unknown outcome for the message (" + r.Status.String() + ")"})
		}
		m.settle(msg)
		t.owner.poke()
	}
	if err != nil {
		// Not acknowledged: the rendezvous repeats them (the store
		// retries the commit meanwhile).
		m.log.Error().Err(err).Int("receipts", len(ts)).Msg("recording receipts; not acknowledged")
		return
	}
	if m.box != nil {
		for _, t := range ts {
			m.box.AckReceipt(t.r.MailRef)
		}
	}
}

// --- trust on first use ---

// checkPin checks name↔k against the pins, pinning a first meeting. It
// returns a key_changed error (not yet published) on a conflict.
func (m *Messenger) checkPin(name string, k wire.Key) *api.Error {
	st := m.opts.Store
	byName, okName, err1 := st.PinByName(name)
	byKey, okKey, err2 := st.PinByKey(k)
	if err := errors.Join(err1, err2); err != nil {
		// A damaged pin must not read as "never met": refuse.
		m.log.Error().Err(err).Str("peer", name).Msg("reading pinned keys")
		return &api.Error{Code: api.CodeState, Peer: name, Message: "cannot read the pinned key of " + name + ": " + err.Error()}
	}
	switch {
	case okName && byName.Key != k:
		m.noteConflict(name, k)
		return &api.Error{Code: api.CodeKeyChanged, Peer: name, Fingerprint: byName.Key.Fingerprint(), NewFingerprint: k.Fingerprint(),
			Message: fmt.Sprintf("%s's key changed: pinned %s, the rendezvous now gives %s. "+
				"Check with %s out of band (/fingerprint %s), then /trust %s", name, byName.Key.Fingerprint(), k.Fingerprint(), name, name, name)}
	case okKey && wire.NameKey(byKey.Name) != wire.NameKey(name):
		m.noteConflict(name, k)
		return &api.Error{Code: api.CodeKeyChanged, Peer: name, NewFingerprint: k.Fingerprint(),
			Message: fmt.Sprintf("the rendezvous gives %s the key you know as %s's (%s). Check out of band, then /trust %s",
				name, byKey.Name, k.Fingerprint(), name)}
	case !okName:
		if err := st.SetPin(name, k); err != nil {
			m.log.Error().Err(err).Str("peer", name).Msg("pinning a key")
		} else {
			m.log.Info().Str("peer", name).Str("fingerprint", k.Fingerprint()).Msg("pinned a new peer's key")
		}
	}
	return nil
}

func (m *Messenger) noteConflict(name string, k wire.Key) {
	m.mu.Lock()
	m.conflicts[wire.NameKey(name)] = conflict{name: name, offered: k}
	m.mu.Unlock()
}

// Trust pins name to the key the rendezvous gives for it now.
func (m *Messenger) Trust(ctx context.Context, name string) {
	if err := wire.ValidateName(name); err != nil {
		m.bus.Publish(&api.Error{Code: api.CodeBadName, Message: err.Error(), Peer: name})
		return
	}
	r, err := m.opts.Dir.Lookup(ctx, name, wire.Key{})
	switch {
	case err != nil:
		m.bus.Publish(&api.Error{Code: api.CodeRendezvousUnreachable, Peer: name, Message: "cannot reach the rendezvous to find " + name})
		return
	case r.Status == wire.LookupUnknown:
		m.bus.Publish(&api.Error{Code: api.CodeUnknownPeer, Peer: name, Message: "no one is registered as " + name})
		return
	}
	if err := m.opts.Store.SetPin(r.Name, r.Key); err != nil {
		m.bus.Publish(&api.Error{Code: api.CodeState, Peer: name, Message: "cannot pin " + name + "'s key: " + err.Error()})
		return
	}
	m.mu.Lock()
	delete(m.conflicts, wire.NameKey(name))
	delete(m.reported, wire.NameKey(name))
	m.mu.Unlock()
	m.log.Info().Str("peer", r.Name).Str("fingerprint", r.Key.Fingerprint()).Msg("trusted a key")
	m.bus.Publish(&api.Trusted{Name: r.Name, Fingerprint: r.Key.Fingerprint()})
}

// Fingerprint publishes the fingerprint of our key (name empty) or name's.
func (m *Messenger) Fingerprint(ctx context.Context, name string) {
	if name == "" || wire.NameKey(name) == wire.NameKey(m.opts.SelfName) {
		m.bus.Publish(&api.Fingerprint{Name: m.opts.SelfName, Key: m.opts.Self.String(), Fingerprint: m.opts.Self.Fingerprint(), Self: true})
		return
	}
	if err := wire.ValidateName(name); err != nil {
		m.bus.Publish(&api.Error{Code: api.CodeBadName, Message: err.Error(), Peer: name})
		return
	}
	if p, ok, err := m.opts.Store.PinByName(name); err == nil && ok {
		m.bus.Publish(&api.Fingerprint{Name: p.Name, Key: p.Key.String(), Fingerprint: p.Key.Fingerprint(), Pinned: true})
		return
	}
	r, err := m.opts.Dir.Lookup(ctx, name, wire.Key{})
	switch {
	case err != nil:
		m.bus.Publish(&api.Error{Code: api.CodeRendezvousUnreachable, Peer: name, Message: "cannot reach the rendezvous to find " + name})
	case r.Status == wire.LookupUnknown:
		m.bus.Publish(&api.Error{Code: api.CodeUnknownPeer, Peer: name, Message: "no one is registered as " + name})
	default:
		m.bus.Publish(&api.Fingerprint{Name: r.Name, Key: r.Key.String(), Fingerprint: r.Key.Fingerprint()})
	}
}

// KeyOf returns the key of the peer called name for a file transfer: the
// rendezvous's answer, checked against the pinned key (trust on first
// use), or the error event to show (bad_name, unknown_peer,
// peer_offline: files do not wait in mailboxes, key_changed,
// rendezvous_unreachable).
func (m *Messenger) KeyOf(ctx context.Context, name string) (wire.Key, *api.Error) {
	if err := wire.ValidateName(name); err != nil {
		return wire.Key{}, &api.Error{Code: api.CodeBadName, Message: err.Error(), To: name}
	}
	if wire.NameKey(name) == wire.NameKey(m.opts.SelfName) {
		return wire.Key{}, &api.Error{Code: api.CodeBadName, Message: "that is this node's own name", To: name}
	}
	r, err := m.opts.Dir.Lookup(ctx, name, wire.Key{})
	switch {
	case err != nil:
		return wire.Key{}, &api.Error{Code: api.CodeRendezvousUnreachable, To: name, Message: "cannot reach the rendezvous to find " + name}
	case r.Status == wire.LookupUnknown:
		return wire.Key{}, &api.Error{Code: api.CodeUnknownPeer, To: name, Message: "no one is registered as " + name}
	case r.Status == wire.LookupOffline && !m.opts.Sessions.Connected(r.Key):
		return wire.Key{}, &api.Error{Code: api.CodePeerOffline, To: name, Message: name + " is not online: files are sent only to peers online (they do not wait in mailboxes)"}
	}
	if e := m.checkPin(r.Name, r.Key); e != nil {
		return wire.Key{}, e
	}
	return r.Key, nil
}

// NameOf returns the name of the peer with key k for a file transfer:
// the name pinned to k, else the rendezvous's, checked against the pins.
func (m *Messenger) NameOf(ctx context.Context, k wire.Key) (string, error) {
	if p, ok, err := m.opts.Store.PinByKey(k); err == nil && ok {
		return p.Name, nil
	}
	name, err := m.opts.Dir.NameOf(ctx, k)
	if err != nil {
		return "", err
	}
	if e := m.checkPin(name, k); e != nil {
		m.reportConflict(name, k, e)
		return "", errors.New(e.Message)
	}
	return name, nil
}
