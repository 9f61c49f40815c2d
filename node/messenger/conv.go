package messenger

import (
	"context"
	"sync"
	"time"

	"natchat/node/api"
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

	mu sync.Mutex
	// Guarded by mu:
	queue []*outMsg
	gen   uint64 // stream generation: a message is on the wire if sentGen == gen
}

type outMsg struct {
	id       wire.MsgID
	to       string // as typed for this message: its outcome says the same
	seq      uint64
	text     string
	created  time.Time
	deadline time.Time
	sentGen  uint64
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

func (c *conv) empty() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue) == 0
}

// failAll reports every queued message as failed.
func (c *conv) failAll(e *api.Error) {
	c.mu.Lock()
	q := c.queue
	c.queue = nil
	c.mu.Unlock()
	for _, msg := range q {
		ev := *e
		ev.ID, ev.To = msg.id.String(), msg.to
		c.m.opts.Store.Done(msg.id)
		c.m.bus.Publish(&ev)
		c.m.addPending(-1)
	}
}

// expire reports messages past their deadline and returns the next
// deadline (zero if none).
func (c *conv) expire(now time.Time) time.Time {
	var dead []*outMsg
	var next time.Time
	c.mu.Lock()
	q := c.queue[:0]
	for _, msg := range c.queue {
		if !now.Before(msg.deadline) {
			dead = append(dead, msg)
			continue
		}
		if next.IsZero() || msg.deadline.Before(next) {
			next = msg.deadline
		}
		q = append(q, msg)
	}
	clear(c.queue[len(q):])
	c.queue = q
	c.mu.Unlock()
	for _, msg := range dead {
		c.m.failed(msg, api.CodeUndelivered, "no delivery receipt within "+c.m.opts.DeliveryTimeout.String())
	}
	return next
}

// ack removes id from the queue and reports it delivered.
func (c *conv) ack(id wire.MsgID) {
	c.mu.Lock()
	var done *outMsg
	for i, msg := range c.queue {
		if msg.id == id {
			c.queue = append(c.queue[:i], c.queue[i+1:]...)
			done = msg
			break
		}
	}
	c.mu.Unlock()
	if done != nil {
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
		if c.empty() {
			if sess != nil && now.Sub(sess.last) >= m.opts.Linger {
				sess.st.CloseWrite() // the peer sees EOF; its side ends
				sess.close()
				sess = nil
			}
			if sess == nil && c.retire() {
				return
			}
			var linger time.Time
			if sess != nil {
				linger = sess.last.Add(m.opts.Linger)
			}
			if !c.wait(ctx, linger, sess) {
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
		*backoff = min(max(2**backoff, 250*time.Millisecond), 5*time.Second)
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
	case r.Status == wire.LookupOffline:
		c.failAll(&api.Error{Code: api.CodePeerOffline, Message: r.Name + " is not online (offline delivery is not available yet)"})
		return nil, false
	case r.Key == m.opts.Self:
		c.failAll(&api.Error{Code: api.CodeBadName, Message: "that is this node's own name"})
		return nil, false
	}
	if e := m.checkPin(r.Name, r.Key); e != nil {
		c.failAll(e)
		return nil, false
	}
	c.key = r.Key
	st, err := m.opts.Sessions.OpenChat(ctx, r.Key)
	if err != nil {
		if ctx.Err() != nil {
			return nil, false
		}
		return retry("session to peer failed", err)
	}
	*backoff = 0
	return st, true
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
func (c *conv) writePending(s *chat, deadline time.Time) error {
	c.mu.Lock()
	var buf []byte
	for _, msg := range c.queue {
		if msg.sentGen == c.gen {
			continue
		}
		msg.sentGen = c.gen
		buf = wire.AppendMsg(buf, &wire.Msg{ID: msg.id, Seq: msg.seq, SentMS: msg.created.UnixMilli(), Text: msg.text})
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
