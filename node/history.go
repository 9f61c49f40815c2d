package node

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"natchat/node/api"
	"natchat/node/store"
	"natchat/wire"
)

// The history: each conversation's recent messages (a peer's name for
// 1:1, both ways; the room for a room), kept in the store so that a front
// end started later shows recent conversations and what arrived while it
// was closed (/history, api.History).
//
// A recorder keeps it. It is fed by the bus's tap (api.Bus.Tap) rather
// than as a subscriber: a subscriber is a front end to the bus (the first
// to handle a message gets its sender the receipt, and a message waits
// for a subscriber only while there is none), so a recording subscriber
// would send receipts for messages no one has seen. The tap sees every
// event as it is published, in the order front ends get them, on the
// publisher's goroutine: the recorder turns the events it keeps into
// store operations and queues them, and its own goroutine writes the
// queue in batches, at most one transaction every histInterval. Nothing
// on the network's side waits for the disk: while the store is stalled
// the queue grows to histQueue operations, then further ones are dropped
// (and counted in the log).
//
// Durability: each batch is one bbolt commit, never torn; a crash loses
// the operations of the last histInterval or so (the messages themselves
// are safe in the outbox and the shown filter: only their history entries
// are lost).

const (
	histInterval   = 200 * time.Millisecond // between two commits
	histQueue      = 8192                   // operations queued at most
	histBatch      = 1024                   // queued operations that commit at once
	histPruneEvery = time.Hour
	// histConvsAnswer bounds the conversations one History{} answers.
	histConvsAnswer = 50
	// Defaults of Options.HistoryMax and HistoryAge.
	defaultHistoryMax = store.DefaultHistPerConv
	defaultHistoryAge = 30 * 24 * time.Hour
)

// recorder writes the history. Its methods are safe on a nil recorder
// (history off): tap does nothing and read answers with no entries.
type recorder struct {
	st       *store.Store
	lim      store.HistLimits
	self     string // our name: From of our own messages
	log      zerolog.Logger
	now      func() time.Time
	interval time.Duration
	maxQueue int

	wake  chan struct{} // cap 1: operations were queued
	full  chan struct{} // cap 1: a batch's worth is queued
	reads chan histRead
	stop  chan struct{} // closed by close
	done  chan struct{} // closed when run has returned
	once  sync.Once     // closes stop

	mu sync.Mutex
	// Guarded by mu:
	ops     []store.HistOp
	dropped int  // operations dropped on a full queue, not yet logged
	stopped bool // run has written its last batch: tap drops everything
}

// histRead is one History command for the recorder's goroutine, which
// writes what is queued before it reads.
type histRead struct {
	c     api.History
	reply chan<- []api.Event
}

func newRecorder(st *store.Store, self string, o Options) *recorder {
	if o.NoHistory {
		return nil
	}
	lim := store.HistLimits{PerConv: cmp.Or(max(o.HistoryMax, 0), defaultHistoryMax), MaxAge: o.HistoryAge}
	switch {
	case o.HistoryAge == 0:
		lim.MaxAge = defaultHistoryAge
	case o.HistoryAge < 0:
		lim.MaxAge = 0 // the store's "no age limit"
	}
	return &recorder{
		st: st, lim: lim, self: self, log: o.Logger, now: time.Now,
		interval: histInterval, maxQueue: histQueue,
		wake: make(chan struct{}, 1), full: make(chan struct{}, 1), reads: make(chan histRead),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// start runs the recorder's goroutine until close.
func (r *recorder) start() {
	if r != nil {
		go r.run()
	}
}

// close writes what is queued and stops the recorder's goroutine, waiting
// for it. Events tapped afterwards are not recorded.
func (r *recorder) close() {
	if r == nil {
		return
	}
	r.once.Do(func() { close(r.stop) })
	<-r.done
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// tap is the bus's tap: it queues the history operation of e, if any. It
// never blocks.
func (r *recorder) tap(e api.Event) {
	op, ok := r.op(e)
	if !ok {
		return
	}
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	if len(r.ops) >= r.maxQueue {
		r.dropped++
		r.mu.Unlock()
		return
	}
	r.ops = append(r.ops, op)
	n := len(r.ops)
	r.mu.Unlock()
	poke(r.wake)
	if n >= histBatch {
		poke(r.full)
	}
}

// op returns the history operation for e: a message shown or sent is
// added to its conversation; an outcome changes the state of our message.
func (r *recorder) op(e api.Event) (store.HistOp, bool) {
	switch e := e.(type) {
	case *api.Message:
		return store.HistOp{Conv: cmp.Or(e.Room, e.From), Add: &store.HistEntry{
			ID: e.ID, From: e.From, Text: e.Text, Kind: e.Kind, Via: e.Via, Sent: e.SentTS, At: e.TS,
		}}, true
	case *api.Sent:
		// Resumed: already recorded by the run that sent it, unless history
		// was off then (the store adds an ID once).
		return store.HistOp{Conv: cmp.Or(e.Room, e.To), Add: &store.HistEntry{
			ID: e.ID, From: r.self, Text: e.Text, Kind: e.Kind, Out: true, State: api.StateSending, Sent: e.TS, At: e.TS,
		}}, true
	case *api.Delivered:
		if e.Room != "" {
			return ours(e.Room, e.ID, roomDelivered(e.Members))
		}
		return ours(e.To, e.ID, settle(api.StateDelivered, ""))
	case *api.Stored:
		// For a room: one member's copy waits in its mailbox. Until a
		// member has the message, "stored" says more than "sending".
		return ours(cmp.Or(e.Room, e.To), e.ID, storedState)
	case *api.Expired:
		if e.Room != "" {
			return ours(e.Room, e.ID, memberFailed("expired"))
		}
		return ours(e.To, e.ID, settle(api.StateFailed, "expired"))
	case *api.Error:
		switch {
		case e.ID == "":
			return store.HistOp{}, false
		case e.Room != "" && wire.NameKey(e.To) != wire.NameKey(e.Room):
			return ours(e.Room, e.ID, memberFailed(e.Code))
		}
		return ours(cmp.Or(e.Room, e.To), e.ID, settle(api.StateFailed, e.Code))
	}
	return store.HistOp{}, false
}

func ours(conv, id string, f func(*store.HistEntry) bool) (store.HistOp, bool) {
	return store.HistOp{Conv: conv, ID: id, Out: true, Update: f}, true
}

// settle sets a final state. Delivered wins over everything: the peer has
// the message, whatever was said before.
func settle(state, reason string) func(*store.HistEntry) bool {
	return func(e *store.HistEntry) bool {
		if (e.State == api.StateDelivered && state != api.StateDelivered) || (e.State == state && e.Reason == reason) {
			return false
		}
		e.State, e.Reason = state, reason
		return true
	}
}

func storedState(e *store.HistEntry) bool {
	if e.State != api.StateSending {
		return false
	}
	e.State = api.StateStored
	return true
}

// memberFailed notes why one member's copy of a room message failed: the
// reason the message as a whole fails with if no member gets it
// (roomDelivered). The state does not change.
func memberFailed(reason string) func(*store.HistEntry) bool {
	return func(e *store.HistEntry) bool {
		if e.State == api.StateDelivered || e.Reason != "" {
			return false
		}
		e.Reason = reason
		return true
	}
}

// roomDelivered applies a room message's folded Delivered ("n/N"): at
// least one member has it (or there was no one to give it to): delivered.
// None has it: it stays stored if a copy waits in a mailbox, else it
// failed, for the reason a member's copy failed.
func roomDelivered(members string) func(*store.HistEntry) bool {
	n, total, ok := parseMembers(members)
	if !ok || n > 0 || total == 0 {
		return settle(api.StateDelivered, "")
	}
	return func(e *store.HistEntry) bool {
		if e.State != api.StateSending {
			return false
		}
		e.State, e.Reason = api.StateFailed, cmp.Or(e.Reason, api.CodeUndelivered)
		return true
	}
}

func parseMembers(s string) (n, total int, ok bool) {
	a, b, ok := strings.Cut(s, "/")
	if !ok {
		return 0, 0, false
	}
	n, err1 := strconv.Atoi(a)
	total, err2 := strconv.Atoi(b)
	return n, total, err1 == nil && err2 == nil
}

// run writes the queued operations, answers reads and prunes, until close.
func (r *recorder) run() {
	defer close(r.done)
	r.prune()
	prune := time.NewTicker(histPruneEvery)
	defer prune.Stop()
	timer := time.NewTimer(r.interval)
	timer.Stop()
	defer timer.Stop()
	armed := false
	for {
		select {
		case <-r.stop:
			r.mu.Lock()
			r.stopped = true
			r.mu.Unlock()
			r.flush()
			return
		case <-r.wake:
			if !armed {
				timer.Reset(r.interval)
				armed = true
			}
		case <-timer.C:
			armed = false
			r.flush()
		case <-r.full:
			r.flush()
		case q := <-r.reads:
			r.flush()
			q.reply <- r.answer(q.c)
		case <-prune.C:
			r.flush()
			r.prune()
		}
	}
}

// flush writes what is queued in one transaction. A batch that fails is
// logged and dropped: the history is a convenience, and retrying a batch
// the store refuses would hold up every later one.
func (r *recorder) flush() {
	r.mu.Lock()
	ops, dropped := r.ops, r.dropped
	r.ops, r.dropped = nil, 0
	r.mu.Unlock()
	if dropped > 0 {
		r.log.Warn().Int("dropped", dropped).Msg("history: the store fell behind; changes were not recorded")
	}
	if len(ops) == 0 {
		return
	}
	if err := r.st.WriteHistory(ops, r.lim, r.now()); err != nil {
		r.log.Error().Err(err).Int("changes", len(ops)).Msg("history: not recorded")
	}
}

func (r *recorder) prune() {
	if n, err := r.st.PruneHistory(r.lim, r.now()); err != nil {
		r.log.Error().Err(err).Msg("history: prune")
	} else if n > 0 {
		r.log.Debug().Int("entries", n).Msg("history: pruned")
	}
}

// read answers c (see answer), after what is queued has been written. A
// nil recorder (history off), or one stopped, answers with no entries.
func (r *recorder) read(c api.History) []api.Event {
	if r != nil {
		reply := make(chan []api.Event, 1)
		select {
		case r.reads <- histRead{c: c, reply: reply}:
			return <-reply
		case <-r.done:
		}
	}
	return []api.Event{&api.HistoryEvent{Conv: c.Conv, Entries: []api.HistoryEntry{}}}
}

// answer returns the History events answering c: one for c.Conv; for
// every conversation (c.Conv empty) one each, the most recently active
// last, at most histConvsAnswer of them, or one with no Conv and no
// entries when there is none. A store error comes first, as an Error.
func (r *recorder) answer(c api.History) []api.Event {
	n := c.N
	if n <= 0 {
		n = api.DefaultHistory
	}
	convs := []string{c.Conv}
	if c.Conv == "" {
		all, err := r.st.HistoryConvs()
		if err != nil {
			return r.failed(c, err)
		}
		convs = convs[:0]
		for _, hc := range all[max(0, len(all)-histConvsAnswer):] {
			convs = append(convs, hc.Name)
		}
		if len(convs) == 0 {
			convs = []string{""}
		}
	}
	evs := make([]api.Event, 0, len(convs))
	for _, name := range convs {
		hc, es, err := r.st.History(name, n)
		if err != nil {
			return r.failed(c, err)
		}
		ev := &api.HistoryEvent{Conv: cmp.Or(hc.Name, name), Entries: make([]api.HistoryEntry, 0, len(es))}
		for _, e := range es {
			he := api.HistoryEntry{ID: e.ID, From: e.From, Text: e.Text, Kind: e.Kind, Out: e.Out, Via: e.Via, TS: e.Sent.UTC()}
			if e.Out {
				he.State = e.State
				if e.State == api.StateFailed {
					he.Reason = e.Reason
				}
			}
			ev.Entries = append(ev.Entries, he)
		}
		evs = append(evs, ev)
	}
	return evs
}

func (r *recorder) failed(c api.History, err error) []api.Event {
	r.log.Error().Err(err).Msg("history: read")
	return []api.Event{
		&api.Error{Code: api.CodeState, Message: fmt.Sprintf("history: %v", err)},
		&api.HistoryEvent{Conv: c.Conv, Entries: []api.HistoryEntry{}},
	}
}

// history answers api.History from the history (see recorder.answer).
func (n *Node) history(c api.History) {
	for _, e := range n.rec.read(c) {
		n.bus.Publish(e)
	}
}
