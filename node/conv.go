package node

import (
	"context"
	"crypto/rand"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/quic-go/quic-go"

	"natchat/node/link"
	"natchat/wire"
)

// A conv is our sending side of a conversation with one name: an ordered
// queue of messages awaiting their receipts, and the goroutine that
// resolves the name, keeps a session connection and stream to the peer,
// and (re)sends whatever is unacknowledged, in order, on every new stream.
// The receiver drops duplicates by ID, so resending is safe: nothing is
// lost, duplicated or reordered.
type conv struct {
	n    *Node
	to   string // the name as the user typed it
	wake chan struct{}

	mu sync.Mutex
	// Guarded by mu:
	queue []*outMsg
	gen   uint64 // stream generation; a message is on the wire if sentGen == gen
}

type outMsg struct {
	id       wire.MsgID
	to       string // as typed for this message: its Delivered or Error says the same
	text     string
	deadline time.Time
	sentGen  uint64
}

func (c *conv) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Send queues text for the peer called to, emitting Sent with the message's
// ID, then later exactly one Delivered or Error for that ID. It returns the
// ID, or "" when the message was refused at once (an Error was emitted).
func (n *Node) Send(to, text string) string {
	if err := wire.ValidateName(to); err != nil {
		n.emit(&Error{Header: hdr("error"), Code: CodeBadName, Message: err.Error(), To: to})
		return ""
	}
	if text == "" || !utf8.ValidString(text) || len(text) > wire.MaxTextLen {
		n.emit(&Error{Header: hdr("error"), Code: CodeBadText, To: to,
			Message: "message text must be 1 to 16384 bytes of UTF-8"})
		return ""
	}
	var id wire.MsgID
	rand.Read(id[:])
	nk := wire.NameKey(to)
	n.mu.Lock()
	if n.quitting {
		n.mu.Unlock()
		return ""
	}
	n.lastTo = to
	c := n.convs[nk]
	if c == nil {
		c = &conv{n: n, to: to, wake: make(chan struct{}, 1)}
		n.convs[nk] = c
		n.wg.Add(1)
		go func() { defer n.wg.Done(); c.run(n.ctx) }()
	}
	n.mu.Unlock()
	// Sent is emitted before the message can be delivered, so a Delivered
	// never precedes its Sent.
	n.emit(&Sent{Header: hdr("sent"), ID: id.String(), To: to, Text: text})
	c.mu.Lock()
	c.queue = append(c.queue, &outMsg{id: id, to: to, text: text, deadline: time.Now().Add(n.opts.DeliveryTimeout)})
	c.mu.Unlock()
	c.poke()
	return id.String()
}

// failAll reports every queued message as failed with code.
func (c *conv) failAll(code, msg string) {
	c.mu.Lock()
	q := c.queue
	c.queue = nil
	c.mu.Unlock()
	for _, m := range q {
		c.n.emit(&Error{Header: hdr("error"), Code: code, Message: msg, ID: m.id.String(), To: m.to})
	}
}

// expire reports messages past their deadline and returns the next deadline.
func (c *conv) expire(now time.Time) time.Time {
	var dead []*outMsg
	var next time.Time
	c.mu.Lock()
	q := c.queue[:0]
	for _, m := range c.queue {
		if now.After(m.deadline) {
			dead = append(dead, m)
			continue
		}
		if next.IsZero() || m.deadline.Before(next) {
			next = m.deadline
		}
		q = append(q, m)
	}
	clear(c.queue[len(q):])
	c.queue = q
	c.mu.Unlock()
	for _, m := range dead {
		c.n.emit(&Error{Header: hdr("error"), Code: CodeUndelivered, ID: m.id.String(), To: m.to,
			Message: "no delivery receipt within " + c.n.opts.DeliveryTimeout.String()})
	}
	return next
}

// ack removes id from the queue and reports it delivered.
func (c *conv) ack(id wire.MsgID) {
	c.mu.Lock()
	var done *outMsg
	for i, m := range c.queue {
		if m.id == id {
			c.queue = append(c.queue[:i], c.queue[i+1:]...)
			done = m
			break
		}
	}
	c.mu.Unlock()
	if done != nil {
		c.n.emit(&Delivered{Header: hdr("delivered"), ID: id.String(), To: done.to})
	}
}

func (c *conv) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

// session is one connection and chat stream to the peer.
type session struct {
	qc   *quic.Conn
	st   *quic.Stream
	dead chan struct{} // closed when the ack reader stops
}

func (s *session) close() {
	s.qc.CloseWithError(0, "")
	<-s.dead
}

func (c *conv) run(ctx context.Context) {
	n := c.n
	var (
		key     wire.Key
		haveKey bool
		sess    *session
		backoff time.Duration
	)
	defer func() {
		if sess != nil {
			sess.close()
		}
	}()
	for {
		next := c.expire(time.Now())
		if c.pending() == 0 {
			select {
			case <-ctx.Done():
				return
			case <-c.wake:
				continue
			}
		}
		if !haveKey {
			r, err := n.lookup(ctx, c.to, wire.Key{})
			if ctx.Err() != nil {
				return
			}
			switch {
			case err != nil:
				c.failAll(CodeUnreachable, "cannot reach the rendezvous to find "+c.to)
				continue
			case r.Status == wire.LookupUnknown:
				c.failAll(CodeUnknownPeer, "no one is registered as "+c.to)
				continue
			case r.Status == wire.LookupOffline:
				c.failAll(CodeOffline, r.Name+" is not online (offline delivery is not available yet)")
				continue
			}
			key, haveKey = r.Key, true
			if key == n.key {
				haveKey = false
				c.failAll(CodeBadName, "that is this node's own name")
				continue
			}
		}
		if sess == nil {
			var err error
			sess, err = c.connect(ctx, key)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				n.log.Info().Err(err).Str("peer", c.to).Msg("session connect failed")
				haveKey = false // look up again: the peer may be offline now
				backoff = min(max(2*backoff, 500*time.Millisecond), 5*time.Second)
				if !c.sleep(ctx, backoff) {
					return
				}
				continue
			}
			backoff = 0
			c.mu.Lock()
			c.gen++
			c.mu.Unlock()
		}
		if err := c.writePending(sess); err != nil {
			n.log.Info().Err(err).Str("peer", c.to).Msg("session write failed")
			sess.close()
			sess = nil
			continue
		}
		if !c.waitEvent(ctx, next, sess) {
			return
		}
		select {
		case <-sess.dead:
			sess.close()
			sess = nil
		default:
		}
	}
}

// waitEvent waits for new messages, a receipt, the session's end or the
// next deadline; it returns false when ctx is done.
func (c *conv) waitEvent(ctx context.Context, next time.Time, s *session) bool {
	var timeout <-chan time.Time
	if !next.IsZero() {
		t := time.NewTimer(time.Until(next) + time.Millisecond)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-ctx.Done():
		return false
	case <-c.wake:
	case <-timeout:
	case <-s.dead:
	}
	return true
}

func (c *conv) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// connect dials the peer's session and opens the chat stream.
func (c *conv) connect(ctx context.Context, key wire.Key) (*session, error) {
	n := c.n
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	qc, err := n.tr.Dial(dctx, link.Addr{Key: key}, clientTLS(n.cert, key), quicConfig())
	if err != nil {
		return nil, err
	}
	st, err := qc.OpenStreamSync(dctx)
	if err != nil {
		qc.CloseWithError(0, "")
		return nil, err
	}
	if _, err := st.Write(wire.AppendPreamble(nil, wire.StreamChat)); err != nil {
		qc.CloseWithError(0, "")
		return nil, err
	}
	n.addConn(key, qc)
	s := &session{qc: qc, st: st, dead: make(chan struct{})}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer close(s.dead)
		err := readFrames(st, func(k wire.FrameKind, body []byte) error {
			if k != wire.FrameAck {
				return nil // unknown kinds are skipped
			}
			id, err := wire.ParseAck(body)
			if err != nil {
				return err
			}
			c.ack(id)
			return nil
		})
		if ctx.Err() == nil { // readFrames always ends with an error
			n.log.Debug().Err(err).Str("peer", c.to).Msg("chat stream ended")
		}
	}()
	return s, nil
}

// writePending writes the queued messages not yet on this stream, in order.
func (c *conv) writePending(s *session) error {
	c.mu.Lock()
	var buf []byte
	for _, m := range c.queue {
		if m.sentGen == c.gen {
			continue
		}
		m.sentGen = c.gen
		buf = wire.AppendMsg(buf, &wire.Msg{ID: m.id, SentMS: time.Now().UnixMilli(), Text: m.text})
	}
	c.mu.Unlock()
	if len(buf) == 0 {
		return nil
	}
	_, err := s.st.Write(buf)
	return err
}

// Drain waits until every queued message is delivered or failed, or ctx ends.
func (n *Node) Drain(ctx context.Context) {
	for {
		n.mu.Lock()
		busy := false
		for _, c := range n.convs {
			if c.pending() > 0 {
				busy = true
				break
			}
		}
		n.mu.Unlock()
		if !busy {
			return
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Command runs one line of user input: a slash command or, without a
// slash, text for the last conversation.
func (n *Node) Command(line string) {
	line = strings.TrimRight(line, "\r\n")
	if strings.TrimSpace(line) == "" {
		return
	}
	if !strings.HasPrefix(line, "/") {
		n.mu.Lock()
		to := n.lastTo
		n.mu.Unlock()
		if to == "" {
			n.emit(&Error{Header: hdr("error"), Code: CodeNoTarget, Message: "start a conversation with /msg NAME TEXT"})
			return
		}
		n.Send(to, line)
		return
	}
	cmd, rest, _ := strings.Cut(line, " ")
	switch cmd {
	case "/msg":
		to, text, _ := strings.Cut(strings.TrimLeft(rest, " "), " ")
		if to == "" || text == "" {
			n.emit(&Error{Header: hdr("error"), Code: CodeBadCommand, Message: "usage: /msg NAME TEXT"})
			return
		}
		n.Send(to, text)
	case "/who":
		n.Who()
	case "/quit":
		n.Quit()
	default:
		n.emit(&Error{Header: hdr("error"), Code: CodeBadCommand, Message: "unknown command " + cmd + " (try /msg, /who, /quit)"})
	}
}
