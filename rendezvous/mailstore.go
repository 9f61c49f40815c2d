package rendezvous

import (
	"bytes"
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"

	"natchat/wire"
)

// Mailboxes keeps the offline mailbox: sealed messages waiting for their
// recipients, and receipts waiting for the messages' senders. The bbolt
// Store implements it; a distributed store will implement it too.
//
// The store never opens a blob: it keeps it with its routing metadata
// (recipient, sender, ID, size, time stored), as the rendezvous sees them.
//
// All methods are safe for concurrent use. The server calls every method
// but ExpireMail on its packet loop, so none of them may wait for a disk
// write: a write is queued and its done function is called, on another
// goroutine and with no lock of the store held, once the write is durable
// (or has failed). done may block briefly (it takes the server's lock) and
// must not call back into the store's writes and wait for them.
type Mailboxes interface {
	// Deposit stores m in m.To's mailbox unless a message from m.From with
	// m.ID is there already (then it succeeds and writes nothing) or lim
	// refuses it. If it can tell the outcome at once (a duplicate that is
	// durable, a refusal) it returns it with queued false and never calls
	// done; otherwise it returns queued true and calls done once, with
	// the outcome, when it is durable. The outcome's Status is
	// wire.MailStored, MailFull, MailShare, MailQuota or MailTooBig; Err is set when
	// the write failed (nothing was stored).
	Deposit(m StoredMail, lim MailLimits, done func(DepositResult)) (res DepositResult, queued bool)
	// Mail returns up to max of to's messages, oldest first, leaving out
	// those skip (if not nil) reports. It sees every write whose done has
	// been called.
	Mail(to wire.Key, max int, skip func(from wire.Key, id wire.MsgID) bool) ([]StoredMail, error)
	// MailStats returns the number and bytes of the messages waiting for
	// to. It never blocks on I/O.
	MailStats(to wire.Key) (count int, bytes int64)
	// MailTotals returns the number and bytes of the messages in every
	// mailbox. It never blocks on I/O.
	MailTotals() (count int, bytes int64)
	// Ack deletes the messages refs (Peer: the sender) from to's mailbox
	// and, in the same durable write, records a wire.ReceiptDelivered for
	// each one's sender, made at now. It returns false, and never calls
	// done, if none of refs is in the mailbox; otherwise done gets the
	// receipts made.
	Ack(to wire.Key, refs []wire.MailRef, now time.Time, done func([]SenderReceipt, error)) (queued bool)
	// Receipts returns up to max of the receipts waiting for the sender
	// from.
	Receipts(from wire.Key, max int) ([]wire.Receipt, error)
	// PendingReceipts returns how many receipts wait for from. It never
	// blocks on I/O.
	PendingReceipts(from wire.Key) int
	// AckReceipts deletes the receipts refs (Peer: the recipient) of the
	// sender from. It returns false, and never calls done, if none of
	// them is there; otherwise done (if not nil) is called once the
	// deletion is durable.
	AckReceipts(from wire.Key, refs []wire.MailRef, done func(error)) (queued bool)
	// ExpireMail deletes the messages stored before cut and records a
	// wire.ReceiptExpired for each one's sender, made at now, in durable
	// writes (each message's deletion and its receipt in one); and it
	// deletes the receipts made before receiptCut. It returns the receipts
	// made. It waits for the writes; the server calls it off the packet
	// path.
	ExpireMail(cut, receiptCut, now time.Time) ([]SenderReceipt, error)
}

var _ Mailboxes = (*Store)(nil)

// StoredMail is a message in a mailbox: its routing metadata and the
// sealed blob, which only To can open.
type StoredMail struct {
	To, From wire.Key
	ID       wire.MsgID
	Stored   time.Time // when the rendezvous took it (to the microsecond)
	Blob     []byte
}

// MailLimits bound one mailbox. A field ≤ 0 is no limit.
type MailLimits struct {
	Count      int   // messages in the mailbox
	Bytes      int64 // bytes of blobs in the mailbox
	ShareCount int   // messages from one sender in the mailbox
	ShareBytes int64 // bytes from one sender in the mailbox
	// SenderCount and SenderBytes bound what one sender has waiting in
	// all mailboxes together (0: no bound), so that one registered node
	// cannot fill every offline node's share of its mailbox.
	SenderCount int
	SenderBytes int64
}

// DepositResult is the outcome of a Deposit.
type DepositResult struct {
	Status wire.MailStatus
	// New is set when this deposit wrote the message (not a duplicate).
	New bool
	// Err is set when the write failed.
	Err error
}

// SenderReceipt is a receipt and the sender it waits for.
type SenderReceipt struct {
	Sender wire.Key
	wire.Receipt
}

// Mailbox buckets (keys are raw bytes; times are encoded by encodeTime;
// seq is the mail bucket's sequence number, big-endian, so a recipient's
// messages list in the order they were stored):
//
//	mail       to(32) seq(8) → from(32) id(8) stored(8) blob
//	mailid     to(32) from(32) id(8) → seq(8)        one message per (to, from, id)
//	mailage    stored(8) to(32) seq(8) → ""          the messages in time order
//	receipts   from(32) to(32) id(8) → status(1) made(8)
//	receiptage made(8) from(32) to(32) id(8) → ""   the receipts in time order
var (
	bucketMail       = []byte("mail")
	bucketMailID     = []byte("mailid")
	bucketMailAge    = []byte("mailage")
	bucketReceipts   = []byte("receipts")
	bucketReceiptAge = []byte("receiptage")
)

const (
	mailHeaderLen = wire.KeyLen + 8 + 8 // from, id, stored
	idKeyLen      = 2*wire.KeyLen + 8   // to/from, from/to, id
	// expireBatch bounds the messages (and receipts) one expiry
	// transaction deletes, so that a backlog does not make one huge write.
	expireBatch = 1000
)

// idKey is the key of (a, b, id) in mailid and receipts.
func idKey(a, b wire.Key, id wire.MsgID) []byte {
	k := make([]byte, 0, idKeyLen)
	k = append(k, a[:]...)
	k = append(k, b[:]...)
	return append(k, id[:]...)
}

// mailState is the in-memory account of the mailboxes, rebuilt at open:
// what the limits and the notices need without reading the disk.
type mailState struct {
	boxes    map[wire.Key]*boxStats
	senders  map[wire.Key]*senderStats // per sender, in all mailboxes
	receipts map[wire.Key]int          // receipts waiting, per sender
	count    int
	bytes    int64
	// committing holds the idKeys of deposits queued or being committed:
	// a duplicate of one of them is not durable yet.
	committing map[string]int
}

// boxStats counts one mailbox, and each sender's part of it.
type boxStats struct {
	count   int
	bytes   int64
	senders map[wire.Key]*senderStats
}

type senderStats struct {
	count int
	bytes int64
}

func newMailState() mailState {
	return mailState{boxes: make(map[wire.Key]*boxStats), senders: make(map[wire.Key]*senderStats),
		receipts: make(map[wire.Key]int), committing: make(map[string]int)}
}

// loadMailState counts the mailboxes and receipts in tx.
func loadMailState(tx *bolt.Tx) mailState {
	st := newMailState()
	d := newMailDelta()
	tx.Bucket(bucketMail).ForEach(func(k, v []byte) error {
		if len(k) == wire.KeyLen+8 && len(v) >= mailHeaderLen {
			d.add(wire.Key(k[:wire.KeyLen]), wire.Key(v[:wire.KeyLen]), 1, int64(len(v)-mailHeaderLen))
		}
		return nil
	})
	tx.Bucket(bucketReceipts).ForEach(func(k, _ []byte) error {
		if len(k) == idKeyLen {
			d.receipts[wire.Key(k[:wire.KeyLen])]++
		}
		return nil
	})
	st.apply(d)
	return st
}

// mailDelta is what one transaction changes in the mailState, applied
// once it is durable.
type mailDelta struct {
	boxes    map[wire.Key]*boxStats
	receipts map[wire.Key]int
}

func newMailDelta() *mailDelta {
	return &mailDelta{boxes: make(map[wire.Key]*boxStats), receipts: make(map[wire.Key]int)}
}

// add counts n messages of size bytes from from in to's mailbox (n, size
// negative: taken out).
func (d *mailDelta) add(to, from wire.Key, n int, size int64) {
	b := d.boxes[to]
	if b == nil {
		b = &boxStats{senders: make(map[wire.Key]*senderStats)}
		d.boxes[to] = b
	}
	f := b.senders[from]
	if f == nil {
		f = &senderStats{}
		b.senders[from] = f
	}
	b.count += n
	b.bytes += size
	f.count += n
	f.bytes += size
}

// apply adds d to st.
func (st *mailState) apply(d *mailDelta) {
	for to, db := range d.boxes {
		b := st.boxes[to]
		if b == nil {
			b = &boxStats{senders: make(map[wire.Key]*senderStats)}
			st.boxes[to] = b
		}
		for from, df := range db.senders {
			f := b.senders[from]
			if f == nil {
				f = &senderStats{}
				b.senders[from] = f
			}
			f.count += df.count
			f.bytes += df.bytes
			if f.count <= 0 {
				delete(b.senders, from)
			}
			t := st.senders[from]
			if t == nil {
				t = &senderStats{}
				st.senders[from] = t
			}
			t.count += df.count
			t.bytes += df.bytes
			if t.count <= 0 {
				delete(st.senders, from)
			}
		}
		b.count += db.count
		b.bytes += db.bytes
		st.count += db.count
		st.bytes += db.bytes
		if b.count <= 0 {
			delete(st.boxes, to)
		}
	}
	for from, n := range d.receipts {
		if st.receipts[from] += n; st.receipts[from] <= 0 {
			delete(st.receipts, from)
		}
	}
}

// mailKind is the kind of a mailbox write.
type mailKind uint8

const (
	mailDeposit mailKind = iota + 1
	mailAck
	mailReceiptAck
	mailExpire
)

// mailReq is a mailbox write for the committer. Its results are set
// before fn is called (or done closed).
type mailReq struct {
	kind mailKind
	now  time.Time
	// Deposit
	m   StoredMail
	lim MailLimits
	res DepositResult
	// Ack (key: the recipient), ReceiptAck (key: the sender)
	key  wire.Key
	refs []wire.MailRef
	// Expire
	cut, receiptCut time.Time
	more            bool // the batch limit was reached: expire again

	made []SenderReceipt // Ack, Expire
	err  error
	fn   func() // called after the commit, with no lock held
}

// Deposit stores m in m.To's mailbox. See Mailboxes.Deposit.
//
// Cost: a read transaction, which settles a duplicate and a refusal by the
// limits as they stand; a new message then waits for the committer's next
// transaction, which checks the limits again and shares its fsync with
// every write queued meanwhile. The blob is copied.
func (s *Store) Deposit(m StoredMail, lim MailLimits, done func(DepositResult)) (DepositResult, bool) {
	k := string(idKey(m.To, m.From, m.ID))
	var dup bool
	err := s.db.View(func(tx *bolt.Tx) error {
		dup = tx.Bucket(bucketMailID).Get([]byte(k)) != nil
		return nil
	})
	if err != nil {
		return DepositResult{Status: wire.MailStored, Err: s.closedOr(err)}, false
	}
	s.mailMu.Lock()
	_, committing := s.mail.committing[k]
	if !committing {
		if dup {
			// Written by a commit that has returned: durable.
			s.mailMu.Unlock()
			return DepositResult{Status: wire.MailStored}, false
		}
		if st := s.limitLocked(&m, lim, 0, 0, 0, 0, nil); st != wire.MailStored {
			s.mailMu.Unlock()
			// The counts may already hold this very message: a copy
			// committed between the read above and the lock (a
			// retransmission). Refusals are rare: look again.
			if s.stored(k) {
				return DepositResult{Status: wire.MailStored}, false
			}
			return DepositResult{Status: st}, false
		}
	}
	s.mail.committing[k]++
	s.mailMu.Unlock()
	m.Blob = bytes.Clone(m.Blob)
	r := &mailReq{kind: mailDeposit, m: m, lim: lim}
	r.fn = func() { done(r.res) }
	if err := s.enqueue(&request{mail: r}); err != nil {
		s.uncommit(k)
		return DepositResult{Status: wire.MailStored, Err: err}, false
	}
	return DepositResult{}, true
}

// stored reports whether the message with idKey k is in a mailbox (a
// failed read counts as not).
func (s *Store) stored(k string) bool {
	var ok bool
	s.db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bucketMailID).Get([]byte(k)) != nil
		return nil
	})
	return ok
}

// uncommit forgets one queued deposit of k.
func (s *Store) uncommit(k string) {
	s.mailMu.Lock()
	if s.mail.committing[k]--; s.mail.committing[k] <= 0 {
		delete(s.mail.committing, k)
	}
	s.mailMu.Unlock()
}

// limitLocked checks m against lim and the counts of its mailbox, plus
// the changes (dc, db; dfc, dfb from m's sender) of the transaction being
// built, and against what m's sender has waiting everywhere, plus d's
// changes (nil: none). It returns wire.MailStored if m fits.
func (s *Store) limitLocked(m *StoredMail, lim MailLimits, dc int, db int64, dfc int, dfb int64, d *mailDelta) wire.MailStatus {
	size := int64(len(m.Blob))
	if size > wire.MaxMailBlob || (lim.Bytes > 0 && size > lim.Bytes) || (lim.ShareBytes > 0 && size > lim.ShareBytes) {
		return wire.MailTooBig // it could never fit
	}
	count, bytes, fcount, fbytes := dc, db, dfc, dfb
	if b := s.mail.boxes[m.To]; b != nil {
		count, bytes = count+b.count, bytes+b.bytes
		if f := b.senders[m.From]; f != nil {
			fcount, fbytes = fcount+f.count, fbytes+f.bytes
		}
	}
	var tcount int
	var tbytes int64
	if t := s.mail.senders[m.From]; t != nil {
		tcount, tbytes = t.count, t.bytes
	}
	if d != nil {
		for _, b := range d.boxes {
			if f := b.senders[m.From]; f != nil {
				tcount, tbytes = tcount+f.count, tbytes+f.bytes
			}
		}
	}
	switch {
	case lim.SenderCount > 0 && tcount+1 > lim.SenderCount, lim.SenderBytes > 0 && tbytes+size > lim.SenderBytes:
		return wire.MailQuota
	case lim.ShareCount > 0 && fcount+1 > lim.ShareCount, lim.ShareBytes > 0 && fbytes+size > lim.ShareBytes:
		return wire.MailShare
	case lim.Count > 0 && count+1 > lim.Count, lim.Bytes > 0 && bytes+size > lim.Bytes:
		return wire.MailFull
	}
	return wire.MailStored
}

// Mail returns up to max of to's messages, oldest first. See
// Mailboxes.Mail. Cost: one read transaction, which does not wait for the
// committer; the blobs are copied.
func (s *Store) Mail(to wire.Key, max int, skip func(wire.Key, wire.MsgID) bool) ([]StoredMail, error) {
	var out []StoredMail
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMail).Cursor()
		for k, v := c.Seek(to[:]); k != nil && bytes.HasPrefix(k, to[:]) && len(out) < max; k, v = c.Next() {
			if len(v) < mailHeaderLen {
				continue
			}
			m := StoredMail{To: to, From: wire.Key(v[:wire.KeyLen])}
			copy(m.ID[:], v[wire.KeyLen:])
			if skip != nil && skip(m.From, m.ID) {
				continue
			}
			m.Stored = decodeTime(v[wire.KeyLen+8:])
			m.Blob = bytes.Clone(v[mailHeaderLen:])
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, s.closedOr(err)
	}
	return out, nil
}

// MailStats returns the count and bytes waiting for to. Cost: a map read
// under a mutex.
func (s *Store) MailStats(to wire.Key) (int, int64) {
	s.mailMu.Lock()
	defer s.mailMu.Unlock()
	if b := s.mail.boxes[to]; b != nil {
		return b.count, b.bytes
	}
	return 0, 0
}

// MailTotals returns the count and bytes in every mailbox.
func (s *Store) MailTotals() (int, int64) {
	s.mailMu.Lock()
	defer s.mailMu.Unlock()
	return s.mail.count, s.mail.bytes
}

// PendingReceipts returns how many receipts wait for from. Cost: a map
// read under a mutex.
func (s *Store) PendingReceipts(from wire.Key) int {
	s.mailMu.Lock()
	defer s.mailMu.Unlock()
	return s.mail.receipts[from]
}

// Ack deletes acknowledged messages and records their receipts. See
// Mailboxes.Ack. Cost: a read transaction; then, if any of refs is there,
// a write through the committer.
func (s *Store) Ack(to wire.Key, refs []wire.MailRef, now time.Time, done func([]SenderReceipt, error)) bool {
	if !s.anyIn(bucketMailID, to, refs) {
		return false
	}
	r := &mailReq{kind: mailAck, key: to, refs: refs, now: now}
	r.fn = func() { done(r.made, r.err) }
	if err := s.enqueue(&request{mail: r}); err != nil {
		return false
	}
	return true
}

// AckReceipts deletes receipts the sender took. See
// Mailboxes.AckReceipts. Cost: a read transaction; then, if any of refs
// is there, a write through the committer.
func (s *Store) AckReceipts(from wire.Key, refs []wire.MailRef, done func(error)) bool {
	if !s.anyIn(bucketReceipts, from, refs) {
		return false
	}
	r := &mailReq{kind: mailReceiptAck, key: from, refs: refs}
	r.fn = func() {
		if done != nil {
			done(r.err)
		}
	}
	if err := s.enqueue(&request{mail: r}); err != nil {
		return false
	}
	return true
}

// anyIn reports whether bucket holds idKey(k, ref.Peer, ref.ID) for one
// of refs.
func (s *Store) anyIn(bucket []byte, k wire.Key, refs []wire.MailRef) bool {
	found := false
	s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		for _, ref := range refs {
			if b.Get(idKey(k, ref.Peer, ref.ID)) != nil {
				found = true
				return nil
			}
		}
		return nil
	})
	return found
}

// Receipts returns up to max receipts waiting for from. Cost: one read
// transaction.
func (s *Store) Receipts(from wire.Key, max int) ([]wire.Receipt, error) {
	var out []wire.Receipt
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketReceipts).Cursor()
		for k, v := c.Seek(from[:]); k != nil && bytes.HasPrefix(k, from[:]) && len(out) < max; k, v = c.Next() {
			if len(k) != idKeyLen || len(v) < 1 {
				continue
			}
			var rc wire.Receipt
			rc.Peer = wire.Key(k[wire.KeyLen : 2*wire.KeyLen])
			copy(rc.ID[:], k[2*wire.KeyLen:])
			rc.Status = wire.ReceiptStatus(v[0])
			out = append(out, rc)
		}
		return nil
	})
	if err != nil {
		return nil, s.closedOr(err)
	}
	return out, nil
}

// ExpireMail deletes old messages and receipts. See Mailboxes.ExpireMail.
// Cost: one transaction through the committer per 1000 messages or
// receipts deleted (reading only what it deletes, from the time-ordered
// indexes), each waited for.
func (s *Store) ExpireMail(cut, receiptCut, now time.Time) ([]SenderReceipt, error) {
	var made []SenderReceipt
	for {
		r := &mailReq{kind: mailExpire, cut: cut, receiptCut: receiptCut, now: now}
		req := &request{mail: r}
		if err := s.enqueue(req); err != nil {
			return made, err
		}
		<-req.done
		made = append(made, r.made...)
		if r.err != nil || !r.more {
			return made, r.err
		}
	}
}

// applyMail applies r in tx, counting the changes in d.
func (s *Store) applyMail(tx *bolt.Tx, r *mailReq, d *mailDelta) error {
	r.made, r.more = nil, false
	switch r.kind {
	case mailDeposit:
		return s.applyDeposit(tx, r, d)
	case mailAck:
		for _, ref := range r.refs {
			size, ok, err := deleteMail(tx, r.key, ref.Peer, ref.ID)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			d.add(r.key, ref.Peer, -1, -size)
			rc := SenderReceipt{Sender: ref.Peer, Receipt: wire.Receipt{MailRef: wire.MailRef{Peer: r.key, ID: ref.ID}, Status: wire.ReceiptDelivered}}
			if err := putReceipt(tx, rc, r.now, d); err != nil {
				return err
			}
			r.made = append(r.made, rc)
		}
	case mailReceiptAck:
		for _, ref := range r.refs {
			if err := deleteReceipt(tx, idKey(r.key, ref.Peer, ref.ID), d); err != nil {
				return err
			}
		}
	case mailExpire:
		return expire(tx, r, d)
	}
	return nil
}

// applyDeposit writes a deposit unless it is a duplicate or over a limit.
func (s *Store) applyDeposit(tx *bolt.Tx, r *mailReq, d *mailDelta) error {
	m := &r.m
	r.res = DepositResult{Status: wire.MailStored}
	k := idKey(m.To, m.From, m.ID)
	ids := tx.Bucket(bucketMailID)
	if ids.Get(k) != nil {
		return nil
	}
	var dc, dfc int
	var db, dfb int64
	if b := d.boxes[m.To]; b != nil {
		dc, db = b.count, b.bytes
		if f := b.senders[m.From]; f != nil {
			dfc, dfb = f.count, f.bytes
		}
	}
	s.mailMu.Lock()
	st := s.limitLocked(m, r.lim, dc, db, dfc, dfb, d)
	s.mailMu.Unlock()
	if st != wire.MailStored {
		r.res.Status = st
		return nil
	}
	mail := tx.Bucket(bucketMail)
	seq, err := mail.NextSequence()
	if err != nil {
		return err
	}
	var seqb [8]byte
	binary.BigEndian.PutUint64(seqb[:], seq)
	stored := encodeTime(m.Stored)
	v := make([]byte, 0, mailHeaderLen+len(m.Blob))
	v = append(append(append(append(v, m.From[:]...), m.ID[:]...), stored[:]...), m.Blob...)
	if err := mail.Put(append(m.To[:len(m.To):len(m.To)], seqb[:]...), v); err != nil {
		return err
	}
	if err := ids.Put(k, seqb[:]); err != nil {
		return err
	}
	age := append(append(stored[:len(stored):len(stored)], m.To[:]...), seqb[:]...)
	if err := tx.Bucket(bucketMailAge).Put(age, nil); err != nil {
		return err
	}
	d.add(m.To, m.From, 1, int64(len(m.Blob)))
	r.res.New = true
	return nil
}

// deleteMail deletes the message (to, from, id) and returns its size.
func deleteMail(tx *bolt.Tx, to, from wire.Key, id wire.MsgID) (size int64, ok bool, err error) {
	ids, mail := tx.Bucket(bucketMailID), tx.Bucket(bucketMail)
	k := idKey(to, from, id)
	seqb := bytes.Clone(ids.Get(k))
	if seqb == nil {
		return 0, false, nil
	}
	if err := ids.Delete(k); err != nil {
		return 0, false, err
	}
	mk := append(to[:len(to):len(to)], seqb...)
	v := mail.Get(mk)
	if len(v) < mailHeaderLen {
		return 0, false, mail.Delete(mk) // not ours: clean up
	}
	size = int64(len(v) - mailHeaderLen)
	age := append(append(bytes.Clone(v[wire.KeyLen+8:mailHeaderLen]), to[:]...), seqb...)
	if err := mail.Delete(mk); err != nil {
		return 0, false, err
	}
	if err := tx.Bucket(bucketMailAge).Delete(age); err != nil {
		return 0, false, err
	}
	return size, true, nil
}

// putReceipt records rc for its sender, made at now (replacing one for the
// same message).
func putReceipt(tx *bolt.Tx, rc SenderReceipt, now time.Time, d *mailDelta) error {
	receipts, ages := tx.Bucket(bucketReceipts), tx.Bucket(bucketReceiptAge)
	k := idKey(rc.Sender, rc.Peer, rc.ID)
	if old := receipts.Get(k); len(old) == 9 {
		if err := ages.Delete(append(bytes.Clone(old[1:]), k...)); err != nil {
			return err
		}
	} else {
		d.receipts[rc.Sender]++
	}
	made := encodeTime(now)
	if err := receipts.Put(k, append([]byte{byte(rc.Status)}, made[:]...)); err != nil {
		return err
	}
	return ages.Put(append(made[:len(made):len(made)], k...), nil)
}

// deleteReceipt deletes the receipt with key k, if there is one.
func deleteReceipt(tx *bolt.Tx, k []byte, d *mailDelta) error {
	receipts := tx.Bucket(bucketReceipts)
	v := receipts.Get(k)
	if v == nil {
		return nil
	}
	if len(v) == 9 {
		if err := tx.Bucket(bucketReceiptAge).Delete(append(bytes.Clone(v[1:]), k...)); err != nil {
			return err
		}
	}
	if err := receipts.Delete(k); err != nil {
		return err
	}
	d.receipts[wire.Key(k[:wire.KeyLen])]--
	return nil
}

// expire deletes up to expireBatch messages stored before r.cut, making
// their receipts, and up to expireBatch receipts made before r.receiptCut.
func expire(tx *bolt.Tx, r *mailReq, d *mailDelta) error {
	var old [][]byte
	end := encodeTime(r.cut)
	c := tx.Bucket(bucketMailAge).Cursor()
	for k, _ := c.First(); !r.cut.IsZero() && k != nil && bytes.Compare(k, end[:]) < 0; k, _ = c.Next() {
		if len(old) == expireBatch {
			r.more = true
			break
		}
		old = append(old, bytes.Clone(k))
	}
	mail := tx.Bucket(bucketMail)
	ages := tx.Bucket(bucketMailAge)
	for _, k := range old {
		// Every entry taken is deleted, whatever it holds: one that
		// stayed would come first again at every expiry, which then
		// never got past it.
		if err := ages.Delete(k); err != nil {
			return err
		}
		if len(k) != 8+wire.KeyLen+8 {
			continue
		}
		to, mk := wire.Key(k[8:8+wire.KeyLen]), k[8:]
		v := mail.Get(mk)
		if len(v) < mailHeaderLen {
			continue
		}
		from := wire.Key(v[:wire.KeyLen])
		var id wire.MsgID
		copy(id[:], v[wire.KeyLen:])
		size, ok, err := deleteMail(tx, to, from, id)
		if err != nil {
			return err
		}
		if !ok {
			// Its ID index is gone: delete the message itself, which
			// nothing could reach any more (an Ack finds it by ID).
			if err := mail.Delete(mk); err != nil {
				return err
			}
			d.add(to, from, -1, -int64(len(v)-mailHeaderLen))
			continue
		}
		d.add(to, from, -1, -size)
		rc := SenderReceipt{Sender: from, Receipt: wire.Receipt{MailRef: wire.MailRef{Peer: to, ID: id}, Status: wire.ReceiptExpired}}
		if err := putReceipt(tx, rc, r.now, d); err != nil {
			return err
		}
		r.made = append(r.made, rc)
	}
	if r.receiptCut.IsZero() {
		return nil
	}
	end = encodeTime(r.receiptCut)
	old = old[:0]
	c = tx.Bucket(bucketReceiptAge).Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k, end[:]) < 0; k, _ = c.Next() {
		if len(old) == expireBatch {
			r.more = true
			break
		}
		old = append(old, bytes.Clone(k))
	}
	for _, k := range old {
		if err := tx.Bucket(bucketReceiptAge).Delete(k); err != nil {
			return err
		}
		if len(k) == 8+idKeyLen {
			if err := deleteReceipt(tx, k[8:], d); err != nil {
				return err
			}
		}
	}
	return nil
}

// decodeTime reverses encodeTime.
func decodeTime(b []byte) time.Time {
	return time.UnixMicro(int64(binary.BigEndian.Uint64(b) ^ 1<<63))
}
