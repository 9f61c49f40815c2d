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

// Store is the durable state the messenger keeps (package store).
type Store interface {
	Enqueue(msgs ...store.OutMsg) ([]store.OutMsg, error)
	Outbox() ([]store.OutMsg, error)
	Done(ids ...wire.MsgID)
	Shown(peer wire.Key, id wire.MsgID) bool
	MarkShown(peer wire.Key, id wire.MsgID) error
	PinByName(name string) (store.Pin, bool, error)
	PinByKey(k wire.Key) (store.Pin, bool, error)
	SetPin(name string, k wire.Key) error
}

var _ Store = (*store.Store)(nil)

// Options configure a Messenger. Every field but Logger, Now, PathOf and
// the durations is required.
type Options struct {
	Self     wire.Key
	SelfName string
	Store    Store
	Dir      Directory
	Sessions Sessions
	Bus      *api.Bus
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
	Logger zerolog.Logger
	Now    func() time.Time
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

	persistWake chan struct{} // cap 1: incoming has messages
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
	d := make(chan struct{})
	close(d)
	return &Messenger{
		opts: o, log: o.Logger, now: o.Now, bus: o.Bus,
		convs:     make(map[string]*conv),
		inboxes:   make(map[wire.Key]*inbox),
		conflicts: make(map[string]conflict),
		reported:  make(map[string]wire.Key),
		drained:   d,

		persistWake: make(chan struct{}, 1),
	}, nil
}

// Start resumes the outbox (each message is announced again with Sent,
// Resumed) and runs conversations until ctx is done; Wait waits for them.
func (m *Messenger) Start(ctx context.Context) error {
	m.ctx = ctx
	m.wg.Add(1)
	go func() { defer m.wg.Done(); m.persister(ctx) }()
	out, err := m.opts.Store.Outbox()
	if err != nil {
		return fmt.Errorf("messenger: outbox: %w", err)
	}
	for _, om := range out {
		msg := &outMsg{id: om.ID, to: om.To, seq: om.Seq, text: om.Text, created: om.Created, deadline: om.Deadline}
		m.bus.Publish(&api.Sent{ID: om.ID.String(), To: om.To, Text: om.Text, Resumed: true})
		m.addPending(1)
		m.add(msg)
	}
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

// Drain waits until every message sent so far is delivered or has failed,
// or ctx is done.
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
		in := m.incoming
		m.incoming = nil
		m.mu.Unlock()
		if len(in) == 0 {
			continue
		}
		recs := make([]store.OutMsg, len(in))
		for i, msg := range in {
			recs[i] = store.OutMsg{ID: msg.id, To: msg.to, Text: msg.text, Created: msg.created, Deadline: msg.deadline}
		}
		stored, err := m.opts.Store.Enqueue(recs...)
		for i, msg := range in {
			if err != nil {
				m.log.Error().Err(err).Msg("storing messages in the outbox")
				m.bus.Publish(&api.Error{Code: api.CodeState, Message: "cannot store the message: " + err.Error(), ID: msg.id.String(), To: msg.to})
				m.addPending(-1)
				continue
			}
			msg.seq = stored[i].Seq
			m.bus.Publish(&api.Sent{ID: msg.id.String(), To: msg.to, Text: msg.text})
			m.add(msg)
		}
	}
}

// Send sends text to the peer called to: Sent once it is in the outbox,
// then Delivered or an Error. Bad input is refused with an Error at once.
func (m *Messenger) Send(to, text string) {
	if err := wire.ValidateName(to); err != nil {
		m.bus.Publish(&api.Error{Code: api.CodeBadName, Message: err.Error(), To: to})
		return
	}
	if e := ui.CheckText(text); e != nil {
		e.To = to
		m.bus.Publish(e)
		return
	}
	if wire.NameKey(to) == wire.NameKey(m.opts.SelfName) {
		m.bus.Publish(&api.Error{Code: api.CodeBadName, Message: "that is this node's own name", To: to})
		return
	}
	var id wire.MsgID
	rand.Read(id[:])
	now := m.now()
	m.addPending(1)
	m.mu.Lock()
	m.incoming = append(m.incoming, &outMsg{id: id, to: to, text: text, created: now, deadline: now.Add(m.opts.DeliveryTimeout)})
	m.mu.Unlock()
	select {
	case m.persistWake <- struct{}{}:
	default:
	}
}

// failed and delivered publish a message's outcome and take it out of the
// outbox.

func (m *Messenger) failed(msg *outMsg, code, text string) {
	m.opts.Store.Done(msg.id)
	m.bus.Publish(&api.Error{Code: code, Message: text, ID: msg.id.String(), To: msg.to})
	m.addPending(-1)
}

func (m *Messenger) delivered(msg *outMsg) {
	m.opts.Store.Done(msg.id)
	m.bus.Publish(&api.Delivered{ID: msg.id.String(), To: msg.to})
	m.addPending(-1)
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
