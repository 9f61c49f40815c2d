package tui

import (
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/progress"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"

	"natchat/node/api"
	"natchat/node/ui"
	"natchat/wire"
)

// timeFormat is the time at the start of every line.
const timeFormat = "15:04"

// s is ui.Safe, short: every string from a peer or an event goes through
// it before it is drawn.
func s(str string) string { return ui.Safe(str) }

// styles are the screen's styles, from one renderer (the terminal's
// colour profile; tests use none).
type styles struct {
	r        *lipgloss.Renderer
	bar      lipgloss.Style // the status line
	barDim   lipgloss.Style
	sel      lipgloss.Style // the conversation on screen, in the list
	bold     lipgloss.Style
	dim      lipgloss.Style
	sys      lipgloss.Style
	err      lipgloss.Style
	ok       lipgloss.Style
	warn     lipgloss.Style
	sep      lipgloss.Style
	prompt   lipgloss.Style
	nicks    []lipgloss.Style
	progress progress.Model
}

// palette is the colours names are drawn in (ANSI colours, which every
// colour terminal has and themes keep readable); red is left for errors.
var palette = []string{"2", "3", "4", "5", "6", "10", "11", "12", "13", "14"}

func newStyles(r *lipgloss.Renderer) *styles {
	st := &styles{
		r:      r,
		bar:    r.NewStyle().Reverse(true),
		barDim: r.NewStyle().Reverse(true).Faint(true),
		sel:    r.NewStyle().Reverse(true),
		bold:   r.NewStyle().Bold(true),
		dim:    r.NewStyle().Faint(true),
		sys:    r.NewStyle().Foreground(lipgloss.Color("6")),
		err:    r.NewStyle().Foreground(lipgloss.Color("1")),
		ok:     r.NewStyle().Foreground(lipgloss.Color("2")),
		warn:   r.NewStyle().Foreground(lipgloss.Color("3")),
		sep:    r.NewStyle().Faint(true),
		prompt: r.NewStyle().Bold(true),
	}
	for _, c := range palette {
		st.nicks = append(st.nicks, r.NewStyle().Foreground(lipgloss.Color(c)))
	}
	st.progress = progress.New(progress.WithColorProfile(r.ColorProfile()), progress.WithoutPercentage(),
		progress.WithSolidFill("4"), progress.WithFillCharacters('█', '░'))
	st.progress.EmptyColor = "8"
	return st
}

// nickColour returns the palette index of name: the same for a name
// (whatever its case) every time and everywhere.
func nickColour(name string) int {
	h := fnv.New32a()
	h.Write([]byte(wire.NameKey(name)))
	return int(h.Sum32() % uint32(len(palette)))
}

// nick draws name (made safe) in its colour.
func (st *styles) nick(name string) string {
	return st.nicks[nickColour(name)].Render(s(name))
}

// width is a string's width in cells (ANSI sequences take none; wide
// characters, CJK and emoji, take two).
func width(str string) int { return ansi.StringWidth(str) }

// fit cuts str to w cells and pads it with spaces to exactly w.
func fit(str string, w int) string {
	if w <= 0 {
		return ""
	}
	if width(str) > w {
		str = ansi.Truncate(str, w, "")
	}
	if n := w - width(str); n > 0 {
		str += strings.Repeat(" ", n)
	}
	return str
}

// ellipsis cuts plain str to w cells, marking the cut.
func ellipsis(str string, w int) string {
	if w <= 0 {
		return ""
	}
	if width(str) <= w {
		return str
	}
	return ansi.Truncate(str, w, "…")
}

// wrapText breaks plain (unstyled) text into lines: the first at most
// first cells wide, the others at most rest, at spaces where it can and
// between grapheme clusters where a word is too long. Spaces at a break
// are dropped.
func wrapText(text string, first, rest int) []string {
	first, rest = max(first, 1), max(rest, 1)
	var lines []string
	var cur strings.Builder
	curW, lim := 0, first
	flush := func() {
		lines = append(lines, cur.String())
		cur.Reset()
		curW, lim = 0, rest
	}
	for text != "" {
		// The next run of spaces, then the next word.
		sp := len(text) - len(strings.TrimLeft(text, " "))
		spaces := text[:sp]
		text = text[sp:]
		end := strings.IndexByte(text, ' ')
		if end < 0 {
			end = len(text)
		}
		word := text[:end]
		text = text[end:]
		if word == "" {
			break // trailing spaces
		}
		ww := width(word)
		switch {
		case curW > 0 && curW+len(spaces)+ww <= lim:
			cur.WriteString(spaces + word)
			curW += len(spaces) + ww
			continue
		case curW > 0 && ww <= rest:
			flush()
		case curW > 0:
			// A word longer than a line: start it here, after a space.
			if curW+1 < lim {
				cur.WriteByte(' ')
				curW++
			} else {
				flush()
			}
		case len(lines) == 0 && len(spaces)+ww <= lim:
			word = spaces + word // the text's leading spaces stay
			ww += len(spaces)
		}
		if curW+ww <= lim {
			cur.WriteString(word)
			curW += ww
			continue
		}
		// Place word from here, breaking it between clusters.
		for word != "" {
			cluster, cw := ansi.FirstGraphemeCluster(word, ansi.GraphemeWidth)
			if curW > 0 && curW+cw > lim {
				flush()
			}
			cur.WriteString(cluster)
			curW += cw
			word = word[len(cluster):]
		}
	}
	if cur.Len() > 0 || len(lines) == 0 {
		lines = append(lines, cur.String())
	}
	return lines
}

// block draws one entry: prefix (already styled, prefixW cells wide) then
// body wrapped to w cells, with continuation lines indented under the
// body (or under the time when the prefix is wide). style is applied to
// each piece of the body; suffix (plain, drawn with suffixStyle) goes
// after the body, wrapped on lines of its own when it does not fit.
// body, on a line of its own when it does not fit.
func block(prefix string, prefixW int, body string, style func(...string) string, suffix string, suffixStyle func(...string) string, w int) []string {
	indent := prefixW
	if indent > w/3 {
		indent = min(len(timeFormat)+1, w/3)
	}
	parts := wrapText(body, w-prefixW, w-indent)
	pad := strings.Repeat(" ", indent)
	out := make([]string, 0, len(parts)+1)
	for i, p := range parts {
		if style != nil && p != "" {
			p = style(p)
		}
		if i == 0 {
			out = append(out, prefix+p)
		} else {
			out = append(out, pad+p)
		}
	}
	if suffix != "" {
		last := out[len(out)-1]
		if width(last)+2+width(suffix) <= w {
			out[len(out)-1] = last + "  " + suffixStyle(suffix)
		} else {
			for _, p := range wrapText(suffix, w-indent, w-indent) {
				out = append(out, pad+suffixStyle(p))
			}
		}
	}
	return out
}

// drawEntry draws e for a pane w cells wide. loc is the time zone shown;
// offerKeys marks the offer Ctrl-Y and Ctrl-R act on.
func (m *model) drawEntry(e *entry, w int, offerKeys bool) []string {
	st := m.st
	at := e.ts.In(m.loc()).Format(timeFormat)
	tprefix := st.dim.Render(at) + " "
	tw := len(timeFormat) + 1
	switch e.kind {
	case entryText:
		var out []string
		ind := min(e.indent, w/2)
		for _, l := range strings.Split(e.text, "\n") {
			for i, p := range wrapText(l, w, w-ind) {
				if i > 0 {
					p = strings.Repeat(" ", ind) + p
				}
				out = append(out, st.sys.Render(p))
			}
		}
		return out
	case entrySys:
		return block(tprefix, tw, "*** "+e.text, st.sys.Render, "", nil, w)
	case entryErr:
		return block(tprefix, tw, "! "+e.text, st.err.Render, "", nil, w)
	case entryFile:
		return m.drawTransfer(e, tprefix, tw, w, offerKeys)
	}
	// A message.
	var suffix string
	suffixStyle := st.dim.Render
	if e.out {
		suffix, suffixStyle = m.stateText(e)
	} else if e.via == api.ViaMailbox {
		suffix = "✉ from your mailbox"
	}
	if e.emote {
		name := s(e.from)
		prefix := tprefix + "* " + st.nick(e.from) + " "
		pw := tw + 2 + width(name) + 1
		if pw > w/2 {
			// A name too long for the line: let it wrap with the text.
			return block(tprefix, tw, "* "+name+" "+s(e.text), nil, suffix, suffixStyle, w)
		}
		return block(prefix, pw, s(e.text), nil, suffix, suffixStyle, w)
	}
	name := s(e.from)
	prefix := tprefix + "<" + st.nick(e.from) + "> "
	pw := tw + width(name) + 3
	if pw > w/2 {
		return block(tprefix, tw, "<"+name+"> "+s(e.text), nil, suffix, suffixStyle, w)
	}
	return block(prefix, pw, s(e.text), nil, suffix, suffixStyle, w)
}

// stateText says the state of one of our messages, and how to draw it.
func (m *model) stateText(e *entry) (string, func(...string) string) {
	st := m.st
	var text string
	style := st.dim.Render
	switch e.state {
	case api.StateSending:
		text = "… sending"
		if e.resumed {
			text = "… sending again"
		}
	case api.StateDelivered:
		text = "✓ delivered"
		if e.members != "" {
			text += " " + s(e.members)
		}
		style = st.ok.Render
	case api.StateStored:
		text = "✉ stored for later delivery"
	case api.StateFailed:
		text = "✗ failed"
		if e.reason != "" {
			text += ": " + s(e.reason)
		}
		style = st.err.Render
	default:
		return "", style
	}
	if e.stored > 0 && e.state != api.StateStored {
		text += fmt.Sprintf(", %d stored for later", e.stored)
	}
	if e.failed > 0 && e.state != api.StateFailed {
		text += fmt.Sprintf(", %d failed", e.failed)
	}
	return text, style
}

// drawTransfer draws a file transfer as it stands.
func (m *model) drawTransfer(e *entry, tprefix string, tw, w int, offerKeys bool) []string {
	st := m.st
	x := e.xfer
	name := s(x.name)
	arrow := "⇪"
	if x.incoming {
		arrow = "⇩"
	}
	switch x.state {
	case xferOffered:
		if x.incoming {
			body := fmt.Sprintf("%s %s offers %s (%s), id %s", arrow, s(x.peer), name, sizeText(x.size), s(x.id))
			keys := fmt.Sprintf("/accept %s or /reject %s", s(x.id), s(x.id))
			if offerKeys {
				keys = "Ctrl-Y accept · Ctrl-R reject"
			}
			return block(tprefix, tw, body, nil, keys, st.warn.Render, w)
		}
		body := fmt.Sprintf("%s %s (%s) offered to %s", arrow, name, sizeText(x.size), s(x.peer))
		hint := "waiting · /cancel " + s(x.id)
		return block(tprefix, tw, body, nil, hint, st.dim.Render, w)
	case xferAccepting:
		body := fmt.Sprintf("%s %s (%s) from %s", arrow, name, sizeText(x.size), s(x.peer))
		return block(tprefix, tw, body, nil, "accepted, starting…", st.dim.Render, w)
	case xferMoving:
		p := x.progress
		total := max(p.Total, x.size)
		var frac float64
		if total > 0 {
			frac = float64(min(max(p.Bytes, 0), total)) / float64(total)
		}
		eta := "?"
		if p.ETAS > 0 {
			eta = (time.Duration(p.ETAS) * time.Second).String()
		}
		info := fmt.Sprintf("%s of %s · %s/s · %s left", sizeText(p.Bytes), sizeText(total), sizeText(p.RateBPS), eta)
		if p.Path != "" {
			info += " · " + s(p.Path)
		}
		head := fmt.Sprintf("%s %s ", arrow, ellipsis(name, max(8, w/4)))
		pct := fmt.Sprintf(" %3.0f%%", frac*100)
		barW := min(30, w-tw-width(head)-width(pct))
		lines := []string{}
		if barW >= 5 {
			bar := st.progress
			bar.Width = barW
			lines = append(lines, tprefix+head+bar.ViewAs(frac)+pct)
		} else {
			lines = append(lines, tprefix+head+pct)
		}
		pad := strings.Repeat(" ", min(tw, w/3))
		for _, p := range wrapText(info, w-len(pad), w-len(pad)) {
			lines = append(lines, pad+st.dim.Render(p))
		}
		return lines
	case xferDone:
		body := fmt.Sprintf("✓ %s (%s) sent to %s", name, sizeText(x.size), s(x.peer))
		if x.incoming {
			body = fmt.Sprintf("✓ %s (%s) from %s saved to %s", name, sizeText(x.size), s(x.peer), s(x.path))
		}
		return block(tprefix, tw, body, st.ok.Render, "", nil, w)
	}
	body := fmt.Sprintf("✗ %s from %s: %s", name, s(x.peer), s(x.reason))
	if !x.incoming {
		body = fmt.Sprintf("✗ %s to %s: %s", name, s(x.peer), s(x.reason))
	}
	return block(tprefix, tw, body, st.err.Render, "", nil, w)
}

// sizeText writes a byte count for people: 512 B, 1.5 KiB, 50.0 MiB.
func sizeText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// pathText draws a peer's path and round trip, short: "direct 12ms".
func pathText(p *peer) string {
	if p == nil || p.path == "" || p.path == api.PathNone {
		return ""
	}
	str := s(p.path)
	if p.rttMS > 0 {
		str += fmt.Sprintf(" %.0fms", p.rttMS)
	}
	return str
}

// daySeparator is the line before the first entry of a day.
func daySeparator(t time.Time, w int) string {
	label := " " + t.Format("Mon 2 Jan 2006") + " "
	side := max(0, (w-width(label))/2)
	return strings.Repeat("─", side) + label + strings.Repeat("─", max(0, w-side-width(label)))
}
