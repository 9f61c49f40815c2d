package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"natchat/wire"
)

// recordLen is the size of a journal record: peer(32) id(8) ms(8) crc(4).
const recordLen = wire.KeyLen + 8 + 8 + 4

// markKey is a shown mark's key in bbolt: peer(32) id(8).
type markKey [wire.KeyLen + 8]byte

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func newMarkKey(peer wire.Key, id wire.MsgID) markKey {
	var k markKey
	copy(k[:], peer[:])
	copy(k[wire.KeyLen:], id[:])
	return k
}

// appendRecord appends the journal record of a mark to b.
func appendRecord(b []byte, k markKey, ms int64) []byte {
	start := len(b)
	b = append(b, k[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(ms))
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// parseRecord parses a journal record; ok is false if its CRC is wrong.
func parseRecord(r *[recordLen]byte) (k markKey, ms int64, ok bool) {
	body := r[:recordLen-4]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(r[recordLen-4:]) {
		return k, 0, false
	}
	copy(k[:], body)
	return k, int64(binary.BigEndian.Uint64(body[len(k):])), true
}

// Shown reports whether message id from peer was already shown to the
// user, in this run or an earlier one. On a read error it logs and reports
// false: a duplicate display is better than a lost message.
func (s *Store) Shown(peer wire.Key, id wire.MsgID) bool {
	k := newMarkKey(peer, id)
	// Memory before bbolt: a mark leaves flushingMarks only after its
	// commit, so it is in memory or visible to a later transaction.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	_, ok := s.marks[k]
	if !ok {
		_, ok = s.flushingMarks[k]
	}
	s.mu.Unlock()
	if ok {
		return true
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bucketShown).Get(k[:]) != nil
		return nil
	})
	if err != nil {
		if !errors.Is(err, berrors.ErrDatabaseNotOpen) { // not a race with Close
			s.log.Error().Err(err).Msg("store: read shown mark")
		}
		return false
	}
	return ok
}

// MarkShown records that message id from peer has just been shown. When it
// returns nil the mark survives the process being killed: it is in the
// journal (one write(2), no fsync), and the flusher commits it to bbolt
// within FlushInterval. If the journal write fails, the mark is still
// queued (and Shown reports it) but is not safe from a crash until the next
// commit; the error says so. If commits have been failing and maxPending
// marks are queued, the mark is not recorded and the commit error returned.
func (s *Store) MarkShown(peer wire.Key, id wire.MsgID) error {
	k := newMarkKey(peer, id)
	ms := s.now().UnixMilli()
	var rec [recordLen]byte
	appendRecord(rec[:0], k, ms)

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if len(s.marks) >= maxPending && s.flushErr != nil {
		err := s.flushErr
		s.mu.Unlock()
		return fmt.Errorf("mark shown: %d marks wait for a failing commit: %w", len(s.marks), err)
	}
	err := s.appendJournalLocked(rec[:])
	s.marks[k] = ms
	n := len(s.marks)
	s.mu.Unlock()
	s.signal(n)
	return err
}

// appendJournalLocked appends one record to the journal with one write(2).
func (s *Store) appendJournalLocked(rec []byte) error {
	if s.journalErr != nil {
		return fmt.Errorf("mark shown (kept until the next commit): %w", s.journalErr)
	}
	n, err := s.journal.Write(rec)
	if err == nil {
		s.journalSize += int64(n)
		return nil
	}
	if n > 0 {
		// Cut the partial record, or every later record would be misaligned
		// and dropped at replay.
		if terr := s.journal.Truncate(s.journalSize); terr != nil {
			s.journalErr = fmt.Errorf("shown journal: cannot undo a partial write: %w", terr)
		}
	}
	return fmt.Errorf("mark shown (kept until the next commit): shown journal: %w", err)
}

// mark is a shown mark on its way to bbolt.
type mark struct {
	k  markKey
	ms int64
}

// putMarks writes marks to bbolt in key order. bbolt splits nodes only at
// commit, so putting thousands of keys in random order into one transaction
// costs quadratic time in memmove; sorted, it is linear.
func putMarks(tx *bolt.Tx, marks []mark) error {
	slices.SortFunc(marks, func(a, b mark) int { return bytes.Compare(a.k[:], b.k[:]) })
	b := tx.Bucket(bucketShown)
	for _, m := range marks {
		if err := b.Put(m.k[:], putUint64(uint64(m.ms))); err != nil {
			return err
		}
	}
	return nil
}

// marksTx writes marks to bbolt.
func marksTx(tx *bolt.Tx, marks map[markKey]int64) error {
	if len(marks) == 0 {
		return nil
	}
	list := make([]mark, 0, len(marks))
	for k, ms := range marks {
		list = append(list, mark{k, ms})
	}
	return putMarks(tx, list)
}

// openJournal replays the journal into bbolt, empties it and opens it for
// appending. Replay stops at the first short record or bad CRC: a torn tail
// left by a power loss. The dropped tail is logged.
func (s *Store) openJournal() error {
	path := filepath.Join(s.dir, journalFile)
	// A leftover of a rotation cut short: the journal itself is still whole.
	if err := os.Remove(filepath.Join(s.dir, journalTmp)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("shown journal: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("shown journal: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("shown journal: %w", err)
	}
	// Replay in chunks, one commit each, so that a large journal neither
	// sits in memory whole nor piles up in one transaction.
	const chunk = 8192
	var good int64
	r := bufio.NewReaderSize(f, 64<<10)
	batch := make([]mark, 0, chunk)
	for end := false; !end; {
		batch = batch[:0]
		for len(batch) < chunk {
			var rec [recordLen]byte
			if _, err := io.ReadFull(r, rec[:]); err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					f.Close()
					return fmt.Errorf("replay shown journal %s: %w", path, err)
				}
				end = true // the end, or a short record
				break
			}
			k, ms, ok := parseRecord(&rec)
			if !ok {
				end = true // a bad CRC
				break
			}
			batch = append(batch, mark{k, ms})
		}
		if len(batch) == 0 {
			break
		}
		if err := s.db.Update(func(tx *bolt.Tx) error { return putMarks(tx, batch) }); err != nil {
			f.Close()
			return fmt.Errorf("replay shown journal %s: %w", path, err)
		}
		good += int64(len(batch))
	}
	if tail := fi.Size() - good*recordLen; tail > 0 {
		s.log.Warn().Int64("kept", good).Int64("dropped", (tail+recordLen-1)/recordLen).
			Int64("bytes", tail).Msg("store: shown journal had a torn tail; dropped it")
	}
	// Committed: the journal is redundant. A crash before this line only
	// replays it again.
	if err := f.Truncate(0); err != nil {
		f.Close()
		return fmt.Errorf("shown journal: %w", err)
	}
	s.journal, s.journalSize = f, 0
	return nil
}

// rotateJournalLocked replaces the journal by one that holds only the
// queued marks. The caller has just committed every other mark in the
// journal, and holds mu, so no mark is appended meanwhile. The rename is
// atomic: a crash leaves either the old journal (all marks) or the new one
// (the marks not in bbolt).
func (s *Store) rotateJournalLocked() error {
	tmp := filepath.Join(s.dir, journalTmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	buf := make([]byte, 0, len(s.marks)*recordLen)
	for k, ms := range s.marks {
		buf = appendRecord(buf, k, ms)
	}
	if _, err := f.Write(buf); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, journalFile)); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := s.journal.Close(); err != nil {
		s.log.Warn().Err(err).Msg("store: close old shown journal")
	}
	s.journal, s.journalSize, s.journalErr = f, int64(len(buf)), nil
	return nil
}

// Prune deletes shown marks older than ShownRetention and returns how many
// it deleted. The flusher calls it about once an hour, and Open once.
func (s *Store) Prune() (int, error) {
	if s.isClosed() {
		return 0, ErrClosed
	}
	cutoff := s.now().Add(-s.retention).UnixMilli()
	var n, bad int
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketShown)
		var old [][]byte
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			switch {
			case len(k) != len(markKey{}) || len(v) != 8:
				bad++ // useless: delete it too
			case int64(binary.BigEndian.Uint64(v)) >= cutoff:
				continue
			}
			old = append(old, bytes.Clone(k))
		}
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(old)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("prune shown marks: %w", dbErr(err))
	}
	if bad > 0 {
		s.log.Warn().Int("records", bad).Msg("store: deleted corrupt shown marks")
	}
	return n, nil
}
