package rvclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"natchat/wire"
)

// The offline mailbox (wire/mailbox.go, docs/PROTOCOL.md).
//
// Sending: Deposit hands the rendezvous a sealed message for an offline
// peer and waits for the outcome. Receiving: after every registration the
// client drains the node's mailbox: it fetches (MailFetch) right away, and
// again whenever the rendezvous says messages wait (MailNotice), reassembles
// each message from its parts, hands the messages of each answer to the
// MailObserver in the answer's order (oldest first; when one is missing in
// full the younger ones are dropped and fetched again after it), and, once
// every message handed out has been acknowledged (AckMail: the node has it
// durably) or set aside (KeepMail), fetches the next ones, until the
// rendezvous answers that the mailbox is empty. Receipts for messages we
// deposited go to the observer, which acknowledges each (AckReceipt) once
// its outcome is durable; the acknowledgements are batched like AckMail's.
//
// A message the observer does not take is left in the mailbox: refused at
// once (Mail returns false: the client hands out nothing more of that
// answer, and fetches again, so that nothing younger overtakes it), or
// left later (LeaveMail), or neither acknowledged nor set aside within
// handedTimeout. Skipping the messages set aside (MailFetch.Skip) is right
// only while they are the oldest in the mailbox, that is while every other
// message handed out was acknowledged: so while any message left is not
// (yet) acknowledged nor set aside, fetches skip nothing (the ones set
// aside take their places in the answers without being handed out again;
// when they fill the answers the drain ends). A message left is fetched
// again at most maxFetchTries times in a row before the drain ends. When
// maxKept messages are set aside, the drain ends (the next registration
// starts over).
//
// Everything a rendezvous sends is bounded here: at most maxPartials
// messages being reassembled (each at most wire.MaxMailBlob), at most
// maxHanded handed out and not yet acknowledged, at most maxKept set
// aside.

// MailObserver is an Observer that also takes the offline mailbox. Its
// methods are called like Observer's: in order, one at a time, without the
// client's lock, from the goroutine that fed the client; they must not
// block. They must not call into the Client either: the node calls AckMail
// and KeepMail later, from its own goroutines.
type MailObserver interface {
	// MailWaiting: the rendezvous says count messages (bytes in all) wait
	// in our mailbox (count > 0): after a registration, and when one came
	// while we were online.
	MailWaiting(count, bytes uint32)
	// Mail: a complete sealed message from the mailbox, oldest first.
	// It returns false when the observer cannot take it now (it is
	// fetched again, and nothing younger is handed out before it). Once
	// taken, acknowledge it with AckMail once it is durably ours, set it
	// aside with KeepMail, or leave it with LeaveMail; any of them may
	// come much later (after it was shown). blob is the observer's to
	// keep.
	Mail(from wire.Key, id wire.MsgID, storedMS int64, blob []byte) bool
	// MailDrain: a drain of the mailbox began (true: after each
	// registration, and when messages wait) or ended (false: the mailbox
	// is empty but for messages set aside, the registration was lost, or
	// the rendezvous did not answer). Calls alternate, starting with true.
	MailDrain(active bool)
	// MailReceipt: what became of a message we deposited. Acknowledge it
	// with AckReceipt once the outcome is durably recorded (later, from
	// another goroutine); until then the rendezvous repeats it (after the
	// next registration).
	MailReceipt(r wire.Receipt)
}

// Mailbox timing and bounds.
const (
	// depositResend is how long a deposit waits for its reply before
	// every part is sent again.
	depositResend = time.Second
	// depositTimeout bounds a whole Deposit, whatever its ctx.
	depositTimeout = 30 * time.Second
	// fetchQuiet: a drain with nothing in flight and no answer or ack for
	// this long fetches again (or ends, when all it got was set aside).
	fetchQuiet = 2 * time.Second
	// fetchSettle: once everything handed out is acknowledged, the next
	// fetch waits until no part came for this long (parts of the current
	// answer may still be on the way).
	fetchSettle = 50 * time.Millisecond
	// maxFetchTries fetches in a row without any answer end a drain.
	maxFetchTries = 5
	// partialTimeout drops a message whose parts did not all come.
	partialTimeout = 10 * time.Second
	// handedTimeout forgets a message handed out and never acknowledged
	// nor set aside, so the drain goes on (it is fetched again).
	handedTimeout = 30 * time.Second
	// ackDelay bounds how long an acknowledgement waits for others to
	// share its datagram.
	ackDelay = 100 * time.Millisecond
	// maxPartials bounds the messages being reassembled.
	maxPartials = wire.MailFetchMax
	// maxHanded bounds the messages handed out and not acknowledged.
	maxHanded = 4 * wire.MailFetchMax
	// maxKept bounds the messages set aside in one registration: what a
	// fetch may skip.
	maxKept = wire.MaxMailSkip
)

// ErrDepositTimeout means the rendezvous did not answer a deposit in time
// (or the ctx ended first).
var ErrDepositTimeout = errors.New("rendezvous did not answer the deposit")

// mailKey names a message in our mailbox.
type mailKey struct {
	from wire.Key
	id   wire.MsgID
}

// partialMail is a message being reassembled.
type partialMail struct {
	storedMS int64
	index    int // its place in the answer
	parts    [][]byte
	have     int
	first    time.Time
}

// readyMail is a complete message waiting for older ones of its answer.
type readyMail struct {
	key      mailKey
	storedMS int64
	index    int
	blob     []byte
}

// mailAnswer is what came of the answer to the current fetch: its
// messages by their index (wire.Mail.Index), handed out strictly in that
// order.
type mailAnswer struct {
	count    int  // messages in it (0: no part came yet)
	next     int  // the index handed out (or known) next
	refused  bool // the observer refused one: nothing more is handed out
	bound    [wire.MailFetchMax]bool
	slot     [wire.MailFetchMax]mailKey // the message at each index bound
	done     [wire.MailFetchMax]bool    // handed out, or known already
	lastPart time.Time
}

// mailState is the drain of our mailbox. Guarded by Client.mu.
type mailState struct {
	draining bool
	tries    int       // fetches without any message handed out
	activity time.Time // of the last fetch, part, notice, ack or set-aside
	fresh    int       // messages handed out since the last fetch
	seen     int       // messages complete (or known) since the last fetch
	tag      uint16    // of the last fetch; parts of other answers are ignored
	ans      mailAnswer
	partial  map[mailKey]*partialMail
	ready    []readyMail
	handed   map[mailKey]time.Time
	kept     map[mailKey]bool
	keptFull bool // one could not be set aside (maxKept): the drain ends
	// left: handed out and not taken (refused, LeaveMail, handedTimeout),
	// not acknowledged or set aside since. While any is, fetches skip
	// nothing.
	left   map[mailKey]bool
	acks   []wire.MailRef
	ackAt  time.Time      // when the oldest queued ack was queued
	racks  []wire.MailRef // receipts to acknowledge
	rackAt time.Time      // when the oldest queued receipt ack was queued
	// rhanded: receipts handed to the observer and not yet acknowledged
	// (a repeat of one is not handed out again, for handedTimeout).
	rhanded map[wire.MailRef]time.Time
}

func newMailState(tag uint16) mailState {
	return mailState{tag: tag, partial: make(map[mailKey]*partialMail), handed: make(map[mailKey]time.Time),
		kept: make(map[mailKey]bool), left: make(map[mailKey]bool), rhanded: make(map[wire.MailRef]time.Time)}
}

// depositWait is a Deposit waiting for its reply.
type depositWait struct {
	id wire.MsgID
	ch chan depositResult // cap 1
}

type depositResult struct {
	status wire.MailStatus
	err    *wire.Error // the rendezvous refused the datagram (rate limit)
}

func (c *Client) mailObserver() MailObserver {
	mo, _ := c.opts.Observer.(MailObserver)
	return mo
}

// resetMailLocked forgets the drain (a new registration, or none).
func (c *Client) resetMailLocked() {
	c.endDrainLocked()
	// The tag goes on counting: a late part of an answer to the last
	// registration's fetch is not taken for one to the next.
	c.mb = newMailState(c.mb.tag)
}

// startDrainLocked begins draining the mailbox, if the observer takes mail.
func (c *Client) startDrainLocked(now time.Time) {
	if c.mailObserver() == nil || c.state != stRegistered {
		return
	}
	if !c.mb.draining {
		c.mb.draining = true
		c.mb.tries = 0
		c.notifyLocked(func(o Observer) { o.(MailObserver).MailDrain(true) })
	}
	c.fetchLocked(now)
}

// endDrainLocked ends a drain, telling the observer.
func (c *Client) endDrainLocked() {
	if !c.mb.draining {
		return
	}
	c.mb.draining = false
	clear(c.mb.partial)
	c.mb.ready = nil
	c.notifyLocked(func(o Observer) { o.(MailObserver).MailDrain(false) })
}

// fetchLocked sends the queued acknowledgements, then a MailFetch.
func (c *Client) fetchLocked(now time.Time) {
	c.sendAcksLocked()
	c.mb.tries++
	c.mb.activity = now
	c.mb.fresh, c.mb.seen = 0, 0
	// A new answer: what is left of the last one (messages younger than
	// one missing) comes again in this one, after the missing one.
	c.mb.tag++
	c.mb.ans = mailAnswer{}
	clear(c.mb.partial)
	c.mb.ready = nil
	// The messages set aside are the oldest in the mailbox when every
	// other one handed out before them was acknowledged, and deleted:
	// then skip them, or they would fill every answer. While one left is
	// not, it may be among the oldest: skip nothing.
	skip := 0
	if len(c.mb.left) == 0 {
		skip = min(len(c.mb.kept), math.MaxUint16)
	}
	c.sendSealedLocked(&wire.MailFetch{Max: wire.MailFetchMax, Skip: uint16(skip), Tag: c.mb.tag})
}

func (c *Client) sendAcksLocked() {
	for len(c.mb.acks) > 0 {
		n := min(len(c.mb.acks), wire.MaxMailAcks)
		c.sendSealedLocked(&wire.MailAck{Refs: slices.Clone(c.mb.acks[:n])})
		c.mb.acks = c.mb.acks[n:]
	}
	c.mb.acks = nil
	c.mb.ackAt = time.Time{}
}

func (c *Client) sendReceiptAcksLocked() {
	for len(c.mb.racks) > 0 {
		n := min(len(c.mb.racks), wire.MaxMailAcks)
		c.sendSealedLocked(&wire.MailReceiptAck{Refs: slices.Clone(c.mb.racks[:n])})
		c.mb.racks = c.mb.racks[n:]
	}
	c.mb.racks = nil
	c.mb.rackAt = time.Time{}
}

func (c *Client) onMailNoticeLocked(m *wire.MailNotice, now time.Time) {
	c.mb.tries = 0
	c.mb.activity = now
	if m.Count == 0 {
		// The mailbox is empty: every message we acknowledged is gone.
		c.sendAcksLocked()
		c.endDrainLocked()
		return
	}
	if mo := c.mailObserver(); mo != nil {
		count, size := m.Count, m.Bytes
		c.notifyLocked(func(Observer) { mo.MailWaiting(count, size) })
	}
	if !c.mb.draining {
		c.startDrainLocked(now)
	}
}

func (c *Client) onMailLocked(m *wire.Mail, now time.Time) {
	mo := c.mailObserver()
	if mo == nil || m.Tag != c.mb.tag {
		return // a late part of an earlier answer: what it had comes again
	}
	a := &c.mb.ans
	if a.count == 0 {
		a.count = int(m.Count)
	}
	i := int(m.Index)
	k := mailKey{from: m.From, id: m.ID}
	if int(m.Count) != a.count || (a.bound[i] && a.slot[i] != k) {
		return // disagrees with the answer's earlier parts
	}
	c.mb.activity = now
	a.lastPart = now
	if a.done[i] {
		return // handed out already, or known
	}
	if _, ok := c.mb.handed[k]; ok || c.mb.kept[k] {
		// Known already: handed out before (not yet acknowledged), or set
		// aside. It takes its place in the order without being handed out
		// again.
		a.bound[i], a.slot[i], a.done[i] = true, k, true
		c.mb.seen++
		c.releaseReadyLocked(now)
		return
	}
	for _, r := range c.mb.ready {
		if r.key == k {
			return
		}
	}
	p := c.mb.partial[k]
	if p == nil {
		if a.bound[i] || len(c.mb.partial) >= maxPartials || len(c.mb.handed)+len(c.mb.ready) >= maxHanded {
			return // fetched again later
		}
		p = &partialMail{storedMS: m.StoredMS, index: i, parts: make([][]byte, m.Parts), first: now}
		c.mb.partial[k] = p
		a.bound[i], a.slot[i] = true, k
	}
	if p.index != i || int(m.Parts) != len(p.parts) || p.parts[m.Part] != nil {
		return // disagrees with the first part, or a repeat
	}
	p.parts[m.Part] = bytes.Clone(m.Data)
	p.have++
	if p.have < len(p.parts) {
		return
	}
	delete(c.mb.partial, k)
	c.mb.seen++
	c.mb.ready = append(c.mb.ready, readyMail{key: k, storedMS: p.storedMS, index: i, blob: bytes.Join(p.parts, nil)})
	c.releaseReadyLocked(now)
}

// releaseReadyLocked hands out the complete messages of the answer in its
// order: each once every one before it in the answer was handed out or is
// known. A message missing before them holds them back (until the answer
// is given up and fetched again, see mailTickLocked).
func (c *Client) releaseReadyLocked(now time.Time) {
	a := &c.mb.ans
	for !a.refused && a.next < a.count {
		i := a.next
		if !a.done[i] {
			j := slices.IndexFunc(c.mb.ready, func(r readyMail) bool { return r.index == i })
			if j < 0 {
				return
			}
			r := c.mb.ready[j]
			c.mb.ready = slices.Delete(c.mb.ready, j, j+1)
			a.done[i] = true
			c.mb.handed[r.key] = now
			c.mb.fresh++
			if !c.mb.left[r.key] {
				// Progress (a message left before does not count: one
				// that keeps being left ends the drain).
				c.mb.tries = 0
			}
			tag, k := c.mb.tag, r.key
			c.notifyLocked(func(o Observer) { c.handOut(o.(MailObserver), tag, k, r.storedMS, r.blob) })
		}
		a.next++
	}
}

// handOut gives a message of the answer to fetch tag to the observer
// (without the lock, from flush), unless one before it in that answer was
// refused; one refused, or not given, is left in the mailbox.
func (c *Client) handOut(mo MailObserver, tag uint16, k mailKey, storedMS int64, blob []byte) {
	c.mu.Lock()
	skip := c.mb.tag == tag && c.mb.ans.refused
	c.mu.Unlock()
	if !skip && mo.Mail(k.from, k.id, storedMS, blob) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.mb.handed[k]; !ok {
		return // a new registration forgot it
	}
	delete(c.mb.handed, k)
	c.mb.activity = c.now()
	if skip {
		return // never handed out: it comes again with the next answer
	}
	c.log.Debug().Str("from", k.from.Short()).Stringer("id", k.id).Msg("mailbox: message refused for now; fetching it again")
	c.leftLocked(k)
	if c.mb.tag == tag {
		// Nothing younger of this answer is handed out before it: the
		// answer is given up (see mailTickLocked) and fetched again.
		c.mb.ans.refused = true
		c.mb.ready = nil
	}
	c.poke()
}

// leftLocked records that a message handed out stays in the mailbox, not
// taken.
func (c *Client) leftLocked(k mailKey) {
	if len(c.mb.left) < maxHanded || c.mb.left[k] {
		c.mb.left[k] = true
	} else {
		// Too many to track: fetch as if all of them were left (the
		// kept ones would no longer be skipped; end the drain).
		c.mb.keptFull = true
	}
}

// AckMail acknowledges a message from our mailbox: the node has it
// durably (shown and recorded, or shown before), so the rendezvous may
// delete it and tell its sender. Acknowledgements are batched (up to
// wire.MaxMailAcks, or ackDelay). Without a registration it does nothing:
// the message comes again after the next one.
func (c *Client) AckMail(from wire.Key, id wire.MsgID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stRegistered {
		return
	}
	now := c.now()
	k := mailKey{from: from, id: id}
	delete(c.mb.handed, k)
	delete(c.mb.left, k)
	if slices.Contains(c.mb.acks, wire.MailRef{Peer: from, ID: id}) {
		return
	}
	if len(c.mb.acks) == 0 {
		c.mb.ackAt = now
	}
	c.mb.acks = append(c.mb.acks, wire.MailRef{Peer: from, ID: id})
	c.mb.activity = now
	if len(c.mb.acks) >= wire.MaxMailAcks {
		c.sendAcksLocked()
	}
	c.poke()
}

// KeepMail sets a message from our mailbox aside without acknowledging
// it: the node cannot take it now (its sender's key is not the one pinned
// for the sender's name, or the sender's name could not be found). It
// stays in the mailbox and is not handed out again until the next
// registration; a drain that gets nothing but such messages ends, and so
// does one with maxKept set aside.
func (c *Client) KeepMail(from wire.Key, id wire.MsgID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stRegistered {
		return
	}
	k := mailKey{from: from, id: id}
	delete(c.mb.handed, k)
	delete(c.mb.left, k)
	if len(c.mb.kept) < maxKept {
		c.mb.kept[k] = true
	} else if !c.mb.kept[k] {
		// Not recorded, it would be fetched again and again: the drain
		// ends (see mailTickLocked).
		c.mb.keptFull = true
	}
	c.mb.activity = c.now()
	c.poke()
}

// LeaveMail leaves a message from our mailbox that was handed out and
// that the node could not take now (its sender's name could not be
// found, say): it stays in the mailbox and is fetched again (the fetches
// skip nothing meanwhile, so that it is not hidden behind the messages
// set aside).
func (c *Client) LeaveMail(from wire.Key, id wire.MsgID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stRegistered {
		return
	}
	k := mailKey{from: from, id: id}
	if _, ok := c.mb.handed[k]; !ok {
		return // acknowledged or set aside meanwhile, or from an earlier registration
	}
	delete(c.mb.handed, k)
	c.leftLocked(k)
	c.mb.activity = c.now()
	c.poke()
}

// AckReceipt acknowledges a receipt (MailObserver.MailReceipt) whose
// outcome the node recorded durably: the rendezvous forgets it.
// Acknowledgements are batched (up to wire.MaxMailAcks, or ackDelay).
// Without a registration it does nothing: the receipt comes again.
func (c *Client) AckReceipt(ref wire.MailRef) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stRegistered || slices.Contains(c.mb.racks, ref) {
		return
	}
	delete(c.mb.rhanded, ref)
	if len(c.mb.racks) == 0 {
		c.mb.rackAt = c.now()
	}
	c.mb.racks = append(c.mb.racks, ref)
	if len(c.mb.racks) >= wire.MaxMailAcks {
		c.sendReceiptAcksLocked()
	}
	c.poke()
}

// mailTickLocked does what the mailbox has due at now and returns how long
// until the next thing is due.
func (c *Client) mailTickLocked(now time.Time) time.Duration {
	next := time.Hour
	if c.state != stRegistered {
		return next
	}
	due := func(at time.Time) bool {
		if !now.Before(at) {
			return true
		}
		next = min(next, at.Sub(now))
		return false
	}
	for k, p := range c.mb.partial {
		if due(p.first.Add(partialTimeout)) {
			c.log.Debug().Str("from", k.from.Short()).Stringer("id", k.id).Int("have", p.have).Int("parts", len(p.parts)).Msg("mailbox: message incomplete; dropped until fetched again")
			delete(c.mb.partial, k)
		}
	}
	for k, at := range c.mb.handed {
		if due(at.Add(handedTimeout)) {
			delete(c.mb.handed, k)
			c.leftLocked(k)
		}
	}
	for ref, at := range c.mb.rhanded {
		if due(at.Add(handedTimeout)) {
			delete(c.mb.rhanded, ref)
		}
	}
	if len(c.mb.acks) > 0 && due(c.mb.ackAt.Add(ackDelay)) {
		c.sendAcksLocked()
	}
	if len(c.mb.racks) > 0 && due(c.mb.rackAt.Add(ackDelay)) {
		c.sendReceiptAcksLocked()
	}
	if c.mb.draining && c.mb.keptFull {
		c.log.Warn().Int("kept", len(c.mb.kept)).Int("left", len(c.mb.left)).Msg("mailbox: too many messages set aside or left; draining again after the next registration")
		c.endDrainLocked()
		return next
	}
	if !c.mb.draining || len(c.mb.handed) > 0 || len(c.mb.partial) > 0 {
		return next
	}
	if a := &c.mb.ans; a.refused || a.next < a.count {
		// A message of this answer is missing in full (lost, or dropped
		// incomplete): those after it wait. When no part came for a while
		// it will not come; drop them and fetch again (once those handed
		// out are acknowledged): the answer begins with the missing one.
		if !due(a.lastPart.Add(fetchQuiet)) {
			return next
		}
		c.log.Debug().Int("index", a.next).Int("count", a.count).Int("dropped", len(c.mb.ready)).Msg("mailbox: a message of the answer is missing; fetching again")
		if c.mb.tries >= maxFetchTries {
			c.log.Warn().Int("tries", c.mb.tries).Msg("mailbox: answers keep missing a message; giving up until the next registration")
			c.endDrainLocked()
			return next
		}
		c.fetchLocked(now)
		return min(next, fetchQuiet)
	}
	switch {
	case c.mb.fresh > 0 && c.mb.tries >= maxFetchTries:
		// All this fetch brought was left before, again and again.
		c.log.Warn().Int("left", len(c.mb.left)).Msg("mailbox: messages keep being left; giving up until the next registration")
		c.endDrainLocked()
	case c.mb.fresh > 0:
		// Everything this fetch brought is acknowledged, set aside or
		// left: the next ones (a message left, after a pause).
		settle := fetchSettle
		if len(c.mb.left) > 0 {
			settle = fetchQuiet
		}
		if due(c.mb.activity.Add(settle)) {
			c.fetchLocked(now)
			next = min(next, fetchQuiet)
		}
	case due(c.mb.activity.Add(fetchQuiet)):
		switch {
		case c.mb.seen > 0:
			// All that came is set aside (or was handed out before):
			// nothing more can come until the next registration.
			c.log.Info().Int("kept", len(c.mb.kept)).Msg("mailbox: only messages set aside are left")
			c.endDrainLocked()
		case c.mb.tries >= maxFetchTries:
			c.log.Warn().Int("tries", c.mb.tries).Msg("mailbox: the rendezvous does not answer fetches; giving up until the next registration")
			c.endDrainLocked()
		default:
			c.fetchLocked(now)
			next = min(next, fetchQuiet)
		}
	}
	return next
}

// onMailReceiptLocked hands receipts to the observer; it acknowledges
// each (AckReceipt) once the outcome is durable. The rendezvous repeats
// the receipts not yet acknowledged whenever it has new ones: a repeat of
// one the observer has (or whose acknowledgement is queued) is not handed
// out again.
func (c *Client) onMailReceiptLocked(m *wire.MailReceipt, now time.Time) {
	mo := c.mailObserver()
	if mo == nil {
		return
	}
	var rs []wire.Receipt
	for _, r := range m.Receipts {
		if _, ok := c.mb.rhanded[r.MailRef]; ok || slices.Contains(c.mb.racks, r.MailRef) {
			continue
		}
		if len(c.mb.rhanded) < maxHanded {
			c.mb.rhanded[r.MailRef] = now
		}
		rs = append(rs, r)
	}
	if len(rs) == 0 {
		return
	}
	c.notifyLocked(func(Observer) {
		for _, r := range rs {
			mo.MailReceipt(r)
		}
	})
}

func (c *Client) onMailPutReplyLocked(m *wire.MailPutReply) {
	if w, ok := c.deposits[m.TxID]; ok && w.id == m.ID {
		delete(c.deposits, m.TxID)
		select {
		case w.ch <- depositResult{status: m.Status}:
		default: // a reply to an earlier send of the parts is waiting
		}
	}
}

// Deposit puts blob, sealed for peer to (package node/mailbox), with
// message ID id into to's mailbox on the rendezvous, and returns the
// outcome: wire.MailStored once it is durable there (also when it already
// was), or MailOnline, MailUnknown, MailFull, MailShare, MailTooBig. It
// waits for a registration, sends every part with one transaction ID, and
// sends them all again every second until the reply comes; a busy or
// rate-limiting rendezvous is asked again after a pause. It fails with
// ErrDepositTimeout when ctx ends, or after 30 s.
func (c *Client) Deposit(ctx context.Context, to wire.Key, id wire.MsgID, blob []byte) (wire.MailStatus, error) {
	if len(blob) == 0 || len(blob) > wire.MaxMailBlob {
		return 0, fmt.Errorf("rvclient: a sealed message of %d bytes cannot be deposited (1 to %d)", len(blob), wire.MaxMailBlob)
	}
	ctx, cancel := context.WithTimeout(ctx, depositTimeout)
	defer cancel()
	parts := wire.MailParts(blob)
	pause := 250 * time.Millisecond
	for {
		if _, err := c.WaitRegistered(ctx); err != nil {
			return 0, ErrDepositTimeout
		}
		ch := make(chan depositResult, 1)
		c.mu.Lock()
		c.txid++
		tx := c.txid
		c.deposits[tx] = depositWait{id: id, ch: ch}
		c.mu.Unlock()
		r, ok := c.depositTx(ctx, tx, to, id, parts, ch)
		c.mu.Lock()
		delete(c.deposits, tx)
		c.mu.Unlock()
		switch {
		case !ok:
			return 0, ErrDepositTimeout
		case r.err == nil && r.status != wire.MailBusy:
			return r.status, nil
		}
		// Busy, or refused for now: ask again after a pause.
		c.log.Debug().Stringer("id", id).Str("to", to.Short()).Msg("rendezvous busy; depositing again soon")
		if !sleepCtx(ctx, pause) {
			return 0, ErrDepositTimeout
		}
		pause = min(2*pause, 4*time.Second)
	}
}

// depositTx sends the parts of one deposit until its reply comes (true),
// or ctx ends (false). While not registered it waits, then sends again.
func (c *Client) depositTx(ctx context.Context, tx uint32, to wire.Key, id wire.MsgID, parts [][]byte, ch chan depositResult) (depositResult, bool) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case r := <-ch:
			return r, true
		case <-ctx.Done():
			return depositResult{}, false
		case <-t.C:
		}
		if _, err := c.WaitRegistered(ctx); err != nil {
			return depositResult{}, false
		}
		c.mu.Lock()
		if c.state == stRegistered {
			c.deposits[tx] = depositWait{id: id, ch: ch}
			for i, p := range parts {
				c.sendSealedLocked(&wire.MailPut{TxID: tx, To: to, ID: id, Part: uint8(i), Parts: uint8(len(parts)), Data: p})
			}
		}
		c.mu.Unlock()
		t.Reset(depositResend)
	}
}
