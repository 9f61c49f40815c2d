// Package store is a natchat node's durable per-identity state: the
// sender's outbox of unacknowledged messages, the receiver's filter of
// messages already shown, and the pinned identity keys of peers (trust on
// first use). One store lives in one state directory and belongs to one
// identity key.
//
// # Layout
//
// The state directory (created 0700, files 0600) holds
//
//	state.db            bbolt database, the durable state
//	shown.journal       append-only journal of shown marks not yet in state.db
//	shown.journal.tmp   exists only for a moment while the journal is rotated
//
// state.db has these buckets (integers big-endian, times in Unix milliseconds):
//
//	meta        "version" → 1 byte (1); "owner" → identity key (32)
//	outbox      order (8) → version(1)=1 id(8) seq(8) kind(1) created(8)
//	                        deadline(8) len(to) (uvarint) to text
//	outbox-ids  message ID (8) → order (8)
//	outbox-stored  message ID (8) → time stored (8): outbox messages the
//	            rendezvous holds in the recipient's mailbox (MarkStored)
//	seq         wire.NameKey(to) → last sequence number used (8)
//	shown       peer key (32) message ID (8) → time shown (8)
//	pin-names   wire.NameKey(name) → key (32) since (8) name as first seen
//	pin-keys    key (32) → wire.NameKey(name)
//	rendezvous-keys  the rendezvous's address as given (-rv) → its key (32)
//	history, history-convs  each conversation's recent messages (layout in history.go)
//
// The outbox order is the bucket's own sequence (bbolt NextSequence), so
// iteration is insertion order and neither order nor per-conversation
// sequence numbers are ever reused, even after Done or a restart.
//
// shown.journal is a sequence of fixed-size 52-byte records
//
//	peer key (32) | message ID (8) | time shown, Unix ms (8) | CRC-32C of the first 48 bytes (4)
//
// with no header, so that every record is one write(2) at a known offset.
//
// Only one Store may have a directory open: bbolt's lock (flock) on
// state.db guards the whole directory, the journal included. Open waits a
// second for it, then fails with ErrInUse.
//
// # Durability
//
// Enqueue, MarkStored and SetPin return after an fsync'd bbolt commit: they survive a
// killed process and a power loss. Concurrent Enqueue calls share one
// commit (group commit on the flusher goroutine), so many callers cost one
// fsync.
//
// Done is asynchronous: the flusher commits it within FlushInterval. A crash
// before then only brings the message back into the outbox after the
// restart, so it is sent again and the receiver's shown filter drops it.
//
// MarkShown must be fast, because it runs between writing a message to the
// user's screen and sending the delivery receipt, and it must survive the
// process being killed as soon as it returns, or a resent message would be
// shown twice. An fsync takes milliseconds; a write(2) takes microseconds
// and its data is in the kernel's page cache, which outlives the process.
// So MarkShown appends one record to shown.journal with a single write(2)
// (O_APPEND, no fsync) and queues the mark in memory; the flusher commits
// queued marks to bbolt (fsync'd) every FlushInterval. Open replays the
// journal into bbolt, stopping at the first short record or bad CRC (a torn
// tail after a power loss), then empties it. The guarantees are therefore:
//
//   - After SIGKILL (or any crash of the process alone) a message that was
//     marked shown is never shown twice: its mark is in the journal.
//   - After a power loss, marks made in the last FlushInterval or so may be
//     lost (the page cache was not written back, or the journal's tail is
//     torn and dropped from the first bad record on), so the worst case is a
//     message shown twice. Never a message lost: a lost mark can only make
//     the filter say "not shown", never "shown"; and on the sending side
//     Enqueue is fsync'd before the node sends, and a message leaves the
//     outbox only by Done, which the node calls on the receipt (sent after
//     MarkShown) or when it gives up.
//
// A mark is pruned after ShownRetention, so a sender must not retry a
// message for longer than that.
//
// When the journal outgrows 1 MiB, the flusher, right after a successful
// commit and under the store's mutex (so no MarkShown runs meanwhile),
// writes the marks queued since that commit's snapshot to
// shown.journal.tmp and renames it over shown.journal. Every record in the
// old journal is then either committed or in the new file, and the rename
// is atomic, so no mark is ever in neither place.
package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"natchat/wire"
)

// File names inside the state directory.
const (
	dbFile      = "state.db"
	journalFile = "shown.journal"
	journalTmp  = journalFile + ".tmp"
)

const (
	formatVersion        = 1
	defaultRetention     = 30 * 24 * time.Hour
	defaultFlushInterval = 100 * time.Millisecond
	defaultJournalLimit  = 1 << 20 // bytes; see the package doc on rotation
	openTimeout          = time.Second
	pruneInterval        = time.Hour
	// flushBatch queued marks or dones make the flusher commit at once
	// instead of waiting for FlushInterval.
	flushBatch = 4096
	// maxPending queued marks is the most MarkShown accepts while commits
	// fail; beyond it MarkShown returns the commit error.
	maxPending = 1 << 16
	// maxGroup is the most Enqueue calls one commit carries.
	maxGroup = 256
)

var (
	bucketMeta     = []byte("meta")
	bucketOutbox   = []byte("outbox")
	bucketOutIDs   = []byte("outbox-ids")
	bucketSeq      = []byte("seq")
	bucketShown    = []byte("shown")
	bucketPinNames = []byte("pin-names")
	bucketPinKeys  = []byte("pin-keys")
	bucketRVKeys   = []byte("rendezvous-keys")
	bucketStored   = []byte("outbox-stored")
	bucketFilesOut = []byte("files-out")

	allBuckets = [][]byte{bucketOutbox, bucketOutIDs, bucketSeq, bucketShown, bucketPinNames, bucketPinKeys, bucketRVKeys, bucketStored, bucketFilesOut,
		bucketHistory, bucketHistConvs}

	metaVersion = []byte("version")
	metaOwner   = []byte("owner")
)

var (
	// ErrInUse means another process (or another Store in this one) has the
	// state directory open. Open gives up after about a second.
	ErrInUse = errors.New("in use by another node")
	// ErrWrongIdentity means the state directory was created for another
	// identity key than the one passed to Open.
	ErrWrongIdentity = errors.New("belongs to another identity")
	// ErrClosed is returned by every call on a Store after Close.
	ErrClosed = errors.New("store is closed")
	// ErrDuplicateID means Enqueue was given a message ID that is already in
	// the outbox (or twice in one call). Message IDs must be unique.
	ErrDuplicateID = errors.New("message ID already in the outbox")
	// ErrCorrupt means a record read back from disk is malformed.
	ErrCorrupt = errors.New("corrupt record")
)

// Options configure a Store. The zero value is ready to use.
type Options struct {
	// Logger receives warnings (a torn journal tail) and errors of the
	// background flusher. Zero: disabled.
	Logger zerolog.Logger
	// Now is the clock for shown marks, pins and pruning. Nil: time.Now.
	Now func() time.Time
	// ShownRetention is how long shown marks are kept; older ones are
	// pruned. Zero: 30 days. It must exceed the longest time a sender
	// retries a message.
	ShownRetention time.Duration
	// FlushInterval is how often asynchronous records (shown marks, Done)
	// are committed to bbolt. Zero: 100 ms.
	FlushInterval time.Duration

	// For tests. journalLimit is the journal size that triggers rotation
	// (zero: 1 MiB); afterCommit, if set, is called by the flusher after
	// each commit it makes.
	journalLimit int64
	afterCommit  func()
}

// Store is one identity's durable state. Its methods may be called
// concurrently.
type Store struct {
	dir          string
	db           *bolt.DB
	log          zerolog.Logger
	now          func() time.Time
	retention    time.Duration
	interval     time.Duration
	journalLimit int64
	afterCommit  func()

	// Channels to the flusher goroutine, which owns all commits of queued
	// work (see run).
	kick     chan struct{}     // cap 1: something was queued; commit within interval
	full     chan struct{}     // cap 1: flushBatch things are queued; commit now
	enqueue  chan *enqueueReq  // unbuffered: only the flusher receives
	flushReq chan chan<- error // unbuffered: Flush
	stop     chan struct{}     // closed by Close: the flusher returns
	done     chan struct{}     // closed by the flusher when it has returned

	mu sync.Mutex
	// Guarded by mu. MarkShown appends a mark to the journal and adds it
	// to marks in one critical section; the flusher moves marks to
	// flushingMarks, commits them, and only then clears flushingMarks and
	// rotates the journal. So a mark is always in memory or visible in
	// bbolt, and always in the journal or committed. Dones move the same way.
	closed        bool
	journal       *os.File // O_APPEND; written only under mu
	journalSize   int64
	journalErr    error                   // sticky: a partial write could not be undone
	marks         map[markKey]int64       // queued marks → Unix ms
	flushingMarks map[markKey]int64       // marks in the commit under way
	dones         map[wire.MsgID]struct{} // queued Done IDs
	flushingDones map[wire.MsgID]struct{} // Done IDs in the commit under way
	flushErr      error                   // error of the last commit; nil after a good one
}

// Open opens the store in dir for the identity key self, creating dir (0700)
// and its files (0600) when they do not exist. The store records self at
// creation; opening it with another key fails with ErrWrongIdentity. A
// store open elsewhere fails with ErrInUse after about a second. Open
// replays the shown journal and prunes old shown marks before it returns.
func Open(dir string, self wire.Key, o Options) (*Store, error) {
	if self.IsZero() {
		return nil, errors.New("store: zero identity key")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	path := filepath.Join(dir, dbFile)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: openTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("state directory %s is %w", dir, ErrInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return initTx(tx, dir, self) }); err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{
		dir:          dir,
		db:           db,
		log:          o.Logger,
		now:          o.Now,
		retention:    o.ShownRetention,
		interval:     o.FlushInterval,
		journalLimit: o.journalLimit,
		afterCommit:  o.afterCommit,
		kick:         make(chan struct{}, 1),
		full:         make(chan struct{}, 1),
		enqueue:      make(chan *enqueueReq),
		flushReq:     make(chan chan<- error),
		stop:         make(chan struct{}),
		done:         make(chan struct{}),
		marks:        make(map[markKey]int64),
		dones:        make(map[wire.MsgID]struct{}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.retention <= 0 {
		s.retention = defaultRetention
	}
	if s.interval <= 0 {
		s.interval = defaultFlushInterval
	}
	if s.journalLimit <= 0 {
		s.journalLimit = defaultJournalLimit
	}
	if err := s.openJournal(); err != nil {
		db.Close()
		return nil, err
	}
	// Make the new files' directory entries durable too.
	if err := syncDir(dir); err != nil {
		s.journal.Close()
		db.Close()
		return nil, err
	}
	if n, err := s.Prune(); err != nil {
		s.journal.Close()
		db.Close()
		return nil, err
	} else if n > 0 {
		s.log.Debug().Int("marks", n).Msg("store: pruned old shown marks")
	}
	go s.run()
	return s, nil
}

// initTx checks the format version and the owner of a store, or sets them
// up in a new one.
func initTx(tx *bolt.Tx, dir string, self wire.Key) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return fmt.Errorf("init %s: %w", dir, err)
	}
	switch v := meta.Get(metaVersion); {
	case v == nil:
		if err := meta.Put(metaVersion, []byte{formatVersion}); err != nil {
			return fmt.Errorf("init %s: %w", dir, err)
		}
	case len(v) != 1 || v[0] != formatVersion:
		return fmt.Errorf("state directory %s: unsupported store format version %x", dir, v)
	}
	switch owner := meta.Get(metaOwner); {
	case owner == nil:
		if err := meta.Put(metaOwner, self[:]); err != nil {
			return fmt.Errorf("init %s: %w", dir, err)
		}
	case len(owner) != wire.KeyLen:
		return fmt.Errorf("state directory %s: owner key: %w", dir, ErrCorrupt)
	case wire.Key(owner) != self:
		return fmt.Errorf("state directory %s %w: it was created for key %s, this node's key is %s",
			dir, ErrWrongIdentity, wire.Key(owner).Short(), self.Short())
	}
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("init %s: %w", dir, err)
		}
	}
	return nil
}

// Close commits everything pending in one fsync'd commit, stops the
// flusher, empties the journal and closes the files. Later calls on the
// Store return ErrClosed; Close itself may be called again and returns nil.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true // no MarkShown or Done from here on
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	err := s.commit(nil)

	s.mu.Lock()
	if err == nil && len(s.marks) == 0 {
		// Every mark is in bbolt: the journal is redundant.
		if terr := s.journal.Truncate(0); terr != nil {
			s.log.Warn().Err(terr).Msg("store: empty shown journal")
		}
	}
	jerr := s.journal.Close()
	s.mu.Unlock()
	return errors.Join(err, jerr, s.db.Close())
}

// Flush commits everything queued (shown marks, Done) now.
func (s *Store) Flush() error {
	if s.isClosed() {
		return ErrClosed
	}
	reply := make(chan error, 1)
	select {
	case s.flushReq <- reply:
		return <-reply
	case <-s.done:
		return ErrClosed
	}
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// syncDir fsyncs the directory dir.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("state directory %s: sync: %w", dir, err)
	}
	return nil
}

// dbErr maps bbolt's error for a closed database to ErrClosed.
func dbErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// run is the flusher goroutine. It performs every commit of queued work:
// groups of Enqueue calls, and shown marks and Done IDs, at most
// FlushInterval after they were queued. It also prunes shown marks hourly.
func (s *Store) run() {
	defer close(s.done)
	timer := time.NewTimer(s.interval)
	timer.Stop()
	armed := false
	prune := time.NewTicker(pruneInterval)
	defer prune.Stop()
	for {
		var err error
		select {
		case <-s.stop:
			timer.Stop()
			return
		case <-s.kick:
			if !armed {
				timer.Reset(s.interval)
				armed = true
			}
			continue
		case <-timer.C:
			armed = false
			err = s.commit(nil)
		case <-s.full:
			err = s.commit(nil)
		case req := <-s.enqueue:
			err = s.commit(s.gather(req))
		case reply := <-s.flushReq:
			err = s.commit(nil)
			reply <- err
		case <-prune.C:
			if n, err := s.Prune(); err != nil {
				s.log.Error().Err(err).Msg("store: prune shown marks")
			} else if n > 0 {
				s.log.Debug().Int("marks", n).Msg("store: pruned old shown marks")
			}
			continue
		}
		if s.afterCommit != nil {
			s.afterCommit()
		}
		if err != nil && !armed {
			// Retry what is still queued after an interval.
			timer.Reset(s.interval)
			armed = true
		}
	}
}

// gather returns req and the Enqueue calls already waiting, to commit them
// together.
func (s *Store) gather(req *enqueueReq) []*enqueueReq {
	reqs := []*enqueueReq{req}
	for len(reqs) < maxGroup {
		select {
		case r := <-s.enqueue:
			reqs = append(reqs, r)
		default:
			return reqs
		}
	}
	return reqs
}

// commit writes reqs and the queued marks and Done IDs in one bbolt
// transaction, answers reqs, and rotates the journal when it is due. It
// runs only on the flusher goroutine, or in Close after the flusher has
// returned.
func (s *Store) commit(reqs []*enqueueReq) error {
	// Take the queued maps; the flusher may read them without mu because
	// nothing else writes them once they are swapped out.
	var marks map[markKey]int64
	var dones map[wire.MsgID]struct{}
	s.mu.Lock()
	if len(s.marks) > 0 {
		marks, s.marks = s.marks, make(map[markKey]int64)
		s.flushingMarks = marks
	}
	if len(s.dones) > 0 {
		dones, s.dones = s.dones, make(map[wire.MsgID]struct{})
		s.flushingDones = dones
	}
	s.mu.Unlock()

	var err error
	if len(marks) > 0 || len(dones) > 0 || len(reqs) > 0 {
		err = s.db.Update(func(tx *bolt.Tx) error {
			// Dones first, so that Done(id) then Enqueue(id) keeps the new message.
			if err := s.doneTx(tx, dones); err != nil {
				return err
			}
			for _, r := range reqs {
				r.out, r.err = nil, checkEnqueue(tx, r.msgs)
				if r.err != nil {
					continue
				}
				out, err := enqueueTx(tx, r.msgs)
				if err != nil {
					return err
				}
				r.out = out
			}
			return marksTx(tx, marks)
		})
		err = dbErr(err)
	}
	for _, r := range reqs {
		if err != nil {
			r.out, r.err = nil, fmt.Errorf("enqueue: %w", err)
		}
		close(r.done)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushingMarks, s.flushingDones = nil, nil
	if err != nil {
		// Keep them queued; a newer mark of the same key wins.
		for k, ms := range marks {
			if _, ok := s.marks[k]; !ok {
				s.marks[k] = ms
			}
		}
		for id := range dones {
			s.dones[id] = struct{}{}
		}
		s.flushErr = err
		s.log.Error().Err(err).Int("marks", len(marks)).Int("dones", len(dones)).Msg("store: commit failed; will retry")
		return err
	}
	s.flushErr = nil
	if !s.closed && (s.journalSize > s.journalLimit || s.journalErr != nil) {
		if err := s.rotateJournalLocked(); err != nil {
			s.log.Error().Err(err).Msg("store: rotate shown journal")
		}
	}
	return nil
}

// putUint64 returns v as 8 big-endian bytes.
func putUint64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
