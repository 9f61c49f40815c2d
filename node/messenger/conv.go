package messenger

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"natchat/node/api"
	"natchat/node/mailbox"
	"natchat/wire"
)

// A conv is our sending side of a conversation with one name: the stored
// messages awaiting their receipts, in order (queue), and the goroutine
// that resolves the name, keeps a stream to the peer and (re)writes
// whatever is unacknowledged, in order, on every new stream. Messages come
// in from the messenger's persister once they are in the outbox, so a
// conversation stuck on the network never holds up Sent.
type conv struct {
	m    *Messenger
	to   string // the name as first typed
	nk   string // wire.NameKey(to)
	wake chan struct{}
	key  wire.Key // the peer's key once looked up and checked (or pinned); used by run only
	// liveEnd is when live delivery last failed (a stream ended with
	// messages unacknowledged, or no session could be opened): deposits
	// wait OfflineGrace after it. Used by run only.
	liveEnd time.Time
	// online: the rendezvous said the peer is online when we deposited;
	// the next attempt is live whatever a lookup says. Used by run only.
	online bool

	mu sync.Mutex
	// Guarded by mu:
	queue []*outMsg
	gen   uint64 // stream generation: a message is on the wire if sentGen == gen
}

type outMsg struct {
	id       wire.MsgID
	to       string // as typed for this message: its outcome says the same
	seq      uint64
	kind     wire.MsgKind
	text     string
	created  time.Time
	deadline time.Time
	sentGen  uint64
	// stored: in the recipient's mailbox, waiting for the rendezvous's
	// receipt; no longer written live, no deadline. Guarded by conv.mu.
	stored  bool
	settled atomic.Bool // counted out of Messenger.pending
	// For one member's copy of a room message: the room, the room
	// message's ID, and how many copies it has; zero for 1:1.
	room    string
	group   wire.MsgID
	members uint32
	// counted: the copy's first outcome is counted in its group. Guarded
	// by Messenger.gmu.
	counted bool
}

// wire returns msg as it goes to the peer, live or sealed in its mailbox.
func (msg *outMsg) wire() *wire.Msg {
	return &wire.Msg{ID: msg.id, Seq: msg.seq, SentMS: msg.created.UnixMilli(), Kind: msg.kind, Text: msg.text, Room: msg.room, Group: msg.group}
}

func (c *conv) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// retire removes the conversation when it has nothing left to do; it
// reports whether it did. The persister holds m.mu while it adds to a
// conversation, so nothing can be added to a retired one.
func (c *conv) retire() bool {
	m := c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) > 0 {
		return false
	}
	if m.convs[c.nk] == c {
		delete(m.convs, c.nk)
	}
	return true
}

// unsent reports whether a queued message is not in the peer's mailbox:
// one to deliver live or to deposit.
func (c *conv) unsent() bool { return c.firstUnsent() != nil }

// nextBackoff doubles a retry pause, from 250 ms up to 5 s.
func nextBackoff(d time.Duration) time.Duration {
	return min(max(2*d, 250*time.Millisecond), 5*time.Second)
}

// failAll reports every queued message not in the peer's mailbox as
// failed.
func (c *conv) failAll(e *api.Error) {
	c.mu.Lock()
	var q []*outMsg
	keep := c.queue[:0]
	for _, msg := range c.queue {
		if msg.stored {
			keep = append(keep, msg)
		} else {
			q = append(q, msg)
		}
	}
	clear(c.queue[len(keep):])
	c.queue = keep
	c.mu.Unlock()
	for _, msg := range q {
		ev := *e
		ev.ID, ev.To = msg.id.String(), msg.to
		c.m.opts.Store.Done(msg.id)
		c.m.outcome(msg, &ev)
		c.m.settle(msg)
	}
}

// take removes the message id from the queue and returns it (nil if it
// is not there).
func (c *conv) take(id wire.MsgID) *outMsg {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, msg := range c.queue {
		if msg.id == id {
			c.queue = append(c.queue[:i], c.queue[i+1:]...)
			return msg
		}
	}
	return nil
}

// remove removes msg from the queue and reports whether it was there (an
// outcome may have taken it meanwhile).
func (c *conv) remove(msg *outMsg) bool { return c.take(msg.id) == msg }

// storedSlack is how long past the mailbox's age limit a stored message
// waits for the rendezvous's receipt before it is given up as expired (a
// rendezvous that lost its mailboxes sends none).
const storedSlack = 24 * time.Hour

// expire reports messages past their deadline (for a stored message: past
// the mailbox's age limit and storedSlack) and returns the next deadline
// (zero if none).
func (c *conv) expire(now time.Time) time.Time {
	var dead, gone []*outMsg
	var next time.Time
	c.mu.Lock()
	q := c.queue[:0]
	for _, msg := range c.queue {
		deadline := msg.deadline
		if msg.stored {
			deadline = msg.created.Add(c.m.opts.MailboxAge + storedSlack)
		}
		switch {
		case now.Before(deadline):
			if next.IsZero() || deadline.Before(next) {
				next = deadline
			}
			q = append(q, msg)
		case msg.stored:
			gone = append(gone, msg)
		default:
			dead = append(dead, msg)
		}
	}
	clear(c.queue[len(q):])
	c.queue = q
	c.mu.Unlock()
	for _, msg := range dead {
		c.m.failed(msg, api.CodeUndelivered, "no delivery receipt within "+c.m.opts.DeliveryTimeout.String())
	}
	for _, msg := range gone {
		c.m.log.Warn().Str("peer", msg.to).Stringer("id", msg.id).Msg("no receipt from the rendezvous for a stored message past the mailbox's age limit; given up as expired")
		c.m.expired(msg)
	}
	return next
}

// ack removes id from the queue and reports it delivered.
func (c *conv) ack(id wire.MsgID) {
	if done := c.take(id); done != nil {
		c.m.delivered(done)
	}
}

// chat is one stream to the peer and its receipt reader.
type chat struct {
	st   Stream
	dead chan struct{} // closed when the receipt reader stops
	last time.Time     // of the last receipt or write
}

func (s *chat) close() {
	s.st.Close()
	<-s.dead
}

func (c *conv) run(ctx context.Context) {
	m := c.m
	var (
		sess    *chat
		backoff time.Duration
	)
	defer func() {
		if sess != nil {
			sess.close()
		}
	}()
	for ctx.Err() == nil {
		now := m.now()
		next := c.expire(now)
		if !c.unsent() {
			// Nothing to send: idle (messages in the peer's mailbox wait
			// for their receipts, which poke us).
			if sess != nil && now.Sub(sess.last) >= m.opts.Linger {
				sess.st.CloseWrite() // the peer sees EOF; its side ends
				sess.close()
				sess = nil
			}
			if sess == nil && c.retire() {
				return
			}
			until := next // a stored message's end
			if sess != nil {
				if linger := sess.last.Add(m.opts.Linger); until.IsZero() || linger.Before(until) {
					until = linger
				}
			}
			if !c.wait(ctx, until, sess) {
				return
			}
			sess = c.reap(sess)
			continue
		}
		if sess == nil {
			st, ok := c.connect(ctx, &backoff)
			if !ok {
				continue
			}
			sess = c.startChat(ctx, st)
			c.mu.Lock()
			c.gen++
			c.mu.Unlock()
		}
		if err := c.writePending(sess, next); err != nil {
			m.log.Info().Err(err).Str("peer", c.to).Msg("chat stream write failed")
			sess.close()
			sess = nil
			c.liveEnd = m.now()
			continue
		}
		if !c.wait(ctx, next, sess) {
			return
		}
		sess = c.reap(sess)
	}
}

// reap closes s and returns nil if its receipt reader has stopped (the
// stream ended), else returns s.
func (c *conv) reap(s *chat) *chat {
	if s == nil {
		return nil
	}
	select {
	case <-s.dead:
		s.close()
		if c.unsent() {
			c.liveEnd = c.m.now()
		}
		return nil
	default:
		return s
	}
}

// connect finds the peer and opens a chat stream to it. On failure it
// fails the queue (unknown, offline, key changed) or waits before the next
// try (the rendezvous or the peer did not answer: messages keep their
// deadlines), and reports false.
func (c *conv) connect(ctx context.Context, backoff *time.Duration) (Stream, bool) {
	m := c.m
	key := c.key
	if key.IsZero() {
		if p, ok, err := m.opts.Store.PinByName(c.to); err == nil && ok {
			key = p.Key
		}
	}
	if !key.IsZero() && m.opts.Sessions.Connected(key) {
		// A session with the key we know for this name is up: the peer is
		// there, whatever the rendezvous (restarting, say) says now. A
		// peer that leaves ends its session.
		if st, err := m.opts.Sessions.OpenChat(ctx, key); err == nil {
			c.key = key
			*backoff = 0
			return st, true
		}
	}
	retry := func(why string, err error) (Stream, bool) {
		*backoff = nextBackoff(*backoff)
		m.log.Info().Err(err).Str("peer", c.to).Dur("retry_in", *backoff).Msg(why)
		c.sleep(ctx, *backoff)
		return nil, false
	}
	r, err := m.opts.Dir.Lookup(ctx, c.to, wire.Key{})
	switch {
	case ctx.Err() != nil:
		return nil, false
	case err != nil:
		return retry("lookup failed", err)
	case r.Status == wire.LookupUnknown:
		c.failAll(&api.Error{Code: api.CodeUnknownPeer, Message: "no one is registered as " + c.to})
		return nil, false
	case r.Key == m.opts.Self:
		c.failAll(&api.Error{Code: api.CodeBadName, Message: "that is this node's own name"})
		return nil, false
	case r.Status == wire.LookupOffline && m.mail == nil:
		c.failAll(&api.Error{Code: api.CodePeerOffline, Message: r.Name + " is not online (this node has no offline delivery)"})
		return nil, false
	}
	if e := m.checkPin(r.Name, r.Key); e != nil {
		c.failAll(e)
		return nil, false
	}
	c.key = r.Key
	online := c.online
	c.online = false
	if r.Status == wire.LookupOffline && !online {
		return c.deposit(ctx, backoff)
	}
	st, err := m.opts.Sessions.OpenChat(ctx, r.Key)
	if err != nil {
		if ctx.Err() != nil {
			return nil, false
		}
		if m.mail == nil {
			return retry("session to peer failed", err)
		}
		m.log.Info().Err(err).Str("peer", c.to).Msg("session to peer failed; depositing in its mailbox unless it is online")
		c.liveEnd = m.now()
		return c.deposit(ctx, backoff)
	}
	*backoff = 0
	return st, true
}

// deposit puts the queued messages not yet there into the peer's mailbox,
// in order, one at a time, after OfflineGrace since live delivery last
// failed. It reports no stream: the caller tries again, live when the
// rendezvous says the peer is online.
func (c *conv) deposit(ctx context.Context, backoff *time.Duration) (Stream, bool) {
	m := c.m
	if wait := c.liveEnd.Add(m.opts.OfflineGrace).Sub(m.now()); wait > 0 {
		// Receipts of what went out live may still come (the stream
		// outlives its peer's departure by a moment).
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, false
		case <-t.C:
		}
		if !c.unsent() {
			return nil, false
		}
	}
	for ctx.Err() == nil {
		msg := c.firstUnsent()
		if msg == nil {
			*backoff = 0
			return nil, false
		}
		if age := m.now().Sub(msg.created); age > m.opts.MailboxAge {
			if c.remove(msg) {
				m.failed(msg, api.CodeTooOld, fmt.Sprintf("the message is %s old, over the mailbox's limit of %s: %s was not reached in time",
					age.Round(time.Second), m.opts.MailboxAge, c.to))
			}
			continue
		}
		blob, err := mailbox.Seal(m.opts.Identity, c.key, msg.wire())
		if err != nil {
			if c.remove(msg) {
				m.failed(msg, api.CodeState, "cannot seal the message for "+c.to+"'s mailbox: "+err.Error())
			}
			continue
		}
		st, err := m.mail.Deposit(ctx, c.key, msg.id, blob)
		if err != nil {
			if ctx.Err() != nil {
				return nil, false
			}
			*backoff = nextBackoff(*backoff)
			m.log.Info().Err(err).Str("peer", c.to).Dur("retry_in", *backoff).Msg("deposit failed")
			c.sleep(ctx, *backoff)
			return nil, false
		}
		m.log.Debug().Str("peer", c.to).Stringer("id", msg.id).Stringer("status", st).Msg("deposit")
		switch st {
		case wire.MailStored:
			c.stored(msg)
		case wire.MailOnline:
			// A stale view of its presence: deliver live.
			m.log.Info().Str("peer", c.to).Msg("the rendezvous says the peer is online; delivering live")
			*backoff = 0
			c.online = true
			c.liveEnd = time.Time{}
			return nil, false
		case wire.MailFull, wire.MailShare, wire.MailQuota:
			why := c.to + "'s mailbox is full; try again when " + c.to + " has been online"
			switch st {
			case wire.MailShare:
				why = "your share of " + c.to + "'s mailbox is used up (other senders' messages wait there too); try again when " + c.to + " has been online"
			case wire.MailQuota:
				why = "you have as many messages waiting in offline mailboxes as the rendezvous allows; try again when some were delivered"
			}
			if c.remove(msg) {
				m.failed(msg, api.CodeMailboxFull, why)
			}
		case wire.MailUnknown:
			if c.remove(msg) {
				m.failed(msg, api.CodeUnknownPeer, "the rendezvous knows no one with "+c.to+"'s key")
			}
		default:
			if c.remove(msg) {
				m.failed(msg, api.CodeUndelivered, "the rendezvous refused the message for "+c.to+"'s mailbox ("+st.String()+")")
			}
		}
	}
	return nil, false
}

// firstUnsent returns the first queued message not in the peer's mailbox.
func (c *conv) firstUnsent() *outMsg {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, msg := range c.queue {
		if !msg.stored {
			return msg
		}
	}
	return nil
}

// stored records that msg is in the peer's mailbox: durably in the outbox
// first, then for the front end.
func (c *conv) stored(msg *outMsg) {
	m := c.m
	if err := m.opts.Store.MarkStored(msg.id); err != nil {
		// The rendezvous has it; a restart deposits it again (the
		// rendezvous and the receiver take it once).
		m.log.Error().Err(err).Stringer("id", msg.id).Msg("recording a stored message")
	}
	c.mu.Lock()
	queued := false
	for _, q := range c.queue {
		if q == msg {
			queued = true
			break
		}
	}
	if queued {
		msg.stored = true
		// Published under c.mu: an outcome taking the message (take) comes
		// after this event.
		m.outcome(msg, &api.Stored{ID: msg.id.String(), To: msg.to})
	}
	c.mu.Unlock()
	if queued {
		m.settle(msg)
	}
}

func (c *conv) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	case <-c.wake: // new messages: their deadlines start now, try at once
	}
}

// startChat starts reading receipts on st.
func (c *conv) startChat(ctx context.Context, st Stream) *chat {
	s := &chat{st: st, dead: make(chan struct{}), last: c.m.now()}
	c.m.wg.Add(1)
	go func() {
		defer c.m.wg.Done()
		defer close(s.dead)
		defer c.poke()
		err := readFrames(st, func(k wire.FrameKind, body []byte) error {
			if k != wire.FrameAck {
				return nil // unknown kinds are skipped
			}
			id, err := wire.ParseAck(body)
			if err != nil {
				return err
			}
			c.ack(id)
			c.poke()
			return nil
		})
		if ctx.Err() == nil {
			c.m.log.Debug().Err(err).Str("peer", c.to).Msg("chat stream ended")
		}
	}()
	return s
}

// writePending writes the queued messages not yet on this stream, in
// order. A peer that does not read (flow control) holds the write at most
// until the next deadline (zero: none), so that messages expire on time;
// the stream, perhaps cut in a frame, is then given up.
//
// Nothing is written after a message that waits in the peer's mailbox:
// the peer shows its mail before it acknowledges it, so once the receipts
// of the stored messages are in, what follows goes live and is shown
// after them. Writing it earlier would let a live message overtake older
// stored ones whenever the peer's fetch is cut short (it leaves again, or
// its drain gives up).
func (c *conv) writePending(s *chat, deadline time.Time) error {
	c.mu.Lock()
	var buf []byte
	for _, msg := range c.queue {
		if msg.stored {
			break // its receipt pokes us
		}
		if msg.sentGen == c.gen {
			continue
		}
		msg.sentGen = c.gen
		buf = wire.AppendMsg(buf, msg.wire())
	}
	c.mu.Unlock()
	if len(buf) == 0 {
		return nil
	}
	s.last = c.m.now()
	s.st.SetWriteDeadline(deadline)
	_, err := s.st.Write(buf)
	return err
}

// wait waits for news (a message, a receipt, the stream's end) or until
// the time until (zero: none); false when ctx is done.
func (c *conv) wait(ctx context.Context, until time.Time, s *chat) bool {
	var timeout <-chan time.Time
	if !until.IsZero() {
		t := time.NewTimer(max(until.Sub(c.m.now()), 0) + time.Millisecond)
		defer t.Stop()
		timeout = t.C
	}
	var dead chan struct{}
	if s != nil {
		dead = s.dead
	}
	select {
	case <-ctx.Done():
		return false
	case <-c.wake:
		if s != nil {
			s.last = c.m.now()
		}
	case <-timeout:
	case <-dead:
	}
	return true
}
