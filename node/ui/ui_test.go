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
		{in: "/who", want: Line{Cmd: api.Who{}}},
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
		if _, err := Parse(strings.NewReplacer("NAME", "bob", "TEXT", "hi", "[", "", "]", "").Replace(c.usage)); err != nil {
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
