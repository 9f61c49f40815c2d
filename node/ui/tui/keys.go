package tui

import (
	"strings"

	tea "github.com/charmbracelet/bubbletea"

	"natchat/node/api"
	"natchat/node/ui"
	"natchat/wire"
)

// keysHelp is what /help says of the keys, after the commands.
const keysHelp = `keys:
  Enter                    send the line (a command, or text to the conversation on screen)
  Tab, Shift-Tab           complete a command, a name or a #room (again: the next one)
  Up, Down                 recall the lines typed before
  PgUp, PgDn               scroll the conversation (or the log)
  Alt-1..9, Alt-0          go to conversation 1..10 of the list
  Ctrl-N, Ctrl-P           go to the next or the previous conversation
  Ctrl-Y, Ctrl-R           accept or reject the latest file offer
  F2 (Esc closes)          the log
  Ctrl-L                   redraw the screen
  Ctrl-Z                   suspend (fg brings it back)
  Ctrl-D (empty line)      leave once your messages are delivered or have failed
  Ctrl-C                   leave now
  /msg NAME                (without TEXT) go to the conversation with NAME`

// key handles a key. Keys the screen does not take go to the input line.
func (m *model) key(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	ks := k.String()
	if ks != "tab" && ks != "shift+tab" {
		m.comp = nil
	}
	switch ks {
	case "ctrl+c":
		m.send(api.Quit{})
		return m, tea.Quit
	case "ctrl+d":
		if m.input.Value() == "" {
			if !m.quitting {
				m.quitting = true
				m.send(api.Quit{Drain: true})
				m.sysHere(nil, "leaving once your messages are delivered or have failed (Ctrl-C leaves now)")
			}
			return m, nil
		}
	case "enter":
		return m, m.submit()
	case "tab":
		m.complete(1)
		return m, nil
	case "shift+tab":
		m.complete(-1)
		return m, nil
	case "up":
		m.recall(-1)
		return m, nil
	case "down":
		m.recall(1)
		return m, nil
	case "pgup":
		m.scroll(1)
		return m, nil
	case "pgdown":
		m.scroll(-1)
		return m, nil
	case "ctrl+n":
		m.userSwitch((m.cur + 1) % len(m.convs))
		return m, nil
	case "ctrl+p":
		m.userSwitch((m.cur + len(m.convs) - 1) % len(m.convs))
		return m, nil
	case "ctrl+y":
		m.answerOffer(true)
		return m, nil
	case "ctrl+r":
		m.answerOffer(false)
		return m, nil
	case "f2":
		m.toggleLog()
		return m, nil
	case "esc":
		if m.showLog {
			m.toggleLog()
		}
		return m, nil
	case "ctrl+l":
		return m, tea.ClearScreen
	case "ctrl+z":
		return m, tea.Suspend
	}
	if k.Alt && k.Type == tea.KeyRunes && len(k.Runes) == 1 && !k.Paste {
		switch r := k.Runes[0]; {
		case r >= '1' && r <= '9':
			m.userSwitch(int(r - '1'))
			return m, nil
		case r == '0':
			m.userSwitch(9)
			return m, nil
		case r != 'b' && r != 'f' && r != 'd':
			return m, nil // Alt with a key of no use here is not typed as text
		}
	}
	var cmd tea.Cmd
	m.input, cmd = m.input.Update(k)
	return m, cmd
}

// userSwitch puts conversation i on screen at the user's request.
func (m *model) userSwitch(i int) {
	if i < 0 || i >= len(m.convs) {
		return
	}
	m.userMoved = true
	m.showLog = false
	m.switchTo(i)
}

// submit runs the line typed.
func (m *model) submit() tea.Cmd {
	line := m.input.Value()
	m.input.SetValue("")
	m.histPos, m.draft = len(m.hist), ""
	if line == "" {
		return nil
	}
	m.remember(line)
	if name, ok := msgOnly(line); ok {
		// /msg NAME without text: go to that conversation.
		if err := checkConv(name); err != nil {
			m.errLine(m.current(), nil, s(err.Error()))
			return nil
		}
		m.userSwitch(m.index(m.open(name)))
		return nil
	}
	if l, err := ui.Parse(line); err == nil && l.Clear {
		if m.showLog {
			m.logLines, m.logScroll = nil, 0
		} else {
			m.current().clear()
		}
		return nil
	}
	cmd, local := m.d.Input(line)
	switch e := local.(type) {
	case *api.Help:
		m.text(m.current(), nil, strings.TrimRight(ui.HelpText(), "\n")+"\n"+keysHelp, 27)
	case *api.Error:
		msg := s(e.Message)
		if e.To != "" {
			msg = "to " + s(e.To) + ": " + msg
		}
		m.errLine(m.current(), nil, msg)
	}
	if cmd == nil {
		return nil
	}
	// /msg, /join and /part move the conversation plain text goes to:
	// the screen follows.
	if t := m.d.Target(); wire.NameKey(t) != wire.NameKey(m.current().name) {
		m.userSwitch(m.index(m.open(t)))
	}
	switch c := cmd.(type) {
	case api.Quit:
		m.send(c)
		return tea.Quit
	case api.History:
		m.userHistory++
	case api.AcceptFile:
		if en := m.xfers[strings.ToLower(c.ID)]; en != nil && en.xfer.state == xferOffered {
			en.xfer.state = xferAccepting
		}
		m.dropOffer(strings.ToLower(c.ID))
	case api.RejectFile:
		m.dropOffer(strings.ToLower(c.ID))
	}
	m.send(cmd)
	return nil
}

// msgOnly reports whether line is "/msg NAME" alone, and NAME.
func msgOnly(line string) (string, bool) {
	f := strings.Fields(line)
	if len(f) == 2 && f[0] == "/msg" && strings.HasPrefix(line, "/msg ") {
		return f[1], true
	}
	return "", false
}

// checkConv checks a peer's name or a room's.
func checkConv(name string) error {
	if wire.IsRoom(name) {
		return wire.ValidateRoom(name)
	}
	return wire.ValidateName(name)
}

// remember adds line to the lines Up recalls.
func (m *model) remember(line string) {
	if n := len(m.hist); n == 0 || m.hist[n-1] != line {
		m.hist = append(m.hist, line)
		if len(m.hist) > maxInputHist {
			m.hist = append(m.hist[:0], m.hist[len(m.hist)-maxInputHist:]...)
		}
	}
	m.histPos = len(m.hist)
}

// recall puts an earlier (dir -1) or later (+1) line typed on the input
// line; past the last, what was being typed comes back.
func (m *model) recall(dir int) {
	p := m.histPos + dir
	if p < 0 || p > len(m.hist) {
		return
	}
	if m.histPos == len(m.hist) {
		m.draft = m.input.Value()
	}
	m.histPos = p
	if p == len(m.hist) {
		m.input.SetValue(m.draft)
	} else {
		m.input.SetValue(m.hist[p])
	}
	m.input.CursorEnd()
}

// scroll moves the view a page back (dir 1) or forward (-1).
func (m *model) scroll(dir int) {
	page := max(1, m.bodyHeight()-2)
	if m.showLog {
		m.logScroll = max(0, m.logScroll+dir*page)
		return
	}
	c := m.current()
	c.scroll = max(0, c.scroll+dir*page)
	if dir > 0 {
		m.clampScroll()
	}
}

// answerOffer accepts or rejects the latest file offer waiting.
func (m *model) answerOffer(accept bool) {
	if len(m.offers) == 0 {
		m.errLine(m.current(), nil, "no file offer is waiting for an answer")
		return
	}
	id := m.offers[len(m.offers)-1]
	m.offers = m.offers[:len(m.offers)-1]
	if !accept {
		m.send(api.RejectFile{ID: id})
		return
	}
	if en := m.xfers[id]; en != nil {
		en.xfer.state = xferAccepting
	}
	m.send(api.AcceptFile{ID: id})
}

// toggleLog shows or hides the log view.
func (m *model) toggleLog() {
	m.showLog = !m.showLog
	m.logScroll = 0
	if m.showLog {
		m.pullLogs()
		m.logWarn = 0
	} else {
		m.current().unread = 0 // what came meanwhile is on screen now
	}
}
