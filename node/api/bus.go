package api

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned by Sub.Next once the bus is closed and the
// subscriber has read every event, or after Sub.Close.
var ErrClosed = errors.New("api: event bus closed")

// Queue limits per subscriber.
const (
	// MaxStateEvents bounds the droppable events (presence, paths) queued
	// for one subscriber; past it they are dropped and counted in an
	// EventsDropped event.
	MaxStateEvents = 1024
	// HighWater is the queue length at which WaitRoom starts to wait: a
	// front end that does not read its events holds up its own commands.
	HighWater = 4096
)

// Bus carries events from a node to its subscribers. Publishing never
// blocks. Safe for concurrent use.
type Bus struct {
	now func() time.Time

	mu sync.Mutex
	// Guarded by mu:
	subs    map[*Sub]struct{}
	backlog []item        // messages published while nobody subscribed, and events before the first subscriber
	ever    bool          // someone has subscribed
	room    chan struct{} // closed and replaced when a full queue shrinks
	closed  bool
	tap     func(Event) // see Tap
}

// item is one queued event. shown is set for messages.
type item struct {
	ev    Event
	shown *shownHook
}

// shownHook runs a message's hook once, when the first subscriber has
// handled the message.
type shownHook struct {
	once sync.Once
	fn   func()
	done atomic.Bool
}

func (h *shownHook) run() {
	if h != nil {
		h.once.Do(func() {
			h.done.Store(true)
			if h.fn != nil {
				h.fn()
			}
		})
	}
}

// pending reports whether the message still waits to be shown.
func (h *shownHook) pending() bool { return h != nil && !h.done.Load() }

// NewBus returns a Bus stamping events with now (nil: time.Now).
func NewBus(now func() time.Time) *Bus {
	if now == nil {
		now = time.Now
	}
	return &Bus{now: now, subs: make(map[*Sub]struct{}), room: make(chan struct{})}
}

// MaxEarly bounds the events kept for the first subscriber when it comes
// after they were published (a front end subscribing just after Run).
const MaxEarly = 1024

// Publish stamps e (see Stamp) and queues it for every subscriber. State
// events (peer_joined, peer_left, path, file_progress) are dropped for a subscriber that
// has MaxStateEvents of them queued, and counted in an EventsDropped event.
// Before anyone has subscribed, up to MaxEarly events wait for the first
// subscriber; after that, with no subscriber, only messages are kept
// (PublishMessage).
func (b *Bus) Publish(e Event) {
	Stamp(e, b.now())
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	if b.tap != nil {
		b.tap(e)
	}
	if !b.ever && len(b.backlog) < MaxEarly {
		b.backlog = append(b.backlog, item{ev: e})
		return
	}
	for s := range b.subs {
		s.pushLocked(item{ev: e}, b.now)
	}
}

// PublishMessage publishes a message. shown is called once, when the
// first subscriber has handled it: when that subscriber asks for the event
// after it (Sub.Next), which a front end does after showing it. shown runs
// on that subscriber's goroutine and must not block for long. A message
// published while nobody subscribes waits for the first subscriber.
func (b *Bus) PublishMessage(m *Message, shown func()) {
	Stamp(m, b.now())
	it := item{ev: m, shown: &shownHook{fn: shown}}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	if b.tap != nil {
		b.tap(m)
	}
	if len(b.subs) == 0 {
		b.backlog = append(b.backlog, it)
		return
	}
	for s := range b.subs {
		s.pushLocked(it, b.now)
	}
}

// Tap has fn called with every event published from now on (nil: none),
// stamped, in the order subscribers get them. It is how the node keeps
// its history without being a front end: fn is not a subscriber, so it
// holds up no command, shows no message (a message's receipt still waits
// for a front end, see PublishMessage), and keeps no message from waiting
// for the first subscriber. fn runs on the publisher's goroutine with the
// bus locked: it must return at once, must not call the Bus, and must not
// modify the event (subscribers get the same one).
func (b *Bus) Tap(fn func(Event)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tap = fn
}

// Subscribe returns a new subscriber. It receives every event published
// from now on, the messages waiting for a subscriber and, for the first
// subscriber, the events published before it. It must read its events
// (Next) or Close.
func (b *Bus) Subscribe() *Sub {
	s := &Sub{b: b, wake: make(chan struct{}, 1)}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ever = true
	if !b.closed {
		b.subs[s] = struct{}{}
	}
	for _, it := range b.backlog {
		s.pushLocked(it, b.now)
	}
	b.backlog = nil
	return s
}

// Close ends the bus: subscribers read what is queued, then ErrClosed.
func (b *Bus) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for s := range b.subs {
		s.poke()
	}
}

// WaitRoom waits until no subscriber has HighWater events queued, or ctx
// is done. The node calls it before each command, so a front end that does
// not read its events holds up its own commands and nothing else.
func (b *Bus) WaitRoom(ctx context.Context) error {
	for {
		b.mu.Lock()
		full := false
		for s := range b.subs {
			if s.lenLocked() >= HighWater {
				full = true
				break
			}
		}
		room := b.room
		b.mu.Unlock()
		if !full {
			return nil
		}
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Sub is one subscriber's queue of events.
type Sub struct {
	b    *Bus
	wake chan struct{} // cap 1: something was queued or the bus closed

	// Guarded by b.mu:
	q      []item
	head   int
	nState int   // droppable events in q[head:]
	last   *item // the message Next returned last, not yet handled
	closed bool
}

func (s *Sub) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Sub) lenLocked() int { return len(s.q) - s.head }

func (s *Sub) pushLocked(it item, now func() time.Time) {
	if droppable(it.ev) {
		if s.nState >= MaxStateEvents {
			if n := len(s.q); n > s.head {
				if d, ok := s.q[n-1].ev.(*EventsDropped); ok {
					d.Count++
					return
				}
			}
			it = item{ev: Stamp(&EventsDropped{Count: 1}, now())}
		} else {
			s.nState++
		}
	}
	s.q = append(s.q, it)
	s.poke()
}

// Next returns the next event, waiting for one until ctx is done. Calling
// Next says the event it returned before has been handled (shown): that is
// when a message's sender gets its receipt. After the bus is closed it
// returns what is still queued, then ErrClosed.
func (s *Sub) Next(ctx context.Context) (Event, error) {
	b := s.b
	s.Handled()
	for {
		b.mu.Lock()
		if s.head < len(s.q) {
			it := s.q[s.head]
			s.q[s.head] = item{}
			s.head++
			if droppable(it.ev) {
				s.nState--
			}
			if s.lenLocked() == HighWater-1 {
				close(b.room)
				b.room = make(chan struct{})
			}
			if s.head == len(s.q) {
				s.q, s.head = s.q[:0], 0
			} else if s.head >= 1024 && s.head > len(s.q)/2 {
				s.q = append(s.q[:0], s.q[s.head:]...)
				s.head = 0
			}
			if it.shown != nil {
				s.last = &it
			}
			b.mu.Unlock()
			return it.ev, nil
		}
		if s.closed || b.closed {
			b.mu.Unlock()
			return nil, ErrClosed
		}
		b.mu.Unlock()
		select {
		case <-s.wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Handled says the event Next returned last has been handled (shown) now,
// without waiting for the next Next. A front end calls it right after it
// wrote a message out, to make the window in which a crash would show the
// message again (written, not yet recorded) as short as it can be.
func (s *Sub) Handled() {
	b := s.b
	b.mu.Lock()
	prev := s.last
	s.last = nil
	b.mu.Unlock()
	if prev != nil {
		prev.shown.run()
	}
}

// Close unsubscribes. Messages this subscriber had not handled (including
// the last one Next returned) go back to wait for the next subscriber when
// it was the only one, so no message is lost with a front end.
func (s *Sub) Close() {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	delete(b.subs, s)
	if len(b.subs) == 0 && !b.closed {
		if s.last != nil && s.last.shown.pending() {
			b.backlog = append(b.backlog, *s.last)
		}
		for _, it := range s.q[s.head:] {
			if it.shown.pending() {
				b.backlog = append(b.backlog, it)
			}
		}
	}
	s.q, s.head, s.last = nil, 0, nil
	close(b.room) // a closed queue no longer holds up commands
	b.room = make(chan struct{})
	s.poke()
}
