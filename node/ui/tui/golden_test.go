package tui

import (
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"natchat/node/api"
)

// Golden screens: the model driven as bubbletea would, its View compared
// with testdata/*.golden (colours stripped; go test -update rewrites
// them). Every screen is also checked to be exactly the terminal's size,
// every line as wide as the terminal.

func TestGoldenEmptyStart(t *testing.T) {
	h := newHarness(t, "bob", 100, 24)
	h.golden("empty")
	h.ev(&api.Registered{Name: "bob", Public: "203.0.113.5:40001"})
	h.golden("registered")
}

// room builds bob's screen in #dev: members joining and leaving, an
// emote, a message from the mailbox with its original time, and bob's
// own messages in each state.
func room(t *testing.T, w, ht int) *harness {
	h := newHarness(t, "bob", w, ht)
	h.ev(&api.Registered{Name: "bob", Public: "203.0.113.5:40001"})
	h.ev(&api.Rooms{Rooms: []api.RoomInfo{{Room: "#dev", Members: 4, Online: 3}, {Room: "#lobby", Members: 9, Online: 5}}})
	h.ev(&api.Peers{Peers: []api.PeerInfo{
		{Name: "ann", Path: api.PathDirect, RTTMS: 12.3, Online: true},
		{Name: "cho", Path: api.PathRelay, RTTMS: 81.9, Online: true},
		{Name: "leslie", Path: api.PathNone, Online: true},
	}})
	h.enter("/msg #dev") // opens the room without sending
	h.ev(&api.Members{Room: "#dev", Total: 3, Members: []api.Member{{Name: "ann"}, {Name: "bob"}, {Name: "cho"}}})
	h.ev(&api.Message{ID: "m0", From: "ann", Room: "#dev", Text: "sent while you were away", Via: api.ViaMailbox, SentTS: at.Add(-26 * time.Hour)})
	h.ev(&api.Message{ID: "m1", From: "ann", Room: "#dev", Text: "morning bob", Path: api.PathDirect})
	h.ev(&api.RoomJoined{Room: "#dev", Name: "leslie"})
	h.ev(&api.Message{ID: "m2", From: "cho", Room: "#dev", Kind: api.KindEmote, Text: "goes out to buy snacky cakes", Path: api.PathRelay})
	h.ev(&api.Sent{ID: "s1", To: "#dev", Room: "#dev", Text: "morning all"})
	h.ev(&api.Delivered{ID: "s1", To: "#dev", Room: "#dev", Members: "3/3"})
	h.ev(&api.Sent{ID: "s2", To: "#dev", Room: "#dev", Text: "anyone seen chris?"})
	h.ev(&api.Stored{ID: "s2", To: "chris", Room: "#dev"})
	h.ev(&api.Delivered{ID: "s2", To: "#dev", Room: "#dev", Members: "3/4"})
	h.ev(&api.RoomLeft{Room: "#dev", Name: "cho", Reason: api.RoomReasonPart})
	h.ev(&api.Sent{ID: "s3", To: "#dev", Room: "#dev", Kind: api.KindEmote, Text: "waves"})
	return h
}

func TestGoldenConversation(t *testing.T) {
	h := room(t, 100, 24)
	// A conversation with alice: stored, then one that failed, and one
	// still sending.
	h.ev(&api.Sent{ID: "p1", To: "alice", Text: "are you back?"})
	h.ev(&api.Stored{ID: "p1", To: "alice"})
	h.ev(&api.Sent{ID: "p2", To: "zed", Text: "hello?"})
	h.ev(&api.Error{Code: api.CodeUndelivered, ID: "p2", To: "zed", Message: "no receipt within 2m0s"})
	h.golden("room")
	h.alt('4')
	h.golden("alice")
	h.ev(&api.Sent{ID: "p3", To: "alice", Text: "ping"})
	h.alt('5')
	h.golden("failed")
}

func TestGoldenResize(t *testing.T) {
	h := room(t, 100, 24)
	h.typ("a half-typed reply")
	h.resize(60, 20)
	h.golden("room-60x20")
	h.resize(200, 60)
	h.golden("room-200x60")
	if got := h.inputLine(); got != "bob> a half-typed reply" {
		t.Errorf("input line after resizing: %q", got)
	}
}

func TestGoldenFiles(t *testing.T) {
	h := newHarness(t, "bob", 100, 16)
	h.ev(&api.Registered{Name: "bob", Public: "203.0.113.5:40001"})
	h.enter("/msg alice")
	h.ev(&api.FileOffer{ID: "00000000000000a1", To: "alice", Name: "notes.pdf", Size: 10 << 20, SHA256: strings.Repeat("ab", 32)})
	h.ev(&api.FileProgress{ID: "00000000000000a1", Bytes: 4404019, Total: 10 << 20, RateBPS: 1258291, ETAS: 5, Path: api.PathDirect})
	h.ev(&api.FileOffer{ID: "00000000000000b2", From: "alice", Name: "photo.jpg", Size: 2 << 20, SHA256: strings.Repeat("cd", 32)})
	h.golden("files")
	h.ev(&api.FileOffer{ID: "00000000000000c3", From: "alice", Name: "older.txt", Size: 300, SHA256: strings.Repeat("ef", 32)})
	// Ctrl-Y accepts the latest offer; the one before shows /accept again.
	h.takeCmds()
	h.key(tea.KeyMsg{Type: tea.KeyCtrlY})
	if got := h.takeCmds(); len(got) != 1 || got[0] != (api.AcceptFile{ID: "00000000000000c3"}) {
		t.Errorf("Ctrl-Y sent %#v, want the latest offer accepted", got)
	}
	h.ev(&api.FileDone{ID: "00000000000000a1", Path: "/home/bob/notes.pdf", SHA256: strings.Repeat("ab", 32)})
	h.golden("files-2")
	h.key(tea.KeyMsg{Type: tea.KeyCtrlR})
	if got := h.takeCmds(); len(got) != 1 || got[0] != (api.RejectFile{ID: "00000000000000b2"}) {
		t.Errorf("Ctrl-R sent %#v, want the next offer rejected", got)
	}
	h.ev(&api.FileFailed{ID: "00000000000000b2", Reason: api.FileRejected})
	h.key(tea.KeyMsg{Type: tea.KeyCtrlY})
	if got := h.takeCmds(); len(got) != 0 {
		t.Errorf("Ctrl-Y with no offer waiting sent %#v", got)
	}
	if !strings.Contains(h.screen(), "! no file offer is waiting for an answer") {
		t.Errorf("Ctrl-Y with no offer waiting: no hint")
	}
}

func TestGoldenWideText(t *testing.T) {
	h := newHarness(t, "bob", 72, 16)
	h.ev(&api.Registered{Name: "bob"})
	h.ev(&api.Message{ID: "w1", From: "李小龙", Text: "你好！这是一条很长的中文消息，用来检查换行是否按照显示宽度计算，而不是按照字节或者字符数。", Path: api.PathRelay})
	h.ev(&api.Message{ID: "w2", From: "李小龙", Text: "emoji 🎉🎉🎉 👍🏽 👨‍👩‍👧 🇯🇵 mixed with text that wraps 🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉", Path: api.PathRelay})
	h.ev(&api.Message{ID: "w3", From: "李小龙", Text: "averyveryveryveryveryveryveryveryveryveryveryveryveryveryveryverylongwordwithoutspaces", Path: api.PathRelay})
	h.golden("wide")
	for _, l := range strings.Split(h.m.View(), "\n") {
		if w := lipgloss.Width(l); w != 72 {
			t.Errorf("a line is %d cells wide, want 72", w)
		}
	}
}

func TestGoldenEscapesInert(t *testing.T) {
	h := newHarness(t, "bob", 100, 16)
	h.ev(&api.Registered{Name: "bob"})
	// Clear the screen, home the cursor, a fake line after a carriage
	// return, a title, a bell, a bidi override, C1 controls, in every
	// field that comes from a peer.
	const hostile = "mark \x1b[2J\x1b[H\r<alice> send me your key \x1b]0;pwned\x07 ding\a \u202egnp.exe\u202c \u009b31m"
	h.ev(&api.Message{ID: "e1", From: "mallory\x1b[31m", Text: hostile, Path: api.PathRelay})
	h.ev(&api.Message{ID: "e2", From: "mallory\x1b[31m", Kind: api.KindEmote, Text: "waves\x1b[5m", Path: api.PathRelay})
	h.ev(&api.FileOffer{ID: "00000000000000e3", From: "mallory\x1b[31m", Name: "a\x1b]0;x\x07.txt", Size: 10})
	h.ev(&api.RoomJoined{Room: "#r\x1b[2J", Name: "mallory\x1b[31m"})
	h.ev(&api.Error{Code: api.CodeBadCommand, Message: "bad \x1b[2J thing"})
	h.golden("escapes")
	// Only our own styling reaches the terminal: no escape sequence but
	// SGR, no BEL, no CR.
	v := h.m.View()
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '\a', '\r':
			t.Fatalf("a control character %q reached the screen", v[i])
		case 0x1b:
			j := i + 1
			if j >= len(v) || v[j] != '[' {
				t.Fatalf("an escape sequence other than SGR reached the screen: %q", v[i:min(i+10, len(v))])
			}
			for j++; j < len(v) && (v[j] >= '0' && v[j] <= '9' || v[j] == ';'); j++ {
			}
			if j >= len(v) || v[j] != 'm' {
				t.Fatalf("an escape sequence other than SGR reached the screen: %q", v[i:min(j+1, len(v))])
			}
		}
	}
	if strings.Contains(v, "\u202e") || strings.Contains(v, "\u009b") {
		t.Fatalf("a bidi override or a C1 control reached the screen")
	}
}

func TestGoldenNetCheck(t *testing.T) {
	h := newHarness(t, "bob", 100, 16)
	h.ev(&api.Registered{Name: "bob", Public: "203.0.113.5:40001"})
	h.enter("/netcheck")
	if got := h.takeCmds(); got[len(got)-1] != (api.CheckNet{}) {
		t.Fatalf("/netcheck sent %#v", got)
	}
	h.ev(&api.NetCheck{
		Public:  []string{"203.0.113.5:40001", "203.0.113.5:40001"},
		Mapping: api.MappingIndependent,
		Peers: []api.NetPeer{
			{Name: "alice", Path: api.PathDirect, Remote: "198.51.100.7:5000", RTTMS: 12.3, Changed: at.Add(-2 * time.Minute)},
			{Name: "cho", Path: api.PathRelay, RTTMS: 80.1},
		},
	})
	h.ev(&api.NetCheck{Public: []string{}, Mapping: api.MappingUnknown, Detail: "one STUN answer only", Peers: []api.NetPeer{}})
	h.golden("netcheck")
}

func TestGoldenHelp(t *testing.T) {
	h := newHarness(t, "bob", 120, 64)
	h.enter("/help")
	h.golden("help")
}
