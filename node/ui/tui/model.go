package tui

import (
	"time"

	"github.com/charmbracelet/bubbles/cursor"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"natchat/node/api"
	"natchat/node/ui"
	"natchat/wire"
)

// Limits.
const (
	startHistory = 200  // messages per conversation asked for at start
	maxEntries   = 5000 // entries a conversation keeps on screen (the node keeps its history)
	maxInputHist = 200  // lines Up recalls
	refreshEvery = 5 * time.Second
)

// modelOptions configure a model.
type modelOptions struct {
	name     string
	now      func() time.Time
	renderer *lipgloss.Renderer
	// send queues a command for the node; it must not block.
	send func(api.Command)
	// logs is the log the log view shows; nil: none.
	logs *logRing
}

// model is the whole screen's state: the conversations, what we know of
// the peers, the input line. It is a bubbletea Model and does no I/O: the
// node's events come in as eventMsg, commands go out through send.
type model struct {
	self string
	now  func() time.Time
	st   *styles
	send func(api.Command)
	logs *logRing
	d    ui.Dispatcher // its target is always the conversation on screen

	width, height int // 0 until the terminal's size is known

	convs     []*conv // convs[0] is the status view
	cur       int     // the conversation on screen
	listTop   int     // the first conversation shown in the list
	userMoved bool    // the user chose a conversation: history no longer picks one

	rv, public string // the rendezvous's state; our public endpoint as it sees it

	peers map[string]*peer  // by wire.NameKey
	xfers map[string]*entry // file transfers by ID
	// offers are the IDs of offers to us waiting for an answer, oldest
	// first; Ctrl-Y and Ctrl-R answer the last.
	offers []string

	// Answers to the model's own queries (for the panes) are not printed.
	silentPeers, silentRooms int
	silentMembers            map[string]int // by room's NameKey
	roomsStale               bool           // presence changed: the room pane is refreshed at the next tick
	ticks                    int
	userHistory              int // /history commands typed, not answered yet

	input   textinput.Model
	hist    []string // lines typed, oldest first
	histPos int      // len(hist) when not recalling
	draft   string   // what was typed before recalling
	comp    *completion

	showLog   bool
	logLines  []logLine
	logSeq    int // log lines ever written, as far as the model knows
	logWarn   int // warnings logged while the log view was hidden
	logScroll int

	quitting bool // Ctrl-D: leaving once messages are delivered
}

var _ tea.Model = (*model)(nil)

func newModel(o modelOptions) *model {
	if o.now == nil {
		o.now = time.Now
	}
	if o.send == nil {
		o.send = func(api.Command) {}
	}
	st := newStyles(o.renderer)
	m := &model{
		self: o.name, now: o.now, st: st, send: o.send, logs: o.logs,
		rv:            rvConnecting,
		convs:         []*conv{newConv("")},
		peers:         make(map[string]*peer),
		xfers:         make(map[string]*entry),
		silentMembers: make(map[string]int),
	}
	ti := textinput.New()
	ti.Prompt = s(o.name) + "> "
	ti.PromptStyle = st.prompt
	ti.Cursor.Style = o.renderer.NewStyle().Reverse(true)
	ti.Cursor.SetMode(cursor.CursorStatic)
	ti.CharLimit = 4 * wire.MaxTextLen
	// Keys the model handles itself, and no clipboard programs.
	ti.KeyMap.Paste.SetEnabled(false)
	ti.KeyMap.AcceptSuggestion.SetEnabled(false)
	ti.KeyMap.NextSuggestion.SetEnabled(false)
	ti.KeyMap.PrevSuggestion.SetEnabled(false)
	ti.Focus()
	m.input = ti
	m.layoutInput()
	return m
}

// Init asks the node for the conversations' history and starts the
// refresh of the panes.
func (m *model) Init() tea.Cmd {
	m.sys(m.status(), nil, "natchat as "+s(m.self)+": /msg NAME to talk to someone, /join #ROOM for a room, /help for more; Ctrl-C quits")
	m.send(api.History{N: startHistory})
	return tick()
}

type tickMsg struct{}

func tick() tea.Cmd { return tea.Tick(refreshEvery, func(time.Time) tea.Msg { return tickMsg{} }) }

// Update applies one message.
func (m *model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.layoutInput()
		m.clampScroll()
	case eventMsg:
		m.apply(msg.ev)
		if msg.applied != nil {
			close(msg.applied)
		}
	case closedMsg:
		return m, tea.Quit
	case logsMsg:
		m.pullLogs()
	case tickMsg:
		m.ticks++
		m.refreshPeers()
		if m.roomsStale || m.ticks%6 == 0 {
			m.refreshRoom()
		}
		return m, tick()
	case tea.KeyMsg:
		return m.key(msg)
	}
	return m, nil
}

// size returns the screen's size (80×24 until the terminal says).
func (m *model) size() (w, h int) {
	w, h = m.width, m.height
	if w <= 0 || h <= 0 {
		return 80, 24
	}
	return w, h
}

func (m *model) loc() *time.Location { return m.now().Location() }

// when says when t was, in our time zone: the time on the day it is
// shown, else with its date.
func (m *model) when(t time.Time) string {
	now := m.now()
	t = t.In(now.Location())
	if t.Year() == now.Year() && t.YearDay() == now.YearDay() {
		return t.Format(timeFormat)
	}
	return t.Format("Jan 2 " + timeFormat)
}

// status returns the status view.
func (m *model) status() *conv { return m.convs[0] }

// current returns the conversation on screen.
func (m *model) current() *conv { return m.convs[m.cur] }

// find returns the conversation with name (a peer or a room), or nil.
func (m *model) find(name string) *conv {
	if name == "" {
		return nil
	}
	k := wire.NameKey(name)
	for _, c := range m.convs[1:] {
		if wire.NameKey(c.name) == k {
			return c
		}
	}
	return nil
}

// open returns the conversation with name, making it when there is none
// (at the end of the list); "" is the status view.
func (m *model) open(name string) *conv {
	if name == "" {
		return m.status()
	}
	if c := m.find(name); c != nil {
		return c
	}
	c := newConv(name)
	m.convs = append(m.convs, c)
	return c
}

// convOrHere returns the conversation with name if there is one, else the
// one on screen.
func (m *model) convOrHere(name string) *conv {
	if c := m.find(name); c != nil {
		return c
	}
	return m.current()
}

func (m *model) index(c *conv) int {
	for i, x := range m.convs {
		if x == c {
			return i
		}
	}
	return 0
}

// switchTo puts conversation i on screen and makes it the one plain text
// goes to.
func (m *model) switchTo(i int) {
	if i < 0 || i >= len(m.convs) {
		return
	}
	m.cur = i
	c := m.convs[i]
	c.unread = 0
	m.d.SetTarget(c.name)
	if c.isRoom() {
		m.refreshRoom()
	}
}

// peer returns what we know of the peer name, making an entry.
func (m *model) peer(name string) *peer {
	k := wire.NameKey(name)
	p := m.peers[k]
	if p == nil {
		p = &peer{name: name, path: api.PathNone}
		m.peers[k] = p
	}
	return p
}

// refreshPeers asks the node who is online and the paths (for the panes).
func (m *model) refreshPeers() {
	m.silentPeers++
	m.send(api.Who{})
}

// refreshRoom asks the rendezvous who is online in the room on screen.
func (m *model) refreshRoom() {
	c := m.current()
	if !c.isRoom() || c.parted || m.rv != rvConnected {
		return
	}
	m.roomsStale = false
	m.silentMembers[wire.NameKey(c.name)]++
	m.send(api.Who{Room: c.name})
}

// ts is when ev happened, or now.
func (m *model) ts(ev api.Event) time.Time {
	if ev != nil {
		if h := api.HeaderOf(ev); !h.TS.IsZero() {
			return h.TS
		}
	}
	return m.now()
}

// add appends e to c.
func (m *model) add(c *conv, e *entry) {
	h := 0
	if c.scroll > 0 {
		h = len(m.drawEntry(e, m.midWidth(), false))
	}
	c.add(e, h)
	if n := len(c.entries); n > maxEntries {
		drop := n - maxEntries*9/10
		for _, old := range c.entries[:drop] {
			if old.id != "" && c.byID[old.id] == old {
				delete(c.byID, old.id)
			}
		}
		c.entries = append(c.entries[:0:0], c.entries[drop:]...)
	}
	if e.kind == entryMsg && !e.out && (c != m.current() || m.showLog) {
		c.unread++
	}
}

// sys adds a system line ("*** text"; text already safe) to c.
func (m *model) sys(c *conv, ev api.Event, text string) {
	m.add(c, &entry{kind: entrySys, ts: m.ts(ev), text: text})
}

// sysHere adds a system line to the conversation on screen.
func (m *model) sysHere(ev api.Event, text string) { m.sys(m.current(), ev, text) }

// errLine adds an error line ("! text"; text already safe) to c.
func (m *model) errLine(c *conv, ev api.Event, text string) {
	m.add(c, &entry{kind: entryErr, ts: m.ts(ev), text: text})
}

// text adds preformatted lines (already safe) to c; lines that wrap go on
// indent cells in.
func (m *model) text(c *conv, ev api.Event, text string, indent int) {
	m.add(c, &entry{kind: entryText, ts: m.ts(ev), text: text, indent: indent})
}

// pullLogs takes the log lines written since the last look.
func (m *model) pullLogs() {
	if m.logs == nil {
		return
	}
	lines, seq := m.logs.snapshot()
	fresh := min(seq-m.logSeq, len(lines))
	if !m.showLog {
		for _, l := range lines[len(lines)-fresh:] {
			if l.warn {
				m.logWarn++
			}
		}
	} else if m.logScroll > 0 {
		m.logScroll += fresh
	}
	m.logLines, m.logSeq = lines, seq
}
