package ui

import (
	"reflect"
	"strings"
	"testing"

	"natchat/node/api"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Line
		code string
	}{
		{in: "", want: Line{}},
		{in: "\r\n", want: Line{}},
		{in: "hello", want: Line{Say: "hello"}},
		{in: "  padded  ", want: Line{Say: "  padded  "}},
		{in: "   ", code: api.CodeBadText},
		{in: "\t", code: api.CodeBadText},
		{in: "/msg bob hi there", want: Line{Cmd: api.Send{To: "bob", Text: "hi there"}}},
		{in: "/msg   bob hi", want: Line{Cmd: api.Send{To: "bob", Text: "hi"}}},
		{in: "/msg bob    ", code: api.CodeBadText},
		{in: "/msg bob", code: api.CodeBadCommand},
		{in: "/msg", code: api.CodeBadCommand},
		{in: "/msg bob \xff", code: api.CodeBadText},
		{in: "/msg bob " + strings.Repeat("x", 16<<10+1), code: api.CodeBadText},
		{in: "/me waves", want: Line{Say: "waves", Kind: api.KindEmote}},
		{in: "/me  goes out to buy snacky cakes ", want: Line{Say: "goes out to buy snacky cakes ", Kind: api.KindEmote}},
		{in: "/me", code: api.CodeBadText},
		{in: "/me    ", code: api.CodeBadText},
		{in: "/me \xff", code: api.CodeBadText},
		{in: "/me " + strings.Repeat("x", 16<<10+1), code: api.CodeBadText},
		{in: "/meow", code: api.CodeBadCommand},
		{in: "/msg #dev hi all", want: Line{Cmd: api.Send{To: "#dev", Text: "hi all"}}},
		{in: "/msg #café hi", want: Line{Cmd: api.Send{To: "#café", Text: "hi"}}},
		{in: "/msg # hi", code: api.CodeBadName},
		{in: "/msg ## hi", code: api.CodeBadName},
		{in: "/msg #" + strings.Repeat("x", 33) + " hi", code: api.CodeBadName},
		{in: "/msg #a\x07b hi", code: api.CodeBadName},
		{in: "/msg #\x1b[2J hi", code: api.CodeBadName},
		{in: "/msg #dev", code: api.CodeBadCommand},
		{in: "/msg #dev   ", code: api.CodeBadText},
		{in: "/join #dev", want: Line{Cmd: api.Join{Room: "#dev"}}},
		{in: "/join   #dev  ", want: Line{Cmd: api.Join{Room: "#dev"}}},
		{in: "/join #" + strings.Repeat("é", 32), want: Line{Cmd: api.Join{Room: "#" + strings.Repeat("é", 32)}}},
		{in: "/join #" + strings.Repeat("é", 33), code: api.CodeBadName},
		{in: "/join dev", code: api.CodeBadName},
		{in: "/join #", code: api.CodeBadName},
		{in: "/join #/dev", code: api.CodeBadName},
		{in: "/join #\x1b[2J", code: api.CodeBadName},
		{in: "/join #\xff", code: api.CodeBadName},
		{in: "/join", code: api.CodeBadCommand},
		{in: "/join #dev #ops", code: api.CodeBadCommand},
		{in: "/joindev", code: api.CodeBadCommand},
		{in: "/part #dev", want: Line{Cmd: api.Part{Room: "#dev"}}},
		{in: "/part", want: Line{Cmd: api.Part{}}},
		{in: "/part  ", want: Line{Cmd: api.Part{}}},
		{in: "/part dev", code: api.CodeBadName},
		{in: "/part #", code: api.CodeBadName},
		{in: "/part #dev #ops", code: api.CodeBadCommand},
		{in: "/rooms", want: Line{Cmd: api.ListRooms{}}},
		{in: "/rooms #dev", code: api.CodeBadCommand},
		{in: "/who", want: Line{Cmd: api.Who{}}},
		{in: "/send bob /tmp/my file.txt", want: Line{Cmd: api.SendFile{To: "bob", Path: "/tmp/my file.txt"}}},
		{in: "/send bob", code: api.CodeBadCommand},
		{in: "/send #dev x", code: api.CodeBadName},
		{in: "/accept 0123456789abcdef", want: Line{Cmd: api.AcceptFile{ID: "0123456789abcdef"}}},
		{in: "/accept", code: api.CodeBadCommand},
		{in: "/accept xyz", code: api.CodeBadCommand},
		{in: "/reject 0123456789ABCDEF", want: Line{Cmd: api.RejectFile{ID: "0123456789ABCDEF"}}},
		{in: "/cancel 0123456789abcdef extra", code: api.CodeBadCommand},
		{in: "/who now", code: api.CodeBadCommand},
		{in: "/who #lobby", want: Line{Cmd: api.Who{Room: "#lobby"}}},
		{in: "/who #lobby bob", want: Line{Cmd: api.Who{Room: "#lobby", After: "bob"}}},
		{in: "/who #lobby bob carol", code: api.CodeBadCommand},
		{in: "/who #", code: api.CodeBadCommand},
		{in: "/who #lobby \x1b[2J", code: api.CodeBadCommand},
		{in: "/who #a\x07b", code: api.CodeBadCommand},
		{in: "/quit", want: Line{Cmd: api.Quit{}}},
		{in: "/q", want: Line{Cmd: api.Quit{}}},
		{in: "/fingerprint", want: Line{Cmd: api.ShowFingerprint{}}},
		{in: "/fingerprint bob", want: Line{Cmd: api.ShowFingerprint{Name: "bob"}}},
		{in: "/fingerprint bob carol", code: api.CodeBadCommand},
		{in: "/trust bob", want: Line{Cmd: api.Trust{Name: "bob"}}},
		{in: "/trust", code: api.CodeBadCommand},
		{in: "/help", want: Line{Help: true}},
		{in: "/dereg", want: Line{Cmd: api.Deregister{}}},
		{in: "/dereg now", code: api.CodeBadCommand},
		{in: "/reg", want: Line{Cmd: api.Register{}}},
		{in: "/reg bob", code: api.CodeBadCommand},
		{in: "/register", code: api.CodeBadCommand},
		{in: "/nope", code: api.CodeBadCommand},
		{in: "/\x1b[2J", code: api.CodeBadCommand},
	} {
		got, err := Parse(c.in)
		if c.code != "" {
			if err == nil || err.Code != c.code {
				t.Errorf("Parse(%q) = %+v, %v; want error %s", c.in, got, err, c.code)
			}
			if err != nil && strings.ContainsAny(err.Message, "\x1b\r\n") {
				t.Errorf("Parse(%q): error message %q carries control characters", c.in, err.Message)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}

func TestHelpFromGrammar(t *testing.T) {
	h := Help()
	if len(h) != len(commands) {
		t.Fatalf("help has %d rows for %d commands", len(h), len(commands))
	}
	text := HelpText()
	for _, c := range commands {
		if !strings.Contains(text, c.usage) {
			t.Errorf("help text lacks %q", c.usage)
		}
		// Every command in the help parses (with arguments where it needs them).
		args := strings.NewReplacer("NAME", "bob", "TEXT", "hi", "ACTION", "waves", "#ROOM", "#dev", "AFTER", "bob", "PATH", "/tmp/a b.txt", "ID", "0123456789abcdef", "[", "", "]", "", "N", "5")
		if _, err := Parse(args.Replace(c.usage)); err != nil {
			t.Errorf("usage %q does not parse: %v", c.usage, err)
		}
	}
}

func TestSafe(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"plain text, ünïcödé, 漢字, 🙂", "plain text, ünïcödé, 漢字, 🙂"},
		{"\x1b[2Jclear", "␛[2Jclear"},
		{"\r<alice> fake", "␍<alice> fake"},
		{"ding\a", "ding␇"},
		{"\x1b]0;title\a", "␛]0;title␇"},
		{"two\nlines", "two␊lines"},
		{"tab\there", "tab here"},
		{"del\x7f", "del␡"},
		{"csi\u009b2J", "csi[U+009B]2J"},
		{"rlo\u202eevil", "rlo[U+202E]evil"},
		{"bad\xffutf8", "bad\uFFFDutf8"},
		{"nul\x00", "nul␀"},
	} {
		if got := Safe(c.in); got != c.want {
			t.Errorf("Safe(%q) = %q, want %q", c.in, got, c.want)
		}
		for _, r := range Safe(c.in) {
			if r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) {
				t.Errorf("Safe(%q) kept control %U", c.in, r)
			}
		}
	}
}

func FuzzSafe(f *testing.F) {
	f.Add("\x1b[31mred\r\n\a\u009b\u202e")
	f.Fuzz(func(t *testing.T, s string) {
		for _, r := range Safe(s) {
			if r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
				t.Fatalf("Safe(%q) kept %U", s, r)
			}
		}
	})
}

func TestDispatcher(t *testing.T) {
	var d Dispatcher
	if c, e := d.Input("hi"); c != nil || e == nil || e.(*api.Error).Code != api.CodeNoTarget {
		t.Fatalf("plain text before any conversation: %v %v", c, e)
	}
	if c, e := d.Input("/me waves"); c != nil || e == nil || e.(*api.Error).Code != api.CodeNoTarget {
		t.Fatalf("/me before any conversation: %v %v", c, e)
	}
	d.Saw(&api.Message{From: "carol"})
	if c, _ := d.Input("hi"); c != (api.Send{To: "carol", Text: "hi"}) {
		t.Fatalf("plain text answers the first writer: %v", c)
	}
	if c, _ := d.Input("/msg bob yo"); c != (api.Send{To: "bob", Text: "yo"}) {
		t.Fatalf("/msg: %v", c)
	}
	d.Saw(&api.Message{From: "dave"}) // does not steal the conversation
	if c, _ := d.Input("again"); c != (api.Send{To: "bob", Text: "again"}) {
		t.Fatalf("plain text after /msg: %v", c)
	}
	if c, _ := d.Input("/me waves"); c != (api.Send{To: "bob", Text: "waves", Kind: api.KindEmote}) {
		t.Fatalf("/me after /msg: %v", c)
	}
	if c, e := d.Input("/me"); c != nil || e == nil || e.(*api.Error).Code != api.CodeBadText {
		t.Fatalf("empty /me: %v %v", c, e)
	}
	if _, e := d.Input("/help"); e == nil || e.EventType() != api.TypeHelp {
		t.Fatalf("/help: %v", e)
	}
	if c, e := d.Input(""); c != nil || e != nil {
		t.Fatalf("empty line: %v %v", c, e)
	}
}

// input runs line through d and fails unless it gives the command want
// (nil: none) and an event of code code ("": none).
func input(t *testing.T, d *Dispatcher, line string, want api.Command, code string) {
	t.Helper()
	c, e := d.Input(line)
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Input(%q) = command %#v, want %#v", line, c, want)
	}
	switch got := e.(type) {
	case nil:
		if code != "" {
			t.Errorf("Input(%q): no event, want error %s", line, code)
		}
	case *api.Error:
		if got.Code != code {
			t.Errorf("Input(%q): error %s (%s), want %q", line, got.Code, got.Message, code)
		}
	default:
		t.Errorf("Input(%q): event %#v", line, e)
	}
}

// TestDispatcherRooms: /join and /msg #ROOM make the room the current
// conversation, for plain lines and /me alike; /part alone parts it and
// ends it; parting another room keeps it.
func TestDispatcherRooms(t *testing.T) {
	var d Dispatcher
	input(t, &d, "/part", nil, api.CodeBadCommand) // no conversation
	input(t, &d, "/join #dev", api.Join{Room: "#dev"}, "")
	if got := d.Target(); got != "#dev" {
		t.Fatalf("after /join #dev the conversation is %q", got)
	}
	input(t, &d, "hello room", api.Send{To: "#dev", Text: "hello room"}, "")
	input(t, &d, "/me waves", api.Send{To: "#dev", Text: "waves", Kind: api.KindEmote}, "")
	d.Saw(&api.Message{From: "ann", Room: "#ops", Text: "hi"}) // does not steal it
	input(t, &d, "still here", api.Send{To: "#dev", Text: "still here"}, "")

	input(t, &d, "/msg bob psst", api.Send{To: "bob", Text: "psst"}, "")
	input(t, &d, "/me nods", api.Send{To: "bob", Text: "nods", Kind: api.KindEmote}, "")
	input(t, &d, "/part", nil, api.CodeBadCommand) // bob is not a room
	if got := d.Target(); got != "bob" {
		t.Fatalf("a refused /part changed the conversation to %q", got)
	}
	input(t, &d, "/part #dev", api.Part{Room: "#dev"}, "") // another room than the current
	input(t, &d, "to bob", api.Send{To: "bob", Text: "to bob"}, "")

	input(t, &d, "/msg #ops hi ops", api.Send{To: "#ops", Text: "hi ops"}, "")
	input(t, &d, "more", api.Send{To: "#ops", Text: "more"}, "")
	input(t, &d, "/part", api.Part{Room: "#ops"}, "")
	if got := d.Target(); got != "" {
		t.Fatalf("after /part the conversation is %q, want none", got)
	}
	input(t, &d, "anyone?", nil, api.CodeNoTarget)
	input(t, &d, "/me waits", nil, api.CodeNoTarget)

	// Parting the current room by name (in any case) ends it too.
	input(t, &d, "/join #Dev", api.Join{Room: "#Dev"}, "")
	input(t, &d, "/part #dev", api.Part{Room: "#dev"}, "")
	input(t, &d, "anyone?", nil, api.CodeNoTarget)

	// A bad room name is refused and keeps the conversation.
	input(t, &d, "/msg carol hey", api.Send{To: "carol", Text: "hey"}, "")
	input(t, &d, "/join #", nil, api.CodeBadName)
	input(t, &d, "/msg # hi", nil, api.CodeBadName)
	input(t, &d, "/rooms", api.ListRooms{}, "")
	input(t, &d, "again", api.Send{To: "carol", Text: "again"}, "")
}

// TestDispatcherFirstRoomMessage: with no conversation, the first message
// that comes in starts one: in its room when it is a room message.
func TestDispatcherFirstRoomMessage(t *testing.T) {
	var d Dispatcher
	d.Saw(&api.Sent{To: "#dev", Room: "#dev"}) // only messages count
	d.Saw(&api.RoomJoined{Room: "#dev", Name: "ann"})
	if got := d.Target(); got != "" {
		t.Fatalf("conversation %q before any message", got)
	}
	d.Saw(&api.Message{From: "ann", Room: "#dev", Text: "hi all"})
	d.Saw(&api.Message{From: "bob", Text: "psst"})
	input(t, &d, "hi ann", api.Send{To: "#dev", Text: "hi ann"}, "")

	var d2 Dispatcher
	d2.Saw(&api.Message{From: "bob", Text: "psst"})
	d2.Saw(&api.Message{From: "ann", Room: "#dev", Text: "hi all"})
	input(t, &d2, "hi bob", api.Send{To: "bob", Text: "hi bob"}, "")
}
