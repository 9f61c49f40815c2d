package tui

import (
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"

	"natchat/node/api"
)

// isQuit reports whether cmd is tea.Quit.
func isQuit(cmd tea.Cmd) bool {
	if cmd == nil {
		return false
	}
	_, ok := cmd().(tea.QuitMsg)
	return ok
}

func lastCmd(t *testing.T, cmds []api.Command) api.Command {
	t.Helper()
	if len(cmds) == 0 {
		t.Fatal("no command sent")
	}
	return cmds[len(cmds)-1]
}

// Incoming messages never touch what is being typed.
func TestInputKeptWhileMessagesArrive(t *testing.T) {
	h := newHarness(t, "bob", 80, 20)
	h.ev(&api.Registered{Name: "bob"})
	h.ev(&api.Message{ID: "1", From: "alice", Text: "hi", Path: api.PathRelay})
	h.typ("half a li")
	h.key(tea.KeyMsg{Type: tea.KeyLeft})
	h.key(tea.KeyMsg{Type: tea.KeyLeft})
	for i := range 30 {
		h.ev(&api.Message{ID: string(rune('a' + i)), From: "alice", Text: "interrupting you", Path: api.PathRelay})
		h.ev(&api.PeerJoined{Name: "carol"})
		h.ev(&api.Message{ID: string(rune('A' + i)), From: "carol", Room: "#dev", Text: "elsewhere", Path: api.PathRelay})
	}
	h.ev(&api.FileOffer{ID: "00000000000000f1", From: "carol", Name: "x", Size: 1})
	if got := h.m.input.Value(); got != "half a li" {
		t.Fatalf("input is %q after messages came, want %q", got, "half a li")
	}
	if got := h.m.input.Position(); got != 7 {
		t.Fatalf("cursor at %d after messages came, want 7", got)
	}
	if got := h.inputLine(); got != "bob> half a li" {
		t.Fatalf("input line shows %q", got)
	}
	h.typ("ne")
	h.press(tea.KeyEnd)
	h.press(tea.KeyEnter)
	if got := lastCmd(t, h.takeCmds()); got != (api.Send{To: "alice", Text: "half a neli"}) {
		t.Fatalf("Enter sent %#v", got)
	}
}

func TestTabCompletion(t *testing.T) {
	h := newHarness(t, "bob", 80, 20)
	h.ev(&api.Registered{Name: "bob"})
	h.ev(&api.Peers{Peers: []api.PeerInfo{{Name: "alice", Online: true}, {Name: "Alfred", Online: true}, {Name: "carol", Online: true}}})
	h.ev(&api.Rooms{Rooms: []api.RoomInfo{{Room: "#dev"}, {Room: "#design"}, {Room: "#lobby"}}})

	tab := func() { h.press(tea.KeyTab) }
	// A command.
	h.typ("/jo")
	tab()
	if got := h.m.input.Value(); got != "/join " {
		t.Fatalf("/jo<Tab> = %q", got)
	}
	// A room, cycling.
	h.typ("#de")
	tab()
	if got := h.m.input.Value(); got != "/join #design " {
		t.Fatalf("#de<Tab> = %q", got)
	}
	tab()
	if got := h.m.input.Value(); got != "/join #dev " {
		t.Fatalf("#de<Tab><Tab> = %q", got)
	}
	h.key(tea.KeyMsg{Type: tea.KeyShiftTab})
	if got := h.m.input.Value(); got != "/join #design " {
		t.Fatalf("Shift-Tab = %q", got)
	}
	h.key(tea.KeyMsg{Type: tea.KeyCtrlU})
	// Names, case-insensitively, ours left out; in the middle of a line.
	h.typ("/msg al hello")
	for range len(" hello") {
		h.press(tea.KeyLeft)
	}
	tab()
	if got := h.m.input.Value(); got != "/msg Alfred hello" {
		t.Fatalf("name<Tab> = %q", got)
	}
	tab()
	if got := h.m.input.Value(); got != "/msg alice hello" {
		t.Fatalf("name<Tab><Tab> = %q", got)
	}
	h.key(tea.KeyMsg{Type: tea.KeyCtrlU})
	h.key(tea.KeyMsg{Type: tea.KeyCtrlK})
	h.typ("b")
	tab()
	if got := h.m.input.Value(); got != "b" {
		t.Fatalf("our own name was completed: %q", got)
	}
	// Transfer IDs after /accept.
	h.key(tea.KeyMsg{Type: tea.KeyCtrlU})
	h.ev(&api.FileOffer{ID: "00000000000000f1", From: "carol", Name: "x", Size: 1})
	h.typ("/accept ")
	tab()
	if got := h.m.input.Value(); got != "/accept 00000000000000f1 " {
		t.Fatalf("/accept <Tab> = %q", got)
	}
}

func TestInputHistory(t *testing.T) {
	h := newHarness(t, "bob", 80, 20)
	h.enter("/msg alice one")
	h.enter("two")
	h.typ("dra")
	up := func() { h.press(tea.KeyUp) }
	down := func() { h.press(tea.KeyDown) }
	up()
	if got := h.m.input.Value(); got != "two" {
		t.Fatalf("Up: %q", got)
	}
	up()
	if got := h.m.input.Value(); got != "/msg alice one" {
		t.Fatalf("Up Up: %q", got)
	}
	up()
	if got := h.m.input.Value(); got != "/msg alice one" {
		t.Fatalf("Up past the first: %q", got)
	}
	down()
	down()
	if got := h.m.input.Value(); got != "dra" {
		t.Fatalf("Down back to the draft: %q", got)
	}
	up()
	h.press(tea.KeyEnter)
	if got := lastCmd(t, h.takeCmds()); got != (api.Send{To: "alice", Text: "two"}) {
		t.Fatalf("a recalled line sent %#v", got)
	}
}

// Switching conversations puts another on screen, and plain text goes to
// the one on screen.
func TestSwitchConversations(t *testing.T) {
	h := newHarness(t, "bob", 80, 20)
	h.ev(&api.Registered{Name: "bob"})
	h.ev(&api.Message{ID: "1", From: "alice", Text: "hi", Path: api.PathRelay})
	if h.m.current().name != "alice" {
		t.Fatalf("the first conversation is not on screen: %q", h.m.current().name)
	}
	h.ev(&api.Message{ID: "2", From: "carol", Room: "#dev", Text: "room talk", Path: api.PathRelay})
	h.ev(&api.Message{ID: "3", From: "carol", Room: "#dev", Text: "more", Path: api.PathRelay})
	if c := h.m.find("#dev"); c.unread != 2 || h.m.unreadTotal() != 2 {
		t.Fatalf("unread %d in #dev, %d in all, want 2", c.unread, h.m.unreadTotal())
	}
	if !strings.Contains(h.screen(), "unread 2") || !strings.Contains(h.screen(), "3 #dev (2)") {
		t.Fatalf("unread counts not shown:\n%s", h.screen())
	}
	h.alt('3')
	if h.m.current().name != "#dev" || h.m.find("#dev").unread != 0 {
		t.Fatalf("Alt-3: on %q, unread %d", h.m.current().name, h.m.find("#dev").unread)
	}
	if !strings.Contains(h.screen(), "<carol> room talk") {
		t.Fatalf("Alt-3 does not show #dev:\n%s", h.screen())
	}
	h.takeCmds()
	h.enter("hello room")
	if got := lastCmd(t, h.takeCmds()); got != (api.Send{To: "#dev", Text: "hello room"}) {
		t.Fatalf("plain text on #dev sent %#v", got)
	}
	h.key(tea.KeyMsg{Type: tea.KeyCtrlP})
	if h.m.current().name != "alice" {
		t.Fatalf("Ctrl-P: on %q", h.m.current().name)
	}
	h.enter("/me waves")
	if got := lastCmd(t, h.takeCmds()); got != (api.Send{To: "alice", Text: "waves", Kind: api.KindEmote}) {
		t.Fatalf("/me on alice sent %#v", got)
	}
	h.key(tea.KeyMsg{Type: tea.KeyCtrlN})
	h.key(tea.KeyMsg{Type: tea.KeyCtrlN})
	if h.m.current().name != "" {
		t.Fatalf("Ctrl-N past the last: on %q, want the status view", h.m.current().name)
	}
	h.alt('2')
	if h.m.current().name != "alice" {
		t.Fatalf("Alt-2: on %q", h.m.current().name)
	}
	h.alt('9') // no ninth: stays
	if h.m.current().name != "alice" {
		t.Fatalf("Alt-9: on %q", h.m.current().name)
	}
	// On the status view, plain text has nowhere to go: a hint.
	h.alt('1')
	h.takeCmds()
	h.enter("to nobody")
	if cmds := h.takeCmds(); len(cmds) != 0 {
		t.Fatalf("plain text on the status view sent %#v", cmds)
	}
	if !strings.Contains(h.screen(), "! start a conversation with") {
		t.Fatalf("no hint for plain text on the status view:\n%s", h.screen())
	}
	// /msg NAME alone goes there, sending nothing; /msg NAME TEXT sends
	// and goes there; /join goes to the room.
	h.enter("/msg dave")
	if h.m.current().name != "dave" || len(h.takeCmds()) != 0 {
		t.Fatalf("/msg dave: on %q", h.m.current().name)
	}
	h.enter("/msg erin hi erin")
	if h.m.current().name != "erin" || lastCmd(t, h.takeCmds()) != (api.Send{To: "erin", Text: "hi erin"}) {
		t.Fatalf("/msg erin hi erin: on %q", h.m.current().name)
	}
	h.enter("/join #ops")
	if h.m.current().name != "#ops" || lastCmd(t, h.takeCmds()) != (api.Join{Room: "#ops"}) {
		t.Fatalf("/join #ops: on %q", h.m.current().name)
	}
	h.enter("/part")
	if h.m.current().name != "" || lastCmd(t, h.takeCmds()) != (api.Part{Room: "#ops"}) {
		t.Fatalf("/part: on %q", h.m.current().name)
	}
	h.enter("/msg @bad")
	if h.m.current().name != "" {
		t.Fatalf("/msg with a bad name moved to %q", h.m.current().name)
	}
}

func TestBadInputHints(t *testing.T) {
	h := newHarness(t, "bob", 120, 20)
	h.enter("/msg alice")
	h.takeCmds()
	for _, tc := range []struct{ line, hint string }{
		{"/frobnicate now", "! unknown command /frobnicate (try /help)"},
		{"/join nothash", "! "},
		{"/accept 12", "! /accept ID: ID is the 16 hex digits"},
		{"/history 0", "! usage: /history"},
		{"/join #", "! "},
		{"   ", "! message text is empty or only white space"},
		{"/msg " + strings.Repeat("x", 40), "! "},
	} {
		before := len(h.m.current().entries)
		h.enter(tc.line)
		if cmds := h.takeCmds(); len(cmds) != 0 {
			t.Errorf("%q sent %#v", tc.line, cmds)
		}
		c := h.m.current()
		if len(c.entries) != before+1 || c.entries[before].kind != entryErr {
			t.Errorf("%q: no one-line hint", tc.line)
			continue
		}
		if !strings.Contains(h.screen(), tc.hint) {
			t.Errorf("%q: the hint %q is not on screen:\n%s", tc.line, tc.hint, h.screen())
		}
	}
}

func TestLocalCommands(t *testing.T) {
	h := newHarness(t, "bob", 100, 60)
	h.enter("/msg alice")
	h.takeCmds()
	h.ev(&api.Message{ID: "1", From: "alice", Text: "hi", Path: api.PathRelay})
	h.enter("/help")
	scr := h.screen()
	for _, want := range []string{"/netcheck", "/quit (or /q)", "Ctrl-Y, Ctrl-R", "Alt-1..9"} {
		if !strings.Contains(scr, want) {
			t.Errorf("/help does not show %q", want)
		}
	}
	h.enter("/clear")
	if n := len(h.m.current().entries); n != 0 {
		t.Errorf("/clear left %d entries", n)
	}
	if strings.Contains(h.screen(), "<alice> hi") {
		t.Errorf("/clear left the conversation on screen")
	}
	if cmds := h.takeCmds(); len(cmds) != 0 {
		t.Errorf("/help and /clear sent %#v", cmds)
	}
	h.enter("/history 20")
	if got := lastCmd(t, h.takeCmds()); got != (api.History{Conv: "alice", N: 20}) {
		t.Errorf("/history 20 sent %#v", got)
	}
	h.ev(&api.HistoryEvent{Conv: "alice", Entries: []api.HistoryEntry{{ID: "1", From: "alice", Text: "hi", TS: at}}})
	if !strings.Contains(h.screen(), "<alice> hi") {
		t.Errorf("the answer to /history is not shown:\n%s", h.screen())
	}
	if cmd := h.enter("/q"); !isQuit(cmd) || lastCmd(t, h.takeCmds()) != (api.Quit{}) {
		t.Errorf("/q does not quit")
	}
}

func TestQuitKeys(t *testing.T) {
	h := newHarness(t, "bob", 80, 20)
	h.takeCmds()
	h.typ("x")
	if cmd := h.press(tea.KeyCtrlD); isQuit(cmd) || len(h.takeCmds()) != 0 {
		t.Fatal("Ctrl-D on a line that is not empty quits")
	}
	h.press(tea.KeyBackspace)
	h.press(tea.KeyCtrlD)
	if got := h.takeCmds(); !reflect.DeepEqual(got, []api.Command{api.Quit{Drain: true}}) {
		t.Fatalf("Ctrl-D on an empty line sent %#v", got)
	}
	if !strings.Contains(h.screen(), "leaving once your messages are delivered") {
		t.Fatal("Ctrl-D: no word of leaving")
	}
	// The node stops once they are: its bus closes.
	if _, cmd := h.m.Update(closedMsg{}); !isQuit(cmd) {
		t.Fatal("the bus closed and the screen stays")
	}
	if cmd := h.press(tea.KeyCtrlC); !isQuit(cmd) || lastCmd(t, h.takeCmds()) != (api.Quit{}) {
		t.Fatal("Ctrl-C does not quit at once")
	}
}

// At start the client asks for every conversation's history and shows
// them; the most recently active is on screen.
func TestHistoryAtStart(t *testing.T) {
	h := newHarness(t, "bob", 100, 20)
	if got := h.takeCmds(); !reflect.DeepEqual(got, []api.Command{api.History{N: 200}}) {
		t.Fatalf("at start the client sent %#v, want History{N: 200}", got)
	}
	old := at.Add(-50 * time.Hour)
	h.ev(&api.HistoryEvent{Conv: "#dev", Entries: []api.HistoryEntry{
		{ID: "d1", From: "ann", Text: "old news", TS: old},
		{ID: "d2", From: "bob", Text: "mine", Out: true, State: api.StateDelivered, TS: old.Add(time.Minute)},
	}})
	h.ev(&api.HistoryEvent{Conv: "alice", Entries: []api.HistoryEntry{
		{ID: "a1", From: "alice", Text: "while you slept", Via: api.ViaMailbox, TS: at.Add(-3 * time.Hour)},
		{ID: "a2", From: "bob", Text: "lost", Out: true, State: api.StateFailed, Reason: "undelivered", TS: at.Add(-2 * time.Hour)},
		{ID: "a3", From: "bob", Text: "later", Out: true, State: api.StateStored, TS: at.Add(-time.Hour)},
		{ID: "a4", From: "bob", Text: "pending", Out: true, State: api.StateSending, Kind: api.KindEmote, TS: at.Add(-time.Minute)},
	}})
	h.golden("history")
	if h.m.current().name != "alice" {
		t.Fatalf("on %q after history, want alice (the most recent)", h.m.current().name)
	}
	// A resumed send of a message in the history updates it, not a copy.
	h.ev(&api.Sent{ID: "a4", To: "alice", Text: "pending", Kind: api.KindEmote, Resumed: true})
	h.ev(&api.Delivered{ID: "a4", To: "alice"})
	if n := strings.Count(h.screen(), "pending"); n != 1 {
		t.Fatalf("the resumed message shows %d times", n)
	}
	if !strings.Contains(h.screen(), "* bob pending  ✓ delivered") {
		t.Fatalf("the resumed message's receipt is not shown:\n%s", h.screen())
	}
	// A live message shown already by the history is not shown twice.
	h.ev(&api.Message{ID: "a1", From: "alice", Text: "while you slept", Via: api.ViaMailbox})
	if n := strings.Count(h.screen(), "while you slept"); n != 1 {
		t.Fatalf("a message in the history shows %d times", n)
	}
	// The node with no history store answers with an empty event.
	h.ev(&api.HistoryEvent{Entries: []api.HistoryEntry{}})
}

func TestRendezvousState(t *testing.T) {
	h := newHarness(t, "bob", 100, 20)
	status := func() string { return strings.Split(h.screen(), "\n")[0] }
	if !strings.Contains(status(), "bob · connecting") {
		t.Fatalf("status before registering: %q", status())
	}
	h.ev(&api.Error{Code: api.CodeRendezvousUnreachable, Message: "no answer from rendezvous 192.0.2.1:3478 yet; still trying"})
	if !strings.Contains(status(), "reconnecting") {
		t.Fatalf("status after rendezvous_unreachable: %q", status())
	}
	h.ev(&api.Registered{Name: "bob", Public: "198.51.100.9:4444"})
	if !strings.Contains(status(), "bob · 198.51.100.9:4444 · connected") {
		t.Fatalf("status after registered: %q", status())
	}
	h.ev(&api.Error{Code: api.CodeRendezvousUnreachable, Message: "/rooms: timeout"})
	if !strings.Contains(status(), "connected") {
		t.Fatalf("a failed query marks the rendezvous unreachable: %q", status())
	}
	h.ev(&api.Deregistered{Name: "bob"})
	if !strings.Contains(status(), "offline") {
		t.Fatalf("status after deregistered: %q", status())
	}
}

// The people pane follows presence, paths and rooms; the answers to the
// client's own queries are not printed.
func TestPeoplePane(t *testing.T) {
	h := newHarness(t, "bob", 100, 20)
	h.ev(&api.Registered{Name: "bob"})
	h.ev(&api.Rooms{Rooms: []api.RoomInfo{{Room: "#dev", Members: 3, Online: 2}}})
	h.ev(&api.Peers{Peers: []api.PeerInfo{{Name: "ann", Path: api.PathRelay, RTTMS: 40, Online: true}}})
	h.takeCmds()
	h.alt('2')
	if got := h.takeCmds(); !reflect.DeepEqual(got, []api.Command{api.Who{Room: "#dev"}}) {
		t.Fatalf("going to #dev asked %#v, want who is in it", got)
	}
	h.ev(&api.Members{Room: "#dev", Total: 2, Members: []api.Member{{Name: "ann"}, {Name: "bob"}}})
	h.ev(&api.PathChanged{Peer: "ann", Path: api.PathDirect, Remote: "192.0.2.7:9", RTTMS: 3.4})
	scr := h.screen()
	if strings.Contains(scr, "online:") || strings.Contains(scr, "peer:") || strings.Contains(scr, "room:") {
		t.Fatalf("the answers to the client's own queries were printed:\n%s", scr)
	}
	if !strings.Contains(scr, "#dev · 2 online") || !strings.Contains(scr, "ann      direct 3ms") {
		t.Fatalf("the people pane does not show ann direct:\n%s", scr)
	}
	// A refresh of the room that fails is not printed either; a /who
	// #ROOM typed that fails is.
	h.m.refreshRoom()
	h.ev(&api.Error{Code: api.CodeNotMember, Message: "you are not in #dev"})
	if strings.Contains(h.screen(), "you are not in") {
		t.Fatalf("the failed answer to the client's own query was printed:\n%s", h.screen())
	}
	h.enter("/who #dev")
	h.ev(&api.Error{Code: api.CodeNotMember, Message: "you are not in #dev"})
	if !strings.Contains(h.screen(), "! you are not in #dev") {
		t.Fatalf("the failed answer to /who #dev was not printed:\n%s", h.screen())
	}
	h.ev(&api.PeerLeft{Name: "ann", Reason: api.ReasonQuit})
	if strings.Contains(h.screen(), "direct 3ms") {
		t.Fatalf("ann left and is still shown:\n%s", h.screen())
	}
	// A /who typed is answered on screen.
	h.enter("/who")
	h.ev(&api.Peers{Peers: []api.PeerInfo{{Name: "cho", Path: api.PathRelay, RTTMS: 80, Online: true}}})
	if !strings.Contains(h.screen(), "*** 1 peer:") {
		t.Fatalf("/who is not answered on screen:\n%s", h.screen())
	}
}

// Names keep one colour, whatever their case; in colour, it is drawn.
func TestNickColours(t *testing.T) {
	if nickColour("Alice") != nickColour("alice") {
		t.Fatal("a name's colour depends on its case")
	}
	seen := map[int]bool{}
	for _, n := range []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"} {
		seen[nickColour(n)] = true
	}
	if len(seen) < 4 {
		t.Fatalf("eight names share %d colours", len(seen))
	}
	r := lipgloss.NewRenderer(io.Discard)
	r.SetColorProfile(termenv.ANSI)
	m := newModel(modelOptions{name: "bob", renderer: r, now: func() time.Time { return at }})
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 10})
	m.apply(api.Stamp(&api.Message{ID: "1", From: "alice", Text: "hi"}, at))
	want := m.st.nicks[nickColour("alice")].Render("alice")
	if !strings.Contains(m.View(), "<"+want+">") {
		t.Fatalf("alice is not drawn in her colour (%q)", want)
	}
}

// Logs go to the log view, never to the chat.
func TestLogView(t *testing.T) {
	h := newHarness(t, "bob", 100, 20)
	h.enter("/msg alice")
	io.WriteString(h.logs, `{"level":"debug","time":"2026-03-14T15:04:05Z","message":"punching","peer":"alice"}`+"\n")
	io.WriteString(h.logs, `{"level":"warn","time":"2026-03-14T15:04:06Z","message":"rendezvous silent","rv":"192.0.2.1:3478"}`+"\n")
	io.WriteString(h.logs, "not json \x1b[2J\n")
	h.m.Update(logsMsg{})
	scr := h.screen()
	if strings.Contains(scr, "punching") || strings.Contains(scr, "rendezvous silent") {
		t.Fatalf("a log line reached the chat:\n%s", scr)
	}
	if !strings.Contains(scr, "1 warning in the log (F2)") {
		t.Fatalf("the status line does not count the warning:\n%s", scr)
	}
	h.press(tea.KeyF2)
	scr = h.screen()
	for _, want := range []string{"15:04:05 DBG punching peer=alice", "15:04:06 WRN rendezvous silent rv=192.0.2.1:3478", "not json ␛[2J"} {
		if !strings.Contains(scr, want) {
			t.Errorf("the log view does not show %q:\n%s", want, scr)
		}
	}
	if strings.Contains(scr, "warning in the log") {
		t.Errorf("the warning is still counted in the log view")
	}
	h.press(tea.KeyEsc)
	if strings.Contains(h.screen(), "punching") {
		t.Errorf("Esc does not close the log view")
	}
}

// PgUp scrolls back; what arrives meanwhile does not move the view.
func TestScroll(t *testing.T) {
	h := newHarness(t, "bob", 80, 12)
	h.enter("/msg alice")
	for i := range 40 {
		h.ev(&api.Message{ID: string(rune('a' + i)), From: "alice", Text: "line " + string(rune('a'+i)), Path: api.PathRelay})
	}
	h.press(tea.KeyPgUp)
	before := h.screen()
	if !strings.Contains(before, "more below") || strings.Contains(before, "line "+string(rune('a'+39))) {
		t.Fatalf("PgUp does not scroll back:\n%s", before)
	}
	h.ev(&api.Message{ID: "new", From: "alice", Text: "newest", Path: api.PathRelay})
	if got := h.screen(); got != before {
		t.Fatalf("a message moved the view scrolled back:\n%s\nwas:\n%s", got, before)
	}
	for range 20 {
		h.press(tea.KeyPgUp)
	}
	if !strings.Contains(h.screen(), "<alice> line a") {
		t.Fatalf("PgUp does not reach the top:\n%s", h.screen())
	}
	for range 20 {
		h.press(tea.KeyPgDown)
	}
	if scr := h.screen(); !strings.Contains(scr, "newest") || strings.Contains(scr, "more below") {
		t.Fatalf("PgDn does not come back to the end:\n%s", scr)
	}
}

func TestWrapText(t *testing.T) {
	for _, tc := range []struct {
		text        string
		first, rest int
		want        []string
	}{
		{"hello world", 20, 20, []string{"hello world"}},
		{"hello world", 5, 5, []string{"hello", "world"}},
		{"hello   big world", 11, 11, []string{"hello   big", "world"}},
		{"abcdefghij", 4, 4, []string{"abcd", "efgh", "ij"}},
		{"ab abcdefghij", 5, 5, []string{"ab ab", "cdefg", "hij"}},
		{"你好世界", 5, 5, []string{"你好", "世界"}},
		{"🎉🎉🎉", 3, 3, []string{"🎉", "🎉", "🎉"}},
		{"", 5, 5, []string{""}},
		{"  lead", 10, 10, []string{"  lead"}},
	} {
		got := wrapText(tc.text, tc.first, tc.rest)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("wrapText(%q, %d, %d) = %q, want %q", tc.text, tc.first, tc.rest, got, tc.want)
		}
		for i, l := range got {
			lim := tc.rest
			if i == 0 {
				lim = tc.first
			}
			if width(l) > lim {
				t.Errorf("wrapText(%q): line %q is %d wide, over %d", tc.text, l, width(l), lim)
			}
		}
	}
}
