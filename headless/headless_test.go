package headless_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"natchat/headless"
	"natchat/node/api"
)

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

// parseCases are real lines (the example in docs/HEADLESS.md and lines the
// node writes) and lines Parse must reject.
var parseCases = []struct {
	line string
	want headless.Event
	err  error
}{
	{line: `{"type":"registered","ts":"2026-11-22T04:55:06.949Z","name":"alice","public":"127.0.0.1:46814"}`,
		want: headless.Event{Type: headless.TypeRegistered, TS: mustTime("2026-11-22T04:55:06.949Z"), Name: "alice", Public: "127.0.0.1:46814"}},
	{line: `{"type":"peer_joined","ts":"2026-11-22T04:55:06.951Z","name":"bob"}`,
		want: headless.Event{Type: headless.TypePeerJoined, TS: mustTime("2026-11-22T04:55:06.951Z"), Name: "bob"}},
	{line: `{"type":"peer_left","ts":"2026-11-22T04:55:16.951123456Z","name":"bob","reason":"timeout"}`,
		want: headless.Event{Type: headless.TypePeerLeft, TS: mustTime("2026-11-22T04:55:16.951123456Z"), Name: "bob", Reason: headless.ReasonTimeout}},
	{line: `{"type":"sent","ts":"2026-11-22T04:55:07.941Z","id":"3ec5795e3c1baa7b","to":"bob","text":"hello bob"}`,
		want: headless.Event{Type: headless.TypeSent, TS: mustTime("2026-11-22T04:55:07.941Z"), ID: "3ec5795e3c1baa7b", To: "bob", Text: "hello bob"}},
	{line: `{"type":"path","ts":"2026-11-22T04:55:07.944Z","peer":"bob","path":"relay","remote":"127.0.0.1:3478","rtt_ms":0}`,
		want: headless.Event{Type: headless.TypePath, TS: mustTime("2026-11-22T04:55:07.944Z"), Peer: "bob", Path: headless.PathRelay, Remote: "127.0.0.1:3478"}},
	{line: `{"type":"delivered","ts":"2026-11-22T04:55:07.949Z","id":"3ec5795e3c1baa7b","to":"bob"}`,
		want: headless.Event{Type: headless.TypeDelivered, TS: mustTime("2026-11-22T04:55:07.949Z"), ID: "3ec5795e3c1baa7b", To: "bob"}},
	{line: `{"type":"peers","ts":"2026-11-22T04:55:09.944Z","peers":[{"name":"bob","path":"relay","rtt_ms":1.6,"online":true}]}`,
		want: headless.Event{Type: headless.TypePeers, TS: mustTime("2026-11-22T04:55:09.944Z"),
			Peers: []headless.PeerInfo{{Name: "bob", Path: headless.PathRelay, RTTMS: 1.6, Online: true}}}},
	{line: `{"type":"message","ts":"2026-11-22T04:55:08Z","id":"00000000000000ff","from":"bob","text":"<hi> & \"bye\"","path":"direct"}` + "\n",
		want: headless.Event{Type: headless.TypeMessage, TS: mustTime("2026-11-22T04:55:08Z"), ID: "00000000000000ff", From: "bob", Text: `<hi> & "bye"`, Path: headless.PathDirect}},
	{line: `{"type":"message","ts":"2026-12-02T09:00:01Z","id":"00000000000000fe","from":"bob","text":"while you were out","path":"relay","via":"mailbox","sent_ts":"2026-12-01T18:30:00.123Z"}`,
		want: headless.Event{Type: headless.TypeMessage, TS: mustTime("2026-12-02T09:00:01Z"), ID: "00000000000000fe", From: "bob", Text: "while you were out",
			Path: headless.PathRelay, Via: headless.ViaMailbox, SentTS: mustTime("2026-12-01T18:30:00.123Z")}},
	{line: `{"type":"message","ts":"2026-12-02T09:00:02Z","id":"00000000000000fd","from":"pat","text":"goes out to buy snacky cakes","kind":"emote","path":"direct","sent_ts":"2026-12-02T09:00:01.5Z"}`,
		want: headless.Event{Type: headless.TypeMessage, TS: mustTime("2026-12-02T09:00:02Z"), ID: "00000000000000fd", From: "pat", Text: "goes out to buy snacky cakes",
			Kind: headless.KindEmote, Path: headless.PathDirect, SentTS: mustTime("2026-12-02T09:00:01.5Z")}},
	{line: `{"type":"sent","ts":"2026-12-02T09:00:00Z","id":"3ec5795e3c1baa7b","to":"bob","text":"waves","kind":"emote"}`,
		want: headless.Event{Type: headless.TypeSent, TS: mustTime("2026-12-02T09:00:00Z"), ID: "3ec5795e3c1baa7b", To: "bob", Text: "waves", Kind: headless.KindEmote}},
	{line: `{"type":"stored","ts":"2026-12-02T09:00:00Z","id":"3ec5795e3c1baa7b","to":"bob"}`,
		want: headless.Event{Type: headless.TypeStored, TS: mustTime("2026-12-02T09:00:00Z"), ID: "3ec5795e3c1baa7b", To: "bob"}},
	{line: `{"type":"mailbox","ts":"2026-12-02T09:00:00Z","count":100}`,
		want: headless.Event{Type: headless.TypeMailbox, TS: mustTime("2026-12-02T09:00:00Z"), Count: 100}},
	{line: `{"type":"error","ts":"2026-11-22T04:55:08.5Z","code":"undelivered","message":"no receipt within 10s","id":"3ec5795e3c1baa7b","to":"bob"}`,
		want: headless.Event{Type: headless.TypeError, TS: mustTime("2026-11-22T04:55:08.5Z"), Code: headless.CodeUndelivered,
			Message: "no receipt within 10s", ID: "3ec5795e3c1baa7b", To: "bob"}},
	// Rooms (docs/HEADLESS.md, Rooms).
	{line: `{"type":"room_joined","ts":"2026-12-03T10:00:00Z","room":"#dev","name":"alice","total":3,"online":2}`,
		want: headless.Event{Type: headless.TypeRoomJoined, TS: mustTime("2026-12-03T10:00:00Z"), Room: "#dev", Name: "alice", Total: 3, Online: 2}},
	{line: `{"type":"room_joined","ts":"2026-12-03T10:00:01Z","room":"#dev","name":"leslie"}`,
		want: headless.Event{Type: headless.TypeRoomJoined, TS: mustTime("2026-12-03T10:00:01Z"), Room: "#dev", Name: "leslie"}},
	{line: `{"type":"room_left","ts":"2026-12-03T10:00:02Z","room":"#dev","name":"leslie","reason":"expired"}`,
		want: headless.Event{Type: headless.TypeRoomLeft, TS: mustTime("2026-12-03T10:00:02Z"), Room: "#dev", Name: "leslie", Reason: headless.RoomReasonExpired}},
	{line: `{"type":"rooms","ts":"2026-12-03T10:00:03Z","rooms":[{"room":"#dev","members":3,"online":2},{"room":"#lobby","members":4213,"online":0}]}`,
		want: headless.Event{Type: headless.TypeRooms, TS: mustTime("2026-12-03T10:00:03Z"),
			Rooms: []headless.RoomInfo{{Room: "#dev", Members: 3, Online: 2}, {Room: "#lobby", Members: 4213}}}},
	{line: `{"type":"sent","ts":"2026-12-03T10:00:04Z","id":"3ec5795e3c1baa7b","to":"#dev","text":"hi all","room":"#dev"}`,
		want: headless.Event{Type: headless.TypeSent, TS: mustTime("2026-12-03T10:00:04Z"), ID: "3ec5795e3c1baa7b", To: "#dev", Text: "hi all", Room: "#dev"}},
	{line: `{"type":"stored","ts":"2026-12-03T10:00:05Z","id":"3ec5795e3c1baa7b","to":"carol","room":"#dev"}`,
		want: headless.Event{Type: headless.TypeStored, TS: mustTime("2026-12-03T10:00:05Z"), ID: "3ec5795e3c1baa7b", To: "carol", Room: "#dev"}},
	{line: `{"type":"delivered","ts":"2026-12-03T10:00:06Z","id":"3ec5795e3c1baa7b","to":"#dev","room":"#dev","members":"1/2"}`,
		want: headless.Event{Type: headless.TypeDelivered, TS: mustTime("2026-12-03T10:00:06Z"), ID: "3ec5795e3c1baa7b", To: "#dev", Room: "#dev", MembersDelivered: "1/2"}},
	{line: `{"type":"message","ts":"2026-12-03T10:00:07Z","id":"3ec5795e3c1baa7b","from":"alice","text":"hi all","room":"#dev","path":"relay","sent_ts":"2026-12-03T10:00:04Z"}`,
		want: headless.Event{Type: headless.TypeMessage, TS: mustTime("2026-12-03T10:00:07Z"), ID: "3ec5795e3c1baa7b", From: "alice", Text: "hi all", Room: "#dev",
			Path: headless.PathRelay, SentTS: mustTime("2026-12-03T10:00:04Z")}},
	{line: `{"type":"error","ts":"2026-12-03T10:00:08Z","code":"room_full","message":"#dev is full (256 members)","room":"#dev"}`,
		want: headless.Event{Type: headless.TypeError, TS: mustTime("2026-12-03T10:00:08Z"), Code: headless.CodeRoomFull, Message: "#dev is full (256 members)", Room: "#dev"}},
	{line: `{"type":"members","ts":"2026-12-03T10:00:09Z","room":"#dev","total":2,"members":[{"name":"alice"},{"name":"bob"}]}`,
		want: headless.Event{Type: headless.TypeMembers, TS: mustTime("2026-12-03T10:00:09Z"), Room: "#dev", Total: 2, Members: []headless.Member{{Name: "alice"}, {Name: "bob"}}}},
	{line: `{"type":"members","ts":"2026-12-03T10:00:09Z","room":"#dev","total":0,"members":null}`,
		want: headless.Event{Type: headless.TypeMembers, TS: mustTime("2026-12-03T10:00:09Z"), Room: "#dev"}},
	// History and netcheck (issue 12).
	{line: `{"type":"history","ts":"2026-12-04T09:00:00Z","conv":"bob","entries":[{"id":"3ec5795e3c1baa7b","from":"alice","text":"hi bob","out":true,"state":"delivered","sent_ts":"2026-12-03T18:00:00Z"},{"id":"00000000000000ff","from":"bob","text":"hi","via":"mailbox","sent_ts":"2026-12-03T18:30:00Z"}]}`,
		want: headless.Event{Type: headless.TypeHistory, TS: mustTime("2026-12-04T09:00:00Z"), Conv: "bob", Entries: []headless.HistoryEntry{
			{ID: "3ec5795e3c1baa7b", From: "alice", Text: "hi bob", Out: true, State: headless.StateDelivered, TS: mustTime("2026-12-03T18:00:00Z")},
			{ID: "00000000000000ff", From: "bob", Text: "hi", Via: headless.ViaMailbox, TS: mustTime("2026-12-03T18:30:00Z")}}}},
	{line: `{"type":"history","ts":"2026-12-04T09:00:00Z","conv":"","entries":[]}`,
		want: headless.Event{Type: headless.TypeHistory, TS: mustTime("2026-12-04T09:00:00Z"), Entries: []headless.HistoryEntry{}}},
	{line: `{"type":"netcheck","ts":"2026-12-04T09:00:00Z","public":["203.0.113.5:4000"],"mapping":"unknown","detail":"one STUN answer","peers":[{"name":"bob","path":"relay","rtt_ms":0,"changed":"2026-12-04T08:59:00Z"}]}`,
		want: headless.Event{Type: headless.TypeNetCheck, TS: mustTime("2026-12-04T09:00:00Z"), PublicList: []string{"203.0.113.5:4000"},
			Mapping: headless.MappingUnknown, Detail: "one STUN answer",
			NetPeers: []headless.NetPeer{{Name: "bob", Path: headless.PathRelay, Changed: mustTime("2026-12-04T08:59:00Z")}}}},
	// The contract is only extended: unknown fields and types parse.
	{line: `{"type":"future","ts":"2026-11-22T04:55:08+01:00","name":"x","extra":{"a":[1,2]}}`,
		want: headless.Event{Type: "future", TS: mustTime("2026-11-22T04:55:08+01:00"), Name: "x"}},

	{line: ``, err: headless.ErrNotObject},
	{line: `not json`, err: headless.ErrNotObject},
	{line: `null`, err: headless.ErrNotObject},
	{line: `["type","ts"]`, err: headless.ErrNotObject},
	{line: `{"type":"registered","ts":"2026-11-22T04:55:06Z"`, err: headless.ErrNotObject},
	{line: `{"type":"registered","ts":"2026-11-22T04:55:06Z"} {}`, err: headless.ErrNotObject},
	{line: `{"ts":"2026-11-22T04:55:06Z"}`, err: headless.ErrNoType},
	{line: `{"type":"","ts":"2026-11-22T04:55:06Z"}`, err: headless.ErrNoType},
	{line: `{"type":7,"ts":"2026-11-22T04:55:06Z"}`, err: headless.ErrNoType},
	{line: `{"type":"registered"}`, err: headless.ErrTS},
	{line: `{"type":"registered","ts":null}`, err: headless.ErrTS},
	{line: `{"type":"registered","ts":1764000000}`, err: headless.ErrTS},
	{line: `{"type":"registered","ts":"yesterday"}`, err: headless.ErrTS},
	{line: `{"type":"registered","ts":"2026-11-22 04:55:06Z"}`, err: headless.ErrTS},
	{line: `{"type":"sent","ts":"2026-11-22T04:55:06Z","id":17,"to":"bob"}`, err: headless.ErrField},
	{line: `{"type":"error","ts":"2026-11-22T04:55:06Z","code":404,"message":"no"}`, err: headless.ErrField},
	{line: `{"type":"peers","ts":"2026-11-22T04:55:06Z","peers":[{"name":"bob","online":"yes"}]}`, err: headless.ErrField},
	{line: `{"type":"delivered","ts":"2026-11-22T04:55:06Z","id":"01","members":true}`, err: headless.ErrField},
	{line: `{"type":"delivered","ts":"2026-11-22T04:55:06Z","id":"01","members":{"n":1}}`, err: headless.ErrField},
	{line: `{"type":"room_joined","ts":"2026-11-22T04:55:06Z","members":2.5}`, err: headless.ErrField},
	{line: `{"type":"members","ts":"2026-11-22T04:55:06Z","members":[{"name":7}]}`, err: headless.ErrField},
	{line: `{"type":"members","ts":"2026-11-22T04:55:06Z","members":[1,2]}`, err: headless.ErrField},
	{line: `{"type":"rooms","ts":"2026-11-22T04:55:06Z","rooms":[{"room":"#dev","members":"3"}]}`, err: headless.ErrField},
	{line: `{"type":"room_joined","ts":"2026-11-22T04:55:06Z","online":"2"}`, err: headless.ErrField},
	{line: `{"type":"history","ts":"2026-11-22T04:55:06Z","entries":[{"out":"yes"}]}`, err: headless.ErrField},
	{line: `{"type":"netcheck","ts":"2026-11-22T04:55:06Z","public":[1]}`, err: headless.ErrField},
	{line: `{"type":"netcheck","ts":"2026-11-22T04:55:06Z","peers":[{"name":"bob","online":true,"changed":"never"}]}`, err: headless.ErrField},
	{line: `{"type":"registered","ts":"2026-11-22T04:55:06Z","public":{"ip":"x"}}`, err: headless.ErrField},
}

func TestParse(t *testing.T) {
	for _, c := range parseCases {
		got, err := headless.Parse([]byte(c.line))
		if !errors.Is(err, c.err) || (err == nil) != (c.err == nil) {
			t.Errorf("Parse(%s): error %v, want %v", c.line, err, c.err)
			continue
		}
		if err != nil {
			if !reflect.DeepEqual(got, headless.Event{}) {
				t.Errorf("Parse(%s) = %+v with error %v, want a zero Event", c.line, got, err)
			}
			continue
		}
		if !got.TS.Equal(c.want.TS) {
			t.Errorf("Parse(%s): ts %v, want %v", c.line, got.TS, c.want.TS)
		}
		got.TS = c.want.TS
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("Parse(%s)\n = %+v\nwant %+v", c.line, got, c.want)
		}
	}
}

// nodeEvents holds one of every event type the node writes (two where a
// room message's differs), each field set in one of them, so that
// TestParseNodeEvents covers every field.
func nodeEvents() []api.Event {
	ts := time.Date(2026, 11, 22, 4, 55, 6, 949123456, time.UTC)
	h := func(e api.Event) api.Event { return api.Stamp(e, ts) }
	return []api.Event{
		h(&api.Registered{Name: "alice", Public: "198.51.100.2:40000"}),
		h(&api.PeerJoined{Name: "bob"}),
		h(&api.PeerLeft{Name: "bob", Reason: headless.ReasonQuit}),
		h(&api.Peers{Peers: []api.PeerInfo{
			{Name: "bob", Path: headless.PathDirect, RTTMS: 1.6, Online: true},
			{Name: "carol", Path: headless.PathNone},
		}}),
		h(&api.Sent{ID: "3ec5795e3c1baa7b", To: "bob", Text: "héllo <bob> & \"co\"\n", Kind: headless.KindEmote, Resumed: true}),
		h(&api.Delivered{ID: "3ec5795e3c1baa7b", To: "bob"}),
		h(&api.Message{ID: "3ec5795e3c1baa7b", From: "alice", Text: "hi", Kind: headless.KindEmote, Path: headless.PathRelay, Via: headless.ViaMailbox, SentTS: ts.Add(-time.Second)}),
		h(&api.Stored{ID: "3ec5795e3c1baa7b", To: "bob"}),
		h(&api.Expired{ID: "3ec5795e3c1baa7b", To: "bob"}),
		h(&api.Mailbox{Count: 100}),
		h(&api.Deregistered{Name: "alice"}),
		h(&api.PathChanged{Peer: "bob", Path: headless.PathDirect, Remote: "198.51.100.3:5000", RTTMS: 12.5}),
		h(&api.Error{Code: api.CodeKeyChanged, Message: "key changed", ID: "3ec5795e3c1baa7b", To: "bob",
			Peer: "bob", Fingerprint: "11111 22222 33333 44444 55555 66666", NewFingerprint: "12345 12345 12345 12345 12345 12345"}),
		h(&api.Fingerprint{Name: "bob", Key: "aa", Fingerprint: "11111 22222 33333 44444 55555 66666", Self: true, Pinned: true}),
		h(&api.Trusted{Name: "bob", Fingerprint: "12345 12345 12345 12345 12345 12345"}),
		h(&api.EventsDropped{Count: 3}),
		h(&api.Help{Commands: []api.CommandHelp{{Usage: "/who", Summary: "who is online"}}}),
		h(&api.Members{Room: "#lobby", Total: 4213, Members: []api.Member{{Name: "alice"}, {Name: "bob"}}, Next: "bob"}),
		h(&api.RoomJoined{Room: "#dev", Name: "alice", Total: 3, Online: 2}),
		h(&api.RoomLeft{Room: "#dev", Name: "leslie", Reason: headless.RoomReasonExpired}),
		h(&api.Rooms{Rooms: []api.RoomInfo{{Room: "#dev", Members: 3, Online: 2}, {Room: "#lobby", Members: 4213}}}),
		// A room message's events.
		h(&api.Sent{ID: "3ec5795e3c1baa7b", To: "#dev", Text: "hi all", Kind: headless.KindEmote, Room: "#dev", Resumed: true}),
		h(&api.Delivered{ID: "3ec5795e3c1baa7b", To: "#dev", Room: "#dev", Members: "2/3"}),
		h(&api.Stored{ID: "3ec5795e3c1baa7b", To: "carol", Room: "#dev"}),
		h(&api.Expired{ID: "3ec5795e3c1baa7b", To: "carol", Room: "#dev"}),
		h(&api.Message{ID: "3ec5795e3c1baa7b", From: "alice", Text: "hi all", Kind: headless.KindEmote, Room: "#dev", Path: headless.PathRelay, Via: headless.ViaMailbox, SentTS: ts.Add(-time.Second)}),
		h(&api.Error{Code: api.CodeUndelivered, Message: "no receipt within 10s", ID: "3ec5795e3c1baa7b", To: "carol", Room: "#dev",
			Peer: "carol", Fingerprint: "11111 22222 33333 44444 55555 66666", NewFingerprint: "12345 12345 12345 12345 12345 12345"}),
		// File transfer: the offer at the receiver and at the sender.
		h(&api.FileOffer{ID: "0123456789abcdef", From: "alice", Name: "résumé.pdf", Size: 5 << 30,
			SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}),
		h(&api.FileOffer{ID: "0123456789abcdef", To: "bob", Name: "résumé.pdf", Size: 5 << 30,
			SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}),
		h(&api.FileProgress{ID: "0123456789abcdef", Bytes: 1 << 30, Total: 5 << 30, RateBPS: 12_500_000, ETAS: 344, Path: headless.PathDirect}),
		h(&api.FileDone{ID: "0123456789abcdef", Path: "/home/bob/Downloads/résumé (1).pdf",
			SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}),
		h(&api.FileFailed{ID: "0123456789abcdef", Reason: headless.FileDisk + ": write: no space left on device"}),
		// History and netcheck (issue 12).
		h(&api.HistoryEvent{Conv: "bob", Entries: []api.HistoryEntry{
			{ID: "3ec5795e3c1baa7b", From: "alice", Text: "hi <bob>", Kind: headless.KindEmote, Out: true, State: headless.StateFailed, Reason: "expired", TS: ts.Add(-time.Hour)},
			{ID: "00000000000000ff", From: "bob", Text: "while you were out", Via: headless.ViaMailbox, TS: ts.Add(-time.Minute)},
		}}),
		h(&api.NetCheck{Public: []string{"203.0.113.5:4000", "203.0.113.5:4001"}, Mapping: headless.MappingDependent, Detail: "two STUN servers saw two ports",
			Peers: []api.NetPeer{{Name: "bob", Path: headless.PathDirect, Remote: "198.51.100.3:5000", RTTMS: 12.5, Changed: ts.Add(-time.Second)}}}),
	}
}

// membersFields are the Event fields that the one JSON field "members"
// decodes into, by its JSON type (Event's MarshalJSON writes them back).
var membersFields = []string{"Members", "MembersDelivered", "PublicList", "NetPeers"}

// jsonFields returns the fields of the struct v by JSON name, looking into
// embedded structs.
func jsonFields(v reflect.Value) map[string]reflect.Value {
	m := map[string]reflect.Value{}
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			maps.Copy(m, jsonFields(v.Field(i)))
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.IsExported() && name != "-" && name != "" {
			m[name] = v.Field(i)
		}
	}
	return m
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestParseNodeEvents encodes every node event as the node does and checks
// that Parse gets every field back (Event marshals to the same JSON
// object), and that Event has exactly the fields the node writes: the
// decoder cannot drift from the encoder.
func TestParseNodeEvents(t *testing.T) {
	seen := map[string]bool{}
	set := map[string]bool{} // type.field: some test event sets it
	for _, ne := range nodeEvents() {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf) // as node/ui/headless writes them
		enc.SetEscapeHTML(false)
		if err := enc.Encode(ne); err != nil {
			t.Fatal(err)
		}
		got, err := headless.Parse(buf.Bytes())
		if err != nil {
			t.Errorf("Parse(%s): %v", buf.Bytes(), err)
			continue
		}
		for name, v := range jsonFields(reflect.ValueOf(ne).Elem()) {
			seen[name] = true
			set[ne.EventType()+"."+name] = set[ne.EventType()+"."+name] || !v.IsZero()
		}
		var want, again map[string]any
		if err := json.Unmarshal(buf.Bytes(), &want); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(mustJSON(t, got)), &again); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(again, want) {
			t.Errorf("%T: Parse then Marshal gives\n%s\nthe node wrote\n%s", ne, mustJSON(t, got), buf.Bytes())
		}
	}
	for _, f := range slices.Sorted(maps.Keys(set)) {
		if !set[f] {
			t.Errorf("test data leaves %s zero in every event", f)
		}
	}
	fields := jsonFields(reflect.ValueOf(headless.Event{}))
	for _, f := range membersFields {
		if _, ok := reflect.TypeFor[headless.Event]().FieldByName(f); !ok {
			t.Errorf("headless.Event has no field %s", f)
		}
	}
	fields["members"] = reflect.Value{}
	all := slices.Sorted(maps.Keys(fields))
	if written := slices.Sorted(maps.Keys(seen)); !slices.Equal(all, written) {
		t.Errorf("headless.Event has fields %v, the node writes %v", all, written)
	}
	// Every event type the api defines is covered above.
	types := map[string]bool{}
	for _, ne := range nodeEvents() {
		types[ne.EventType()] = true
	}
	for _, typ := range []string{headless.TypeRegistered, headless.TypePeerJoined, headless.TypePeerLeft, headless.TypePeers,
		headless.TypeSent, headless.TypeDelivered, headless.TypeMessage, headless.TypePath, headless.TypeError,
		headless.TypeFingerprint, headless.TypeTrusted, headless.TypeEventsDropped, headless.TypeHelp, headless.TypeMembers,
		headless.TypeStored, headless.TypeExpired, headless.TypeMailbox, headless.TypeDeregistered,
		headless.TypeRoomJoined, headless.TypeRoomLeft, headless.TypeRooms,
		headless.TypeFileOffer, headless.TypeFileProgress, headless.TypeFileDone, headless.TypeFileFailed,
		headless.TypeHistory, headless.TypeNetCheck} {
		if !types[typ] {
			t.Errorf("no test event of type %s", typ)
		}
	}
}

// TestMembersField: "members" decodes into the field for its JSON type,
// and an Event writes it back from whichever is set.
func TestMembersField(t *testing.T) {
	ts := "2026-12-03T10:00:00Z"
	for _, c := range []struct {
		line string
		want headless.Event
	}{
		{`{"type":"members","ts":"` + ts + `","room":"#dev","total":1,"members":[{"name":"ann"}]}`,
			headless.Event{Room: "#dev", Total: 1, Members: []headless.Member{{Name: "ann"}}}},
		{`{"type":"room_joined","ts":"` + ts + `","room":"#dev","name":"ann","total":1,"online":1}`,
			headless.Event{Room: "#dev", Name: "ann", Total: 1, Online: 1}},
		{`{"type":"delivered","ts":"` + ts + `","id":"01","to":"#dev","room":"#dev","members":"0/2"}`,
			headless.Event{ID: "01", To: "#dev", Room: "#dev", MembersDelivered: "0/2"}},
	} {
		got, err := headless.Parse([]byte(c.line))
		if err != nil {
			t.Fatalf("Parse(%s): %v", c.line, err)
		}
		c.want.Type, c.want.TS = got.Type, mustTime(ts)
		if !got.TS.Equal(c.want.TS) {
			t.Errorf("Parse(%s): ts %v", c.line, got.TS)
		}
		got.TS = c.want.TS
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("Parse(%s)\n = %+v\nwant %+v", c.line, got, c.want)
		}
		var written, want map[string]any
		if err := json.Unmarshal([]byte(mustJSON(t, c.want)), &written); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(c.line), &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(written, want) {
			t.Errorf("Marshal(%+v)\n = %s\nwant %s", c.want, mustJSON(t, c.want), c.line)
		}
	}
	// A plain Event has no "members" at all.
	if out := mustJSON(t, headless.Event{Type: headless.TypeDelivered, TS: mustTime(ts), ID: "01", To: "bob"}); strings.Contains(out, "members") {
		t.Errorf("a 1:1 delivered marshals as %s", out)
	}
}

// TestEncodeKind: kind is written for an emote and left out for plain
// text, as before kinds existed.
func TestEncodeKind(t *testing.T) {
	ts := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		e    api.Event
		want string
	}{
		{&api.Message{ID: "00000000000000fd", From: "pat", Text: "waves", Kind: api.KindEmote, Path: api.PathRelay, SentTS: ts},
			`{"type":"message","ts":"2026-12-02T09:00:00Z","id":"00000000000000fd","from":"pat","text":"waves","kind":"emote","path":"relay","sent_ts":"2026-12-02T09:00:00Z"}`},
		{&api.Message{ID: "00000000000000fd", From: "pat", Text: "hi", Path: api.PathRelay, SentTS: ts},
			`{"type":"message","ts":"2026-12-02T09:00:00Z","id":"00000000000000fd","from":"pat","text":"hi","path":"relay","sent_ts":"2026-12-02T09:00:00Z"}`},
		{&api.Sent{ID: "3ec5795e3c1baa7b", To: "bob", Text: "waves", Kind: api.KindEmote},
			`{"type":"sent","ts":"2026-12-02T09:00:00Z","id":"3ec5795e3c1baa7b","to":"bob","text":"waves","kind":"emote"}`},
		{&api.Sent{ID: "3ec5795e3c1baa7b", To: "bob", Text: "hi"},
			`{"type":"sent","ts":"2026-12-02T09:00:00Z","id":"3ec5795e3c1baa7b","to":"bob","text":"hi"}`},
	} {
		if got := mustJSON(t, api.Stamp(c.e, ts)); got != c.want {
			t.Errorf("encoded %T:\n got %s\nwant %s", c.e, got, c.want)
		}
		ev, err := headless.Parse([]byte(c.want))
		if err != nil {
			t.Fatalf("Parse(%s): %v", c.want, err)
		}
		var want string
		switch e := c.e.(type) {
		case *api.Message:
			want = e.Kind
		case *api.Sent:
			want = e.Kind
		}
		if ev.Kind != want {
			t.Errorf("Parse(%s).Kind = %q, want %q", c.want, ev.Kind, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, c := range parseCases {
		f.Add([]byte(c.line))
	}
	for _, ne := range nodeEvents() {
		b, err := json.Marshal(ne)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		ev, err := headless.Parse(b)
		if !bytes.Equal(b, in) {
			t.Fatal("Parse modified its input")
		}
		if err != nil {
			if !errors.Is(err, headless.ErrNotObject) && !errors.Is(err, headless.ErrNoType) &&
				!errors.Is(err, headless.ErrTS) && !errors.Is(err, headless.ErrField) {
				t.Fatalf("Parse: error %v is none of the sentinels", err)
			}
			return
		}
		if ev.Type == "" {
			t.Fatalf("Parse(%q) = %+v: no type", b, ev)
		}
		// What Parse accepted marshals to a line it accepts again.
		again, err := headless.Parse([]byte(mustJSON(t, ev)))
		if err != nil || again.Type != ev.Type || !again.TS.Equal(ev.TS) || again.Text != ev.Text || len(again.Peers) != len(ev.Peers) {
			t.Fatalf("re-parse of %+v = %+v, %v", ev, again, err)
		}
	})
}

// TestDocExamples: every event line in docs/HEADLESS.md's examples parses,
// and Event writes it back with the same fields.
func TestDocExamples(t *testing.T) {
	doc, err := os.ReadFile("../docs/HEADLESS.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for line := range strings.Lines(string(doc)) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, `{"type":`) {
			continue
		}
		n++
		ev, err := headless.Parse([]byte(line))
		if err != nil {
			t.Errorf("Parse(%s): %v", line, err)
			continue
		}
		var want, again map[string]any
		if err := json.Unmarshal([]byte(line), &want); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(mustJSON(t, ev)), &again); err != nil {
			t.Fatal(err)
		}
		delete(want, "rtt_ms") // written as 0 by the node; Event leaves zero out
		delete(again, "rtt_ms")
		if !reflect.DeepEqual(again, want) {
			t.Errorf("Parse then Marshal of\n%s\n= %s", line, mustJSON(t, ev))
		}
	}
	if n < 10 {
		t.Errorf("only %d event lines in the examples", n)
	}
}
