package store

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"natchat/wire"
)

// syncBuffer is a bytes.Buffer safe for a logger used from two goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestJournalRecord(t *testing.T) {
	k := newMarkKey(key(0xaa), msgID(0x0102030405060708))
	b := appendRecord(nil, k, 1_700_000_000_123)
	want := strings.Repeat("aa", 32) + "0102030405060708" + "0000018bcfe5687b"
	if got := hex.EncodeToString(b); len(b) != recordLen || got[:len(want)] != want {
		t.Fatalf("record %s (%d bytes), want %s + CRC", got, len(b), want)
	}
	rec := [recordLen]byte(b)
	if k2, ms, ok := parseRecord(&rec); !ok || k2 != k || ms != 1_700_000_000_123 {
		t.Fatalf("parse: %x %d %v", k2, ms, ok)
	}
	for i := range recordLen {
		bad := rec
		bad[i] ^= 0x10
		if _, _, ok := parseRecord(&bad); ok {
			t.Errorf("flipped byte %d not detected", i)
		}
	}
	var zero [recordLen]byte
	if _, _, ok := parseRecord(&zero); ok {
		t.Error("all-zero record accepted")
	}
}

func TestShown(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{FlushInterval: time.Hour})
	alice, bob := key(2), key(3)
	if s.Shown(alice, msgID(1)) {
		t.Fatal("Shown before MarkShown")
	}
	for _, id := range []wire.MsgID{msgID(1), msgID(2)} {
		if err := s.MarkShown(alice, id); err != nil {
			t.Fatal(err)
		}
	}
	check := func(when string) {
		t.Helper()
		for _, tc := range []struct {
			peer wire.Key
			id   wire.MsgID
			want bool
		}{
			{alice, msgID(1), true},
			{alice, msgID(2), true},
			{alice, msgID(3), false},
			{bob, msgID(1), false}, // IDs are per peer
		} {
			if got := s.Shown(tc.peer, tc.id); got != tc.want {
				t.Errorf("%s: Shown(%s, %s) = %v, want %v", when, tc.peer.Short(), tc.id, got, tc.want)
			}
		}
	}
	check("queued")
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	check("flushed")
	if err := s.MarkShown(alice, msgID(1)); err != nil { // again: harmless
		t.Fatal(err)
	}
	mustClose(t, s)
	if fi, err := os.Stat(filepath.Join(dir, journalFile)); err != nil || fi.Size() != 0 {
		t.Errorf("journal after Close: %v, %v; want empty", fi, err)
	}
	s = open(t, dir, Options{})
	check("reopened")
}

// TestShownSurvivesCrash copies the state directory while marks are only
// in the journal, as a killed process would leave it, and opens the copy.
func TestShownSurvivesCrash(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{FlushInterval: time.Hour})
	peer := key(2)
	for i := range uint64(10) {
		if err := s.MarkShown(peer, msgID(i)); err != nil {
			t.Fatal(err)
		}
		if i == 4 {
			if err := s.Flush(); err != nil { // 0-4 in bbolt, 5-9 only in the journal
				t.Fatal(err)
			}
		}
	}
	crashed := t.TempDir()
	for _, name := range []string{dbFile, journalFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(crashed, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := open(t, crashed, Options{})
	for i := range uint64(10) {
		if !c.Shown(peer, msgID(i)) {
			t.Errorf("mark %d lost", i)
		}
	}
}

// journal returns a journal of n marks of peer, IDs 0..n-1.
func journal(peer wire.Key, n int) []byte {
	var b []byte
	for i := range n {
		b = appendRecord(b, newMarkKey(peer, msgID(uint64(i))), 1_700_000_000_000+int64(i))
	}
	return b
}

func TestJournalTornTail(t *testing.T) {
	const n = 5
	peer := key(2)
	for _, tc := range []struct {
		name    string
		mangle  func([]byte) []byte
		kept    int // marks 0..kept-1 survive
		dropped string
	}{
		{"whole", func(b []byte) []byte { return b }, 5, ""},
		{"short last record", func(b []byte) []byte { return b[:4*recordLen+20] }, 4, `"dropped":1,"bytes":20`},
		{"one byte of a record", func(b []byte) []byte { return b[:4*recordLen+1] }, 4, `"dropped":1,"bytes":1`},
		{"bad CRC in last record", func(b []byte) []byte { b[5*recordLen-1] ^= 1; return b }, 4, `"dropped":1,"bytes":52`},
		{"bad CRC in the middle", func(b []byte) []byte { b[3*recordLen-2] ^= 0x80; return b }, 2, `"dropped":3,"bytes":156`},
		{"flipped key byte", func(b []byte) []byte { b[3*recordLen+7] ^= 4; return b }, 3, `"dropped":2`},
		{"zero-filled tail", func(b []byte) []byte { return append(b, make([]byte, 3*recordLen)...) }, 5, `"dropped":3`},
		{"empty", func(b []byte) []byte { return nil }, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			mustClose(t, open(t, dir, Options{}))
			j := tc.mangle(journal(peer, n))
			if err := os.WriteFile(filepath.Join(dir, journalFile), j, 0o600); err != nil {
				t.Fatal(err)
			}
			var log syncBuffer
			// The journal's marks are from newClock's time: not yet pruned.
			c := newClock()
			s := open(t, dir, Options{Logger: zerolog.New(&log), Now: c.Now})
			for i := range n {
				if got, want := s.Shown(peer, msgID(uint64(i))), i < tc.kept; got != want {
					t.Errorf("Shown(%d) = %v, want %v", i, got, want)
				}
			}
			if tc.dropped == "" && log.String() != "" {
				t.Errorf("unexpected log: %s", log.String())
			}
			if tc.dropped != "" && !strings.Contains(log.String(), tc.dropped) {
				t.Errorf("log %q does not say %s", log.String(), tc.dropped)
			}
			if fi, err := os.Stat(filepath.Join(dir, journalFile)); err != nil || fi.Size() != 0 {
				t.Errorf("journal after replay: %v, %v; want empty", fi, err)
			}
			// The kept marks are in bbolt now: they survive another reopen.
			mustClose(t, s)
			s = open(t, dir, Options{Now: c.Now})
			for i := range tc.kept {
				if !s.Shown(peer, msgID(uint64(i))) {
					t.Errorf("mark %d lost after the second reopen", i)
				}
			}
		})
	}
}

func TestJournalLeftoverTmp(t *testing.T) {
	dir := t.TempDir()
	mustClose(t, open(t, dir, Options{}))
	tmp := filepath.Join(dir, journalTmp)
	if err := os.WriteFile(tmp, []byte("half a rotation"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustClose(t, open(t, dir, Options{}))
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("leftover %s: %v", journalTmp, err)
	}
}

// diskMarks returns the marks in the journal file and in bbolt: what a
// process killed now would leave.
func diskMarks(t *testing.T, s *Store) map[markKey]bool {
	t.Helper()
	on := map[markKey]bool{}
	// The journal first: a mark leaves it (rotation) only after its commit.
	j, err := os.ReadFile(filepath.Join(s.dir, journalFile))
	if err != nil {
		t.Fatal(err)
	}
	for len(j) >= recordLen {
		k, _, ok := parseRecord((*[recordLen]byte)(j))
		if !ok {
			break
		}
		on[k] = true
		j = j[recordLen:]
	}
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketShown).ForEach(func(k, _ []byte) error {
			on[markKey(k)] = true
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return on
}

// TestJournalRotation marks concurrently while the flusher commits and
// rotates a small journal, and checks again and again that every mark
// whose MarkShown returned is on disk, in the journal or in bbolt.
func TestJournalRotation(t *testing.T) {
	const limit = 20 * recordLen
	dir := t.TempDir()
	s := open(t, dir, Options{FlushInterval: time.Millisecond, journalLimit: limit})
	const writers, each = 4, 1500
	var (
		mu       sync.Mutex
		returned []markKey // marks whose MarkShown returned, in order
	)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			peer := key(byte(10 + w))
			for i := range uint64(each) {
				if err := s.MarkShown(peer, msgID(i)); err != nil {
					t.Errorf("MarkShown: %v", err)
					return
				}
				mu.Lock()
				returned = append(returned, newMarkKey(peer, msgID(i)))
				mu.Unlock()
			}
		})
	}
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()
	checks := 0
	for done := false; !done; checks++ {
		select {
		case <-writersDone:
			done = true
		default:
		}
		mu.Lock()
		want := returned[:len(returned):len(returned)]
		mu.Unlock()
		on := diskMarks(t, s)
		for _, k := range want {
			if !on[k] {
				t.Fatalf("check %d: mark %x returned but is neither in the journal nor in bbolt", checks, k)
			}
		}
	}
	t.Logf("%d checks", checks)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, journalFile))
	if err != nil {
		t.Fatal(err)
	}
	if written := int64(writers * each * recordLen); fi.Size() > written/2 {
		t.Errorf("journal is %d bytes after %d written: not rotated", fi.Size(), written)
	}
	mustClose(t, s)
	s = open(t, dir, Options{})
	for w := range writers {
		for i := range uint64(each) {
			if !s.Shown(key(byte(10+w)), msgID(i)) {
				t.Fatalf("mark %d/%d lost", w, i)
			}
		}
	}
}

func TestPrune(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	s := open(t, dir, Options{Now: c.Now, FlushInterval: time.Hour})
	peer := key(2)
	mark := func(ids ...uint64) {
		t.Helper()
		for _, id := range ids {
			if err := s.MarkShown(peer, msgID(id)); err != nil {
				t.Fatal(err)
			}
		}
	}
	prune := func(want int) {
		t.Helper()
		if n, err := s.Prune(); err != nil || n != want {
			t.Fatalf("Prune: %d, %v; want %d", n, err, want)
		}
	}
	shown := func(want bool, ids ...uint64) {
		t.Helper()
		for _, id := range ids {
			if got := s.Shown(peer, msgID(id)); got != want {
				t.Errorf("Shown(%d) = %v, want %v", id, got, want)
			}
		}
	}
	mark(1, 2, 3)
	c.Add(20 * 24 * time.Hour)
	mark(4, 5)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	prune(0)
	c.Add(10*24*time.Hour - time.Millisecond) // 1-3 are 30 days old less 1 ms
	prune(0)
	c.Add(2 * time.Millisecond)
	prune(3)
	shown(false, 1, 2, 3)
	shown(true, 4, 5)
	prune(0)

	// A corrupt mark is deleted too.
	if err := s.db.Update(func(tx *bolt.Tx) error {
		k := newMarkKey(peer, msgID(9))
		return tx.Bucket(bucketShown).Put(k[:], []byte{1})
	}); err != nil {
		t.Fatal(err)
	}
	prune(1)
	mustClose(t, s)

	// Open prunes, with the configured retention.
	c.Add(24 * time.Hour)
	s = open(t, dir, Options{Now: c.Now, ShownRetention: 5 * 24 * time.Hour})
	shown(false, 4, 5)
	prune(0)
}
