package tui

import (
	"slices"
	"strings"

	"natchat/node/ui"
	"natchat/wire"
)

// completion is a Tab completion under way: Tab again puts the next
// candidate in place of the last.
type completion struct {
	before, after string // the input around the word completed
	cands         []string
	i             int // the candidate in place; -1 before the first
}

// complete completes the word before the cursor: a command at the start
// of the line, a #room, a transfer's ID after /accept, /reject or
// /cancel, else a name. Tab again (dir 1) or Shift-Tab (-1) cycles
// through the candidates.
func (m *model) complete(dir int) {
	if m.comp == nil {
		val := []rune(m.input.Value())
		pos := min(m.input.Position(), len(val))
		start := pos
		for start > 0 && val[start-1] != ' ' {
			start--
		}
		before := string(val[:start])
		cands := m.candidates(string(val[start:pos]), strings.Fields(before))
		if len(cands) == 0 {
			return
		}
		m.comp = &completion{before: before, after: string(val[pos:]), cands: cands, i: -1}
	}
	c := m.comp
	n := len(c.cands)
	switch {
	case c.i < 0 && dir < 0:
		c.i = n - 1
	default:
		c.i = (c.i + dir + n) % n
	}
	word := c.cands[c.i]
	if !strings.HasPrefix(c.after, " ") {
		word += " "
	}
	m.input.SetValue(c.before + word + c.after)
	m.input.SetCursor(len([]rune(c.before + word)))
}

// candidates returns the completions of word, given the words before it
// on the line.
func (m *model) candidates(word string, before []string) []string {
	var all []string
	switch {
	case len(before) == 0 && strings.HasPrefix(word, "/"):
		all = commandNames()
	case len(before) == 1 && (before[0] == "/accept" || before[0] == "/reject" || before[0] == "/cancel"):
		for id, en := range m.xfers {
			if st := en.xfer.state; st != xferDone && st != xferFailed {
				all = append(all, id)
			}
		}
		slices.Sort(all)
	case strings.HasPrefix(word, "#"):
		for _, c := range m.convs {
			if c.isRoom() {
				all = append(all, c.name)
			}
		}
		slices.SortFunc(all, cmpName)
	case word == "":
		return nil
	default:
		seen := map[string]bool{wire.NameKey(m.self): true}
		addName := func(n string) {
			if k := wire.NameKey(n); !seen[k] && !wire.IsRoom(n) {
				seen[k] = true
				all = append(all, n)
			}
		}
		// The people of the conversation on screen first.
		cur := m.current()
		if cur.isRoom() {
			for _, n := range cur.memberNames() {
				addName(n)
			}
		} else if cur.name != "" {
			addName(cur.name)
		}
		var rest []string
		for _, p := range m.peers {
			rest = append(rest, p.name)
		}
		for _, c := range m.convs[1:] {
			rest = append(rest, c.name)
		}
		slices.SortFunc(rest, cmpName)
		for _, n := range rest {
			addName(n)
		}
	}
	var out []string
	lw := strings.ToLower(word)
	for _, c := range all {
		if strings.HasPrefix(strings.ToLower(c), lw) && c != word {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		for _, c := range all {
			if c == word {
				out = append(out, c) // complete: Tab adds the space
			}
		}
	}
	return out
}

// commandNames returns the grammar's commands and their aliases, sorted.
func commandNames() []string {
	var names []string
	for _, h := range ui.Help() {
		for _, f := range strings.Fields(h.Usage) {
			f = strings.TrimRight(f, ")")
			if strings.HasPrefix(f, "/") && !slices.Contains(names, f) {
				names = append(names, f)
			}
		}
	}
	slices.Sort(names)
	return names
}
