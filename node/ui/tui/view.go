package tui

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"natchat/wire"
)

// Pane widths: the list of conversations and the list of who is online
// take a share of the width, within bounds; a narrow terminal drops the
// right pane (under 80 columns), then the list (under 40).
const (
	listMin, listMax     = 12, 22
	peopleMin, peopleMax = 18, 28
)

// panes returns the widths of the list, the conversation and the people
// panes (0: not shown).
func (m *model) panes() (lw, mw, rw int) {
	w, _ := m.size()
	if w >= 40 {
		lw = min(max(w/6, listMin), listMax)
	}
	if w >= 80 {
		rw = min(max(w/5, peopleMin), peopleMax)
	}
	mw = w - lw - rw - 2 // a space either side of the conversation
	if lw > 0 {
		mw-- // the separators
	}
	if rw > 0 {
		mw--
	}
	return lw, max(mw, 1), rw
}

func (m *model) midWidth() int {
	_, mw, _ := m.panes()
	return mw
}

// bodyHeight is the panes' height: the screen less the status and input
// lines.
func (m *model) bodyHeight() int {
	_, h := m.size()
	return max(h-2, 1)
}

// layoutInput sizes the input line to the screen.
func (m *model) layoutInput() {
	w, _ := m.size()
	m.input.Width = max(w-width(m.input.Prompt)-1, 1)
}

// View draws the screen.
func (m *model) View() string {
	w, _ := m.size()
	lw, mw, rw := m.panes()
	bh := m.bodyHeight()
	var left, right []string
	if lw > 0 {
		left = m.listPane(lw, bh)
	}
	if rw > 0 {
		right = m.peoplePane(rw, bh)
	}
	mid := m.midPane(mw, bh)
	sep := m.st.sep.Render("│")
	var b strings.Builder
	b.WriteString(m.statusLine(w))
	b.WriteByte('\n')
	for i := range bh {
		if lw > 0 {
			b.WriteString(fit(lineAt(left, i), lw) + sep)
		}
		b.WriteString(" " + fit(lineAt(mid, i), mw) + " ")
		if rw > 0 {
			b.WriteString(sep + fit(lineAt(right, i), rw))
		}
		b.WriteByte('\n')
	}
	b.WriteString(fit(m.input.View(), w))
	return b.String()
}

func lineAt(lines []string, i int) string {
	if i < len(lines) {
		return lines[i]
	}
	return ""
}

// unreadTotal counts the messages not seen yet in every conversation.
func (m *model) unreadTotal() int {
	n := 0
	for _, c := range m.convs {
		n += c.unread
	}
	return n
}

// label is a conversation's name in the list and the status line.
func (c *conv) label() string {
	if c.name == "" {
		return "status"
	}
	return s(c.name)
}

// statusLine draws the top line: us, our public endpoint, the
// rendezvous's state, unread messages, and the conversation on screen.
func (m *model) statusLine(w int) string {
	parts := []string{s(m.self)}
	if m.public != "" {
		parts = append(parts, s(m.public))
	}
	parts = append(parts, m.rv)
	if n := m.unreadTotal(); n > 0 {
		parts = append(parts, fmt.Sprintf("unread %d", n))
	}
	if len(m.offers) > 0 {
		parts = append(parts, "file offer: Ctrl-Y accept, Ctrl-R reject")
	}
	if m.quitting {
		parts = append(parts, "leaving once your messages are delivered (Ctrl-C: now)")
	}
	if m.logWarn > 0 {
		parts = append(parts, fmt.Sprintf("%s in the log (F2)", plural(m.logWarn, "warning")))
	}
	left := " " + strings.Join(parts, " · ")
	right := fmt.Sprintf(" [%d] %s ", m.cur+1, m.current().label())
	if m.showLog {
		right = " log (F2 or Esc closes) "
	}
	if width(right) > w/2 {
		right = ellipsis(right, w/2)
	}
	return m.st.bar.Render(fit(ellipsis(left, w-width(right)), w-width(right)) + right)
}

// listPane draws the list of conversations, numbered as Alt-1..9 reach
// them, with unread counts.
func (m *model) listPane(w, h int) []string {
	if m.cur < m.listTop {
		m.listTop = m.cur
	}
	if m.cur >= m.listTop+h {
		m.listTop = m.cur - h + 1
	}
	m.listTop = max(0, min(m.listTop, len(m.convs)-h))
	var out []string
	for i := m.listTop; i < len(m.convs) && len(out) < h; i++ {
		c := m.convs[i]
		num := fmt.Sprintf(" %d ", i+1)
		unread := ""
		if c.unread > 0 {
			unread = fmt.Sprintf(" (%d)", c.unread)
		}
		label := num + ellipsis(c.label(), w-len(num)-width(unread)) + unread
		switch {
		case i == m.cur:
			label = m.st.sel.Render(fit(label, w))
		case c.unread > 0:
			label = m.st.bold.Render(label)
		case c.parted:
			label = m.st.dim.Render(label)
		}
		out = append(out, label)
	}
	return out
}

// peoplePane draws who is in the conversation on screen, with the path
// to each and its round trip: a room's members online, the peer of a
// conversation, or everyone online in the status view.
func (m *model) peoplePane(w, h int) []string {
	c := m.current()
	var header string
	var names []string
	switch {
	case c.isRoom():
		names = c.memberNames()
		n := len(names)
		if c.partial {
			n = max(c.total, n) // more than the first page
		}
		header = fmt.Sprintf("%s · %d online", c.label(), n)
		if c.parted {
			header = c.label() + " · not a member"
		}
	case c.name != "":
		names = []string{c.name}
		header = c.label() + " · offline"
		if p := m.peers[wire.NameKey(c.name)]; p != nil && p.online {
			header = c.label() + " · online"
		}
	default:
		for _, p := range m.peers {
			if p.online {
				names = append(names, p.name)
			}
		}
		slices.SortFunc(names, cmpName)
		header = fmt.Sprintf("online · %d", len(names))
	}
	out := []string{" " + m.st.bold.Render(ellipsis(header, w-1))}
	// Us first, then the others by name.
	if !c.parted {
		out = append(out, m.personRow(m.self, "you", w))
	}
	for _, n := range names {
		if len(out) >= h {
			break
		}
		if wire.NameKey(n) == wire.NameKey(m.self) {
			continue
		}
		p := m.peers[wire.NameKey(n)]
		info := pathText(p)
		if info == "" && c.name != "" && !c.isRoom() {
			info = "offline"
			if p != nil && p.online {
				info = "online"
			}
		}
		out = append(out, m.personRow(n, info, w))
	}
	return out
}

// personRow draws one row of the people pane: the name in its colour,
// then info (dim).
func (m *model) personRow(name, info string, w int) string {
	infoW := width(info)
	nameW := w - 1 - infoW - 1
	if nameW < 4 {
		info, infoW, nameW = "", 0, w-1
	}
	n := ellipsis(s(name), nameW)
	row := " " + m.st.nicks[nickColour(name)].Render(n)
	if info != "" {
		row += strings.Repeat(" ", nameW-width(n)+1) + m.st.dim.Render(info)
	}
	return row
}

// midPane draws the conversation on screen (or the log), its last lines,
// scrolled back by PgUp.
func (m *model) midPane(w, h int) []string {
	if m.showLog {
		return m.logPane(w, h)
	}
	c := m.current()
	lines := m.convLines(c, w, h+c.scroll)
	return window(lines, h, &c.scroll, m.st.dim.Render("── more below: PgDn ──"))
}

// window returns the h lines of lines that end scroll lines before the
// end (clamping scroll), bottom-aligned; when scrolled back, the last line
// says so.
func window(lines []string, h int, scroll *int, more string) []string {
	*scroll = max(0, min(*scroll, len(lines)-h))
	end := len(lines) - *scroll
	start := max(0, end-h)
	out := make([]string, 0, h)
	for range h - (end - start) {
		out = append(out, "")
	}
	out = append(out, lines[start:end]...)
	if *scroll > 0 {
		out[len(out)-1] = more
	}
	return out
}

// convLines draws the last entries of c, at least need lines of them
// when there are that many, oldest first, with a line where a day
// begins.
func (m *model) convLines(c *conv, w, need int) []string {
	var offer string
	if len(m.offers) > 0 {
		offer = m.offers[len(m.offers)-1]
	}
	today := day(m.now(), m.loc())
	var blocks [][]string
	n := 0
	for i := len(c.entries) - 1; i >= 0 && n < need; i-- {
		e := c.entries[i]
		ls := m.drawEntry(e, w, e.kind == entryFile && e.xfer.id == offer)
		prev := today
		if i > 0 {
			prev = day(c.entries[i-1].ts, m.loc())
		}
		if day(e.ts, m.loc()) != prev {
			ls = append([]string{m.st.dim.Render(daySeparator(e.ts.In(m.loc()), w))}, ls...)
		}
		blocks = append(blocks, ls)
		n += len(ls)
	}
	lines := make([]string, 0, n)
	for i := len(blocks) - 1; i >= 0; i-- {
		lines = append(lines, blocks[i]...)
	}
	return lines
}

// day is t's date in loc, as a comparable value.
func day(t time.Time, loc *time.Location) int {
	y, mo, d := t.In(loc).Date()
	return y*10000 + int(mo)*100 + d
}

// logPane draws the log view.
func (m *model) logPane(w, h int) []string {
	var lines []string
	if len(m.logLines) == 0 {
		lines = append(lines, m.st.dim.Render("(nothing logged yet)"))
	}
	for _, l := range m.logLines {
		style := m.st.dim.Render
		if l.warn {
			style = m.st.warn.Render
		}
		for i, p := range wrapText(l.text, w, w-2) {
			if i > 0 {
				p = "  " + p
			}
			lines = append(lines, style(p))
		}
	}
	return window(lines, h, &m.logScroll, m.st.dim.Render("── more below: PgDn ──"))
}

// clampScroll keeps the scroll positions within what there is after a
// resize.
func (m *model) clampScroll() {
	c := m.current()
	if c.scroll > 0 {
		lines := m.convLines(c, m.midWidth(), m.bodyHeight()+c.scroll)
		c.scroll = max(0, min(c.scroll, len(lines)-m.bodyHeight()))
	}
}
