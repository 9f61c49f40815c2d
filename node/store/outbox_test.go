package store

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"natchat/wire"
)

func ids(msgs []OutMsg) []wire.MsgID {
	out := make([]wire.MsgID, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

// wantOutbox checks the outbox's IDs, in order.
func wantOutbox(t *testing.T, s *Store, want ...wire.MsgID) []OutMsg {
	t.Helper()
	got, err := s.Outbox()
	if err != nil {
		t.Fatalf("Outbox: %v", err)
	}
	if !slices.Equal(ids(got), want) {
		t.Fatalf("Outbox IDs %v, want %v", ids(got), want)
	}
	return got
}

func sameMsg(a, b OutMsg) bool {
	return a.ID == b.ID && a.To == b.To && a.Seq == b.Seq && a.Kind == b.Kind && a.Text == b.Text &&
		a.Created.Equal(b.Created) && a.Deadline.Equal(b.Deadline) && a.Room == b.Room && a.Group == b.Group && a.Members == b.Members
}

func TestOutMsgRecord(t *testing.T) {
	created := time.UnixMilli(1_700_000_000_123)
	for _, tc := range []struct {
		name string
		m    OutMsg
		hex  string
	}{
		{
			name: "text",
			m:    OutMsg{ID: msgID(0x0102), To: "Bob", Seq: 3, Text: "hi", Created: created, Deadline: created.Add(time.Second)},
			hex: "01" + "0000000000000102" + "0000000000000003" + "00" +
				"0000018bcfe5687b" + "0000018bcfe56c63" + "03" + "426f62" + "6869",
		},
		{
			name: "emote, empty text, zero deadline",
			m:    OutMsg{ID: msgID(9), To: "é", Seq: 1, Kind: 1, Created: created},
			hex: "01" + "0000000000000009" + "0000000000000001" + "01" +
				"0000018bcfe5687b" + "ffffc77cedd32800" + "02" + "c3a9",
		},
		{
			name: "room copy",
			m:    OutMsg{ID: msgID(7), To: "ann", Seq: 2, Created: created, Deadline: created, Room: "#dev", Group: msgID(0x0a0b), Members: 3, Text: "yo"},
			hex: "02" + "0000000000000007" + "0000000000000002" + "00" +
				"0000018bcfe5687b" + "0000018bcfe5687b" + "03" + "616e6e" +
				"04" + "23646576" + "0000000000000a0b" + "00000003" + "796f",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := appendOutMsg(nil, tc.m)
			if got := hex.EncodeToString(b); got != tc.hex {
				t.Errorf("record\n got %s\nwant %s", got, tc.hex)
			}
			m, err := parseOutMsg(b)
			if err != nil || !sameMsg(m, tc.m) {
				t.Errorf("parse: %+v, %v; want %+v", m, err, tc.m)
			}
			if tc.m.Deadline.IsZero() && !m.Deadline.IsZero() {
				t.Errorf("zero deadline came back as %v", m.Deadline)
			}
			// Every truncation is an error, not a panic.
			for n := range len(b) - len(tc.m.Text) {
				if _, err := parseOutMsg(b[:n]); !errors.Is(err, ErrCorrupt) {
					t.Errorf("parse of %d bytes: %v", n, err)
				}
			}
		})
	}
	bad := appendOutMsg(nil, OutMsg{To: "x"})
	bad[0] = 3
	if _, err := parseOutMsg(bad); !errors.Is(err, ErrCorrupt) {
		t.Errorf("version 3: %v", err)
	}
}

func TestEnqueueOutbox(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	now := time.UnixMilli(1_700_000_000_000)
	in := []OutMsg{
		{ID: msgID(1), To: "Bob", Seq: 99, Text: "one", Created: now, Deadline: now.Add(time.Hour)},
		{ID: msgID(2), To: "carol", Text: "two", Created: now},
		{ID: msgID(3), To: "bob", Kind: 1, Text: "waves", Created: now},
	}
	out, err := s.Enqueue(in...)
	if err != nil {
		t.Fatal(err)
	}
	wantSeq := []uint64{1, 1, 2} // "Bob" and "bob" are one conversation
	for i, m := range out {
		want := in[i]
		want.Seq = wantSeq[i]
		if !sameMsg(m, want) {
			t.Errorf("Enqueue returned %+v, want %+v", m, want)
		}
	}
	if in[0].Seq != 99 {
		t.Error("Enqueue modified its argument")
	}
	got := wantOutbox(t, s, msgID(1), msgID(2), msgID(3))
	for i := range got {
		if !sameMsg(got[i], out[i]) {
			t.Errorf("Outbox[%d] = %+v, want %+v", i, got[i], out[i])
		}
	}

	// Interleaved conversations keep global insertion order and per
	// conversation numbering, across a reopen.
	mustClose(t, s)
	s = open(t, dir, Options{})
	wantOutbox(t, s, msgID(1), msgID(2), msgID(3))
	out, err = s.Enqueue(OutMsg{ID: msgID(4), To: "CAROL"})
	if err != nil || out[0].Seq != 2 {
		t.Fatalf("Enqueue after reopen: %+v, %v; want Seq 2", out, err)
	}
	out, err = s.Enqueue(OutMsg{ID: msgID(5), To: "bob"})
	if err != nil || out[0].Seq != 3 {
		t.Fatalf("Enqueue after reopen: %+v, %v; want Seq 3", out, err)
	}
	wantOutbox(t, s, msgID(1), msgID(2), msgID(3), msgID(4), msgID(5))
}

func TestEnqueueRefuses(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	if _, err := s.Enqueue(OutMsg{ID: msgID(1), To: "bob"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		msgs []OutMsg
		dup  bool
	}{
		{"ID in outbox", []OutMsg{{ID: msgID(2), To: "bob"}, {ID: msgID(1), To: "bob"}}, true},
		{"ID twice in one call", []OutMsg{{ID: msgID(3), To: "bob"}, {ID: msgID(3), To: "bob"}}, true},
		{"no recipient", []OutMsg{{ID: msgID(4)}}, false},
		{"long recipient", []OutMsg{{ID: msgID(5), To: string(make([]byte, maxToLen+1))}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Enqueue(tc.msgs...)
			if err == nil || errors.Is(err, ErrDuplicateID) != tc.dup {
				t.Fatalf("Enqueue: %v", err)
			}
		})
	}
	// Nothing of the refused calls was added, and no Seq was used up.
	wantOutbox(t, s, msgID(1))
	out, err := s.Enqueue(OutMsg{ID: msgID(2), To: "bob"})
	if err != nil || out[0].Seq != 2 {
		t.Fatalf("Enqueue: %+v, %v; want Seq 2", out, err)
	}
	if out, err := s.Enqueue(); out != nil || err != nil {
		t.Fatalf("empty Enqueue: %v, %v", out, err)
	}
}

func TestDone(t *testing.T) {
	dir := t.TempDir()
	// A long interval: only Flush and Close commit.
	s := open(t, dir, Options{FlushInterval: time.Hour})
	var in []OutMsg
	for i := range uint64(6) {
		in = append(in, OutMsg{ID: msgID(i), To: "bob"})
	}
	if _, err := s.Enqueue(in...); err != nil {
		t.Fatal(err)
	}

	s.Done(msgID(1), msgID(42)) // 42 is unknown: ignored
	wantOutbox(t, s, msgID(0), msgID(2), msgID(3), msgID(4), msgID(5))
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	wantOutbox(t, s, msgID(0), msgID(2), msgID(3), msgID(4), msgID(5))

	s.Done(msgID(3))
	wantOutbox(t, s, msgID(0), msgID(2), msgID(4), msgID(5))
	mustClose(t, s) // commits the pending Done

	s = open(t, dir, Options{})
	wantOutbox(t, s, msgID(0), msgID(2), msgID(4), msgID(5))
	// Seq is never reused, even after Done of the last message.
	s.Done(msgID(5))
	out, err := s.Enqueue(OutMsg{ID: msgID(6), To: "bob"})
	if err != nil || out[0].Seq != 7 {
		t.Fatalf("Enqueue: %+v, %v; want Seq 7", out, err)
	}
	// Done then Enqueue of the same ID keeps the new message.
	s.Done(msgID(0))
	if _, err := s.Enqueue(OutMsg{ID: msgID(0), To: "bob", Text: "again"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	wantOutbox(t, s, msgID(2), msgID(4), msgID(6), msgID(0))
}

// TestDoneCommittedByFlusher waits for the flusher's own commit, not Flush.
func TestDoneCommittedByFlusher(t *testing.T) {
	commits := make(chan struct{}, 1)
	s := open(t, t.TempDir(), Options{FlushInterval: time.Millisecond, afterCommit: func() {
		select {
		case commits <- struct{}{}:
		default:
		}
	}})
	if _, err := s.Enqueue(OutMsg{ID: msgID(1), To: "bob"}, OutMsg{ID: msgID(2), To: "bob"}); err != nil {
		t.Fatal(err)
	}
	s.Done(msgID(1))
	deadline := time.After(5 * time.Second)
	for {
		var left bool
		id := msgID(1)
		if err := s.db.View(func(tx *bolt.Tx) error {
			left = tx.Bucket(bucketOutIDs).Get(id[:]) != nil
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if !left {
			break
		}
		select {
		case <-commits:
		case <-deadline:
			t.Fatal("Done not committed within 5 s")
		}
	}
	wantOutbox(t, s, msgID(2))
}

// TestEnqueueConcurrent: concurrent callers are group-committed, and every
// conversation is numbered 1..n without gaps or repeats.
func TestEnqueueConcurrent(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	const workers, each = 8, 25
	convs := []string{"bob", "Carol"}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				_, err := s.Enqueue(OutMsg{ID: msgID(uint64(w*each + i)), To: convs[(w+i)%2]})
				if err != nil {
					t.Errorf("Enqueue: %v", err)
				}
			}
		})
	}
	wg.Wait()
	mustClose(t, s)
	s = open(t, dir, Options{})
	got, err := s.Outbox()
	if err != nil || len(got) != workers*each {
		t.Fatalf("Outbox: %d messages, %v", len(got), err)
	}
	next := map[string]uint64{}
	for _, m := range got {
		// Outbox order is commit order, so each conversation counts up.
		c := wire.NameKey(m.To)
		next[c]++
		if m.Seq != next[c] {
			t.Fatalf("message %s to %s has Seq %d, want %d", m.ID, m.To, m.Seq, next[c])
		}
	}
}

func TestOutboxCorrupt(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	if _, err := s.Enqueue(OutMsg{ID: msgID(1), To: "bob"}); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOutbox).Put(putUint64(1), []byte{1, 2, 3})
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Outbox(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Outbox: %v, want ErrCorrupt", err)
	}
}

// TestMarkStored: the stored flag is durable at once (no Flush, no Close),
// goes with Done, and ignores IDs not in the outbox.
func TestMarkStored(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{FlushInterval: time.Hour})
	if _, err := s.Enqueue(OutMsg{ID: msgID(1), To: "bob"}, OutMsg{ID: msgID(2), To: "bob", Stored: true}, OutMsg{ID: msgID(3), To: "bob"}); err != nil {
		t.Fatal(err)
	}
	got := wantOutbox(t, s, msgID(1), msgID(2), msgID(3))
	if got[1].Stored {
		t.Fatal("Enqueue took Stored from its argument")
	}
	for _, id := range []wire.MsgID{msgID(1), msgID(2), msgID(42)} {
		if err := s.MarkStored(id); err != nil {
			t.Fatal(err)
		}
	}
	s.Done(msgID(2))
	if err := s.MarkStored(msgID(2)); err != nil { // after Done: ignored
		t.Fatal(err)
	}
	got = wantOutbox(t, s, msgID(1), msgID(3))
	if !got[0].Stored || got[1].Stored {
		t.Fatalf("stored flags %v %v, want true false", got[0].Stored, got[1].Stored)
	}
	// What a crash leaves: copy the database file as it is on disk now
	// (MarkStored committed; the Done not yet).
	b, err := os.ReadFile(filepath.Join(dir, dbFile))
	if err != nil {
		t.Fatal(err)
	}
	crashed := t.TempDir()
	if err := os.WriteFile(filepath.Join(crashed, dbFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	c := open(t, crashed, Options{})
	got = wantOutbox(t, c, msgID(1), msgID(2), msgID(3))
	if !got[0].Stored || !got[1].Stored || got[2].Stored {
		t.Fatalf("after a crash: stored flags %v %v %v, want true true false", got[0].Stored, got[1].Stored, got[2].Stored)
	}
	mustClose(t, c)
	mustClose(t, s)
	s = open(t, dir, Options{})
	got = wantOutbox(t, s, msgID(1), msgID(3))
	if !got[0].Stored || got[1].Stored {
		t.Fatalf("after a restart: stored flags %v %v", got[0].Stored, got[1].Stored)
	}
	var left int
	if err := s.db.View(func(tx *bolt.Tx) error { left = tx.Bucket(bucketStored).Stats().KeyN; return nil }); err != nil {
		t.Fatal(err)
	}
	if left != 1 {
		t.Fatalf("%d stored flags in the database, want 1 (Done removes its flag)", left)
	}
}

// TestOutboxKind: a message's kind survives a reopen, and a record written
// before nodes sent anything but text (kind byte 0, the format unchanged)
// reads as text.
func TestOutboxKind(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	now := time.UnixMilli(1_700_000_000_000)
	if _, err := s.Enqueue(
		OutMsg{ID: msgID(1), To: "bob", Kind: uint8(wire.MsgEmote), Text: "waves", Created: now},
		OutMsg{ID: msgID(2), To: "bob", Text: "hi", Created: now},
	); err != nil {
		t.Fatal(err)
	}
	// A record as the first version of the node wrote it, to carol.
	old, err := hex.DecodeString("01" + "0000000000000102" + "0000000000000001" + "00" +
		"0000018bcfe5687b" + "0000018bcfe56c63" + "05" + "6361726f6c" + "6869207468657265")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		order, err := tx.Bucket(bucketOutbox).NextSequence()
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketOutbox).Put(putUint64(order), old); err != nil {
			return err
		}
		id := msgID(0x0102)
		return tx.Bucket(bucketOutIDs).Put(id[:], putUint64(order))
	}); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	s = open(t, dir, Options{})
	defer mustClose(t, s)
	got := wantOutbox(t, s, msgID(1), msgID(2), msgID(0x0102))
	for i, want := range []struct {
		kind wire.MsgKind
		text string
	}{{wire.MsgEmote, "waves"}, {wire.MsgText, "hi"}, {wire.MsgText, "hi there"}} {
		if wire.MsgKind(got[i].Kind) != want.kind || got[i].Text != want.text {
			t.Errorf("after reopen, Outbox[%d] = kind %d %q, want kind %d %q", i, got[i].Kind, got[i].Text, want.kind, want.text)
		}
	}
	if got[2].To != "carol" || got[2].Seq != 1 {
		t.Errorf("old record: %+v", got[2])
	}
}
