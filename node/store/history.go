package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"natchat/wire"
)

// History is each conversation's recent messages, for front ends to show
// again (/history, and a full-screen client's scrollback after a restart).
// It is a convenience, not part of delivery: nothing else reads it.
//
// Layout (integers big-endian, times in Unix milliseconds):
//
//	history-convs  wire.NameKey(conv) → version(1)=1 last(8) count(8) bytes(8) name
//	history        wire.NameKey(conv) → a bucket per conversation:
//	                 'm' seq(8)        → entry
//	                 'i' dir(1) id     → seq(8)   (dir 'o' for ours, 'i' for received)
//
// An entry is version(1)=1 flags(1; bit 0: ours) at(8) sent(8), then id,
// from, text, kind, state, reason and via, each a uvarint length and its
// bytes. seq is the conversation bucket's own sequence, so entries iterate
// in the order they were recorded. last is when the conversation's newest
// entry was recorded, count and bytes what its entries hold.
//
// # Bounds and durability
//
// Each write keeps its conversation within HistLimits (entries, bytes and
// age; the oldest go first), and a new conversation beyond
// HistLimits.Convs drops the least recently active one, so a stranger
// writing to us, or many strangers, cannot grow the history without bound:
// at most Convs × ConvBytes of text.
//
// WriteHistory commits a batch of changes in one bbolt transaction: it is
// never torn, and the caller decides how much to batch (one commit, one
// fsync, per batch). A crash loses only the batches not yet written.

// HistEntry is one message of a conversation's history.
type HistEntry struct {
	ID     string // the message's ID as events carry it
	From   string // the sender; our own name for ours
	Text   string
	Kind   string // api.KindText (empty) or api.KindEmote
	Out    bool   // ours
	State  string // for ours: api.StateSending, StateDelivered, StateStored or StateFailed
	Reason string // for StateFailed: why
	Via    string // api.ViaMailbox for a received message that waited in our mailbox
	// Sent is when it was sent, by the sender's clock; At is when it was
	// recorded, by ours (ages count from At). Both to the millisecond.
	Sent, At time.Time
}

// HistConv is one conversation of the history.
type HistConv struct {
	// Name is the conversation as it is shown: a peer's name or a room,
	// as the peer (or the room) spells it when we have received from it,
	// else as first recorded.
	Name  string
	Last  time.Time // when its newest entry was recorded
	Count int       // entries
	Bytes int64     // their encoded size
}

// HistLimits bound the history. Zero fields take the defaults.
type HistLimits struct {
	PerConv   int           // entries per conversation; 0: 1000
	ConvBytes int64         // encoded bytes per conversation; 0: 2 MiB
	Convs     int           // conversations; 0: 1000
	MaxAge    time.Duration // entries recorded longer ago go; 0: no age limit
}

// Defaults of HistLimits.
const (
	DefaultHistPerConv   = 1000
	DefaultHistConvBytes = 2 << 20
	DefaultHistConvs     = 1000
)

func (l HistLimits) withDefaults() HistLimits {
	if l.PerConv <= 0 {
		l.PerConv = DefaultHistPerConv
	}
	if l.ConvBytes <= 0 {
		l.ConvBytes = DefaultHistConvBytes
	}
	if l.Convs <= 0 {
		l.Convs = DefaultHistConvs
	}
	return l
}

// HistOp is one change to the history (WriteHistory).
type HistOp struct {
	// Conv is the conversation: a peer's name or a room ("#dev"), compared
	// as wire.NameKey.
	Conv string
	// Add, when set, is appended to Conv, unless Conv has an entry with
	// the same ID and direction (Out) already: then nothing changes (a
	// message shown again, or announced again after a restart). A received
	// entry also sets the conversation's Name to Conv.
	Add *HistEntry
	// Else Update is called with the entry of ID and direction Out, if
	// Conv has it, and reports whether it changed it. It must not change
	// ID or Out.
	ID     string
	Out    bool
	Update func(*HistEntry) bool
}

var (
	bucketHistory   = []byte("history")
	bucketHistConvs = []byte("history-convs")
)

const (
	histVersion     = 1
	histConvMetaLen = 1 + 8 + 8 + 8
	histEntryFixed  = 1 + 1 + 8 + 8
	histMsgPrefix   = 'm'
	histIDPrefix    = 'i'
)

// WriteHistory applies ops in order in one transaction, keeping the history
// within lim (now is the time ages count to).
func (s *Store) WriteHistory(ops []HistOp, lim HistLimits, now time.Time) error {
	if s.isClosed() {
		return ErrClosed
	}
	if len(ops) == 0 {
		return nil
	}
	lim = lim.withDefaults()
	err := s.db.Update(func(tx *bolt.Tx) error {
		h := histTx{tx: tx, lim: lim, now: now}
		for _, op := range ops {
			if err := h.apply(op); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("history: %w", dbErr(err))
	}
	return nil
}

// History returns the conversation conv and its last n entries (all when n
// ≤ 0), oldest first. A conversation with no history gives a zero HistConv
// and no entries.
func (s *Store) History(conv string, n int) (HistConv, []HistEntry, error) {
	if s.isClosed() {
		return HistConv{}, nil, ErrClosed
	}
	nk := []byte(wire.NameKey(conv))
	var c HistConv
	var out []HistEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		if len(nk) == 0 {
			return nil
		}
		meta := tx.Bucket(bucketHistConvs).Get(nk)
		b := tx.Bucket(bucketHistory).Bucket(nk)
		if meta == nil || b == nil {
			return nil
		}
		var err error
		if c, err = parseConvMeta(meta); err != nil {
			return err
		}
		// The newest entry: the last key before the first past the 'm's.
		cur := b.Cursor()
		var k, v []byte
		if k, _ = cur.Seek([]byte{histMsgPrefix + 1}); k == nil {
			k, v = cur.Last()
		} else {
			k, v = cur.Prev()
		}
		for ; k != nil && k[0] == histMsgPrefix && (n <= 0 || len(out) < n); k, v = cur.Prev() {
			e, err := parseHistEntry(v)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return HistConv{}, nil, fmt.Errorf("history of %q: %w", conv, dbErr(err))
	}
	slices.Reverse(out)
	return c, out, nil
}

// HistoryConvs returns the conversations that have history, the most
// recently active last.
func (s *Store) HistoryConvs() ([]HistConv, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	var out []HistConv
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHistConvs).ForEach(func(_, v []byte) error {
			c, err := parseConvMeta(v)
			if err != nil {
				return err
			}
			out = append(out, c)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("history: %w", dbErr(err))
	}
	slices.SortFunc(out, func(a, b HistConv) int {
		return cmp.Or(a.Last.Compare(b.Last), cmp.Compare(wire.NameKey(a.Name), wire.NameKey(b.Name)))
	})
	return out, nil
}

// PruneHistory drops what lim no longer allows (older entries, more
// entries or bytes than a conversation may hold, more conversations than
// lim.Convs), and the conversations left empty. It returns how many entries
// it dropped.
func (s *Store) PruneHistory(lim HistLimits, now time.Time) (int, error) {
	if s.isClosed() {
		return 0, ErrClosed
	}
	lim = lim.withDefaults()
	var dropped int
	err := s.db.Update(func(tx *bolt.Tx) error {
		h := histTx{tx: tx, lim: lim, now: now}
		var keys [][]byte
		if err := tx.Bucket(bucketHistConvs).ForEach(func(k, _ []byte) error {
			keys = append(keys, bytes.Clone(k))
			return nil
		}); err != nil {
			return err
		}
		for _, nk := range keys {
			n, err := h.trim(nk)
			if err != nil {
				return err
			}
			dropped += n
		}
		for {
			n, over, err := h.dropOldestConv(lim.Convs)
			if err != nil {
				return err
			}
			dropped += n
			if !over {
				return nil
			}
		}
	})
	if err != nil {
		return dropped, fmt.Errorf("history: prune: %w", dbErr(err))
	}
	return dropped, nil
}

// histTx is one WriteHistory or PruneHistory transaction.
type histTx struct {
	tx  *bolt.Tx
	lim HistLimits
	now time.Time
}

func (h histTx) apply(op HistOp) error {
	nk := []byte(wire.NameKey(op.Conv))
	if len(nk) == 0 || len(op.Conv) > maxToLen {
		return nil // not a conversation: nothing to record
	}
	convs := h.tx.Bucket(bucketHistConvs)
	meta := convs.Get(nk)
	b := h.tx.Bucket(bucketHistory).Bucket(nk)
	if op.Add == nil {
		if meta == nil || b == nil || op.Update == nil {
			return nil
		}
		seq := b.Get(histIDKey(op.Out, op.ID))
		if seq == nil {
			return nil
		}
		mk := append([]byte{histMsgPrefix}, seq...)
		v := b.Get(mk)
		if v == nil {
			return fmt.Errorf("%w: history of %q: entry %s is indexed but missing", ErrCorrupt, nk, op.ID)
		}
		e, err := parseHistEntry(v)
		if err != nil {
			return err
		}
		if !op.Update(&e) {
			return nil
		}
		c, err := parseConvMeta(meta)
		if err != nil {
			return err
		}
		nv := appendHistEntry(nil, e)
		c.Bytes += int64(len(nv) - len(v))
		if err := b.Put(mk, nv); err != nil {
			return err
		}
		return convs.Put(nk, appendConvMeta(nil, c))
	}

	var c HistConv
	if meta == nil || b == nil {
		// A new conversation (a half of one left by an older bug goes).
		if err := h.dropConv(nk); err != nil {
			return err
		}
		if _, _, err := h.dropOldestConv(h.lim.Convs - 1); err != nil {
			return err
		}
		var err error
		if b, err = h.tx.Bucket(bucketHistory).CreateBucket(nk); err != nil {
			return err
		}
		c.Name = op.Conv
	} else {
		var err error
		if c, err = parseConvMeta(meta); err != nil {
			return err
		}
		if b.Get(histIDKey(op.Add.Out, op.Add.ID)) != nil {
			return nil // recorded already
		}
	}
	if !op.Add.Out {
		c.Name = op.Conv
	}
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	sk := putUint64(seq)
	v := appendHistEntry(nil, *op.Add)
	if err := b.Put(append([]byte{histMsgPrefix}, sk...), v); err != nil {
		return err
	}
	if err := b.Put(histIDKey(op.Add.Out, op.Add.ID), sk); err != nil {
		return err
	}
	c.Count++
	c.Bytes += int64(len(v))
	c.Last = op.Add.At.Truncate(time.Millisecond)
	if err := convs.Put(nk, appendConvMeta(nil, c)); err != nil {
		return err
	}
	_, err = h.trim(nk)
	return err
}

// trim drops the oldest entries of conversation nk that lim does not allow,
// and the conversation when none is left. It returns how many it dropped.
func (h histTx) trim(nk []byte) (int, error) {
	convs := h.tx.Bucket(bucketHistConvs)
	meta := convs.Get(nk)
	b := h.tx.Bucket(bucketHistory).Bucket(nk)
	if meta == nil || b == nil {
		return 0, h.dropConv(nk)
	}
	c, err := parseConvMeta(meta)
	if err != nil {
		return 0, err
	}
	var cutoff int64 = -1 << 63
	if h.lim.MaxAge > 0 {
		cutoff = h.now.Add(-h.lim.MaxAge).UnixMilli()
	}
	dropped := 0
	for {
		// The oldest entry; a fresh cursor each time, as the deletes below
		// change the bucket under it.
		k, v := b.Cursor().Seek([]byte{histMsgPrefix})
		if k == nil || k[0] != histMsgPrefix {
			break
		}
		if len(v) < histEntryFixed {
			return dropped, fmt.Errorf("%w: history of %q: short entry", ErrCorrupt, nk)
		}
		at := int64(binary.BigEndian.Uint64(v[2:10]))
		if c.Count <= h.lim.PerConv && c.Bytes <= h.lim.ConvBytes && at >= cutoff {
			break
		}
		e, err := parseHistEntry(v)
		if err != nil {
			return dropped, err
		}
		size := len(v)
		k = bytes.Clone(k)
		if err := b.Delete(histIDKey(e.Out, e.ID)); err != nil {
			return dropped, err
		}
		if err := b.Delete(k); err != nil {
			return dropped, err
		}
		c.Count--
		c.Bytes -= int64(size)
		dropped++
	}
	if c.Count <= 0 {
		return dropped, h.dropConv(nk)
	}
	if dropped == 0 {
		return 0, nil
	}
	return dropped, convs.Put(nk, appendConvMeta(nil, c))
}

// dropOldestConv drops the least recently active conversation when there
// are more than max. over reports whether it dropped one; n is how many
// entries went with it.
func (h histTx) dropOldestConv(max int) (n int, over bool, err error) {
	convs := h.tx.Bucket(bucketHistConvs)
	count := 0
	var oldest []byte
	var oldestC HistConv
	err = convs.ForEach(func(k, v []byte) error {
		c, err := parseConvMeta(v)
		if err != nil {
			return err
		}
		count++
		if oldest == nil || c.Last.Before(oldestC.Last) {
			oldest, oldestC = k, c
		}
		return nil
	})
	if err != nil || count <= max || oldest == nil {
		return 0, false, err
	}
	return oldestC.Count, true, h.dropConv(bytes.Clone(oldest))
}

func (h histTx) dropConv(nk []byte) error {
	if err := h.tx.Bucket(bucketHistConvs).Delete(nk); err != nil {
		return err
	}
	if h.tx.Bucket(bucketHistory).Bucket(nk) != nil {
		return h.tx.Bucket(bucketHistory).DeleteBucket(nk)
	}
	return nil
}

func histIDKey(out bool, id string) []byte {
	dir := byte('i')
	if out {
		dir = 'o'
	}
	return append([]byte{histIDPrefix, dir}, id...)
}

func appendConvMeta(b []byte, c HistConv) []byte {
	b = append(b, histVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(c.Last.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, uint64(max(c.Count, 0)))
	b = binary.BigEndian.AppendUint64(b, uint64(max(c.Bytes, 0)))
	return append(b, c.Name...)
}

func parseConvMeta(v []byte) (HistConv, error) {
	if len(v) < histConvMetaLen || v[0] != histVersion {
		return HistConv{}, fmt.Errorf("%w: history conversation record", ErrCorrupt)
	}
	return HistConv{
		Last:  time.UnixMilli(int64(binary.BigEndian.Uint64(v[1:9]))),
		Count: int(binary.BigEndian.Uint64(v[9:17])),
		Bytes: int64(binary.BigEndian.Uint64(v[17:25])),
		Name:  string(v[histConvMetaLen:]),
	}, nil
}

func appendHistEntry(b []byte, e HistEntry) []byte {
	var flags byte
	if e.Out {
		flags |= 1
	}
	b = append(b, histVersion, flags)
	b = binary.BigEndian.AppendUint64(b, uint64(e.At.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, uint64(e.Sent.UnixMilli()))
	for _, s := range []string{e.ID, e.From, e.Text, e.Kind, e.State, e.Reason, e.Via} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

func parseHistEntry(v []byte) (HistEntry, error) {
	bad := fmt.Errorf("%w: history entry", ErrCorrupt)
	if len(v) < histEntryFixed || v[0] != histVersion {
		return HistEntry{}, bad
	}
	e := HistEntry{
		Out:  v[1]&1 != 0,
		At:   time.UnixMilli(int64(binary.BigEndian.Uint64(v[2:10]))),
		Sent: time.UnixMilli(int64(binary.BigEndian.Uint64(v[10:18]))),
	}
	rest := v[histEntryFixed:]
	for _, dst := range []*string{&e.ID, &e.From, &e.Text, &e.Kind, &e.State, &e.Reason, &e.Via} {
		n, l := binary.Uvarint(rest)
		if l <= 0 || n > uint64(len(rest)-l) {
			return HistEntry{}, bad
		}
		*dst = string(rest[l : l+int(n)])
		rest = rest[l+int(n):]
	}
	return e, nil
}
