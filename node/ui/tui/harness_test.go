package tui

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/muesli/termenv"

	"natchat/node/api"
)

var update = flag.Bool("update", false, "rewrite the golden screens in testdata/")

// at is the tests' clock: a fixed time, in UTC.
var at = time.Date(2026, 3, 14, 15, 4, 5, 0, time.UTC)

// harness drives a model as bubbletea would, without a terminal: keys
// and events in, the screen out. Commands for the node are recorded.
type harness struct {
	t    *testing.T
	m    *model
	now  time.Time
	cmds []api.Command
	logs *logRing
}

func newHarness(t *testing.T, name string, w, h int) *harness {
	t.Helper()
	r := lipgloss.NewRenderer(io.Discard)
	r.SetColorProfile(termenv.Ascii)
	hs := &harness{t: t, now: at}
	hs.logs = newLogRing(maxLogLines, func() time.Time { return hs.now })
	hs.m = newModel(modelOptions{
		name:     name,
		now:      func() time.Time { return hs.now },
		renderer: r,
		send:     func(c api.Command) { hs.cmds = append(hs.cmds, c) },
		logs:     hs.logs,
	})
	hs.m.Init()
	hs.resize(w, h)
	return hs
}

func (h *harness) resize(w, ht int) { h.m.Update(tea.WindowSizeMsg{Width: w, Height: ht}) }

// ev gives the model one event from the node, stamped now, and checks the
// model says it applied it.
func (h *harness) ev(e api.Event) {
	h.t.Helper()
	api.Stamp(e, h.now)
	applied := make(chan struct{})
	h.m.Update(eventMsg{ev: e, applied: applied})
	select {
	case <-applied:
	default:
		h.t.Fatalf("the model did not mark %T applied", e)
	}
}

// typ types text, one key a rune.
func (h *harness) typ(text string) {
	for _, r := range text {
		h.key(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
	}
}

// key presses a key and returns the command the model gave back.
func (h *harness) key(k tea.KeyMsg) tea.Cmd {
	_, cmd := h.m.Update(k)
	return cmd
}

func (h *harness) press(t tea.KeyType) tea.Cmd { return h.key(tea.KeyMsg{Type: t}) }

func (h *harness) alt(r rune) tea.Cmd {
	return h.key(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}, Alt: true})
}

// enter types line and presses Enter.
func (h *harness) enter(line string) tea.Cmd {
	h.typ(line)
	return h.press(tea.KeyEnter)
}

// takeCmds returns the commands sent since the last call.
func (h *harness) takeCmds() []api.Command {
	c := h.cmds
	h.cmds = nil
	return c
}

// screen returns the screen as text, colours and attributes stripped,
// after checking it is exactly the terminal's size.
func (h *harness) screen() string {
	h.t.Helper()
	v := h.m.View()
	lines := strings.Split(v, "\n")
	w, ht := h.m.size()
	if len(lines) != ht {
		h.t.Errorf("the screen has %d lines, want %d", len(lines), ht)
	}
	for i, l := range lines {
		if got := lipgloss.Width(l); got != w {
			h.t.Errorf("line %d is %d cells wide, want %d: %q", i, got, w, ansi.Strip(l))
		}
	}
	return ansi.Strip(v)
}

// golden compares the screen with testdata/NAME.golden (-update writes
// it).
func (h *harness) golden(name string) {
	h.t.Helper()
	got := h.screen() + "\n"
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			h.t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		h.t.Fatalf("%v (run go test -update to write it)", err)
	}
	if got != string(want) {
		h.t.Errorf("screen %s differs from %s (go test -update rewrites it):\n--- got:\n%s--- want:\n%s", name, path, got, want)
	}
}

// inputLine returns the input line as shown.
func (h *harness) inputLine() string {
	s := strings.Split(h.screen(), "\n")
	return strings.TrimRight(s[len(s)-1], " ")
}
