package node

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"natchat/node/api"
	"natchat/node/store"
	"natchat/wire"
)

// testRecorder is a recorder on a new store, tapping a new bus; both are
// closed when the test ends.
func testRecorder(t *testing.T, o Options) (*recorder, *api.Bus) {
	t.Helper()
	var k wire.Key
	k[0] = 1
	st, err := store.Open(t.TempDir(), k, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := newRecorder(st, "alice", o)
	bus := api.NewBus(nil)
	if r != nil {
		bus.Tap(r.tap)
		r.start()
	}
	t.Cleanup(func() {
		r.close()
		bus.Close()
		st.Close()
	})
	return r, bus
}

// entries returns the answer to History{conv, n} as lines "<from> text
// state/reason", and the conversation's name.
func entries(t *testing.T, r *recorder, conv string, n int) (string, []string) {
	t.Helper()
	evs := r.read(api.History{Conv: conv, N: n})
	if len(evs) != 1 {
		t.Fatalf("History %s: %d events, want 1: %v", conv, len(evs), evs)
	}
	h, ok := evs[0].(*api.HistoryEvent)
	if !ok || h.Entries == nil {
		t.Fatalf("History %s: %#v", conv, evs[0])
	}
	var out []string
	for _, e := range h.Entries {
		s := fmt.Sprintf("<%s> %s", e.From, e.Text)
		if e.Out {
			s += " " + e.State
		}
		if e.Reason != "" {
			s += "/" + e.Reason
		}
		if e.Via != "" {
			s += " via " + e.Via
		}
		out = append(out, s)
	}
	return h.Conv, out
}

func wantLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

// TestRecorder1to1: our messages get their outcomes, a resumed sent and a
// message shown again add nothing, and both directions make one
// conversation, named as the peer spells itself.
func TestRecorder1to1(t *testing.T) {
	r, bus := testRecorder(t, Options{})
	sent := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	bus.Publish(&api.Sent{ID: "01", To: "bob", Text: "one"})
	bus.Publish(&api.Sent{ID: "02", To: "BOB", Text: "two"})
	bus.Publish(&api.Sent{ID: "03", To: "bob", Text: "three", Kind: api.KindEmote})
	bus.Publish(&api.Sent{ID: "04", To: "bob", Text: "four"})
	bus.PublishMessage(&api.Message{ID: "01", From: "Bob", Text: "hi alice", Path: api.PathRelay, SentTS: sent}, nil)
	bus.Publish(&api.Delivered{ID: "01", To: "bob"})
	bus.Publish(&api.Stored{ID: "02", To: "bob"})
	bus.Publish(&api.Sent{ID: "02", To: "bob", Text: "two", Resumed: true}) // a restart
	bus.Publish(&api.Stored{ID: "02", To: "bob"})
	bus.Publish(&api.Error{Code: api.CodeUndelivered, Message: "no receipt", ID: "03", To: "bob"})
	bus.Publish(&api.Stored{ID: "04", To: "bob"})
	bus.Publish(&api.Expired{ID: "04", To: "bob"})
	bus.PublishMessage(&api.Message{ID: "01", From: "Bob", Text: "hi alice", Path: api.PathRelay, SentTS: sent}, nil) // resent, shown again
	bus.PublishMessage(&api.Message{ID: "05", From: "Bob", Text: "while you were out", Via: api.ViaMailbox, SentTS: sent}, nil)
	bus.Publish(&api.Delivered{ID: "02", To: "bob"})
	bus.Publish(&api.Error{Code: api.CodeBadText, Message: "not about a message", To: "bob"})

	conv, got := entries(t, r, "bob", 0)
	if conv != "Bob" {
		t.Errorf("conversation %q, want Bob (the peer's spelling)", conv)
	}
	wantLines(t, "bob's history", got, []string{
		"<alice> one delivered",
		"<alice> two delivered",
		"<alice> three failed/undelivered",
		"<alice> four failed/expired",
		"<Bob> hi alice",
		"<Bob> while you were out via mailbox",
	})
	_, got = entries(t, r, "bob", 2)
	wantLines(t, "the last 2", got, []string{"<Bob> hi alice", "<Bob> while you were out via mailbox"})

	evs := r.read(api.History{Conv: "bob"})
	h := evs[0].(*api.HistoryEvent)
	if e := h.Entries[4]; e.ID != "01" || e.Out || !e.TS.Equal(sent) || e.State != "" {
		t.Errorf("received entry %+v: want id 01, the sender's time, no state", e)
	}
	if e := h.Entries[2]; e.Kind != api.KindEmote || !e.Out || e.From != "alice" {
		t.Errorf("own emote %+v", e)
	}
}

// TestRecorderRoom: a room message is one entry under the room, stored
// while a member's copy waits and none has it, delivered once one has it;
// failed (with a member's reason) when every copy failed; delivered at
// once with no other member. Received room messages are under the room.
func TestRecorderRoom(t *testing.T) {
	r, bus := testRecorder(t, Options{})
	bus.Publish(&api.Sent{ID: "r1", To: "#Dev", Room: "#Dev", Text: "hello room"})
	bus.Publish(&api.Stored{ID: "r1", To: "carol", Room: "#Dev"})
	bus.Publish(&api.Delivered{ID: "r1", To: "#Dev", Room: "#Dev", Members: "0/2"})

	bus.Publish(&api.Sent{ID: "r2", To: "#Dev", Room: "#Dev", Text: "nobody gets this"})
	bus.Publish(&api.Error{Code: api.CodeKeyChanged, Message: "key changed", ID: "r2", To: "carol", Room: "#Dev"})
	bus.Publish(&api.Error{Code: api.CodeUndelivered, Message: "no receipt", ID: "r2", To: "bob", Room: "#Dev"})
	bus.Publish(&api.Delivered{ID: "r2", To: "#Dev", Room: "#Dev", Members: "0/2"})

	bus.Publish(&api.Sent{ID: "r3", To: "#Dev", Room: "#Dev", Text: "alone"})
	bus.Publish(&api.Delivered{ID: "r3", To: "#Dev", Room: "#Dev", Members: "0/0"})

	bus.PublishMessage(&api.Message{ID: "m1", From: "bob", Room: "#dev", Text: "hi all", Path: api.PathDirect}, nil)
	bus.Publish(&api.Delivered{ID: "r1", To: "#Dev", Room: "#Dev", Members: "1/2"}) // carol took her copy
	bus.Publish(&api.Expired{ID: "r1", To: "dave", Room: "#Dev"})                   // dave's expired: r1 stays delivered

	conv, got := entries(t, r, "#DEV", 10)
	if conv != "#dev" {
		t.Errorf("conversation %q", conv)
	}
	wantLines(t, "#dev's history", got, []string{
		"<alice> hello room delivered",
		"<alice> nobody gets this failed/key_changed",
		"<alice> alone delivered",
		"<bob> hi all",
	})
	if _, got := entries(t, r, "bob", 10); len(got) != 0 {
		t.Errorf("a room message recorded under its sender: %q", got)
	}

	// Before any member has it, a stored copy makes it stored.
	bus.Publish(&api.Sent{ID: "r4", To: "#dev", Room: "#dev", Text: "later"})
	bus.Publish(&api.Stored{ID: "r4", To: "carol", Room: "#dev"})
	_, got = entries(t, r, "#dev", 1)
	wantLines(t, "stored", got, []string{"<alice> later stored"})
}

// TestRecorderAllConversations: History with no Conv answers one event per
// conversation, the most recently active last; with none, one empty event.
func TestRecorderAllConversations(t *testing.T) {
	r, bus := testRecorder(t, Options{})
	evs := r.read(api.History{})
	if len(evs) != 1 || evs[0].(*api.HistoryEvent).Conv != "" || evs[0].(*api.HistoryEvent).Entries == nil {
		t.Fatalf("no history: %v", evs)
	}
	base := time.Now()
	for i, conv := range []string{"bob", "#dev", "carol", "bob"} {
		// Stamped one second apart, so activity has an order.
		m := &api.Message{ID: fmt.Sprint(i), From: "x", Room: "", Text: "t"}
		m.TS = base.Add(time.Duration(i) * time.Second)
		if conv[0] == '#' {
			m.Room = conv
		} else {
			m.From = conv
		}
		bus.PublishMessage(m, nil)
	}
	evs = r.read(api.History{N: 1})
	var order []string
	for _, e := range evs {
		h := e.(*api.HistoryEvent)
		order = append(order, fmt.Sprintf("%s:%d", h.Conv, len(h.Entries)))
	}
	if got := strings.Join(order, " "); got != "#dev:1 carol:1 bob:1" {
		t.Errorf("conversations %q, want \"#dev:1 carol:1 bob:1\" (most recent last, N each)", got)
	}
}

// TestRecorderOff: with history off nothing is tapped, and History is
// answered with no entries.
func TestRecorderOff(t *testing.T) {
	r, bus := testRecorder(t, Options{NoHistory: true})
	if r != nil {
		t.Fatal("a recorder with history off")
	}
	bus.Publish(&api.Sent{ID: "01", To: "bob", Text: "one"})
	for _, c := range []api.History{{Conv: "bob"}, {}} {
		evs := r.read(c)
		if len(evs) != 1 || evs[0].(*api.HistoryEvent).Conv != c.Conv || len(evs[0].(*api.HistoryEvent).Entries) != 0 ||
			evs[0].(*api.HistoryEvent).Entries == nil {
			t.Errorf("History %+v with history off: %v", c, evs)
		}
	}
}

// TestRecorderQueueBound: while the writer does not run (a stalled
// store), tapping never blocks, and what passes the queue's bound is
// dropped and counted.
func TestRecorderQueueBound(t *testing.T) {
	var k wire.Key
	k[0] = 2
	st, err := store.Open(t.TempDir(), k, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := newRecorder(st, "alice", Options{})
	r.maxQueue = 10
	bus := api.NewBus(nil)
	bus.Tap(r.tap)
	for i := range 25 {
		bus.Publish(&api.Sent{ID: fmt.Sprint(i), To: "bob", Text: "x"})
	}
	bus.Publish(&api.PeerJoined{Name: "bob"}) // not history: not queued
	r.mu.Lock()
	queued, dropped := len(r.ops), r.dropped
	r.mu.Unlock()
	if queued != 10 || dropped != 15 {
		t.Fatalf("queued %d, dropped %d; want 10 and 15", queued, dropped)
	}
	// The writer catches up with what it kept.
	r.start()
	_, got := entries(t, r, "bob", 0)
	if len(got) != 10 {
		t.Errorf("%d entries recorded, want 10", len(got))
	}
	r.close()
	bus.Publish(&api.Sent{ID: "late", To: "bob", Text: "x"}) // after close: dropped, no panic
}
