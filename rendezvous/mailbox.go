package rendezvous

import (
	"bytes"
	"context"
	"math"
	"slices"
	"time"

	"natchat/relay"
	"natchat/wire"
)

// The offline mailbox (docs/PROTOCOL.md, "Offline mailbox").
//
// A deposit comes in parts (MailPut), which the packet loop gathers in
// memory, bounded per session and overall. Once all are in, the packet
// loop checks that the recipient is offline and known, and hands the blob
// to the store (Options.Mail), which checks the limits and writes it with
// its committer, off the packet path; the reply (MailPutReply) is sent when
// the write is durable, from the store's completion. Fetches (MailFetch)
// read the store and answer at once. Acknowledgements (MailAck,
// MailReceiptAck) are writes too: they delete messages (making receipts
// for their senders) or receipts, and are answered by what follows them
// (receipts go to their senders when made, after registration, on
// heartbeats and after each MailReceiptAck while any wait).

// Mailbox defaults (Options).
const (
	DefaultMailboxCount = 10_000
	DefaultMailboxBytes = 64 << 20
	DefaultMailboxShare = 25 // percent
	DefaultMailboxAge   = 30 * 24 * time.Hour
	// What one sender may have waiting in all mailboxes together.
	DefaultMailboxSenderCount = 10_000
	DefaultMailboxSenderBytes = 64 << 20
)

const (
	// maxMailPuts bounds the deposits a session has in progress: from
	// their first part until their reply.
	maxMailPuts = 4
	// mailPutTTL is how long a deposit may take to get all its parts in.
	mailPutTTL = 10 * time.Second
	// maxMailHeld bounds the memory every session's deposits in progress
	// reserve together (MailParts × MailPartLen each).
	maxMailHeld = 16 << 20
	// maxMailOps bounds a session's acknowledgements being written.
	maxMailOps = 8
)

// Mail rejection reasons (the rejected metric): the wire.MailStatus names,
// and mailRejectError for a write that failed (answered busy).
const mailRejectError = "error"

// clientMail is a client's mailbox state, guarded by the Server's mu.
type clientMail struct {
	puts   []*mailPut                // deposits in progress (≤ maxMailPuts)
	ops    int                       // acknowledgements being written (≤ maxMailOps)
	acking map[wire.MailRef]struct{} // messages whose acknowledgement is being written (Peer: sender)
}

// mailPut is a deposit in progress: parts gathering, then being written.
type mailPut struct {
	txID     uint32
	to       wire.Key
	id       wire.MsgID
	nparts   int
	parts    [][]byte // nil once complete
	have     int
	reserved int // bytes counted in Server.mailHeld
	first    time.Time
	writing  bool
}

func (cm *clientMail) put(tx uint32) *mailPut {
	for _, p := range cm.puts {
		if p.txID == tx {
			return p
		}
	}
	return nil
}

// mailLimits returns the store's limits for one mailbox from the options.
func (s *Server) mailLimits() MailLimits {
	o := s.opts
	l := MailLimits{Count: max(o.MailboxCount, 0), Bytes: max(o.MailboxBytes, 0),
		SenderCount: max(o.MailboxSenderCount, 0), SenderBytes: max(o.MailboxSenderBytes, 0)}
	if o.MailboxShare > 0 && o.MailboxShare < 100 {
		if l.Count > 0 {
			l.ShareCount = max(1, l.Count*o.MailboxShare/100)
		}
		if l.Bytes > 0 {
			l.ShareBytes = max(1, l.Bytes*int64(o.MailboxShare)/100)
		}
	}
	return l
}

// handleMailPutLocked takes one part of a deposit from c.
func (s *Server) handleMailPutLocked(c *client, m *wire.MailPut, now time.Time) {
	cm := &c.extra().mail
	p := cm.put(m.TxID)
	if p != nil && !p.writing && now.Sub(p.first) > mailPutTTL {
		s.removePutLocked(c, p)
		p = nil
	}
	if p == nil {
		if m.Part != 0 {
			// A deposit starts with its first part (a node sends the
			// parts in order): a later part of a deposit refused busy,
			// dropped or finished starts nothing that would wait 10 s
			// for a part 0 the sender will not send under this TxID.
			return
		}
		reserve := int(m.Parts) * wire.MailPartLen
		if len(cm.puts) >= maxMailPuts || s.mailHeld+reserve > s.mailHeldMax {
			s.replyPutLocked(c, m.TxID, m.ID, wire.MailBusy, wire.MailBusy.String())
			return
		}
		p = &mailPut{txID: m.TxID, to: m.To, id: m.ID, nparts: int(m.Parts), parts: make([][]byte, m.Parts),
			reserved: reserve, first: now}
		cm.puts = append(cm.puts, p)
		s.mailHeld += reserve
		s.mailPutters[c] = struct{}{}
	}
	if p.to != m.To || p.id != m.ID || p.nparts != int(m.Parts) {
		s.drop(relay.DropMalformed) // not a part of the deposit with this TxID
		return
	}
	if p.writing || p.parts[m.Part] != nil {
		return // a part it has: the sender resent the deposit
	}
	p.parts[m.Part] = bytes.Clone(m.Data) // m.Data is in s.opened
	if p.have++; p.have < p.nparts {
		return
	}
	blob := bytes.Join(p.parts, nil)
	p.parts = nil
	if online := s.byKey.get(p.to) != nil; online || !s.boundLocked(p.to) {
		// As much as a lookup tells: it costs as much.
		st := wire.MailUnknown
		if online {
			st = wire.MailOnline
		}
		if s.opts.LookupRate > 0 && !s.lookupLimiter(c).AllowN(now, 1) {
			s.drop(relay.DropQuota)
			st = wire.MailBusy
		}
		s.finishPutLocked(c, p, DepositResult{Status: st})
		return
	}
	res, queued := s.opts.Mail.Deposit(StoredMail{To: p.to, From: c.key, ID: p.id, Stored: now, Blob: blob}, s.mailLimits(),
		func(res DepositResult) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.finishPutLocked(c, p, res)
			s.mailWroteLocked()
		})
	if !queued {
		s.finishPutLocked(c, p, res)
		return
	}
	p.writing = true
	s.mailWrites++
}

// boundLocked reports whether a name is bound to key.
func (s *Server) boundLocked(key wire.Key) bool {
	_, ok := s.opts.Store.ByKey(key)
	return ok
}

// finishPutLocked ends the deposit p of c with res: it answers c, if c is
// still online, and tells the recipient, if online now, of a new message.
func (s *Server) finishPutLocked(c *client, p *mailPut, res DepositResult) {
	s.removePutLocked(c, p)
	st, reason := res.Status, res.Status.String()
	if res.Err != nil {
		s.log.Error().Err(res.Err).Str("peer", c.name).Msg("mailbox deposit")
		st, reason = wire.MailBusy, mailRejectError
	}
	switch {
	case st != wire.MailStored:
		s.m.mailRejected.WithLabelValues(reason).Inc()
	case res.New:
		s.m.mailStored.Inc()
	}
	// To the node's validated address as it is now; none if its
	// registration ended meanwhile (it deposits again when it is back).
	if s.byKey.get(c.key) == c {
		s.sendSealedLocked(c, &wire.MailPutReply{TxID: p.txID, ID: p.id, Status: st})
	}
	if res.New {
		// The recipient may have registered while the deposit was being
		// written: its notice at registration did not count it.
		if d := s.byKey.get(p.to); d != nil {
			s.sendNoticeLocked(d)
		}
	}
}

// replyPutLocked refuses a deposit at once.
func (s *Server) replyPutLocked(c *client, tx uint32, id wire.MsgID, st wire.MailStatus, reason string) {
	s.m.mailRejected.WithLabelValues(reason).Inc()
	s.sendSealedLocked(c, &wire.MailPutReply{TxID: tx, ID: id, Status: st})
}

// removePutLocked forgets the deposit p of c and its reservation.
func (s *Server) removePutLocked(c *client, p *mailPut) {
	if c.x == nil {
		return
	}
	cm := &c.x.mail
	i := slices.Index(cm.puts, p)
	if i < 0 {
		return
	}
	cm.puts = slices.Delete(cm.puts, i, i+1)
	s.mailHeld -= p.reserved
	if len(cm.puts) == 0 {
		cm.puts = nil
		delete(s.mailPutters, c)
	}
}

// dropPutsLocked drops c's deposits still gathering parts: all of them, or
// those older than mailPutTTL as of now. Deposits being written finish.
func (s *Server) dropPutsLocked(c *client, now time.Time, all bool) {
	if c.x == nil {
		return
	}
	for _, p := range slices.Clone(c.x.mail.puts) {
		if !p.writing && (all || now.Sub(p.first) > mailPutTTL) {
			s.removePutLocked(c, p)
		}
	}
}

// sweepMailLocked drops the deposits that did not get all their parts in
// time.
func (s *Server) sweepMailLocked(now time.Time) {
	for c := range s.mailPutters {
		s.dropPutsLocked(c, now, false)
	}
}

// mailWroteLocked counts a mailbox write answered.
func (s *Server) mailWroteLocked() {
	if s.mailWrites--; s.mailWrites == 0 {
		s.mailIdle.Broadcast()
	}
}

// WaitMail waits until every mailbox write queued so far (deposits and
// acknowledgements) has been answered. In-memory tests that call Handle
// call it, as they call DrainRegistrations; Run needs nothing of the kind.
func (s *Server) WaitMail() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.mailWrites > 0 {
		s.mailIdle.Wait()
	}
}

// sendNoticeLocked tells c how many messages wait for it.
func (s *Server) sendNoticeLocked(c *client) {
	count, size := s.opts.Mail.MailStats(c.key)
	s.sendSealedLocked(c, &wire.MailNotice{Count: clampU32(int64(count)), Bytes: clampU32(size)})
}

func clampU32(n int64) uint32 { return uint32(min(max(n, 0), math.MaxUint32)) }

// mailRegisteredLocked follows c's registration (after its snapshot): the
// notice if messages wait for it, and the receipts waiting.
func (s *Server) mailRegisteredLocked(c *client) {
	if count, _ := s.opts.Mail.MailStats(c.key); count > 0 {
		s.sendNoticeLocked(c)
	}
	s.sendReceiptsLocked(c)
}

// handleMailFetchLocked sends c its oldest messages (those whose
// acknowledgement is being written, and the m.Skip oldest of the rest,
// left out), each in all its parts, or an empty notice.
func (s *Server) handleMailFetchLocked(c *client, m *wire.MailFetch) {
	n := int(m.Max)
	if n == 0 || n > wire.MailFetchMax {
		n = wire.MailFetchMax
	}
	// Left out: messages whose acknowledgement is being written, then the
	// m.Skip oldest of the rest (the node has set them aside).
	var skip func(wire.Key, wire.MsgID) bool
	var acking map[wire.MailRef]struct{}
	if c.x != nil {
		acking = c.x.mail.acking
	}
	if len(acking) > 0 || m.Skip > 0 {
		skipped, toSkip := 0, min(int(m.Skip), wire.MaxMailSkip)
		skip = func(from wire.Key, id wire.MsgID) bool {
			if _, ok := acking[wire.MailRef{Peer: from, ID: id}]; ok {
				return true
			}
			if skipped < toSkip {
				skipped++
				return true
			}
			return false
		}
	}
	msgs, err := s.opts.Mail.Mail(c.key, n, skip)
	if err != nil {
		s.log.Error().Err(err).Str("peer", c.name).Msg("mailbox fetch")
		return
	}
	if len(msgs) == 0 {
		s.sendSealedLocked(c, &wire.MailNotice{})
		return
	}
	// Every part names the fetch it answers (Tag), the message's place in
	// the answer and the answer's size, so the node can hand the messages
	// out in this order even when one is lost in full.
	type served struct {
		sm    StoredMail
		parts [][]byte
	}
	var answer []served
	for _, sm := range msgs {
		parts := wire.MailParts(sm.Blob)
		if len(parts) == 0 || len(parts) > wire.MaxMailParts {
			continue
		}
		answer = append(answer, served{sm, parts})
	}
	if len(answer) > wire.MailFetchMax {
		answer = answer[:wire.MailFetchMax]
	}
	for i, a := range answer {
		for j, d := range a.parts {
			s.sendSealedLocked(c, &wire.Mail{From: a.sm.From, ID: a.sm.ID, StoredMS: a.sm.Stored.UnixMilli(),
				Tag: m.Tag, Index: uint8(i), Count: uint8(len(answer)),
				Part: uint8(j), Parts: uint8(len(a.parts)), Data: d})
		}
	}
}

// handleMailAckLocked deletes the messages c acknowledged (durably, with
// their receipts) and then sends the receipts to their senders online.
func (s *Server) handleMailAckLocked(c *client, m *wire.MailAck, now time.Time) {
	cm := &c.extra().mail
	var refs []wire.MailRef
	for _, r := range m.Refs {
		if _, ok := cm.acking[r]; !ok && !slices.Contains(refs, r) {
			refs = append(refs, r)
		}
	}
	if len(refs) == 0 {
		return
	}
	if cm.ops >= maxMailOps {
		s.drop(relay.DropQuota) // the node fetches them again, and acknowledges again
		return
	}
	queued := s.opts.Mail.Ack(c.key, refs, now, func(made []SenderReceipt, err error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		cm.ops--
		for _, r := range refs {
			delete(cm.acking, r)
		}
		s.mailWroteLocked()
		if err != nil {
			s.log.Error().Err(err).Str("peer", c.name).Msg("mailbox acknowledgement")
			return
		}
		s.m.mailDelivered.Add(float64(len(made)))
		s.sendMadeReceiptsLocked(made)
	})
	if !queued {
		return // none of them is in the mailbox (any more)
	}
	cm.ops++
	s.mailWrites++
	if cm.acking == nil {
		cm.acking = make(map[wire.MailRef]struct{})
	}
	for _, r := range refs {
		cm.acking[r] = struct{}{}
	}
}

// handleMailReceiptAckLocked deletes the receipts c took and then sends
// the next ones waiting, if any.
func (s *Server) handleMailReceiptAckLocked(c *client, m *wire.MailReceiptAck) {
	if len(m.Refs) == 0 {
		return
	}
	cm := &c.extra().mail
	if cm.ops >= maxMailOps {
		s.drop(relay.DropQuota) // they come again with the next heartbeat
		return
	}
	queued := s.opts.Mail.AckReceipts(c.key, m.Refs, func(err error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		cm.ops--
		s.mailWroteLocked()
		if err != nil {
			s.log.Error().Err(err).Str("peer", c.name).Msg("mailbox receipt acknowledgement")
			return
		}
		if s.byKey.get(c.key) == c {
			s.sendReceiptsLocked(c)
		}
	})
	if queued {
		cm.ops++
		s.mailWrites++
	}
}

// sendMadeReceiptsLocked sends the senders of made that are online their
// waiting receipts.
func (s *Server) sendMadeReceiptsLocked(made []SenderReceipt) {
	done := make(map[wire.Key]bool) // an expiry makes up to thousands
	for _, rc := range made {
		if done[rc.Sender] {
			continue
		}
		done[rc.Sender] = true
		if o := s.byKey.get(rc.Sender); o != nil {
			s.sendReceiptsLocked(o)
		}
	}
}

// sendReceiptsLocked sends c the first receipts waiting for it, if any:
// one datagram; the next ones follow its MailReceiptAck.
func (s *Server) sendReceiptsLocked(c *client) {
	if s.opts.Mail.PendingReceipts(c.key) == 0 {
		return
	}
	rs, err := s.opts.Mail.Receipts(c.key, wire.MaxMailAcks)
	if err != nil {
		s.log.Error().Err(err).Str("peer", c.name).Msg("mailbox receipts")
		return
	}
	if len(rs) > 0 {
		s.sendSealedLocked(c, &wire.MailReceipt{Receipts: rs})
	}
}

// ExpireMail deletes the messages older than MailboxAge as of now, each
// with an expired receipt for its sender (sent at once to senders online),
// and the receipts no sender took within the longer of BindingTTL and
// MailboxAge. It returns how many messages expired. Run calls it at start
// and then periodically (hourly, or an eighth of MailboxAge if shorter);
// tests call it with a stepped clock.
func (s *Server) ExpireMail(now time.Time) (int, error) {
	var cut, receiptCut time.Time
	if s.opts.MailboxAge > 0 {
		cut = now.Add(-s.opts.MailboxAge)
	}
	if s.opts.BindingTTL > 0 {
		receiptCut = now.Add(-max(s.opts.BindingTTL, s.opts.MailboxAge))
	}
	if cut.IsZero() && receiptCut.IsZero() {
		return 0, nil
	}
	made, err := s.opts.Mail.ExpireMail(cut, receiptCut, now)
	s.mu.Lock()
	s.m.mailExpired.Add(float64(len(made)))
	s.sendMadeReceiptsLocked(made)
	s.mu.Unlock()
	if len(made) > 0 {
		s.log.Info().Int("messages", len(made)).Msg("mail expired")
	}
	return len(made), err
}

// expireLoop expires mail and room members at start and then every hour,
// or every eighth of MailboxAge if that is shorter.
func (s *Server) expireLoop(ctx context.Context) {
	every := time.Hour
	if s.opts.MailboxAge > 0 {
		every = min(every, max(s.opts.MailboxAge/8, time.Second))
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := s.ExpireMail(s.now()); err != nil {
			s.log.Error().Err(err).Msg("expiring mail")
		}
		if _, err := s.ExpireRooms(s.now()); err != nil {
			s.log.Error().Err(err).Msg("expiring room members")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
