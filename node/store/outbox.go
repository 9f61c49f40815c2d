package store

import (
	"encoding/binary"
	"fmt"
	"maps"
	"time"

	bolt "go.etcd.io/bbolt"

	"natchat/wire"
)

// OutMsg is a message in the sender's outbox.
type OutMsg struct {
	ID wire.MsgID
	// To is the recipient's name as the user typed it. The conversation,
	// which numbers its messages, is wire.NameKey(To).
	To string
	// Seq numbers the message in its conversation: 1, 2, 3, ... Enqueue
	// assigns it and ignores the value passed in.
	Seq      uint64
	Kind     uint8 // the wire.MsgKind: 0 text (so in every record from before other kinds), 1 emote
	Text     string
	Created  time.Time // stored to the millisecond
	Deadline time.Time // stored to the millisecond
	// Stored says the rendezvous holds the message in the recipient's
	// mailbox (MarkStored); Enqueue ignores it.
	Stored bool
	// Room, for one member's copy of a room message: the room ("#dev");
	// To is the member. Empty for a 1:1 message.
	Room string
	// Group is the room message's ID, the same in every member's copy
	// (ID is the copy's). Zero for a 1:1 message.
	Group wire.MsgID
	// Members is how many members the room message went to (its copies).
	Members uint32
}

// maxToLen bounds OutMsg.To in bytes; the longest valid name is 128.
const maxToLen = 1024

// outHeaderLen is the fixed part of an outbox record, before len(to).
const outHeaderLen = 1 + 8 + 8 + 1 + 8 + 8

// enqueueReq is one Enqueue call waiting for the flusher's commit.
type enqueueReq struct {
	msgs []OutMsg
	out  []OutMsg      // set by the flusher before done is closed
	err  error         // set by the flusher before done is closed
	done chan struct{} // closed by the flusher
}

// Enqueue durably appends msgs to the outbox, in one fsync'd commit shared
// with concurrent callers, and returns them with Seq assigned: per
// conversation (wire.NameKey(To)), strictly increasing from 1 and never
// reused, even after Done or a restart. Either all msgs are added or none.
// It fails with ErrDuplicateID if an ID is already in the outbox.
func (s *Store) Enqueue(msgs ...OutMsg) ([]OutMsg, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	for _, m := range msgs {
		if m.To == "" || len(m.To) > maxToLen {
			return nil, fmt.Errorf("enqueue %s: recipient must be 1 to %d bytes", m.ID, maxToLen)
		}
	}
	req := &enqueueReq{msgs: msgs, done: make(chan struct{})}
	select {
	case s.enqueue <- req:
	case <-s.done:
		return nil, ErrClosed
	}
	<-req.done
	return req.out, req.err
}

// checkEnqueue refuses IDs already in the outbox or repeated in msgs.
func checkEnqueue(tx *bolt.Tx, msgs []OutMsg) error {
	ids := tx.Bucket(bucketOutIDs)
	seen := make(map[wire.MsgID]bool, len(msgs))
	for _, m := range msgs {
		if seen[m.ID] || ids.Get(m.ID[:]) != nil {
			return fmt.Errorf("enqueue %s: %w", m.ID, ErrDuplicateID)
		}
		seen[m.ID] = true
	}
	return nil
}

// enqueueTx appends msgs, which checkEnqueue has passed, and returns them
// with Seq assigned. Its errors are bbolt's, fatal to the transaction.
func enqueueTx(tx *bolt.Tx, msgs []OutMsg) ([]OutMsg, error) {
	outbox, ids, seqs := tx.Bucket(bucketOutbox), tx.Bucket(bucketOutIDs), tx.Bucket(bucketSeq)
	out := make([]OutMsg, len(msgs))
	for i, m := range msgs {
		conv := []byte(wire.NameKey(m.To))
		var last uint64
		if v := seqs.Get(conv); v != nil {
			if len(v) != 8 {
				return nil, fmt.Errorf("sequence of %q: %w", conv, ErrCorrupt)
			}
			last = binary.BigEndian.Uint64(v)
		}
		m.Seq = last + 1
		m.Stored = false
		if err := seqs.Put(conv, putUint64(m.Seq)); err != nil {
			return nil, err
		}
		order, err := outbox.NextSequence()
		if err != nil {
			return nil, err
		}
		key := putUint64(order)
		if err := outbox.Put(key, appendOutMsg(nil, m)); err != nil {
			return nil, err
		}
		if err := ids.Put(m.ID[:], key); err != nil {
			return nil, err
		}
		out[i] = m
	}
	return out, nil
}

// Outbox returns every message not yet Done, in Enqueue order.
func (s *Store) Outbox() ([]OutMsg, error) {
	// Snapshot the Done IDs before the transaction: an ID leaves these sets
	// only after its removal is committed, so it is either here or already
	// gone from the transaction's view.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	done := maps.Clone(s.dones)
	maps.Copy(done, s.flushingDones)
	s.mu.Unlock()

	var out []OutMsg
	err := s.db.View(func(tx *bolt.Tx) error {
		stored := tx.Bucket(bucketStored)
		return tx.Bucket(bucketOutbox).ForEach(func(k, v []byte) error {
			m, err := parseOutMsg(v)
			if err != nil || len(k) != 8 {
				return fmt.Errorf("outbox entry %x: %w", k, ErrCorrupt)
			}
			if _, ok := done[m.ID]; !ok {
				m.Stored = stored.Get(m.ID[:]) != nil
				out = append(out, m)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", dbErr(err))
	}
	return out, nil
}

// MarkStored records durably (an fsync'd commit) that the rendezvous
// holds message id in its recipient's mailbox: Outbox returns it with
// Stored set until Done. An ID not in the outbox (or already Done) is
// ignored.
func (s *Store) MarkStored(id wire.MsgID) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	_, done := s.dones[id]
	_, flushing := s.flushingDones[id]
	s.mu.Unlock()
	if done || flushing {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketOutIDs).Get(id[:]) == nil {
			return nil
		}
		return tx.Bucket(bucketStored).Put(id[:], putUint64(uint64(s.now().UnixMilli())))
	})
	if err != nil {
		return fmt.Errorf("mark %s stored: %w", id, dbErr(err))
	}
	return nil
}

// Done removes ids (delivered or failed) from the outbox. It returns at
// once; the flusher commits the removal within FlushInterval. Outbox no
// longer returns them from now on. Unknown IDs are ignored, and so is Done
// after Close.
func (s *Store) Done(ids ...wire.MsgID) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	for _, id := range ids {
		s.dones[id] = struct{}{}
	}
	n := len(s.dones)
	s.mu.Unlock()
	s.signal(n)
}

// signal tells the flusher that n things are queued.
func (s *Store) signal(n int) {
	c := s.kick
	if n >= flushBatch {
		c = s.full
	}
	select {
	case c <- struct{}{}:
	default:
	}
}

// doneTx removes dones from the outbox.
func (s *Store) doneTx(tx *bolt.Tx, dones map[wire.MsgID]struct{}) error {
	if len(dones) == 0 {
		return nil
	}
	outbox, ids, stored := tx.Bucket(bucketOutbox), tx.Bucket(bucketOutIDs), tx.Bucket(bucketStored)
	for id := range dones {
		if err := stored.Delete(id[:]); err != nil {
			return err
		}
		order := ids.Get(id[:])
		if order == nil {
			continue
		}
		if len(order) != 8 {
			// The entry cannot be found; drop the broken index entry so
			// that the commit, and the marks in it, go through.
			s.log.Error().Stringer("id", id).Msg("store: corrupt outbox index entry dropped")
		} else if err := outbox.Delete(order); err != nil {
			return err
		}
		if err := ids.Delete(id[:]); err != nil {
			return err
		}
	}
	return nil
}

// appendOutMsg appends the outbox record of m to b: version 1 for a 1:1
// message (as every record before rooms), 2 for a room message's copy,
// with room, group and members between the recipient and the text.
func appendOutMsg(b []byte, m OutMsg) []byte {
	version := byte(1)
	if m.Room != "" {
		version = 2
	}
	b = append(b, version)
	b = append(b, m.ID[:]...)
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = append(b, m.Kind)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Created.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, uint64(m.Deadline.UnixMilli()))
	b = binary.AppendUvarint(b, uint64(len(m.To)))
	b = append(b, m.To...)
	if version == 2 {
		b = binary.AppendUvarint(b, uint64(len(m.Room)))
		b = append(b, m.Room...)
		b = append(b, m.Group[:]...)
		b = binary.BigEndian.AppendUint32(b, m.Members)
	}
	return append(b, m.Text...)
}

// parseOutMsg parses an outbox record.
func parseOutMsg(b []byte) (OutMsg, error) {
	var m OutMsg
	if len(b) < outHeaderLen+1 {
		return m, fmt.Errorf("%w: %d bytes", ErrCorrupt, len(b))
	}
	version := b[0]
	if version != 1 && version != 2 {
		return m, fmt.Errorf("%w: version %d", ErrCorrupt, b[0])
	}
	m.ID = wire.MsgID(b[1:9])
	m.Seq = binary.BigEndian.Uint64(b[9:])
	m.Kind = b[17]
	m.Created = time.UnixMilli(int64(binary.BigEndian.Uint64(b[18:])))
	m.Deadline = time.UnixMilli(int64(binary.BigEndian.Uint64(b[26:])))
	b = b[outHeaderLen:]
	n, l := binary.Uvarint(b)
	if l <= 0 || n == 0 || n > maxToLen || n > uint64(len(b)-l) {
		return m, fmt.Errorf("%w: recipient length", ErrCorrupt)
	}
	b = b[l:]
	m.To, b = string(b[:n]), b[n:]
	if version == 2 {
		n, l := binary.Uvarint(b)
		if l <= 0 || n == 0 || n > maxToLen || n > uint64(len(b)-l) || len(b)-l-int(n) < 8+4 {
			return m, fmt.Errorf("%w: room", ErrCorrupt)
		}
		b = b[l:]
		m.Room, b = string(b[:n]), b[n:]
		m.Group, b = wire.MsgID(b[:8]), b[8:]
		m.Members, b = binary.BigEndian.Uint32(b), b[4:]
	}
	m.Text = string(b)
	return m, nil
}
