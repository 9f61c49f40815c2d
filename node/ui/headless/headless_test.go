package headless

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	hl "natchat/headless"
	"natchat/node/api"
)

// TestWriteEscapesTerminalControls: a peer's text with characters a
// terminal acts on (C1 CSI, DEL, a bidi override) is written with them
// escaped, and decodes to exactly what the peer sent.
func TestWriteEscapesTerminalControls(t *testing.T) {
	text := "a\u009b31mred\x7f \u202egnp.exe <b>&</b> é ✓ \u2066x\u2069"
	var out bytes.Buffer
	w := newWriter(&out)
	if err := w.write(&api.Message{ID: "01", From: "bob\u009b2J", Text: text}); err != nil {
		t.Fatal(err)
	}
	line := out.String()
	if !strings.HasSuffix(line, "\n") || strings.Count(line, "\n") != 1 {
		t.Fatalf("not one JSON line: %q", line)
	}
	for _, r := range []rune{0x9b, 0x7f, 0x202e, 0x2066, 0x2069} {
		if strings.ContainsRune(line, r) {
			t.Errorf("U+%04X written raw: %q", r, line)
		}
	}
	if !strings.Contains(line, "<b>&</b> é ✓") {
		t.Errorf("ordinary text escaped: %q", line)
	}
	var got api.Message
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatal(err)
	}
	if got.Text != text || got.From != "bob\u009b2J" {
		t.Errorf("decoded %q from %q, want %q", got.Text, got.From, text)
	}
}

// fakeNode is a node with a real bus that records the commands it is given.
type fakeNode struct {
	bus  *api.Bus
	cmds chan api.Command
}

func (f *fakeNode) Subscribe() *api.Sub { return f.bus.Subscribe() }

func (f *fakeNode) Do(ctx context.Context, c api.Command) error {
	select {
	case f.cmds <- c:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fakeNode) wantCmd(t *testing.T, want api.Command) {
	t.Helper()
	select {
	case c := <-f.cmds:
		if !reflect.DeepEqual(c, want) {
			t.Fatalf("command %#v, want %#v", c, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no command within 5s, want %#v", want)
	}
}

// lines reads the JSON lines Run writes and decodes them with the client
// package, as a script would.
type lines struct {
	sc *bufio.Scanner
}

func (l *lines) next(t *testing.T) hl.Event {
	t.Helper()
	if !l.sc.Scan() {
		t.Fatalf("no more output: %v", l.sc.Err())
	}
	ev, err := hl.Parse(l.sc.Bytes())
	if err != nil {
		t.Fatalf("Parse(%s): %v", l.sc.Bytes(), err)
	}
	return ev
}

// TestRunRooms: the room commands reach the node as api commands (a plain
// line and /me go to the room joined, /part alone parts it), and room
// events reach a script decodable, with every room field.
func TestRunRooms(t *testing.T) {
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	n := &fakeNode{bus: api.NewBus(func() time.Time { return at }), cmds: make(chan api.Command, 16)}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), n, inR, outW); outW.Close() }()
	out := &lines{sc: bufio.NewScanner(outR)}
	say := func(line string) {
		t.Helper()
		if _, err := io.WriteString(inW, line+"\n"); err != nil {
			t.Fatal(err)
		}
	}

	say("/join #dev")
	n.wantCmd(t, api.Join{Room: "#dev"})
	say("hello room")
	n.wantCmd(t, api.Send{To: "#dev", Text: "hello room"})
	say("/me waves")
	n.wantCmd(t, api.Send{To: "#dev", Text: "waves", Kind: api.KindEmote})
	say("/rooms")
	n.wantCmd(t, api.ListRooms{})
	say("/part")
	n.wantCmd(t, api.Part{Room: "#dev"})
	say("/join dev")
	if ev := out.next(t); ev.Type != hl.TypeError || ev.Code != hl.CodeBadName || ev.Message != "a room name starts with '#'" {
		t.Fatalf("/join dev: %+v", ev)
	}
	say("/part")
	if ev := out.next(t); ev.Type != hl.TypeError || ev.Code != hl.CodeBadCommand {
		t.Fatalf("/part with no room: %+v", ev)
	}

	n.bus.Publish(&api.RoomJoined{Room: "#dev", Name: "alice", Total: 3, Online: 2})
	n.bus.Publish(&api.RoomLeft{Room: "#dev", Name: "leslie", Reason: api.RoomReasonExpired})
	n.bus.Publish(&api.Rooms{Rooms: []api.RoomInfo{{Room: "#dev", Members: 3, Online: 2}}})
	n.bus.Publish(&api.Sent{ID: "01", To: "#dev", Room: "#dev", Text: "hello room"})
	n.bus.Publish(&api.Stored{ID: "01", To: "carol", Room: "#dev"})
	n.bus.Publish(&api.Delivered{ID: "01", To: "#dev", Room: "#dev", Members: "2/2"})
	n.bus.PublishMessage(&api.Message{ID: "02", From: "bob", Room: "#ops", Text: "hi ops", Path: api.PathDirect, SentTS: at}, nil)
	for _, want := range []hl.Event{
		{Type: hl.TypeRoomJoined, Room: "#dev", Name: "alice", Total: 3, Online: 2},
		{Type: hl.TypeRoomLeft, Room: "#dev", Name: "leslie", Reason: hl.RoomReasonExpired},
		{Type: hl.TypeRooms, Rooms: []hl.RoomInfo{{Room: "#dev", Members: 3, Online: 2}}},
		{Type: hl.TypeSent, ID: "01", To: "#dev", Room: "#dev", Text: "hello room"},
		{Type: hl.TypeStored, ID: "01", To: "carol", Room: "#dev"},
		{Type: hl.TypeDelivered, ID: "01", To: "#dev", Room: "#dev", MembersDelivered: "2/2"},
		{Type: hl.TypeMessage, ID: "02", From: "bob", Room: "#ops", Text: "hi ops", Path: hl.PathDirect, SentTS: at},
	} {
		got := out.next(t)
		want.TS = at
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("event\n%+v\nwant\n%+v", got, want)
		}
	}
	// With no conversation (parted), the room message started one.
	say("hi bob")
	n.wantCmd(t, api.Send{To: "#ops", Text: "hi bob"})

	inW.Close()
	n.wantCmd(t, api.Quit{Drain: true})
	n.bus.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
}

// TestRunHistory: /history reaches the node for the current conversation
// (or the one named), /netcheck as CheckNet, and history and netcheck
// events reach a script with every field, an empty history with its
// (empty, not missing) entries.
func TestRunHistory(t *testing.T) {
	at := time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC)
	n := &fakeNode{bus: api.NewBus(func() time.Time { return at }), cmds: make(chan api.Command, 16)}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), n, inR, outW); outW.Close() }()
	out := &lines{sc: bufio.NewScanner(outR)}
	say := func(line string) {
		t.Helper()
		if _, err := io.WriteString(inW, line+"\n"); err != nil {
			t.Fatal(err)
		}
	}

	say("/history")
	if ev := out.next(t); ev.Type != hl.TypeError || ev.Code != hl.CodeNoTarget {
		t.Fatalf("/history with no conversation: %+v", ev)
	}
	say("/msg bob hi")
	n.wantCmd(t, api.Send{To: "bob", Text: "hi"})
	say("/history 10")
	n.wantCmd(t, api.History{Conv: "bob", N: 10})
	say("/history #dev")
	n.wantCmd(t, api.History{Conv: "#dev"})
	say("/netcheck")
	n.wantCmd(t, api.CheckNet{})

	entries := []api.HistoryEntry{
		{ID: "01", From: "alice", Text: "hi \u009b bob", Kind: api.KindEmote, Out: true, State: api.StateFailed, Reason: "expired", TS: at.Add(-time.Hour)},
		{ID: "02", From: "bob", Text: "hello", Via: api.ViaMailbox, TS: at.Add(-time.Minute)},
	}
	n.bus.Publish(&api.HistoryEvent{Conv: "bob", Entries: entries})
	n.bus.Publish(&api.HistoryEvent{Conv: "", Entries: []api.HistoryEntry{}})
	peers := []api.NetPeer{{Name: "bob", Path: api.PathDirect, Remote: "198.51.100.3:5000", RTTMS: 2.5, Changed: at.Add(-time.Second)}}
	n.bus.Publish(&api.NetCheck{Public: []string{"203.0.113.5:4000", "203.0.113.5:4001"}, Mapping: api.MappingDependent, Detail: "d", Peers: peers})
	for _, want := range []hl.Event{
		{Type: hl.TypeHistory, Conv: "bob", Entries: entries},
		{Type: hl.TypeHistory, Entries: []hl.HistoryEntry{}},
		{Type: hl.TypeNetCheck, PublicList: []string{"203.0.113.5:4000", "203.0.113.5:4001"}, Mapping: hl.MappingDependent, Detail: "d", NetPeers: peers},
	} {
		got := out.next(t)
		want.TS = at
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("event\n%+v\nwant\n%+v", got, want)
		}
	}

	inW.Close()
	n.wantCmd(t, api.Quit{Drain: true})
	n.bus.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
}
