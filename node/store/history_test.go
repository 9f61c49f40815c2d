package store

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

var histT0 = time.UnixMilli(1_700_000_000_000)

// in and out are a received and a sent entry recorded at histT0+sec.
func in(id, from, text string, sec int) *HistEntry {
	at := histT0.Add(time.Duration(sec) * time.Second)
	return &HistEntry{ID: id, From: from, Text: text, Sent: at.Add(-time.Second), At: at}
}

func out(id, text string, sec int) *HistEntry {
	at := histT0.Add(time.Duration(sec) * time.Second)
	return &HistEntry{ID: id, From: "me", Text: text, Out: true, State: "sending", Sent: at, At: at}
}

func setState(state, reason string) func(*HistEntry) bool {
	return func(e *HistEntry) bool {
		if e.State == state && e.Reason == reason {
			return false
		}
		e.State, e.Reason = state, reason
		return true
	}
}

func mustWrite(t *testing.T, s *Store, lim HistLimits, now time.Time, ops ...HistOp) {
	t.Helper()
	if err := s.WriteHistory(ops, lim, now); err != nil {
		t.Fatalf("WriteHistory: %v", err)
	}
}

// texts returns conv's last n entries as "id:text:state" strings.
func texts(t *testing.T, s *Store, conv string, n int) []string {
	t.Helper()
	_, es, err := s.History(conv, n)
	if err != nil {
		t.Fatalf("History(%q): %v", conv, err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.ID+":"+e.Text+":"+e.State)
	}
	return got
}

func eq(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

// TestHistoryAppendUpdateRead: entries come back oldest first, both
// directions in one conversation (names compared case-insensitively), a
// duplicate (same ID and direction) is not added twice, updates change
// the entry of that ID and direction only, and every field survives.
func TestHistoryAppendUpdateRead(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	lim := HistLimits{}
	full := &HistEntry{ID: "00000000000000ff", From: "Bob", Text: "hé\x1b[2J", Kind: "emote", Via: "mailbox",
		Sent: histT0.Add(-time.Hour), At: histT0}
	mustWrite(t, s, lim, histT0,
		HistOp{Conv: "bob", Add: out("01", "hi bob", 1)},
		HistOp{Conv: "Bob", Add: full},
		HistOp{Conv: "BOB", Add: in("01", "Bob", "same id, other direction", 3)},
		HistOp{Conv: "bob", Add: out("01", "hi bob again (a resumed sent)", 4)},
		HistOp{Conv: "#dev", Add: out("02", "hi room", 5)},
		HistOp{Conv: "bob", Add: full}, // shown again
		HistOp{Conv: "bob", ID: "01", Out: true, Update: setState("delivered", "")},
		HistOp{Conv: "bob", ID: "99", Out: true, Update: setState("failed", "x")}, // unknown: nothing
		HistOp{Conv: "carol", ID: "01", Out: true, Update: setState("failed", "x")},
	)
	eq(t, "bob", texts(t, s, "bob", 0), []string{"01:hi bob:delivered", "00000000000000ff:hé\x1b[2J:", "01:same id, other direction:"})
	eq(t, "bob, last 2", texts(t, s, "bob", 2), []string{"00000000000000ff:hé\x1b[2J:", "01:same id, other direction:"})
	eq(t, "#DEV", texts(t, s, "#DEV", 10), []string{"02:hi room:sending"})
	eq(t, "carol", texts(t, s, "carol", 10), nil)

	c, es, err := s.History("bob", 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "BOB" || c.Count != 3 || !c.Last.Equal(histT0.Add(3*time.Second)) {
		t.Errorf("conversation %+v: want name BOB (the peer's spelling, last received), 3 entries, last at +3s", c)
	}
	got := es[1]
	if got.ID != full.ID || got.From != full.From || got.Text != full.Text || got.Kind != full.Kind || got.Via != full.Via ||
		got.Out || !got.Sent.Equal(full.Sent) || !got.At.Equal(full.At) {
		t.Errorf("entry read back as %+v, want %+v", got, *full)
	}
	if e := es[0]; !e.Out || e.From != "me" || e.State != "delivered" {
		t.Errorf("own entry %+v", e)
	}

	convs, err := s.HistoryConvs()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range convs {
		names = append(names, c.Name)
	}
	eq(t, "conversations, most recent last", names, []string{"BOB", "#dev"})
}

// TestHistoryPruneCount: a conversation keeps its last PerConv entries
// (and at most ConvBytes), whichever way they came.
func TestHistoryPruneCount(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	lim := HistLimits{PerConv: 3}
	for i := range 10 {
		mustWrite(t, s, lim, histT0, HistOp{Conv: "bob", Add: in(fmt.Sprint(i), "bob", fmt.Sprint("m", i), i)})
	}
	eq(t, "after 10", texts(t, s, "bob", 0), []string{"7:m7:", "8:m8:", "9:m9:"})
	// A dropped entry's ID is forgotten with it: it may come again.
	mustWrite(t, s, lim, histT0, HistOp{Conv: "bob", Add: in("0", "bob", "again", 11)})
	eq(t, "ID of a dropped entry", texts(t, s, "bob", 0), []string{"8:m8:", "9:m9:", "0:again:"})
	if c, _, _ := s.History("bob", 0); c.Count != 3 {
		t.Errorf("count %d, want 3", c.Count)
	}

	// Bytes: entries of a little over 1000 bytes in a conversation of
	// 4500 bytes: the last 4.
	lim = HistLimits{ConvBytes: 4500}
	big := strings.Repeat("x", 1000)
	for i := range 10 {
		mustWrite(t, s, lim, histT0, HistOp{Conv: "carol", Add: in(fmt.Sprint(i), "carol", big, i)})
	}
	c, es, err := s.History("carol", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 4 || es[0].ID != "6" || c.Count != 4 || c.Bytes > 4500 {
		t.Errorf("carol: %d entries from %s, %+v; want the last 4 within 4500 bytes", len(es), es[0].ID, c)
	}
}

// TestHistoryPruneAge: entries recorded longer ago than MaxAge go, on
// write and by PruneHistory, and a conversation left empty goes with them.
func TestHistoryPruneAge(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	lim := HistLimits{MaxAge: time.Hour}
	mustWrite(t, s, lim, histT0,
		HistOp{Conv: "bob", Add: in("1", "bob", "old", 0)},
		HistOp{Conv: "bob", Add: in("2", "bob", "newer", 1800)},
		HistOp{Conv: "carol", Add: in("3", "carol", "old too", 0)},
	)
	// Writing to bob an hour and a half later drops bob's first entry.
	now := histT0.Add(90 * time.Minute)
	mustWrite(t, s, lim, now, HistOp{Conv: "bob", Add: in("4", "bob", "now", 5400)})
	eq(t, "bob after a write", texts(t, s, "bob", 0), []string{"2:newer:", "4:now:"})
	eq(t, "carol, not written", texts(t, s, "carol", 0), []string{"3:old too:"})

	n, err := s.PruneHistory(lim, now)
	if err != nil || n != 1 {
		t.Fatalf("PruneHistory = %d, %v; want 1 (carol's)", n, err)
	}
	eq(t, "carol pruned", texts(t, s, "carol", 0), nil)
	convs, _ := s.HistoryConvs()
	if len(convs) != 1 || convs[0].Name != "bob" {
		t.Errorf("conversations %+v, want bob only", convs)
	}
	// No age limit: nothing more goes, however late.
	if n, err := s.PruneHistory(HistLimits{}, now.AddDate(10, 0, 0)); n != 0 || err != nil {
		t.Errorf("PruneHistory without an age limit = %d, %v", n, err)
	}
}

// TestHistoryConvCap: a new conversation beyond Convs drops the least
// recently active one; PruneHistory enforces a lowered cap.
func TestHistoryConvCap(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	lim := HistLimits{Convs: 3}
	for i, name := range []string{"a", "b", "c"} {
		mustWrite(t, s, lim, histT0, HistOp{Conv: name, Add: in("1", name, "hi", i)})
	}
	// a is active again; d is new: b, the least recently active, goes.
	mustWrite(t, s, lim, histT0,
		HistOp{Conv: "a", Add: in("2", "a", "again", 10)},
		HistOp{Conv: "d", Add: in("1", "d", "hi", 11)},
	)
	names := func() string {
		convs, err := s.HistoryConvs()
		if err != nil {
			t.Fatal(err)
		}
		var ns []string
		for _, c := range convs {
			ns = append(ns, c.Name)
		}
		return strings.Join(ns, " ")
	}
	if got := names(); got != "c a d" {
		t.Errorf("conversations %q, want \"c a d\"", got)
	}
	// A stranger flood: 50 new names, never more than 3 conversations.
	for i := range 50 {
		mustWrite(t, s, lim, histT0, HistOp{Conv: fmt.Sprint("x", i), Add: in("1", "x", "spam", 20+i)})
	}
	if got := names(); got != "x47 x48 x49" {
		t.Errorf("after a flood: %q", got)
	}
	if n, err := s.PruneHistory(HistLimits{Convs: 1}, histT0); n != 2 || err != nil {
		t.Errorf("PruneHistory to 1 conversation = %d, %v; want 2", n, err)
	}
	if got := names(); got != "x49" {
		t.Errorf("after the cap was lowered: %q", got)
	}
}

// TestHistoryReopen: the history survives closing and reopening the store.
func TestHistoryReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	mustWrite(t, s, HistLimits{}, histT0,
		HistOp{Conv: "bob", Add: out("1", "hi", 1)},
		HistOp{Conv: "bob", Add: in("2", "bob", "hello", 2)},
		HistOp{Conv: "bob", ID: "1", Out: true, Update: setState("stored", "")},
	)
	mustClose(t, s)
	if err := s.WriteHistory([]HistOp{{Conv: "bob", Add: out("3", "x", 3)}}, HistLimits{}, histT0); err != ErrClosed {
		t.Errorf("WriteHistory after Close: %v, want ErrClosed", err)
	}
	s = open(t, dir, Options{})
	eq(t, "reopened", texts(t, s, "bob", 0), []string{"1:hi:stored", "2:hello:"})
	mustWrite(t, s, HistLimits{}, histT0, HistOp{Conv: "bob", Add: out("1", "resumed", 4)})
	eq(t, "a resumed sent after reopening", texts(t, s, "bob", 0), []string{"1:hi:stored", "2:hello:"})
}

func TestHistEntryCodec(t *testing.T) {
	e := HistEntry{ID: "id", From: "f", Text: strings.Repeat("é", 300), Kind: "emote", Out: true, State: "failed", Reason: "expired", Via: "mailbox",
		Sent: histT0, At: histT0.Add(time.Second)}
	b := appendHistEntry(nil, e)
	got, err := parseHistEntry(b)
	if err != nil || got.ID != e.ID || got.Text != e.Text || got.Reason != e.Reason || !got.Out || !got.At.Equal(e.At) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for i := range len(b) {
		if _, err := parseHistEntry(b[:i]); err == nil {
			t.Errorf("a record cut to %d of %d bytes parses", i, len(b))
		}
	}
}
