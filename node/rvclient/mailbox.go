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
// each message from its parts, hands it to the MailObserver, and, once
// every message handed out has been acknowledged (AckMail: the node has it
// durably) or set aside (KeepMail), fetches the next ones, until the
// rendezvous answers that the mailbox is empty. Receipts for messages we
// deposited go to the observer and are acknowledged once it took them.
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
	// Acknowledge it with AckMail once it is durably ours, or set it
	// aside with KeepMail; either may come much later (after it was
	// shown). blob is the observer's to keep.
	Mail(from wire.Key, id wire.MsgID, storedMS int64, blob []byte)
	// MailDrain: a drain of the mailbox began (true: after each
	// registration, and when messages wait) or ended (false: the mailbox
	// is empty but for messages set aside, the registration was lost, or
	// the rendezvous did not answer). Calls alternate, starting with true.
	MailDrain(active bool)
	// MailReceipt: what became of a message we deposited. It returns
	// whether the outcome is recorded: only then is the receipt
	// acknowledged (else the rendezvous repeats it later).
	MailReceipt(r wire.Receipt) bool
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
	// maxKept bounds the messages set aside in one registration.
	maxKept = 1024
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
	order    uint64 // arrival order of its first part
	parts    [][]byte
	have     int
	first    time.Time
}

// readyMail is a complete message waiting for older ones still being
// reassembled.
type readyMail struct {
	key      mailKey
	storedMS int64
	order    uint64
	blob     []byte
}

func (r *readyMail) before(storedMS int64, order uint64) bool {
	return r.storedMS < storedMS || (r.storedMS == storedMS && r.order < order)
}

// mailState is the drain of our mailbox. Guarded by Client.mu.
type mailState struct {
	draining bool
	tries    int       // fetches without any answer
	activity time.Time // of the last fetch, part, notice, ack or set-aside
	fresh    int       // messages handed out since the last fetch
	seen     int       // messages complete (or known) since the last fetch
	order    uint64
	partial  map[mailKey]*partialMail
	ready    []readyMail
	handed   map[mailKey]time.Time
	kept     map[mailKey]bool
	acks     []wire.MailRef
	ackAt    time.Time // when the oldest queued ack was queued
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
	c.mb = mailState{partial: make(map[mailKey]*partialMail), handed: make(map[mailKey]time.Time), kept: make(map[mailKey]bool)}
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
	// The messages set aside are the oldest in the mailbox (every other
	// one handed out before them was acknowledged, and deleted): skip
	// them, or they would fill every answer.
	c.sendSealedLocked(&wire.MailFetch{Max: wire.MailFetchMax, Skip: uint16(min(len(c.mb.kept), math.MaxUint16))})
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
	if mo == nil {
		return
	}
	c.mb.tries = 0
	c.mb.activity = now
	k := mailKey{from: m.From, id: m.ID}
	if _, ok := c.mb.handed[k]; ok || c.mb.kept[k] {
		if m.Part == 0 {
			c.mb.seen++ // known already: a resend, or one set aside
		}
		return
	}
	for _, r := range c.mb.ready {
		if r.key == k {
			return
		}
	}
	p := c.mb.partial[k]
	if p == nil {
		if len(c.mb.partial) >= maxPartials || len(c.mb.handed)+len(c.mb.ready) >= maxHanded {
			return // fetched again later
		}
		c.mb.order++
		p = &partialMail{storedMS: m.StoredMS, order: c.mb.order, parts: make([][]byte, m.Parts), first: now}
		c.mb.partial[k] = p
	}
	if int(m.Parts) != len(p.parts) || p.parts[m.Part] != nil {
		return // disagrees with the first part, or a repeat
	}
	p.parts[m.Part] = bytes.Clone(m.Data)
	p.have++
	if p.have < len(p.parts) {
		return
	}
	delete(c.mb.partial, k)
	c.mb.seen++
	c.mb.ready = append(c.mb.ready, readyMail{key: k, storedMS: p.storedMS, order: p.order, blob: bytes.Join(p.parts, nil)})
	c.releaseReadyLocked(now)
}

// releaseReadyLocked hands out the complete messages, oldest first, that
// no message still being reassembled is older than.
func (c *Client) releaseReadyLocked(now time.Time) {
	if len(c.mb.ready) == 0 {
		return
	}
	slices.SortFunc(c.mb.ready, func(a, b readyMail) int {
		if a.before(b.storedMS, b.order) {
			return -1
		}
		return 1
	})
	n := 0
	for _, r := range c.mb.ready {
		older := false
		for _, p := range c.mb.partial {
			if !r.before(p.storedMS, p.order) {
				older = true
				break
			}
		}
		if older {
			break
		}
		n++
		c.mb.handed[r.key] = now
		c.mb.fresh++
		from, id, stored, blob := r.key.from, r.key.id, r.storedMS, r.blob
		c.notifyLocked(func(o Observer) { o.(MailObserver).Mail(from, id, stored, blob) })
	}
	c.mb.ready = slices.Delete(c.mb.ready, 0, n)
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
// registration; a drain that gets nothing but such messages ends.
func (c *Client) KeepMail(from wire.Key, id wire.MsgID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stRegistered {
		return
	}
	k := mailKey{from: from, id: id}
	delete(c.mb.handed, k)
	if len(c.mb.kept) < maxKept {
		c.mb.kept[k] = true
	}
	c.mb.activity = c.now()
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
	c.releaseReadyLocked(now)
	for k, at := range c.mb.handed {
		if due(at.Add(handedTimeout)) {
			delete(c.mb.handed, k)
		}
	}
	if len(c.mb.acks) > 0 && due(c.mb.ackAt.Add(ackDelay)) {
		c.sendAcksLocked()
	}
	if !c.mb.draining || len(c.mb.handed) > 0 || len(c.mb.partial) > 0 || len(c.mb.ready) > 0 {
		return next
	}
	switch {
	case c.mb.fresh > 0:
		// Everything this fetch brought is acknowledged or set aside:
		// the next ones.
		if due(c.mb.activity.Add(fetchSettle)) {
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

// onMailReceiptLocked hands receipts to the observer, and acknowledges
// those it recorded once it returns.
func (c *Client) onMailReceiptLocked(m *wire.MailReceipt) {
	mo := c.mailObserver()
	if mo == nil || len(m.Receipts) == 0 {
		return
	}
	rs := m.Receipts
	c.notifyLocked(func(Observer) {
		var refs []wire.MailRef
		for _, r := range rs {
			if mo.MailReceipt(r) {
				refs = append(refs, r.MailRef)
			}
		}
		if len(refs) == 0 {
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.state == stRegistered {
			c.sendSealedLocked(&wire.MailReceiptAck{Refs: refs})
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
