package headless_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
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

// nodeEvents holds one of every event type the node writes, each field
// set, so that TestParseNodeEvents covers every field.
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
	}
}

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
// that Parse gets every field back, and that Event has exactly the fields
// the node writes: the decoder cannot drift from the encoder.
func TestParseNodeEvents(t *testing.T) {
	seen := map[string]bool{}
	for _, ne := range nodeEvents() {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf) // as node/cli writes them
		enc.SetEscapeHTML(false)
		if err := enc.Encode(ne); err != nil {
			t.Fatal(err)
		}
		got, err := headless.Parse(buf.Bytes())
		if err != nil {
			t.Errorf("Parse(%s): %v", buf.Bytes(), err)
			continue
		}
		gotFields := jsonFields(reflect.ValueOf(got))
		for name, v := range jsonFields(reflect.ValueOf(ne).Elem()) {
			seen[name] = true
			if v.IsZero() {
				t.Errorf("%T: test data leaves %s zero", ne, name)
			}
			g, ok := gotFields[name]
			if !ok {
				t.Errorf("%T: headless.Event has no field %q", ne, name)
				continue
			}
			if w, g := mustJSON(t, v.Interface()), mustJSON(t, g.Interface()); w != g {
				t.Errorf("%T: %s = %s after Parse, want %s", ne, name, g, w)
			}
		}
	}
	all := slices.Sorted(maps.Keys(jsonFields(reflect.ValueOf(headless.Event{}))))
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
		headless.TypeStored, headless.TypeExpired, headless.TypeMailbox, headless.TypeDeregistered} {
		if !types[typ] {
			t.Errorf("no test event of type %s", typ)
		}
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
