package rendezvous

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"natchat/wire"
)

// storeT0 is the tests' clock's start.
var storeT0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// storeClock is a clock the tests set.
type storeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *storeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *storeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// storeKey returns a distinct key for each i.
func storeKey(i int) wire.Key {
	var k wire.Key
	binary.BigEndian.PutUint64(k[:], uint64(i))
	k[31] = 0x5a
	return k
}

// openTestStore opens a Store in dir that the test closes at its end.
func openTestStore(t testing.TB, dir string, o StoreOptions) *Store {
	t.Helper()
	s, err := OpenStoreWith(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// mustBind binds name to key, failing the test on error, and returns the
// canonical name.
func mustBind(t testing.TB, s *Store, name string, key wire.Key) string {
	t.Helper()
	c, err := s.Bind(name, key)
	if err != nil {
		t.Fatalf("Bind(%q, %s): %v", name, key.Short(), err)
	}
	return c
}

// checkBound checks that name is bound to key under canonical, both ways.
func checkBound(t testing.TB, s *Store, name string, key wire.Key, canonical string) {
	t.Helper()
	k, c, ok := s.ByName(name)
	if !ok || k != key || c != canonical {
		t.Errorf("ByName(%q) = %s, %q, %v; want %s, %q", name, k.Short(), c, ok, key.Short(), canonical)
	}
	if c, ok := s.ByKey(key); !ok || c != canonical {
		t.Errorf("ByKey(%s) = %q, %v; want %q", key.Short(), c, ok, canonical)
	}
}

// checkUnbound checks that neither name nor key is bound.
func checkUnbound(t testing.TB, s *Store, name string, key wire.Key) {
	t.Helper()
	if k, c, ok := s.ByName(name); ok {
		t.Errorf("ByName(%q) = %s, %q; want unknown", name, k.Short(), c)
	}
	if c, ok := s.ByKey(key); ok {
		t.Errorf("ByKey(%s) = %q; want unknown", key.Short(), c)
	}
}

// lastUseOf reads key's recorded last use.
func lastUseOf(t testing.TB, s *Store, key wire.Key) (lu time.Time, ok bool) {
	t.Helper()
	s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketLastUse).Get(key[:]); len(v) == 8 {
			lu, ok = time.UnixMicro(int64(binary.BigEndian.Uint64(v)^1<<63)).UTC(), true
		}
		return nil
	})
	return lu, ok
}

// checkIndexes checks that the buckets agree: each binding has its
// reverse entry, one last use in both indexes and its skeletons, nothing
// else is indexed, and Len counts the bindings.
func checkIndexes(t testing.TB, s *Store) {
	t.Helper()
	err := s.db.View(func(tx *bolt.Tx) error {
		names, keys := tx.Bucket(bucketNames), tx.Bucket(bucketKeys)
		lastUse, byUse, skel := tx.Bucket(bucketLastUse), tx.Bucket(bucketByUse), tx.Bucket(bucketSkel)
		wantSkel := map[string]bool{}
		n := 0
		names.ForEach(func(nk, rec []byte) error {
			n++
			key, name := wire.Key(rec[:wire.KeyLen]), string(rec[wire.KeyLen:])
			if got := keys.Get(key[:]); string(got) != string(nk) {
				t.Errorf("%q: keys has %q", name, got)
			}
			lu := lastUse.Get(key[:])
			if len(lu) != 8 || byUse.Get(append(bytes.Clone(lu), key[:]...)) == nil {
				t.Errorf("%q: last use %x not in byuse", name, lu)
			}
			for _, sk := range skeletons(name) {
				wantSkel[string(append(skelPrefix(sk), nk...))] = true
			}
			return nil
		})
		for _, b := range []*bolt.Bucket{keys, lastUse, byUse} {
			if got := b.Stats().KeyN; got != n {
				t.Errorf("%d bindings but %d entries in a reverse index", n, got)
			}
		}
		skel.ForEach(func(k, _ []byte) error {
			if !wantSkel[string(k)] {
				t.Errorf("stale skeleton entry %q", k)
			}
			delete(wantSkel, string(k))
			return nil
		})
		for k := range wantSkel {
			t.Errorf("missing skeleton entry %q", k)
		}
		if s.Len() != n {
			t.Errorf("Len = %d; %d bindings", s.Len(), n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (s *Store) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// TestStoreBindConcurrentGroupCommit: 200 Binds at once share at most two
// transactions (the first, and everything queued during it), and all are
// there after reopening.
func TestStoreBindConcurrentGroupCommit(t *testing.T) {
	const n = 200
	dir := t.TempDir()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	var firstBatch atomic.Int64
	inFirst, release := make(chan struct{}), make(chan struct{})
	s.testHookCommit = func(reqs int) {
		if firstBatch.CompareAndSwap(0, int64(reqs)) {
			close(inFirst)
			<-release // hold the first commit until the rest have queued
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { _, errs[i] = s.Bind(fmt.Sprintf("node-%03d", i), storeKey(i)) })
	}
	<-inFirst
	waitFor(t, "all binds to queue", func() bool { return int(firstBatch.Load())+s.queued() == n })
	close(release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("bind %d: %v", i, err)
		}
	}
	if got := s.commits.Load(); got > 2 {
		t.Errorf("%d binds took %d commits (the first of %d); want at most 2", n, got, firstBatch.Load())
	}
	if s.Len() != n {
		t.Errorf("Len = %d; want %d", s.Len(), n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, dir, StoreOptions{})
	if s.Len() != n {
		t.Errorf("after reopen, Len = %d; want %d", s.Len(), n)
	}
	for i := range n {
		checkBound(t, s, fmt.Sprintf("NODE-%03d", i), storeKey(i), fmt.Sprintf("node-%03d", i))
	}
	checkIndexes(t, s)
}

// TestStoreBindConcurrentNatural: without holding the committer, 200 Binds
// started together still need far fewer commits than Binds.
func TestStoreBindConcurrentNatural(t *testing.T) {
	const n = 200
	s := openTestStore(t, t.TempDir(), StoreOptions{})
	start := make(chan struct{})
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := range n {
		wg.Go(func() {
			<-start
			if _, err := s.Bind(fmt.Sprintf("node-%03d", i), storeKey(i)); err != nil {
				t.Error(err)
				failed.Add(1)
			}
		})
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(t0)
	commits := s.commits.Load()
	t.Logf("%d concurrent binds: %d commits in %v", n, commits, took)
	if commits > n/4 {
		t.Errorf("%d concurrent binds took %d commits; want at most %d", n, commits, n/4)
	}
	if s.Len() != n {
		t.Errorf("Len = %d; want %d", s.Len(), n)
	}
}

// TestStoreBindContested: many keys bind the same name, or names that look
// alike, at once: exactly one wins.
func TestStoreBindContested(t *testing.T) {
	names := []string{"bob", "BOB", "bоb", "BОB", "Bob", "ｂｏｂ", "b0b"}
	s := openTestStore(t, t.TempDir(), StoreOptions{})
	start := make(chan struct{})
	var wg sync.WaitGroup
	var won atomic.Int32
	for i := range 60 {
		wg.Go(func() {
			<-start
			_, err := s.Bind(names[i%len(names)], storeKey(i))
			switch {
			case err == nil:
				won.Add(1)
			case errors.Is(err, ErrNameTaken), errors.Is(err, ErrConfusable):
			default:
				t.Errorf("bind %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if won.Load() != 1 || s.Len() != 1 {
		t.Errorf("%d binds won, Len %d; want 1, 1", won.Load(), s.Len())
	}
	checkIndexes(t, s)
}

func TestStoreBindRules(t *testing.T) {
	s := openTestStore(t, t.TempDir(), StoreOptions{})
	k1, k2 := storeKey(1), storeKey(2)
	if c := mustBind(t, s, "Bob", k1); c != "Bob" {
		t.Errorf("canonical %q; want Bob", c)
	}
	commits := s.commits.Load()
	for _, tc := range []struct {
		name      string
		key       wire.Key
		canonical string
		err       error
	}{
		{"Bob", k1, "Bob", nil},        // same key, same name: idempotent
		{"bob", k1, "Bob", nil},        // case variant: the first spelling stays
		{"BOB", k1, "Bob", nil},        //
		{"bob", k2, "", ErrNameTaken},  // another key
		{"BOB", k2, "", ErrNameTaken},  //
		{"alice", k1, "", ErrKeyInUse}, // the key has a name
		{"bоb", k1, "", ErrKeyInUse},   // even one that looks like its own
		{"", k2, "", wire.ErrNameEmpty},
		{"#room", k2, "", wire.ErrNameReserved},
		{"a b", k2, "", wire.ErrNameSpace},
	} {
		c, err := s.Bind(tc.name, tc.key)
		if c != tc.canonical || !errors.Is(err, tc.err) {
			t.Errorf("Bind(%q, %s) = %q, %v; want %q, %v", tc.name, tc.key.Short(), c, err, tc.canonical, tc.err)
		}
	}
	if got := s.commits.Load(); got != commits {
		t.Errorf("Binds that change nothing committed %d times", got-commits)
	}
	if _, err := s.Bind("alice", k1); err == nil || err.Error() != `key is already registered under another name ("Bob")` {
		t.Errorf("key in use: %v", err)
	}
	mustBind(t, s, "Straße", k2)
	checkBound(t, s, "STRAẞE", k2, "Straße")
	checkBound(t, s, "bOB", k1, "Bob")
	checkUnbound(t, s, "STRASSE", storeKey(3)) // no full case folding (§16)
	if s.Len() != 2 {
		t.Errorf("Len = %d; want 2", s.Len())
	}
}

// TestStoreConfusables binds first with one key, then second with another.
func TestStoreConfusables(t *testing.T) {
	for _, tc := range []struct {
		first, second string
		confusable    bool
	}{
		{"bob", "bоb", true},       // Cyrillic о (U+043E)
		{"BOB", "bоb", true},       //
		{"bоb", "bob", true},       //
		{"bob", "BОB", true},       // Cyrillic О (U+041E)
		{"paypal", "pаypal", true}, // Cyrillic а (U+0430)
		{"rn", "m", true},          // UTS #39 maps m to rn
		{"M", "rn", true},          //
		{"bot", "ВОТ", true},       // Cyrillic capitals; alike in upper case only
		{"bot", "вот", true},       //
		{"bob", "ｂｏｂ", true},       // fullwidth; the data maps only its capitals
		{"bob", "𝐛𝐨𝐛", true},       // mathematical bold
		{"BOB", "B0B", true},       // digit zero: the data maps 0 to O
		{"BILL", "BlLL", true},     // small L for capital I, as spelt
		{"alice", "ALlCE", true},   //
		{"1l", "ll", true},         // digit one
		{"bob", "bobby", false},
		{"al", "ai", false}, // in lower case i and l differ
		{"Straße", "STRASSE", false},
		{"x-y", "x_y", false},
		{"é", "e", false},
	} {
		t.Run(tc.first+"_vs_"+tc.second, func(t *testing.T) {
			s := openTestStore(t, t.TempDir(), StoreOptions{})
			first := mustBind(t, s, tc.first, storeKey(1))
			_, err := s.Bind(tc.second, storeKey(2))
			if !tc.confusable {
				if err != nil {
					t.Fatalf("Bind(%q) after %q: %v", tc.second, tc.first, err)
				}
				return
			}
			if !errors.Is(err, ErrConfusable) {
				t.Fatalf("Bind(%q) after %q: %v; want ErrConfusable", tc.second, tc.first, err)
			}
			if want := fmt.Sprintf("looks like %q, which is taken", first); err.Error() != want {
				t.Errorf("error %q; want %q", err, want)
			}
		})
	}
}

func TestStoreConfusableAfterRelease(t *testing.T) {
	clk := &storeClock{now: storeT0}
	s := openTestStore(t, t.TempDir(), StoreOptions{Now: clk.Now})
	k1, k2 := storeKey(1), storeKey(2)
	mustBind(t, s, "bob", k1)
	if _, err := s.Bind("bоb", k2); !errors.Is(err, ErrConfusable) {
		t.Fatalf("bоb: %v; want ErrConfusable", err)
	}
	released, err := s.Release(storeT0.Add(time.Second))
	if err != nil || !slices.Equal(released, []string{"bob"}) {
		t.Fatalf("Release = %q, %v; want [bob]", released, err)
	}
	clk.Set(storeT0.Add(time.Hour))
	mustBind(t, s, "bоb", k2)
	if _, err := s.Bind("bob", k1); !errors.Is(err, ErrConfusable) {
		t.Errorf("bob after bоb: %v; want ErrConfusable", err)
	}
	checkIndexes(t, s)
}

// TestStoreRelease: bindings not used since the cut go; touched ones stay,
// and the store says so after reopening too.
func TestStoreRelease(t *testing.T) {
	dir := t.TempDir()
	clk := &storeClock{now: storeT0}
	s := openTestStore(t, dir, StoreOptions{Now: clk.Now})
	ka, kb, kc, kd := storeKey(1), storeKey(2), storeKey(3), storeKey(4)
	mustBind(t, s, "alice", ka)
	mustBind(t, s, "bob", kb)
	clk.Set(storeT0.Add(time.Minute))
	mustBind(t, s, "carol", kc)
	clk.Set(storeT0.Add(100 * 24 * time.Hour))
	mustBind(t, s, "dave", kd)

	day := 24 * time.Hour
	s.Touch(kb, storeT0.Add(90*day))
	s.Touch(storeKey(99), storeT0.Add(90*day)) // not bound: ignored
	if released, err := s.Release(storeT0.Add(-time.Second)); err != nil || len(released) != 0 {
		t.Fatalf("Release before everything = %q, %v", released, err)
	}
	released, err := s.Release(storeT0.Add(50 * day))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(released, []string{"alice", "carol"}) { // oldest first
		t.Errorf("released %q; want [alice carol]", released)
	}
	check := func(s *Store) {
		t.Helper()
		checkUnbound(t, s, "alice", ka)
		checkUnbound(t, s, "carol", kc)
		checkBound(t, s, "bob", kb, "bob")
		checkBound(t, s, "dave", kd, "dave")
		if s.Len() != 2 {
			t.Errorf("Len = %d; want 2", s.Len())
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, dir, StoreOptions{Now: clk.Now})
	check(s)
	if lu, _ := lastUseOf(t, s, kb); !lu.Equal(storeT0.Add(90 * day)) {
		t.Errorf("bob last used %v; want %v", lu, storeT0.Add(90*day))
	}

	// A released name and its key are free for anyone.
	mustBind(t, s, "ALICE", kc)
	mustBind(t, s, "carol", storeKey(5))
	mustBind(t, s, "erin", ka)

	released, err = s.Release(storeT0.Add(95 * day))
	if err != nil || !slices.Equal(released, []string{"bob"}) {
		t.Errorf("Release = %q, %v; want [bob]", released, err)
	}
	if s.Len() != 4 {
		t.Errorf("Len = %d; want 4", s.Len())
	}
	checkIndexes(t, s)
}

// TestStoreReleaseCountsHeldBackTouches: Touch writes at most once per
// TouchEvery, but Release and Close account for the touches held back.
func TestStoreReleaseCountsHeldBackTouches(t *testing.T) {
	dir := t.TempDir()
	clk := &storeClock{now: storeT0}
	s := openTestStore(t, dir, StoreOptions{Now: clk.Now})
	k := storeKey(1)
	mustBind(t, s, "bob", k)
	t1 := storeT0.Add(30 * time.Minute)
	s.Touch(k, t1) // held back: within an hour of the bind
	released, err := s.Release(storeT0.Add(10 * time.Minute))
	if err != nil || len(released) != 0 {
		t.Fatalf("Release = %q, %v; want none", released, err)
	}
	if lu, _ := lastUseOf(t, s, k); !lu.Equal(t1) {
		t.Errorf("last use after Release %v; want %v", lu, t1)
	}
	t2 := t1.Add(20 * time.Minute)
	s.Touch(k, t2) // Release forgot t1: written with the next commit, Close at the latest
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, dir, StoreOptions{Now: clk.Now})
	if lu, _ := lastUseOf(t, s, k); !lu.Equal(t2) {
		t.Errorf("last use after Close %v; want %v", lu, t2)
	}
	if released, err := s.Release(t2.Add(time.Microsecond)); err != nil || !slices.Equal(released, []string{"bob"}) {
		t.Errorf("Release = %q, %v; want [bob]", released, err)
	}
}

// TestStoreTouchWrites: Touch writes a key's last use at most once per
// TouchEvery, without a Bind or Release to carry it, and never goes back
// in time.
func TestStoreTouchWrites(t *testing.T) {
	clk := &storeClock{now: storeT0}
	s := openTestStore(t, t.TempDir(), StoreOptions{Now: clk.Now})
	s.touchDelay = time.Millisecond // read by the committer after Touch wakes it
	k := storeKey(1)
	mustBind(t, s, "bob", k)
	commits := s.commits.Load()

	t1 := storeT0.Add(2 * time.Hour)
	for i := range 50 {
		s.Touch(k, t1.Add(time.Duration(i)*time.Minute)) // the first is written
	}
	waitFor(t, "the touch commit", func() bool { return s.commits.Load() > commits })
	if lu, _ := lastUseOf(t, s, k); !lu.Equal(t1) {
		t.Errorf("last use %v; want %v", lu, t1)
	}
	time.Sleep(20 * time.Millisecond) // nothing else may be committed
	if got := s.commits.Load() - commits; got != 1 {
		t.Errorf("50 touches within an hour: %d commits; want 1", got)
	}
	t2 := t1.Add(3 * time.Hour)
	s.Touch(k, t2)
	waitFor(t, "the second touch", func() bool { lu, _ := lastUseOf(t, s, k); return lu.Equal(t2) })
	s.Touch(k, storeT0) // older than the last: ignored in memory
	if _, err := s.Release(storeT0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	commits = s.commits.Load()
	s.Touch(k, t1) // Release forgot the touches; older than on disk: ignored there
	waitFor(t, "the older touch's commit", func() bool { return s.commits.Load() > commits })
	if lu, _ := lastUseOf(t, s, k); !lu.Equal(t2) {
		t.Errorf("last use %v after an older touch; want %v", lu, t2)
	}
}

// writeOldStore writes bindings the way the code before last use and
// skeletons did: buckets names and keys only.
func writeOldStore(t *testing.T, dir string, bindings map[string]wire.Key) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "rendezvous.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		names, err := tx.CreateBucketIfNotExists([]byte("names"))
		if err != nil {
			return err
		}
		keys, err := tx.CreateBucketIfNotExists([]byte("keys"))
		if err != nil {
			return err
		}
		for name, key := range bindings {
			nk := wire.NameKey(name)
			if err := names.Put([]byte(nk), append(key[:], name...)); err != nil {
				return err
			}
			if err := keys.Put(key[:], []byte(nk)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestStoreUpgrade opens a database written by the old code: the bindings
// stay, are last used at the upgrade, and get a skeleton index.
func TestStoreUpgrade(t *testing.T) {
	dir := t.TempDir()
	old := map[string]wire.Key{
		"Bob":    storeKey(1),
		"bоb":    storeKey(2), // confusable pair from before the check
		"paypal": storeKey(3),
	}
	writeOldStore(t, dir, old)
	tUp := storeT0.Add(1000 * 24 * time.Hour)
	clk := &storeClock{now: tUp}
	s := openTestStore(t, dir, StoreOptions{Now: clk.Now})
	if s.Len() != 3 {
		t.Errorf("Len = %d; want 3", s.Len())
	}
	for name, key := range old {
		checkBound(t, s, name, key, name)
		if lu, ok := lastUseOf(t, s, key); !ok || !lu.Equal(tUp) {
			t.Errorf("%s: last use %v, %v; want the upgrade, %v", name, lu, ok, tUp)
		}
	}
	if _, err := s.Bind("pаypal", storeKey(4)); !errors.Is(err, ErrConfusable) {
		t.Errorf("pаypal after upgrade: %v; want ErrConfusable", err)
	}
	if _, err := s.Bind("B0B", storeKey(4)); !errors.Is(err, ErrConfusable) {
		t.Errorf("B0B after upgrade: %v; want ErrConfusable", err)
	}
	if released, err := s.Release(tUp.Add(-time.Hour)); err != nil || len(released) != 0 {
		t.Errorf("Release before the upgrade = %q, %v; want none", released, err)
	}
	// One of the old confusable pair goes; the other still holds the look.
	s.Touch(storeKey(2), tUp.Add(2*time.Hour))
	s.Touch(storeKey(3), tUp.Add(2*time.Hour))
	released, err := s.Release(tUp.Add(time.Hour))
	if err != nil || !slices.Equal(released, []string{"Bob"}) {
		t.Errorf("Release = %q, %v; want [Bob]", released, err)
	}
	if _, err := s.Bind("bob", storeKey(4)); !errors.Is(err, ErrConfusable) || err.Error() != `looks like "bоb", which is taken` {
		t.Errorf("bob with bоb bound: %v; want ErrConfusable", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Older code runs again and binds a name; the new code picks it up.
	writeOldStore(t, dir, map[string]wire.Key{"carol": storeKey(5)})
	tUp2 := tUp.Add(24 * time.Hour)
	clk.Set(tUp2)
	s = openTestStore(t, dir, StoreOptions{Now: clk.Now})
	if s.Len() != 3 {
		t.Errorf("Len = %d; want 3", s.Len())
	}
	if lu, _ := lastUseOf(t, s, storeKey(5)); !lu.Equal(tUp2) {
		t.Errorf("carol last used %v; want %v", lu, tUp2)
	}
	if _, err := s.Bind("cаrol", storeKey(6)); !errors.Is(err, ErrConfusable) {
		t.Errorf("cаrol: %v; want ErrConfusable", err)
	}
	if lu, _ := lastUseOf(t, s, storeKey(2)); !lu.Equal(tUp.Add(2 * time.Hour)) {
		t.Errorf("bоb last used %v; want its touch %v", lu, tUp.Add(2*time.Hour))
	}
	checkIndexes(t, s)
}

// TestStoreSkeletonVersionRebuild: an index built by another skeleton
// version is rebuilt on open.
func TestStoreSkeletonVersionRebuild(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	mustBind(t, s, "bob", storeKey(1))
	err = s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketSkel); err != nil {
			return err
		}
		if _, err := tx.CreateBucket(bucketSkel); err != nil {
			return err
		}
		// A stale entry that the rebuild must drop.
		if err := putSkeletons(tx.Bucket(bucketSkel), []string{"alice"}, []byte("bob")); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(metaSkeleton, []byte("older"))
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTestStore(t, dir, StoreOptions{})
	if _, err := s.Bind("bоb", storeKey(2)); !errors.Is(err, ErrConfusable) {
		t.Errorf("bоb: %v; want ErrConfusable", err)
	}
	mustBind(t, s, "alice", storeKey(3))
	checkIndexes(t, s)
}

// TestStoreReadsDuringCommit: reads, and Binds that change nothing, do not
// wait for a write transaction in progress.
func TestStoreReadsDuringCommit(t *testing.T) {
	s := openTestStore(t, t.TempDir(), StoreOptions{})
	mustBind(t, s, "bob", storeKey(1))
	inTx, unblock := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.testHookCommit = func(int) {
		once.Do(func() {
			close(inTx)
			<-unblock
		})
	}
	bound := make(chan error, 1)
	go func() {
		_, err := s.Bind("alice", storeKey(2))
		bound <- err
	}()
	<-inTx
	done := make(chan struct{})
	go func() {
		defer close(done)
		checkBound(t, s, "BOB", storeKey(1), "bob")
		checkUnbound(t, s, "alice", storeKey(2))
		if c, err := s.Bind("bob", storeKey(1)); err != nil || c != "bob" {
			t.Errorf("Bind(bob) again = %q, %v", c, err)
		}
		if _, err := s.Bind("bob", storeKey(3)); !errors.Is(err, ErrNameTaken) {
			t.Errorf("Bind(bob) by another: %v", err)
		}
		s.Touch(storeKey(1), time.Now())
		_ = s.Len()
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("reads blocked by a commit in progress")
	}
	close(unblock)
	if err := <-bound; err != nil {
		t.Fatal(err)
	}
	checkBound(t, s, "alice", storeKey(2), "alice")
}

func TestStoreClose(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	mustBind(t, s, "bob", storeKey(1))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Bind("alice", storeKey(2)); !errors.Is(err, ErrClosed) {
		t.Errorf("Bind after Close: %v; want ErrClosed", err)
	}
	if _, err := s.Release(time.Now()); !errors.Is(err, ErrClosed) {
		t.Errorf("Release after Close: %v; want ErrClosed", err)
	}
	s.Touch(storeKey(1), time.Now()) // no panic, no effect
	if _, _, ok := s.ByName("bob"); ok {
		t.Error("ByName after Close found bob")
	}
}

// committerRunning reports whether a goroutine is in s.run.
func committerRunning(s *Store) bool {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Contains(buf[:n], fmt.Appendf(nil, "rendezvous.(*Store).run(%p)", s))
		}
		buf = make([]byte, 2*len(buf))
	}
}

// TestStoreCommitterIdle: the committer runs only while there is work, so
// an idle Store holds no goroutine, and Close waits for a busy one.
func TestStoreCommitterIdle(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if committerRunning(s) {
		t.Fatal("committer running before any write")
	}
	mustBind(t, s, "bob", storeKey(1))
	waitFor(t, "the committer to return", func() bool { return !committerRunning(s) })
	s.touchDelay = time.Millisecond
	later := time.Now().Add(2 * time.Hour).Truncate(time.Microsecond).UTC()
	s.Touch(storeKey(1), later)
	waitFor(t, "the touch", func() bool { lu, _ := lastUseOf(t, s, storeKey(1)); return lu.Equal(later) })
	waitFor(t, "the committer to return", func() bool { return !committerRunning(s) })

	inTx, unblock := make(chan struct{}), make(chan struct{})
	s.testHookCommit = func(int) {
		close(inTx)
		<-unblock
	}
	bound := make(chan error, 1)
	go func() {
		_, err := s.Bind("alice", storeKey(2))
		bound <- err
	}()
	<-inTx
	if !committerRunning(s) {
		t.Error("committer not seen while it commits")
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a commit was in progress", err)
	case <-time.After(20 * time.Millisecond):
	}
	close(unblock)
	if err := <-bound; err != nil {
		t.Errorf("Bind during Close: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	// It has called wg.Done but may still be on its way out.
	waitFor(t, "the committer to return", func() bool { return !committerRunning(s) })
}

// BenchmarkBindParallel binds new names from 32 goroutines per CPU, as
// registration workers would.
func BenchmarkBindParallel(b *testing.B) {
	s := openTestStore(b, b.TempDir(), StoreOptions{})
	var next atomic.Int64
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(next.Add(1))
			if _, err := s.Bind(fmt.Sprintf("n%d", i), storeKey(i)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/float64(s.commits.Load()), "binds/commit")
}

func BenchmarkByName(b *testing.B) {
	s := openTestStore(b, b.TempDir(), StoreOptions{})
	const n = 10000
	var wg sync.WaitGroup
	for w := range 100 { // concurrently, so they share commits
		wg.Go(func() {
			for i := w; i < n; i += 100 {
				if _, err := s.Bind(fmt.Sprintf("node-%d", i), storeKey(i)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if s.Len() != n {
		b.Fatalf("Len = %d; want %d", s.Len(), n)
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("NODE-%d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, _, ok := s.ByName(names[i%n]); !ok {
			b.Fatal("not found")
		}
	}
}

// BenchmarkStoreTouchMemory reports the heap the Store holds per key
// touched since the last Release (seen-B/key; the pending writes, a
// second's worth, not counted): every registration touches its key, so
// a million nodes registering leave a million entries until the hourly
// Release.
func BenchmarkStoreTouchMemory(b *testing.B) {
	const n = 200_000
	keys := make([]wire.Key, n)
	for i := range keys {
		keys[i] = storeKey(i)
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	now := time.Now()
	for b.Loop() {
		s := openTestStore(b, b.TempDir(), StoreOptions{})
		h0 := heap()
		for _, k := range keys {
			s.Touch(k, now)
		}
		s.mu.Lock()
		if s.flush != nil {
			s.flush.Stop()
			s.flush = nil
		}
		s.dirty = make(map[wire.Key]int64) // as the committer takes it
		seen := len(s.seen)
		s.mu.Unlock()
		b.ReportMetric(float64(heap()-h0)/n, "seen-B/key")
		if seen != n {
			b.Fatalf("%d keys seen, want %d", seen, n)
		}
		s.Close()
	}
}
