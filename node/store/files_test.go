package store

import (
	"errors"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"natchat/wire"
)

// TestFilesOut: files being sent survive a reopen, come back oldest first,
// and are forgotten once deleted; a damaged record is reported, the others
// still returned.
func TestFilesOut(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	now := time.UnixMilli(1_700_000_000_000)
	a := FileOut{ID: wire.FileID{1}, To: "bob", Path: "/tmp/a b.bin", Size: 5 << 20, SHA256: [32]byte{9}, Created: now.Add(time.Second)}
	b := FileOut{ID: wire.FileID{2}, To: "Carol", Path: "/x", Size: 0, Created: now}
	for _, f := range []FileOut{a, b} {
		if err := s.PutFileOut(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutFileOut(FileOut{ID: wire.FileID{3}, To: "bob"}); err == nil {
		t.Error("a record with no path was taken")
	}
	mustClose(t, s)
	s = open(t, dir, Options{})
	defer mustClose(t, s)
	got, err := s.FilesOut()
	if err != nil || len(got) != 2 || got[0] != b || !got[1].Created.Equal(a.Created) || got[1].Path != a.Path || got[1].SHA256 != a.SHA256 || got[1].Size != a.Size {
		t.Fatalf("FilesOut = %+v, %v", got, err)
	}
	if err := s.DeleteFileOut(b.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketFilesOut).Put([]byte{7}, []byte{1, 2}) }); err != nil {
		t.Fatal(err)
	}
	got, err = s.FilesOut()
	if !errors.Is(err, ErrCorrupt) || len(got) != 1 || got[0].ID != a.ID {
		t.Fatalf("after a delete and a damaged record: %+v, %v", got, err)
	}
	// Every truncation of a record is refused, never a panic.
	rec := appendFileOut(nil, a)
	for n := range len(rec) - len(a.Path) {
		if _, err := parseFileOut(rec[:n]); err == nil {
			t.Errorf("%d of %d bytes parsed", n, len(rec))
		}
	}
}
