package tui

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"natchat/node/ui"
)

// maxLogLines is how many log lines the log view keeps.
const maxLogLines = 500

// logLine is one log line for the log view.
type logLine struct {
	text string // rendered, terminal-safe
	warn bool   // level warn or above
}

// logRing keeps the last log lines for the log view. Write never blocks
// on the screen. Safe for concurrent use.
type logRing struct {
	now   func() time.Time
	limit int           // lines kept
	wake  chan struct{} // cap 1: lines were added

	mu sync.Mutex
	// Guarded by mu:
	lines []logLine
	seq   int // lines ever written
}

func newLogRing(limit int, now func() time.Time) *logRing {
	return &logRing{now: now, limit: limit, wake: make(chan struct{}, 1)}
}

// Write takes one or more zerolog JSON lines (anything else is kept as it
// is, made safe).
func (l *logRing) Write(p []byte) (int, error) {
	added := false
	for line := range bytes.Lines(p) {
		ll, ok := renderLog(line, l.now())
		if !ok {
			continue
		}
		l.mu.Lock()
		l.lines = append(l.lines, ll)
		if len(l.lines) > l.limit {
			l.lines = append(l.lines[:0], l.lines[len(l.lines)-l.limit:]...)
		}
		l.seq++
		l.mu.Unlock()
		added = true
	}
	if added {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// snapshot returns a copy of the lines kept and how many were ever
// written.
func (l *logRing) snapshot() ([]logLine, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]logLine(nil), l.lines...), l.seq
}

// logsMsg tells the model the log has new lines.
type logsMsg struct{}

// pump tells the model through send whenever lines were written, until
// ctx is done.
func (l *logRing) pump(ctx context.Context, send func(tea.Msg)) {
	for {
		select {
		case <-l.wake:
			send(logsMsg{})
		case <-ctx.Done():
			return
		}
	}
}

// logLevels abbreviates zerolog's levels.
var logLevels = map[string]string{"trace": "TRC", "debug": "DBG", "info": "INF", "warn": "WRN", "error": "ERR", "fatal": "FTL", "panic": "PNC"}

// renderLog renders one zerolog JSON line: "15:04:05 WRN message k=v ...".
// A line that is not a JSON object is kept as it is. ok is false for a
// blank line.
func renderLog(line []byte, now time.Time) (logLine, bool) {
	line = bytes.TrimRight(line, "\r\n")
	if len(bytes.TrimSpace(line)) == 0 {
		return logLine{}, false
	}
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if err := dec.Decode(&fields); err != nil {
		return logLine{text: now.Format(time.TimeOnly) + " " + ui.Safe(string(line))}, true
	}
	str := func(k string) string {
		var s string
		json.Unmarshal(fields[k], &s)
		return s
	}
	level, msg := str("level"), str("message")
	at := now
	if t, err := time.Parse(time.RFC3339, str("time")); err == nil {
		at = t.In(now.Location())
	}
	var b strings.Builder
	b.WriteString(at.Format(time.TimeOnly))
	b.WriteByte(' ')
	if abbr, ok := logLevels[level]; ok {
		b.WriteString(abbr)
	} else {
		b.WriteString("???")
	}
	if msg != "" {
		b.WriteString(" " + msg)
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		switch k {
		case "level", "message", "time", "node":
		default:
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := fields[k]
		var s string
		if json.Unmarshal(v, &s) == nil {
			if s == "" || strings.ContainsAny(s, " =\"") {
				s = strconv.Quote(s)
			}
		} else {
			var c bytes.Buffer
			if json.Compact(&c, v) == nil {
				s = c.String()
			} else {
				s = string(v)
			}
		}
		b.WriteString(" " + k + "=" + s)
	}
	warn := level == "warn" || level == "error" || level == "fatal" || level == "panic"
	return logLine{text: ui.Safe(b.String()), warn: warn}, true
}
