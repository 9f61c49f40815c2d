package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"natchat/wire"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashChild(dir) // never returns
	}
	code := m.Run()
	// Every Store the tests opened is closed, so no flusher may be left.
	buf := make([]byte, 1<<20)
	if stacks := string(buf[:runtime.Stack(buf, true)]); code == 0 && strings.Contains(stacks, "store.(*Store).run") {
		fmt.Fprintf(os.Stderr, "flusher goroutine leaked:\n%s", stacks)
		code = 1
	}
	os.Exit(code)
}

// key returns a test identity key filled with b.
func key(b byte) wire.Key {
	var k wire.Key
	for i := range k {
		k[i] = b
	}
	return k
}

// msgID returns a test message ID made from n.
func msgID(n uint64) wire.MsgID {
	var id wire.MsgID
	for i := range id {
		id[i] = byte(n >> (8 * (7 - i)))
	}
	return id
}

// clock is a settable clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.UnixMilli(1_700_000_000_000)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var self = key(1)

// open opens a store in dir for self, closing it when the test ends.
func open(t testing.TB, dir string, o Options) *Store {
	t.Helper()
	s, err := Open(dir, self, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustClose(t testing.TB, s *Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s := open(t, dir, Options{})
	mustClose(t, s)
	for name, want := range map[string]os.FileMode{
		"":          0o700 | os.ModeDir,
		dbFile:      0o600,
		journalFile: 0o600,
	} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%q mode %v, want %v", name, fi.Mode(), want)
		}
	}
}

func TestOpenWrongIdentity(t *testing.T) {
	dir := t.TempDir()
	mustClose(t, open(t, dir, Options{}))
	other := key(2)
	s, err := Open(dir, other, Options{})
	if !errors.Is(err, ErrWrongIdentity) {
		t.Fatalf("Open with another key: %v, %v; want ErrWrongIdentity", s, err)
	}
	for _, want := range []string{dir, self.Short(), other.Short()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	// The failed Open released the directory and left the owner alone.
	mustClose(t, open(t, dir, Options{}))
}

func TestOpenInUse(t *testing.T) {
	t.Parallel() // it waits a second
	dir := t.TempDir()
	s := open(t, dir, Options{})
	start := time.Now()
	s2, err := Open(dir, self, Options{})
	elapsed := time.Since(start)
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open: %v, %v; want ErrInUse", s2, err)
	}
	if want := "state directory " + dir + " is in use by another node"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if elapsed > 2*time.Second {
		t.Errorf("second Open took %v", elapsed)
	}
	mustClose(t, s)
	mustClose(t, open(t, dir, Options{}))
}

func TestOpenZeroKey(t *testing.T) {
	if _, err := Open(t.TempDir(), wire.Key{}, Options{}); err == nil {
		t.Fatal("Open with a zero key succeeded")
	}
}

func TestOpenBadFormatVersion(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(metaVersion, []byte{9}) }); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	if _, err := Open(dir, self, Options{}); err == nil || !strings.Contains(err.Error(), "version") {
		t.Fatalf("Open of format version 9: %v", err)
	}
}

func TestClosed(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	mustClose(t, s)
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Flush(); !errors.Is(err, ErrClosed) {
		t.Errorf("Flush: %v", err)
	}
	if _, err := s.Enqueue(OutMsg{ID: msgID(1), To: "bob"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Enqueue: %v", err)
	}
	if _, err := s.Outbox(); !errors.Is(err, ErrClosed) {
		t.Errorf("Outbox: %v", err)
	}
	s.Done(msgID(1)) // no effect, no panic
	if err := s.MarkShown(key(2), msgID(1)); !errors.Is(err, ErrClosed) {
		t.Errorf("MarkShown: %v", err)
	}
	if s.Shown(key(2), msgID(1)) {
		t.Error("Shown after Close")
	}
	if _, err := s.Prune(); !errors.Is(err, ErrClosed) {
		t.Errorf("Prune: %v", err)
	}
	if err := s.SetPin("bob", key(2)); !errors.Is(err, ErrClosed) {
		t.Errorf("SetPin: %v", err)
	}
	if _, _, err := s.PinByName("bob"); !errors.Is(err, ErrClosed) {
		t.Errorf("PinByName: %v", err)
	}
	if _, _, err := s.PinByKey(key(2)); !errors.Is(err, ErrClosed) {
		t.Errorf("PinByKey: %v", err)
	}
}

// TestCloseRacesCalls closes the store while other goroutines use it: every
// call either works or fails with ErrClosed, and nothing hangs or races.
func TestCloseRacesCalls(t *testing.T) {
	s := open(t, t.TempDir(), Options{FlushInterval: time.Millisecond})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range uint64(200) {
				id := msgID(uint64(g)<<32 | i)
				if _, err := s.Enqueue(OutMsg{ID: id, To: "bob"}); err != nil && !errors.Is(err, ErrClosed) {
					t.Errorf("Enqueue: %v", err)
				}
				if err := s.MarkShown(key(2), id); err != nil && !errors.Is(err, ErrClosed) {
					t.Errorf("MarkShown: %v", err)
				}
				s.Done(id)
				s.Shown(key(2), id)
				if err := s.Flush(); err != nil && !errors.Is(err, ErrClosed) {
					t.Errorf("Flush: %v", err)
				}
			}
		})
	}
	if err := s.MarkShown(key(2), msgID(1)); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	wg.Wait()
}
