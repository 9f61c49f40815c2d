package rendezvous

import (
	"math"
	"time"

	"natchat/wire"
)

// Expiry: a node silent (no authentic datagram of its session) for longer
// than Expiry is dropped.
//
// Rather than look at every node on each sweep, the Server files each node
// in an expiry wheel (Nebula's TimerWheel) under its due second: the
// second in which its silence would exceed Expiry. The wheel is a ring of
// one-second slots covering the seconds from the last sweep to a little
// beyond Expiry, each slot a doubly linked list threaded through the
// client records, and an overflow list for the nodes due beyond the ring
// (there are some only when sweeps fall behind the clock). A node heard
// from moves to its new slot in O(1); a sweep looks only at the slots whose
// second has come, so its cost follows the nodes that expire, not the
// nodes online. It still checks each node it looks at against the exact
// rule (silent for longer than Expiry as of now, to the nanosecond), so
// who expires when is the same as when a sweep looked at every node.
//
// Times are kept as nanoseconds since the Server's epoch (mono): 8 bytes
// per node rather than a time.Time's 24, and, since the epoch comes from
// the same clock, differences are those of the times themselves (the
// monotonic readings when the clock has them).

// mono returns now as nanoseconds since s.epoch.
func (s *Server) mono(now time.Time) int64 { return int64(now.Sub(s.epoch)) }

// heardLocked records that c was heard from at now: its registration, or
// an authentic datagram of its session. After the latter the node holds
// the session's keys, so it has its HandshakeReply: the copy kept for
// retransmitted Handshakes goes (registration sets a new one after this).
func (s *Server) heardLocked(c *client, now time.Time) {
	s.expiry.heard(c, s.mono(now))
	if c.reg != nil {
		c.reg.reply = nil
	}
}

// expireLocked drops the nodes silent for longer than Expiry as of now.
func (s *Server) expireLocked(now time.Time) {
	s.expiry.expire(s.mono(now), func(c *client) {
		s.log.Info().Str("peer", c.name).Msg("expired")
		s.removeLocked(c, wire.ReasonTimeout, now)
	})
}

// wheel files clients by due second. Its zero value is not usable: make
// one with newWheel.
type wheel struct {
	slots []*client // list heads: second d is in slots[d mod len(slots)] when base <= d < base+len(slots)
	base  int64     // the earliest second the slots hold; the seconds before it were swept
	// overflow holds the clients due at base+len(slots) or later when they
	// were filed; overMin is the earliest second among them.
	overflow *client
	overMin  int64
	// todo holds the clients taken out of a slot while a sweep looks at
	// them, so that one removed meanwhile (by another's expiry) unlinks
	// as from any list.
	todo   *client
	n      int   // clients filed
	expiry int64 // Options.Expiry, in nanoseconds
}

// wheelSlack is how many seconds beyond Expiry the ring covers: sweeps up
// to that late keep every node in the ring.
const wheelSlack = 4

// newWheel returns a wheel for nodes due at most expiry after they were
// heard from, starting at second base.
func newWheel(expiry time.Duration, base int64) *wheel {
	n := int((expiry+time.Second-1)/time.Second) + 1 + wheelSlack
	return &wheel{slots: make([]*client, n), base: base, overMin: math.MaxInt64, expiry: int64(expiry)}
}

// heard records that c was heard from at at (nanoseconds since the epoch)
// and files it under its new due second: the second in which its silence
// will exceed expiry.
func (w *wheel) heard(c *client, at int64) {
	c.lastSeen = at
	w.file(c, floorDiv(at+w.expiry, int64(time.Second)))
}

// expire hands gone, taken out of the wheel, every client last heard from
// longer than expiry before now (nanoseconds since the epoch). It looks at
// the clients filed under the seconds up to now's, and files again those
// of them not gone (heard from since, or due later in now's second).
func (w *wheel) expire(now int64, gone func(*client)) {
	w.advance(floorDiv(now, int64(time.Second)), func(c *client) {
		if now-c.lastSeen > w.expiry {
			gone(c)
			return
		}
		w.heard(c, c.lastSeen)
	})
}

// A client's wIn says which list of the wheel it is in: 0 for none,
// inOverflow, inTodo, or inSlot + i for slots[i]. Four bytes in the
// record's padding, where a pointer to the list's head took eight more.
const (
	inOverflow = 1 + iota
	inTodo
	inSlot
)

// listFor returns the list a client due in second due belongs in (a
// wIn). A second before base (heard from long before the last sweep's
// time) goes in base's slot: the next sweep looks at it.
func (w *wheel) listFor(due int64) uint32 {
	due = max(due, w.base)
	n := int64(len(w.slots))
	if due-w.base >= n {
		return inOverflow
	}
	return inSlot + uint32(((due%n)+n)%n)
}

// head returns the head of list in (not 0).
func (w *wheel) head(in uint32) **client {
	switch in {
	case inOverflow:
		return &w.overflow
	case inTodo:
		return &w.todo
	}
	return &w.slots[in-inSlot]
}

// file puts c in the list of second due, moving it from its current one.
func (w *wheel) file(c *client, due int64) {
	in := w.listFor(due)
	if in == inOverflow {
		w.overMin = min(w.overMin, due)
	}
	if in == c.wIn {
		return
	}
	w.remove(c)
	h := w.head(in)
	c.wIn, c.wNext = in, *h
	if c.wNext != nil {
		c.wNext.wPrev = c
	}
	*h = c
	w.n++
}

// remove takes c out of the wheel, if it is in.
func (w *wheel) remove(c *client) {
	if c.wIn == 0 {
		return
	}
	if c.wPrev != nil {
		c.wPrev.wNext = c.wNext
	} else {
		*w.head(c.wIn) = c.wNext
	}
	if c.wNext != nil {
		c.wNext.wPrev = c.wPrev
	}
	c.wIn, c.wPrev, c.wNext = 0, nil, nil
	w.n--
}

// take moves the clients of list in to todo, which is empty.
func (w *wheel) take(in uint32) {
	h := w.head(in)
	for c := *h; c != nil; c = c.wNext {
		c.wIn = inTodo
	}
	w.todo, *h = *h, nil
}

// visitTodo hands each client in todo to visit, taken out of the wheel;
// visit files it again or removes it for good.
func (w *wheel) visitTodo(visit func(*client)) {
	for w.todo != nil {
		c := w.todo
		w.remove(c)
		visit(c)
	}
}

// advance hands visit, taken out of the wheel, every client filed under a
// second up to now (a second since the epoch): those of the seconds before
// it, which are due, and those of now itself and of the overflow, which
// may be.
func (w *wheel) advance(now int64, visit func(*client)) {
	n := int64(len(w.slots))
	for i := int64(0); w.base < now && i < n; i++ {
		w.take(inSlot + uint32(((w.base%n)+n)%n))
		w.base++
		w.visitTodo(visit)
	}
	w.base = max(w.base, now)
	w.take(inSlot + uint32(((w.base%n)+n)%n))
	w.visitTodo(visit)
	if w.overflow != nil && w.overMin < w.base+n {
		w.overMin = math.MaxInt64
		w.take(inOverflow)
		w.visitTodo(visit)
	}
}

// floorDiv is a/b rounded toward minus infinity (b > 0): the second a
// time before the epoch falls in, too.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// agedQueue lists keys in the order they were given something to forget
// later (a spent cookie, a new-name quota), with when, so that Sweep looks
// only at the keys whose time has come rather than at every key. A time
// out of order (a clock handed to Sweep ahead of the Server's) makes the
// keys after it wait for it: what they forget then is of no use by then
// anyway (an expired cookie is refused before its spent list is read; a
// quota an hour old is replaced when next used), so that only holds
// memory a little longer.
type agedQueue[K any] struct {
	items []agedItem[K]
	head  int // items before head are popped
}

type agedItem[K any] struct {
	key K
	at  int64 // Server.mono
}

func (q *agedQueue[K]) push(key K, at int64) {
	q.items = append(q.items, agedItem[K]{key, at})
}

// popBefore pops the oldest key if it was pushed before limit.
func (q *agedQueue[K]) popBefore(limit int64) (key K, ok bool) {
	if q.head == len(q.items) || q.items[q.head].at >= limit {
		return key, false
	}
	key = q.items[q.head].key
	q.items[q.head] = agedItem[K]{}
	q.head++
	switch {
	case q.head == len(q.items) && cap(q.items) > 4096:
		q.items, q.head = nil, 0 // give back what a burst took
	case q.head == len(q.items):
		q.items, q.head = q.items[:0], 0
	case q.head >= 1024 && 2*q.head >= len(q.items):
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	return key, true
}

// len returns the keys queued.
func (q *agedQueue[K]) len() int { return len(q.items) - q.head }
