package rendezvous

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mtibben/confusables"
	bolt "go.etcd.io/bbolt"

	"natchat/wire"
)

// Names keeps name↔key bindings: a name is bound to the first key that
// registers it until the binding is released for want of use; a key has
// one name. No name may look like (have the confusable skeleton of) a name
// bound to another key. The bbolt Store implements it; a distributed store
// (several rendezvous servers as one service) will implement it too.
//
// All methods are safe for concurrent use. The server calls ByName, ByKey,
// Touch and Len on its packet loop, so they must not block on I/O; Bind and
// Release may wait for a disk write and are called from workers.
type Names interface {
	// Bind binds name to key and returns the name's canonical spelling
	// (as first registered). It succeeds at once, writing nothing, if name
	// (compared by wire.NameKey) is already bound to key. It fails with the
	// wire.ValidateName error, ErrNameTaken, ErrKeyInUse or ErrConfusable,
	// or an I/O error. A new binding is durable when Bind returns; Binds
	// called together share one write.
	Bind(name string, key wire.Key) (canonical string, err error)
	// ByName returns the key bound to name (compared by wire.NameKey) and
	// the name's canonical spelling. It sees every Bind that has returned.
	ByName(name string) (key wire.Key, canonical string, ok bool)
	// ByKey returns the canonical name bound to key.
	ByKey(key wire.Key) (canonical string, ok bool)
	// Touch records that key's binding was used at now (the node
	// registered). It never blocks on I/O: the time is written later, with
	// other writes, and seldom (the bbolt Store: once per TouchEvery, an
	// hour by default, per key), so a crash may lose the latest touches.
	// Touching an unbound key does nothing; a time earlier than the one
	// recorded changes nothing.
	Touch(key wire.Key, now time.Time)
	// Release deletes the bindings last used (bound or touched) before
	// olderThan and returns their canonical names; anyone may then bind
	// them. It accounts for every Touch made before it was called. The
	// deletion is durable when Release returns.
	Release(olderThan time.Time) (released []string, err error)
	// Len returns the number of bindings.
	Len() int
	// LastUse returns when key's binding was last used (bound, or
	// touched), accounting for every Touch made before it was called, and
	// false if no name is bound to key. Cost: a read, no disk write.
	LastUse(key wire.Key) (last time.Time, ok bool)
}

var _ Names = (*Store)(nil)

// Binding errors.
var (
	// ErrNameTaken: the name is bound to another key.
	ErrNameTaken = errors.New("name taken")
	// ErrKeyInUse: the key is bound to another name.
	ErrKeyInUse = errors.New("key is already registered under another name")
	// ErrConfusable: the name looks like a name bound to another key: the
	// two have a confusable skeleton (Unicode TS #39) in common, taken of
	// the names in lower case, in upper case or as spelt. The error's
	// text names the taken name, as in `looks like "bob", which is taken`.
	ErrConfusable = errors.New("name looks like a name that is taken")
	// ErrClosed: the Store is closed.
	ErrClosed = errors.New("name store closed")
)

// confusableError is an ErrConfusable naming the taken name.
type confusableError struct{ taken string }

func (e *confusableError) Error() string {
	return fmt.Sprintf("looks like %q, which is taken", e.taken)
}

func (e *confusableError) Unwrap() error { return ErrConfusable }

// Store keeps name↔key bindings on disk in bbolt (file rendezvous.db).
//
// Writes are group-committed: one committer goroutine, owned by the Store,
// takes every Bind, Release and pending Touch queued so far, applies them in
// one bbolt transaction (so one fsync) and answers the callers. While it
// commits, new requests queue up and go into the next transaction, which
// starts as soon as the last one ends: a lone Bind is written at once, and
// under load the batches grow by themselves. The committer runs only while
// there is work: the first request of a burst starts it, and it returns
// when the queue is empty. Reads are bbolt read transactions, which never
// wait for a commit's fsync.
//
// Buckets (keys are raw bytes; times are encoded by encodeTime):
//
//	names   NameKey(name) → key(32) spelling   the bindings (from the start)
//	keys    key(32) → NameKey(name)            reverse index (from the start)
//	lastuse key(32) → time(8)                  last use of key's binding
//	byuse   time(8) key(32) → ""               the same, in time order
//	skel    uvarint(len s) s NameKey → ""      s: each of skeletons(name)
//	meta    "skeleton" → skeletonVersion       which skel index was built
//
// and the offline mailbox's buckets (mail, mailid, mailage, receipts,
// receiptage; see Mailboxes and mailstore.go), whose writes go through the
// same committer: a deposit, an acknowledgement (the messages' deletion
// and their receipts) or an expiry is durable, in one transaction, before
// its caller is told; and the rooms' buckets (rooms, roommember, keyroom,
// roominit; see Rooms and roomstore.go), whose writes go through it too: a
// join, a part or a removal is durable before its done is called.
//
// A database written by older code (names and keys only) is upgraded on
// open: bindings without a last use get the time of the upgrade, and the
// skeleton index is built; it is rebuilt whenever skeletonVersion changes.
type Store struct {
	db         *bolt.DB
	now        func() time.Time
	touchEvery time.Duration
	touchDelay time.Duration

	n       atomic.Int64  // number of bindings
	commits atomic.Uint64 // write transactions run by the committer

	wg sync.WaitGroup // the committer

	// testHookCommit, if set, is called by the committer at the start of
	// each write transaction with the number of requests in it.
	testHookCommit func(requests int)

	mu sync.Mutex // guards the fields below
	// queue holds Binds and Releases for the committer, in call order.
	queue []*request
	// dirty holds the last uses to write in the next transaction.
	dirty map[wire.Key]int64 // Unix microseconds, as written
	// seen holds, per key touched or bound since the last Release, the
	// latest use and the latest time put in dirty.
	seen map[wire.Key]touch
	// flush, if not nil, will have the committer write dirty; flushDue is
	// set when it fires.
	flush    *time.Timer
	flushDue bool
	running  bool // a committer goroutine is running
	closed   bool

	mailMu sync.Mutex // guards mail
	// mail counts the mailboxes and receipts as committed; the committer
	// changes it after each durable commit.
	mail mailState
}

// touch is a key's latest use and the latest time put in dirty, in Unix
// microseconds (the precision written): 16 bytes where two time.Time took
// 48, as a node's first registration leaves one per node until the next
// Release.
type touch struct{ last, queued int64 }

// request is a Bind, a Release, a mailbox write (mail set) or a room
// write (room set) for the committer. Its results are set before done is
// closed.
type request struct {
	mail    *mailReq
	room    *roomReq
	release bool
	// Bind
	name, nk string
	key      wire.Key
	skels    []string // skeletons(name), once computed
	init     *roomReq // BindInit: applied after a new binding
	// Release
	cut time.Time

	canonical string
	released  []string
	err       error
	done      chan struct{}
}

// StoreOptions configure a Store. The zero value is ready to use.
type StoreOptions struct {
	// Now is the clock that stamps the last use of new bindings and of old
	// ones found without one when a database is upgraded. Nil means
	// time.Now. Give it the server's clock, the one behind the times passed
	// to Touch and Release.
	Now func() time.Time
	// TouchEvery is how long after writing a key's last use Touch writes it
	// again. Zero means an hour.
	TouchEvery time.Duration
}

const (
	defaultTouchEvery = time.Hour
	// touchDelay is how long Touch's writes may wait for a Bind or Release
	// to share a transaction with, so touches cost at most one fsync a
	// second.
	touchDelay = time.Second
)

var (
	bucketNames   = []byte("names")
	bucketKeys    = []byte("keys")
	bucketLastUse = []byte("lastuse")
	bucketByUse   = []byte("byuse")
	bucketSkel    = []byte("skel")
	bucketMeta    = []byte("meta")

	metaSkeleton = []byte("skeleton")
)

// skeletonVersion names the skeleton function: the confusables data (UTS #39
// version 13.0.0, github.com/mtibben/confusables 9d1b0723b659) and the
// renderings of a name that skeletons takes. Change it with either, so that
// open rebuilds the index.
const skeletonVersion = "uts39-13.0.0/nk,upper,spelling"

// OpenStore opens (creating) the bindings database in dir with the zero
// StoreOptions.
func OpenStore(dir string) (*Store, error) { return OpenStoreWith(dir, StoreOptions{}) }

// OpenStoreWith opens (creating) the bindings database in dir and upgrades
// it if older code wrote it. The caller must Close the Store.
func OpenStoreWith(dir string, o StoreOptions) (*Store, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.TouchEvery <= 0 {
		o.TouchEvery = defaultTouchEvery
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dir, "rendezvous.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	var n int
	var mail mailState
	err = db.Update(func(tx *bolt.Tx) (err error) {
		n, err = upgrade(tx, o.Now())
		if err == nil {
			mail = loadMailState(tx)
		}
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	s := &Store{
		db: db, now: o.Now, touchEvery: o.TouchEvery, touchDelay: touchDelay,
		dirty: make(map[wire.Key]int64), seen: make(map[wire.Key]touch),
		mail: mail,
	}
	s.n.Store(int64(n))
	return s, nil
}

// upgrade creates the buckets, builds the skeleton index if it is missing
// or was built by another skeletonVersion, and gives bindings without a
// last use (written by older code) the time now. It returns the number of
// bindings.
func upgrade(tx *bolt.Tx, now time.Time) (int, error) {
	for _, name := range [][]byte{bucketNames, bucketKeys, bucketLastUse, bucketByUse, bucketSkel, bucketMeta,
		bucketMail, bucketMailID, bucketMailAge, bucketReceipts, bucketReceiptAge,
		bucketRooms, bucketRoomMember, bucketKeyRoom, bucketRoomInit} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return 0, err
		}
	}
	names, keys, lastUse := tx.Bucket(bucketNames), tx.Bucket(bucketKeys), tx.Bucket(bucketLastUse)
	meta := tx.Bucket(bucketMeta)
	if string(meta.Get(metaSkeleton)) != skeletonVersion {
		if err := tx.DeleteBucket(bucketSkel); err != nil {
			return 0, err
		}
		skel, err := tx.CreateBucket(bucketSkel)
		if err != nil {
			return 0, err
		}
		err = names.ForEach(func(nk, rec []byte) error {
			if len(rec) < wire.KeyLen {
				return nil
			}
			return putSkeletons(skel, skeletons(string(rec[wire.KeyLen:])), nk)
		})
		if err != nil {
			return 0, err
		}
		if err := meta.Put(metaSkeleton, []byte(skeletonVersion)); err != nil {
			return 0, err
		}
	}
	// Only this code deletes bindings, and it deletes their last use with
	// them: so bindings lack a last use if and only if there are fewer
	// last uses than bindings.
	n := keys.Stats().KeyN
	if lastUse.Stats().KeyN == n {
		return n, nil
	}
	skel := tx.Bucket(bucketSkel)
	var missing [][2][]byte
	err := keys.ForEach(func(k, nk []byte) error {
		if len(k) == wire.KeyLen && lastUse.Get(k) == nil {
			missing = append(missing, [2][]byte{bytes.Clone(k), bytes.Clone(nk)})
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, m := range missing {
		k, nk := wire.Key(m[0]), m[1]
		if err := putLastUse(tx, k, now); err != nil {
			return 0, err
		}
		// Older code may have bound it after the index was built (a
		// downgrade and upgrade again).
		if rec := names.Get(nk); len(rec) >= wire.KeyLen {
			if err := putSkeletons(skel, skeletons(string(rec[wire.KeyLen:])), nk); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

// Close waits for the committer to commit the Binds and Releases queued
// before it, writes the last uses Touch held back, and closes the
// database. Later Binds and Releases fail with ErrClosed; later Touches do
// nothing. Close may be called more than once.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait() // no committer starts once closed is set
	s.mu.Lock()
	reqs, dirty, seen := s.takeLocked(true)
	s.mu.Unlock()
	return errors.Join(s.commit(reqs, dirty, seen), s.db.Close())
}

// Bind binds name to key if neither is bound yet and name looks like no
// name bound to another key, and succeeds if they are bound to each other.
// It returns the canonical spelling of the name (the spelling of the first
// registration). See Names.Bind.
//
// Cost: a read transaction, which settles a Bind that changes nothing or is
// refused; a new binding (its skeletons computed) then waits for the
// committer's next transaction: one fsync shared by all the Binds queued
// meanwhile, so from one to about two fsyncs' time.
func (s *Store) Bind(name string, key wire.Key) (string, error) {
	c, _, err := s.bind(name, key, nil)
	return c, err
}

// BindInit is Bind that also gives a key bound for the first time its
// first rooms (Rooms.InitRooms) in the same transaction, so that a new
// node's registration costs one fsync, not two: when it writes a new
// binding for key, and key has not been given its rooms, it makes key a
// member of room (if not empty) and marks it. It reports, as queued,
// whether it calls done: it does, with the join's outcome (Changed false
// if there was none), in commit order with the room writes' done
// functions, whenever it queued a write, whatever the write turned out
// to be; it does not when the read settled the Bind.
func (s *Store) BindInit(name string, key wire.Key, room string, done func(RoomResult)) (canonical string, queued bool, err error) {
	ir := &roomReq{kind: roomInit, room: room, key: key}
	ir.res = RoomResult{Status: wire.RoomOK, Room: room, Key: key}
	ir.fn = func() { done(ir.res) }
	return s.bind(name, key, ir)
}

// bind runs a Bind, with init (if not nil) applied after a new binding.
func (s *Store) bind(name string, key wire.Key, init *roomReq) (string, bool, error) {
	if err := wire.ValidateName(name); err != nil {
		return "", false, err
	}
	r := &request{name: name, nk: wire.NameKey(name), key: key, init: init}
	var write bool
	err := s.db.View(func(tx *bolt.Tx) error {
		r.canonical, write, r.err = checkBind(tx, r)
		return nil
	})
	if err != nil {
		return "", false, s.closedOr(err)
	}
	if !write {
		return r.canonical, false, r.err
	}
	if err := s.enqueue(r); err != nil {
		return "", false, err
	}
	<-r.done
	return r.canonical, init != nil, r.err
}

// Release deletes the bindings whose last use is before olderThan and
// returns their canonical names, oldest first. See Names.Release.
//
// Cost: one transaction through the committer; it reads only the bindings
// it deletes (an index in time order), and writes the last uses Touch held
// back (at most one per key touched since the previous Release), which it
// then forgets.
func (s *Store) Release(olderThan time.Time) ([]string, error) {
	r := &request{release: true, cut: olderThan}
	if err := s.enqueue(r); err != nil {
		return nil, err
	}
	<-r.done
	return r.released, r.err
}

// Touch records that key's binding was used at now. See Names.Touch.
//
// Cost: a map update under the Store's mutex. The time is written by the
// committer with the next Bind or Release, or after at most a second, and
// only if TouchEvery has passed since the time last written for key (or
// Release has run since); later touches are kept in memory and written by
// Release and Close. Memory: an entry per key touched or bound since the
// last Release.
func (s *Store) Touch(key wire.Key, now time.Time) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	t := s.seen[key]
	if us := now.UnixMicro(); us > t.last {
		t.last = us
	}
	if t.queued == 0 || t.last-t.queued >= s.touchEvery.Microseconds() {
		t.queued = t.last
		s.dirty[key] = t.last
		if s.flush == nil {
			s.flush = time.AfterFunc(s.touchDelay, s.flushTouches)
		}
	}
	s.seen[key] = t
	s.mu.Unlock()
}

// flushTouches has the committer write the pending last uses.
func (s *Store) flushTouches() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return // Close writes them
	}
	s.flush, s.flushDue = nil, true
	s.startLocked()
}

// ByName returns the key and canonical name bound to name. Cost: one bbolt
// read transaction, which does not wait for the committer.
func (s *Store) ByName(name string) (key wire.Key, canonical string, ok bool) {
	s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketNames).Get([]byte(wire.NameKey(name)))
		if len(v) >= wire.KeyLen {
			key, canonical, ok = wire.Key(v[:wire.KeyLen]), string(v[wire.KeyLen:]), true
		}
		return nil
	})
	return key, canonical, ok
}

// ByKey returns the canonical name bound to key. Cost: one bbolt read
// transaction, which does not wait for the committer.
func (s *Store) ByKey(key wire.Key) (canonical string, ok bool) {
	s.db.View(func(tx *bolt.Tx) error {
		canonical, ok = nameOf(tx, key)
		return nil
	})
	return canonical, ok
}

// LastUse returns when key's binding was last used. See Names.LastUse.
// Cost: a read transaction and a map read under the Store's mutex.
func (s *Store) LastUse(key wire.Key) (time.Time, bool) {
	var last time.Time
	var ok bool
	s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketKeys).Get(key[:]) == nil {
			return nil
		}
		ok = true
		if v := tx.Bucket(bucketLastUse).Get(key[:]); len(v) == 8 {
			last = decodeTime(v)
		}
		return nil
	})
	if !ok {
		return time.Time{}, false
	}
	s.mu.Lock()
	if t := s.seen[key]; t.last > last.UnixMicro() {
		last = time.UnixMicro(t.last)
	}
	s.mu.Unlock()
	return last, true
}

// Len returns the number of bindings committed. Cost: an atomic load.
func (s *Store) Len() int { return int(s.n.Load()) }

// enqueue hands r to the committer.
func (s *Store) enqueue(r *request) error {
	r.done = make(chan struct{})
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.queue = append(s.queue, r)
	s.startLocked()
	return nil
}

// startLocked starts the committer unless it is running.
func (s *Store) startLocked() {
	if !s.running {
		s.running = true
		s.wg.Add(1)
		go s.run()
	}
}

// closedOr returns ErrClosed if the Store is closed, else err.
func (s *Store) closedOr(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return err
}

// run is the committer: it commits what is queued, in one transaction,
// and again what queued meanwhile, until the queue is empty.
func (s *Store) run() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		if len(s.queue) == 0 && !(s.flushDue && len(s.dirty) > 0) {
			s.running, s.flushDue = false, false
			s.mu.Unlock()
			return
		}
		reqs, dirty, seen := s.takeLocked(false)
		s.mu.Unlock()
		s.commit(reqs, dirty, seen)
	}
}

// takeLocked takes the queued requests and the pending last uses, and also
// the record of touches (to write those held back and forget the rest) if
// all is set or a Release is queued.
func (s *Store) takeLocked(all bool) (reqs []*request, dirty map[wire.Key]int64, seen map[wire.Key]touch) {
	reqs, s.queue = s.queue, nil
	if len(s.dirty) > 0 {
		dirty, s.dirty = s.dirty, make(map[wire.Key]int64)
	}
	if s.flush != nil {
		s.flush.Stop()
		s.flush = nil
	}
	s.flushDue = false
	if all || slices.ContainsFunc(reqs, func(r *request) bool { return r.release }) {
		seen, s.seen = s.seen, make(map[wire.Key]touch)
	}
	return reqs, dirty, seen
}

// commit applies, in one transaction, the last uses in dirty and those
// held back in seen, then reqs in order, and answers reqs.
func (s *Store) commit(reqs []*request, dirty map[wire.Key]int64, seen map[wire.Key]touch) error {
	for k, t := range seen {
		if t.last > t.queued && t.last > dirty[k] {
			if dirty == nil {
				dirty = make(map[wire.Key]int64)
			}
			dirty[k] = t.last
		}
	}
	if len(reqs) == 0 && len(dirty) == 0 {
		return nil
	}
	now := s.now()
	var added, removed int
	var md *mailDelta
	err := s.db.Update(func(tx *bolt.Tx) error {
		if s.testHookCommit != nil {
			s.testHookCommit(len(reqs))
		}
		added, removed, md = 0, 0, newMailDelta()
		for k, t := range dirty {
			if err := touchLastUse(tx, k, time.UnixMicro(t)); err != nil {
				return err
			}
		}
		for _, r := range reqs {
			var err error
			if r.mail != nil {
				err = s.applyMail(tx, r.mail, md)
			} else if r.room != nil {
				err = applyRoom(tx, r.room)
			} else if r.release {
				r.released, err = release(tx, r.cut)
				removed += len(r.released)
			} else {
				var write bool
				r.canonical, write, r.err = checkBind(tx, r)
				if write {
					err = bind(tx, r, now)
					added++
					if err == nil && r.init != nil {
						err = applyRoom(tx, r.init)
					}
				}
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	s.commits.Add(1)
	if err != nil {
		err = fmt.Errorf("commit: %w", err)
		for _, r := range reqs {
			r.canonical, r.released, r.err = "", nil, err
			if r.mail != nil {
				r.mail.err, r.mail.made, r.mail.more = err, nil, false
				r.mail.res = DepositResult{Status: wire.MailStored, Err: err}
			}
			if r.room != nil {
				r.room.fail(err)
			}
			if r.init != nil {
				r.init.fail(err)
			}
		}
		s.mu.Lock()
		for k, t := range dirty { // to retry with the next commit
			if t > s.dirty[k] {
				s.dirty[k] = t
			}
		}
		if len(s.dirty) > 0 && s.flush == nil && !s.closed {
			s.flush = time.AfterFunc(s.touchDelay, s.flushTouches)
		}
		s.mu.Unlock()
	} else {
		s.n.Add(int64(added - removed))
		s.mu.Lock()
		for _, r := range reqs {
			if r.mail == nil && r.room == nil && !r.release && r.err == nil {
				if us := now.UnixMicro(); s.seen[r.key].last <= us {
					s.seen[r.key] = touch{last: us, queued: us}
				}
			}
		}
		s.mu.Unlock()
	}
	s.mailMu.Lock()
	if err == nil {
		s.mail.apply(md)
	}
	for _, r := range reqs {
		if r.mail != nil && r.mail.kind == mailDeposit {
			k := string(idKey(r.mail.m.To, r.mail.m.From, r.mail.m.ID))
			if s.mail.committing[k]--; s.mail.committing[k] <= 0 {
				delete(s.mail.committing, k)
			}
		}
	}
	s.mailMu.Unlock()
	for _, r := range reqs {
		close(r.done)
	}
	for _, r := range reqs {
		if r.mail != nil && r.mail.fn != nil {
			r.mail.fn()
		}
		if r.room != nil && r.room.fn != nil {
			r.room.fn()
		}
		if r.init != nil && r.init.fn != nil {
			r.init.fn()
		}
	}
	return err
}

// checkBind checks r against the bindings in tx. It returns the canonical
// name and no error if r.name is bound to r.key already, an error if r may
// not be bound, and write true if r is to be bound.
func checkBind(tx *bolt.Tx, r *request) (canonical string, write bool, err error) {
	names := tx.Bucket(bucketNames)
	if v := names.Get([]byte(r.nk)); v != nil {
		if len(v) < wire.KeyLen || wire.Key(v[:wire.KeyLen]) != r.key {
			return "", false, ErrNameTaken
		}
		return string(v[wire.KeyLen:]), false, nil
	}
	if name, ok := nameOf(tx, r.key); ok {
		return "", false, fmt.Errorf("%w (%q)", ErrKeyInUse, name)
	}
	if taken, ok := confusable(tx, r); ok {
		return "", false, &confusableError{taken}
	}
	return r.name, true, nil
}

// confusable returns the canonical name of a binding to another key that
// shares a skeleton with r.
func confusable(tx *bolt.Tx, r *request) (taken string, ok bool) {
	if r.skels == nil {
		r.skels = skeletons(r.name)
	}
	names, c := tx.Bucket(bucketNames), tx.Bucket(bucketSkel).Cursor()
	for _, s := range r.skels {
		p := skelPrefix(s)
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			nk := k[len(p):]
			if string(nk) == r.nk {
				continue
			}
			if v := names.Get(nk); len(v) >= wire.KeyLen && wire.Key(v[:wire.KeyLen]) != r.key {
				return string(v[wire.KeyLen:]), true
			}
		}
	}
	return "", false
}

// bind writes the binding r, last used at now.
func bind(tx *bolt.Tx, r *request, now time.Time) error {
	rec := append(append(make([]byte, 0, wire.KeyLen+len(r.name)), r.key[:]...), r.name...)
	if err := tx.Bucket(bucketNames).Put([]byte(r.nk), rec); err != nil {
		return err
	}
	if err := tx.Bucket(bucketKeys).Put(r.key[:], []byte(r.nk)); err != nil {
		return err
	}
	if err := putLastUse(tx, r.key, now); err != nil {
		return err
	}
	return putSkeletons(tx.Bucket(bucketSkel), r.skels, []byte(r.nk))
}

// release deletes the bindings last used before cut and returns their
// canonical names, oldest first.
func release(tx *bolt.Tx, cut time.Time) ([]string, error) {
	names, keys, lastUse, byUse := tx.Bucket(bucketNames), tx.Bucket(bucketKeys), tx.Bucket(bucketLastUse), tx.Bucket(bucketByUse)
	end := encodeTime(cut)
	var old [][]byte
	c := byUse.Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k, end[:]) < 0; k, _ = c.Next() {
		old = append(old, bytes.Clone(k))
	}
	var released []string
	for _, k := range old {
		key := k[len(end):]
		if err := byUse.Delete(k); err != nil {
			return nil, err
		}
		if err := lastUse.Delete(key); err != nil {
			return nil, err
		}
		nk := bytes.Clone(keys.Get(key))
		if nk == nil {
			continue
		}
		if err := keys.Delete(key); err != nil {
			return nil, err
		}
		v := names.Get(nk)
		if len(v) < wire.KeyLen || !bytes.Equal(v[:wire.KeyLen], key) {
			continue
		}
		name := string(v[wire.KeyLen:])
		if err := names.Delete(nk); err != nil {
			return nil, err
		}
		skel := tx.Bucket(bucketSkel)
		for _, s := range skeletons(name) {
			if err := skel.Delete(append(skelPrefix(s), nk...)); err != nil {
				return nil, err
			}
		}
		released = append(released, name)
	}
	return released, nil
}

// nameOf returns the canonical name bound to key.
func nameOf(tx *bolt.Tx, key wire.Key) (string, bool) {
	nk := tx.Bucket(bucketKeys).Get(key[:])
	if nk == nil {
		return "", false
	}
	if v := tx.Bucket(bucketNames).Get(nk); len(v) >= wire.KeyLen {
		return string(v[wire.KeyLen:]), true
	}
	return "", false
}

// touchLastUse records t as the last use of key's binding if key is bound
// and t is later than the recorded last use.
func touchLastUse(tx *bolt.Tx, key wire.Key, t time.Time) error {
	if tx.Bucket(bucketKeys).Get(key[:]) == nil {
		return nil
	}
	if v := tx.Bucket(bucketLastUse).Get(key[:]); v != nil {
		if enc := encodeTime(t); bytes.Compare(enc[:], v) <= 0 {
			return nil
		}
	}
	return putLastUse(tx, key, t)
}

// putLastUse records t as the last use of key's binding.
func putLastUse(tx *bolt.Tx, key wire.Key, t time.Time) error {
	lastUse, byUse := tx.Bucket(bucketLastUse), tx.Bucket(bucketByUse)
	if v := lastUse.Get(key[:]); v != nil {
		if err := byUse.Delete(append(bytes.Clone(v), key[:]...)); err != nil {
			return err
		}
	}
	enc := encodeTime(t)
	if err := lastUse.Put(key[:], enc[:]); err != nil {
		return err
	}
	return byUse.Put(append(enc[:], key[:]...), nil)
}

// encodeTime encodes t (to the microsecond) in 8 bytes that sort as the
// times do: big-endian Unix microseconds with the sign bit flipped.
func encodeTime(t time.Time) (b [8]byte) {
	binary.BigEndian.PutUint64(b[:], uint64(t.UnixMicro())^1<<63)
	return b
}

// skeletons returns the UTS #39 confusable skeletons under which name is
// indexed and checked, without repeats: those of
//
//   - its case-canonical form wire.NameKey(name), so that "BOB", "bob"
//     and "bоb" (Cyrillic о) collide;
//   - that form in upper case: the skeleton does not fold case, and some
//     look-alikes only match in capitals ("ВОТ" and "BOT", fullwidth
//     "ｂｏｂ" and "BOB", "B0B" and "BOB");
//   - its spelling, as others see it: lower-casing loses "I", which
//     looks like "l" ("BlLL" and "BILL").
//
// Two names are confusable if they have a skeleton in common.
func skeletons(name string) []string {
	nk := wire.NameKey(name)
	out := []string{confusables.Skeleton(nk)}
	for _, v := range [...]string{strings.ToUpper(nk), name} {
		if s := confusables.Skeleton(v); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// skelPrefix returns the skel bucket's key prefix for skeleton s.
func skelPrefix(s string) []byte {
	return append(binary.AppendUvarint(nil, uint64(len(s))), s...)
}

// putSkeletons indexes the name whose NameKey is nk under skels.
func putSkeletons(skel *bolt.Bucket, skels []string, nk []byte) error {
	for _, s := range skels {
		if err := skel.Put(append(skelPrefix(s), nk...), nil); err != nil {
			return err
		}
	}
	return nil
}
