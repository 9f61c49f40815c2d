package line

import (
	"strings"
	"testing"
	"time"

	"natchat/node/api"
	"natchat/node/ui"
)

var at = time.Date(2026, 3, 4, 15, 4, 59, 0, time.UTC)

func TestRender(t *testing.T) {
	for _, c := range []struct {
		e    api.Event
		want string
	}{
		{&api.Registered{Name: "bob", Public: "203.0.113.5:4000"}, "15:04 *** online as bob; the rendezvous sees you at 203.0.113.5:4000"},
		{&api.Registered{Name: "bob"}, "15:04 *** online as bob"},
		{&api.PeerJoined{Name: "alice"}, "15:04 *** alice is online"},
		{&api.PeerLeft{Name: "alice", Reason: api.ReasonQuit}, "15:04 *** alice left"},
		{&api.PeerLeft{Name: "alice", Reason: api.ReasonTimeout}, "15:04 *** alice went silent and is offline"},
		{&api.PeerLeft{Name: "alice", Reason: api.ReasonPart}, "15:04 *** alice is out of sight (no room in common now)"},
		{&api.FileOffer{ID: "0123456789abcdef", From: "alice", Name: "a.pdf", Size: 1536, SHA256: "00112233445566778899"},
			"15:04 ⇩ alice offers a.pdf (1.5 KiB, sha256 0011223344556677…) — /accept 0123456789abcdef or /reject 0123456789abcdef"},
		{&api.FileOffer{ID: "0123456789abcdef", To: "bob", Name: "a.pdf", Size: 10},
			"15:04 ⇪ offered a.pdf (10 B) to bob — /cancel 0123456789abcdef"},
		{&api.FileProgress{ID: "01", Bytes: 25 << 20, Total: 50 << 20, RateBPS: 5 << 20, ETAS: 5, Path: "direct"},
			"15:04   file 01 ██████████░░░░░░░░░░ 25.0 MiB of 50.0 MiB, 5.0 MiB/s, 5s left, direct"},
		{&api.FileDone{ID: "01", Path: "/home/bob/Downloads/natchat/a.pdf"}, "15:04 ✓ file 01 done: /home/bob/Downloads/natchat/a.pdf"},
		{&api.FileFailed{ID: "01", Reason: "rejected by the peer"}, "15:04 ! file 01 failed: rejected by the peer"},
		{&api.FileOffer{ID: "01", From: "mallory", Name: "x\x1b[2J", Size: 1}, "15:04 ⇩ mallory offers x␛[2J (1 B, sha256 …) — /accept 01 or /reject 01"},
		{&api.PeerLeft{Name: "alice", Reason: "kicked"}, "15:04 *** alice left (kicked)"},
		{&api.Peers{}, "15:04 *** nobody else is here"},
		{&api.Peers{Peers: []api.PeerInfo{{Name: "al", Path: api.PathDirect, RTTMS: 2.25, Online: true}}},
			"15:04 *** 1 peer:\n" +
				"        al  direct     2.2 ms"},
		{&api.Peers{Peers: []api.PeerInfo{
			{Name: "alice", Path: api.PathDirect, RTTMS: 12.5, Online: true},
			{Name: "carol", Path: api.PathRelay, RTTMS: 140, Online: false},
			{Name: "dave-the-second", Path: api.PathNone, Online: true},
			{Name: "ed", Path: api.PathNone, RTTMS: 9, Online: false},
		}},
			"15:04 *** 4 peers:\n" +
				"        alice            direct    12.5 ms\n" +
				"        carol            relay    140.0 ms  (not in your rooms)\n" +
				"        dave-the-second  none\n" +
				"        ed               none               (not in your rooms)"},
		{&api.Sent{ID: "1", To: "alice", Text: "hi"}, "15:04 → alice: hi"},
		{&api.Sent{ID: "1", To: "alice", Text: "hi", Resumed: true}, "15:04 → alice: hi  (sending again: not delivered last time)"},
		{&api.Sent{ID: "1", To: "alice", Text: "waves", Kind: api.KindEmote}, "15:04 → alice: * waves"},
		{&api.Delivered{ID: "1", To: "alice"}, "15:04 ✓ delivered to alice"},
		{&api.Message{From: "pat", Text: "goes out to buy snacky cakes", Kind: api.KindEmote, Path: api.PathDirect},
			"15:04 * pat goes out to buy snacky cakes"},
		{&api.Message{From: "pat", Text: "waved", Kind: api.KindEmote, Via: api.ViaMailbox, SentTS: at.Add(-3 * time.Hour)},
			"15:04 * pat waved  (sent 12:04)"},
		{&api.Message{From: "mal\x1b[2J", Text: "waves\r\x1b]0;pwned\a", Kind: api.KindEmote},
			"15:04 * mal␛[2J waves␍␛]0;pwned␇"},
		{&api.Message{From: "alice", Text: "hello there", Path: api.PathDirect}, "15:04 <alice> hello there"},
		{&api.Message{From: "alice", Text: "while you were out", Path: api.PathRelay, Via: api.ViaMailbox, SentTS: at.Add(-3 * time.Hour)},
			"15:04 <alice> while you were out  (sent 12:04)"},
		{&api.Message{From: "alice", Text: "last week", Via: api.ViaMailbox, SentTS: at.AddDate(0, 0, -6)},
			"15:04 <alice> last week  (sent Feb 26 15:04)"},
		{&api.Stored{ID: "1", To: "alice"}, "15:04 ✉ stored for alice, who is away"},
		{&api.Expired{ID: "1", To: "alice"}, "15:04 ! to alice: a stored message expired unread"},
		{&api.Mailbox{Count: 1}, "15:04 *** 1 message waited for you"},
		{&api.Mailbox{Count: 12}, "15:04 *** 12 messages waited for you"},
		{&api.Deregistered{Name: "bob"}, "15:04 *** offline (messages to you wait in your mailbox); /reg to come back"},
		{&api.PathChanged{Peer: "alice", Path: api.PathDirect, Remote: "198.51.100.2:5000", RTTMS: 3.2}, "15:04 *** path to alice: direct via 198.51.100.2:5000 (3.2 ms)"},
		{&api.PathChanged{Peer: "alice", Path: api.PathRelay, Remote: "203.0.113.10:3478"}, "15:04 *** path to alice: relay via 203.0.113.10:3478"},
		{&api.PathChanged{Peer: "alice", Path: api.PathNone, Remote: "ignored"}, "15:04 *** path to alice: none"},
		{&api.Error{Code: api.CodeUnknownPeer, Message: "no one is registered as zed", ID: "7", To: "zed"}, "15:04 ! to zed: no one is registered as zed"},
		{&api.Error{Code: api.CodeBadCommand, Message: "usage: /msg NAME TEXT"}, "15:04 ! usage: /msg NAME TEXT"},
		{&api.Error{Code: api.CodeRendezvousUnreachable}, "15:04 ! rendezvous_unreachable"},
		{&api.Error{Code: api.CodeKeyChanged, Message: "alice's key changed", Peer: "alice", Fingerprint: "aaaa bbbb", NewFingerprint: "cccc dddd"},
			"15:04 ! alice's key changed\n" +
				"        pinned key:  aaaa bbbb\n" +
				"        offered now: cccc dddd\n" +
				"        compare with alice out of band, then /trust alice"},
		{&api.Fingerprint{Name: "bob", Fingerprint: "1234 5678", Self: true}, "15:04 *** your fingerprint: 1234 5678"},
		{&api.Fingerprint{Name: "alice", Fingerprint: "1234 5678", Pinned: true}, "15:04 *** alice's fingerprint: 1234 5678 (pinned)"},
		{&api.Fingerprint{Name: "alice", Fingerprint: "1234 5678"}, "15:04 *** alice's fingerprint: 1234 5678 (offered by the rendezvous; not pinned yet)"},
		{&api.Trusted{Name: "alice", Fingerprint: "cccc dddd"}, "15:04 *** alice is trusted with the key of fingerprint cccc dddd"},
		{&api.EventsDropped{Count: 1}, "15:04 ! 1 presence and path update skipped while the screen was behind; /who shows who is online"},
		{&api.EventsDropped{Count: 12}, "15:04 ! 12 presence and path updates skipped while the screen was behind; /who shows who is online"},
		{&api.Help{Commands: []api.CommandHelp{{Usage: "/who", Summary: "who is online"}}},
			"15:04 commands:\n" +
				"        /who                     who is online\n" +
				"        TEXT                     a line without / goes to the current conversation"},

		// Rooms.
		{&api.RoomJoined{Room: "#dev", Name: "leslie"}, "15:04 *** leslie has joined #dev"},
		{&api.RoomJoined{Room: "#dev", Name: "bob", Total: 3, Online: 2}, "15:04 *** you joined #dev (3 members, 2 online)"},
		{&api.RoomJoined{Room: "#new", Name: "bob", Total: 1, Online: 1}, "15:04 *** you joined #new (1 member, 1 online)"},
		{&api.RoomLeft{Room: "#dev", Name: "leslie", Reason: api.RoomReasonPart}, "15:04 *** leslie has left #dev"},
		{&api.RoomLeft{Room: "#dev", Name: "leslie", Reason: api.RoomReasonExpired}, "15:04 *** leslie was dropped from #dev (away too long)"},
		{&api.RoomLeft{Room: "#dev", Name: "leslie", Reason: "kicked"}, "15:04 *** leslie has left #dev (kicked)"},
		{&api.Rooms{}, "15:04 *** you are in no room; /join #ROOM to join one"},
		{&api.Rooms{Rooms: []api.RoomInfo{{Room: "#dev", Members: 3, Online: 2}}},
			"15:04 *** 1 room:\n" +
				"        #dev  3 members, 2 online"},
		{&api.Rooms{Rooms: []api.RoomInfo{{Room: "#dev", Members: 3, Online: 2}, {Room: "#lobby", Members: 1, Online: 1}, {Room: "#café", Members: 4213, Online: 0}}},
			"15:04 *** 3 rooms:\n" +
				"        #dev    3 members, 2 online\n" +
				"        #lobby  1 member, 1 online\n" +
				"        #café   4213 members, 0 online"},
		{&api.Message{ID: "1", From: "ann", Text: "hello room", Room: "#dev", Path: api.PathDirect}, "15:04 [#dev] <ann> hello room"},
		{&api.Message{ID: "1", From: "ann", Text: "waves", Kind: api.KindEmote, Room: "#dev", Path: api.PathRelay}, "15:04 [#dev] * ann waves"},
		{&api.Message{ID: "1", From: "ann", Text: "while you were out", Room: "#dev", Via: api.ViaMailbox, SentTS: at.Add(-3 * time.Hour)},
			"15:04 [#dev] <ann> while you were out  (sent 12:04)"},
		{&api.Sent{ID: "1", To: "#dev", Room: "#dev", Text: "hi all"}, "15:04 → #dev: hi all"},
		{&api.Delivered{ID: "1", To: "#dev", Room: "#dev", Members: "2/3"}, "15:04 ✓ delivered to 2/3 of #dev"},
		{&api.Delivered{ID: "1", To: "#dev", Room: "#dev", Members: "0/0"}, "15:04 ✓ delivered to 0/0 of #dev"},
		{&api.Stored{ID: "1", To: "ann", Room: "#dev"}, "15:04 ✉ [#dev] stored for ann, who is away"},
		{&api.Expired{ID: "1", To: "ann", Room: "#dev"}, "15:04 ! [#dev] to ann: a stored message expired unread"},
		{&api.Error{Code: api.CodeUndelivered, Message: "no receipt within 10s", ID: "1", To: "ann", Room: "#dev"},
			"15:04 ! [#dev] to ann: no receipt within 10s"},
		{&api.Error{Code: api.CodeRateLimited, Message: "too many messages to #dev: wait a moment", To: "#dev", Room: "#dev"},
			"15:04 ! to #dev: too many messages to #dev: wait a moment"},
		{&api.Error{Code: api.CodeRoomFull, Message: "#dev is full: it has 256 members", Room: "#dev"}, "15:04 ! #dev is full: it has 256 members"},
		{&api.Error{Code: api.CodeNotMember, Room: "#ops"}, "15:04 ! not_member"},
	} {
		if got := Render(c.e, at); got != c.want {
			t.Errorf("Render(%T %+v) =\n%s\nwant\n%s", c.e, c.e, got, c.want)
		}
	}
	for _, c := range []struct {
		e    api.Event
		want string
	}{
		{&api.Sent{ID: "1", To: "bob", Text: "waves", Kind: api.KindEmote}, "15:04 → bob: * alice waves"},
		{&api.Sent{ID: "1", To: "bob", Text: "waves", Kind: api.KindEmote, Resumed: true}, "15:04 → bob: * alice waves  (sending again: not delivered last time)"},
		{&api.Sent{ID: "1", To: "bob", Text: "hi"}, "15:04 → bob: hi"},
		{&api.Message{From: "bob", Text: "waves back", Kind: api.KindEmote}, "15:04 * bob waves back"},
		{&api.Sent{ID: "1", To: "#dev", Room: "#dev", Text: "waves", Kind: api.KindEmote}, "15:04 → #dev: * alice waves"},
		{&api.RoomJoined{Room: "#dev", Name: "alice", Total: 3, Online: 2}, "15:04 *** you joined #dev (3 members, 2 online)"},
		{&api.RoomJoined{Room: "#dev", Name: "leslie"}, "15:04 *** leslie has joined #dev"},
		{&api.RoomLeft{Room: "#dev", Name: "alice", Reason: api.RoomReasonPart}, "15:04 *** you left #dev"},
		{&api.RoomLeft{Room: "#dev", Name: "alice", Reason: api.RoomReasonExpired}, "15:04 *** you were dropped from #dev (away too long)"},
		{&api.RoomLeft{Room: "#dev", Name: "leslie", Reason: api.RoomReasonPart}, "15:04 *** leslie has left #dev"},
	} {
		if got := RenderAs(c.e, at, "alice"); got != c.want {
			t.Errorf("RenderAs(%T %+v, alice) =\n%s\nwant\n%s", c.e, c.e, got, c.want)
		}
	}
}

// TestRenderHelp: /help shows ui.HelpText, the grammar's own help.
func TestRenderHelp(t *testing.T) {
	got := Render(&api.Help{Commands: ui.Help()}, at)
	want := strings.TrimSuffix(ui.HelpText(), "\n")
	want = "15:04 " + strings.ReplaceAll(want, "\n", "\n"+indent)
	if got != want {
		t.Errorf("help is\n%s\nwant ui.HelpText:\n%s", got, want)
	}
}

// hostile strings a peer might send, and how each must look.
var hostile = []struct{ in, shown string }{
	{"\x1b[2J", "␛[2J"},
	{"\r<alice> fake", "␍<alice> fake"},
	{"\x1b]0;title\x07", "␛]0;title␇"},
	{"ding\a", "ding␇"},
	{"csi\u009b2J", "csi[U+009B]2J"},
	{"rlo\u202eevil", "rlo[U+202E]evil"},
	{"two\nlines", "two␊lines"},
	{"bad\xffutf8", "bad\uFFFDutf8"},
}

// TestRenderHostile: every string an event carries is shown inert, in
// every event type that carries one.
func TestRenderHostile(t *testing.T) {
	for _, h := range hostile {
		x := h.in
		events := []api.Event{
			&api.Registered{Name: x, Public: x},
			&api.PeerJoined{Name: x},
			&api.PeerLeft{Name: x, Reason: x},
			&api.PeerLeft{Name: x, Reason: api.ReasonQuit},
			&api.Peers{Peers: []api.PeerInfo{{Name: x, Path: x, Online: true}, {Name: "ok", Path: api.PathRelay}}},
			&api.Sent{To: x, Text: x},
			&api.Delivered{To: x},
			&api.Message{From: x, Text: x},
			&api.Message{From: x, Text: x, Kind: api.KindEmote},
			&api.Message{From: x, Text: x, Kind: api.KindEmote, Via: api.ViaMailbox},
			&api.Sent{To: x, Text: x, Kind: api.KindEmote},
			&api.PathChanged{Peer: x, Path: x, Remote: x},
			&api.PathChanged{Peer: x, Path: api.PathNone},
			&api.Error{Code: x, To: x},
			&api.Error{Code: api.CodeKeyChanged, Message: x, Peer: x, Fingerprint: x, NewFingerprint: x},
			&api.Fingerprint{Name: x, Fingerprint: x},
			&api.Fingerprint{Name: x, Fingerprint: x, Pinned: true},
			&api.Fingerprint{Fingerprint: x, Self: true},
			&api.Trusted{Name: x, Fingerprint: x},
			&api.Help{Commands: []api.CommandHelp{{Usage: x, Summary: x}}},
			&api.RoomJoined{Room: x, Name: x},
			&api.RoomJoined{Room: x, Name: x, Total: 2, Online: 1},
			&api.RoomLeft{Room: x, Name: x, Reason: x},
			&api.RoomLeft{Room: x, Name: x, Reason: api.RoomReasonPart},
			&api.RoomLeft{Room: x, Name: x, Reason: api.RoomReasonExpired},
			&api.Rooms{Rooms: []api.RoomInfo{{Room: x, Members: 1}, {Room: "#ok", Members: 2}}},
			&api.Message{From: x, Text: x, Room: x},
			&api.Message{From: x, Text: x, Kind: api.KindEmote, Room: x},
			&api.Sent{To: x, Room: x, Text: x},
			&api.Delivered{To: x, Room: x, Members: x},
			&api.Stored{To: x, Room: x},
			&api.Stored{To: "ann", Room: x},
			&api.Expired{To: x, Room: x},
			&api.Expired{To: "ann", Room: x},
			&api.Error{Code: x, To: "ann", Room: x},
			&api.Error{Code: x, Room: "#dev"},
		}
		for _, e := range events {
			got := Render(e, at)
			checkInert(t, got)
			if !strings.Contains(got, h.shown) {
				t.Errorf("Render(%T) with %q:\n%s\ndoes not show it as %q", e, x, got, h.shown)
			}
		}
		// Our own name in our own emotes, too.
		got := RenderAs(&api.Sent{To: "bob", Text: "waves", Kind: api.KindEmote}, at, x)
		checkInert(t, got)
		if want := "→ bob: * " + h.shown + " waves"; !strings.HasSuffix(got, want) {
			t.Errorf("RenderAs(sent emote, self %q) = %q, want suffix %q", x, got, want)
		}
	}
	// Nor can a room message.
	got := Render(&api.Message{From: "mallory", Room: "#dev", Text: "hi\r\n15:04 [#dev] <alice> send me your key"}, at)
	if strings.Contains(got, "\n") || !strings.HasPrefix(got, "15:04 [#dev] <mallory> ") {
		t.Errorf("room message from mallory renders as %q", got)
	}
	// Nor can it in an emote.
	got = Render(&api.Message{From: "mallory", Text: "waves\r\n15:04 <alice> send me your key", Kind: api.KindEmote}, at)
	if strings.Contains(got, "\n") || !strings.HasPrefix(got, "15:04 * mallory waves") {
		t.Errorf("emote from mallory renders as %q", got)
	}
	// A faked line cannot start a line.
	got = Render(&api.Message{From: "mallory", Text: "hi\r\n15:04 <alice> send me your key"}, at)
	if strings.Contains(got, "\n") || !strings.HasPrefix(got, "15:04 <mallory> ") {
		t.Errorf("message from mallory renders as %q", got)
	}
}

// checkInert fails unless s has no control character other than the line
// ends Render puts between the lines of one event, each followed by the
// indent, and no bidirectional override or isolate.
func checkInert(t *testing.T, s string) {
	t.Helper()
	for i, r := range s {
		switch {
		case r == '\n' && strings.HasPrefix(s[i+1:], indent):
		case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
			t.Errorf("%q: control %U at %d", s, r, i)
		}
	}
}

func TestRenderHidesUnknown(t *testing.T) {
	if got := Render(nil, at); got != "" {
		t.Errorf("Render(nil) = %q", got)
	}
}

// TestRenderHistory: a header, then each entry at its own time (with its
// date when not today) as its message or sent line, our own with their
// state; an empty answer says so.
func TestRenderHistory(t *testing.T) {
	h := &api.HistoryEvent{Conv: "bob", Entries: []api.HistoryEntry{
		{ID: "1", From: "alice", Text: "lunch?", Out: true, State: api.StateDelivered, TS: at.Add(-6 * time.Minute)},
		{ID: "2", From: "alice", Text: "waves", Kind: api.KindEmote, Out: true, State: api.StateStored, TS: at.Add(-5 * time.Minute)},
		{ID: "3", From: "alice", Text: "still there?", Out: true, State: api.StateFailed, Reason: "expired", TS: at.Add(-4 * time.Minute)},
		{ID: "4", From: "alice", Text: "now?", Out: true, State: api.StateSending, TS: at.Add(-3 * time.Minute)},
		{ID: "5", From: "bob", Text: "while you were out", Via: api.ViaMailbox, TS: at.AddDate(0, 0, -2)},
		{ID: "6", From: "bob", Text: "shrugs", Kind: api.KindEmote, TS: at.Add(-time.Minute)},
	}}
	want := "15:04 --- history of bob (6 messages) ---\n" +
		"14:58 → bob: lunch?  (delivered)\n" +
		"14:59 → bob: * alice waves  (stored)\n" +
		"15:00 → bob: still there?  (failed: expired)\n" +
		"15:01 → bob: now?  (sending)\n" +
		"Mar 2 15:04 <bob> while you were out  (from your mailbox)\n" +
		"15:03 * bob shrugs"
	if got := RenderAs(h, at, "alice"); got != want {
		t.Errorf("history renders as\n%s\nwant\n%s", got, want)
	}
	room := &api.HistoryEvent{Conv: "#dev", Entries: []api.HistoryEntry{
		{ID: "1", From: "alice", Text: "hi all", Out: true, State: api.StateDelivered, TS: at},
		{ID: "2", From: "ann", Text: "hi alice", TS: at},
	}}
	want = "15:04 --- history of #dev (2 messages) ---\n" +
		"15:04 → #dev: hi all  (delivered)\n" +
		"15:04 [#dev] <ann> hi alice"
	if got := Render(room, at); got != want {
		t.Errorf("room history renders as\n%s\nwant\n%s", got, want)
	}
	for _, c := range []struct {
		e    *api.HistoryEvent
		want string
	}{
		{&api.HistoryEvent{Conv: "bob", Entries: []api.HistoryEntry{}}, "15:04 --- no history of bob ---"},
		{&api.HistoryEvent{Entries: []api.HistoryEntry{}}, "15:04 --- no history yet ---"},
		{&api.HistoryEvent{Conv: "bob", Entries: []api.HistoryEntry{{From: "bob", Text: "x", TS: at}}}, "15:04 --- history of bob (1 message) ---\n15:04 <bob> x"},
	} {
		if got := Render(c.e, at); got != c.want {
			t.Errorf("Render(%+v) = %q, want %q", c.e, got, c.want)
		}
	}

	// Hostile strings stay inert, and no entry makes a line of its own.
	for _, hs := range hostile {
		x := hs.in
		for _, e := range []*api.HistoryEvent{
			{Conv: x, Entries: []api.HistoryEntry{{From: x, Text: x, TS: at}, {From: x, Text: x, Kind: api.KindEmote, TS: at}}},
			{Conv: x, Entries: []api.HistoryEntry{{From: x, Text: x, Out: true, State: x, Reason: x, TS: at}, {From: x, Text: x, Via: api.ViaMailbox, TS: at}}},
			{Conv: x, Entries: []api.HistoryEntry{}},
		} {
			got := RenderAs(e, at, x)
			if n := strings.Count(got, "\n"); n != len(e.Entries) {
				t.Errorf("history with %q has %d line ends for %d entries:\n%s", x, n, len(e.Entries), got)
			}
			for _, line := range strings.Split(got, "\n") {
				if !strings.HasPrefix(line, "15:04 ") {
					t.Errorf("history line %q does not start with its time", line)
				}
				checkInert(t, line)
			}
			if !strings.Contains(got, hs.shown) {
				t.Errorf("history with %q:\n%s\ndoes not show it as %q", x, got, hs.shown)
			}
		}
	}
}

// TestRenderNetCheck: public endpoints, the mapping with what it means,
// and a row per peer, lined up; peer text inert.
func TestRenderNetCheck(t *testing.T) {
	e := &api.NetCheck{
		Public:  []string{"203.0.113.5:4000", "203.0.113.5:4001"},
		Mapping: api.MappingDependent,
		Detail:  "the second STUN server saw another port",
		Peers: []api.NetPeer{
			{Name: "bob", Path: api.PathDirect, Remote: "198.51.100.3:5000", RTTMS: 12.5, Changed: at.Add(-5 * time.Minute)},
			{Name: "carolyn", Path: api.PathRelay},
		},
	}
	want := "15:04 *** netcheck: public 203.0.113.5:4000, 203.0.113.5:4001\n" +
		"        mapping: endpoint-dependent (peers will mostly be relayed; the second STUN server saw another port)\n" +
		"        bob      direct  198.51.100.3:5000  12.5 ms  since 14:59\n" +
		"        carolyn  relay   -"
	if got := Render(e, at); got != want {
		t.Errorf("netcheck renders as\n%s\nwant\n%s", got, want)
	}
	want = "15:04 *** netcheck: public unknown (no STUN answer)\n" +
		"        mapping: unknown (no STUN answer)\n" +
		"        no peers"
	if got := Render(&api.NetCheck{Mapping: api.MappingUnknown, Detail: "no STUN answer"}, at); got != want {
		t.Errorf("empty netcheck renders as\n%s\nwant\n%s", got, want)
	}
	if got := Render(&api.NetCheck{Mapping: api.MappingIndependent}, at); !strings.Contains(got, "mapping: endpoint-independent (hole punching works)") {
		t.Errorf("independent mapping renders as\n%s", got)
	}
	for _, h := range hostile {
		x := h.in
		got := Render(&api.NetCheck{Public: []string{x}, Mapping: x, Detail: x, Peers: []api.NetPeer{{Name: x, Path: x, Remote: x}}}, at)
		checkInert(t, got)
		if strings.Count(got, h.shown) != 6 {
			t.Errorf("netcheck with %q:\n%s\ndoes not show it 6 times as %q", x, got, h.shown)
		}
	}
}
