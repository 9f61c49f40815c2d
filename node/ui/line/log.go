package line

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"natchat/node/ui"
)

// Log lines shown at most: a burst of warnings past maxLogQueue waiting to
// be shown is dropped and counted, and a line is cut at maxLogLen.
const (
	maxLogQueue = 64
	maxLogLen   = 300
)

// LogWriter returns where to send zerolog's JSON log lines so that they do
// not crowd the chat: entries of level warn and above are shown as system
// lines above the prompt,
//
//	15:04 ! warn: rendezvous silent for three heartbeats (rv=192.0.2.1:3478)
//
// and the rest are dropped. Write never blocks on the terminal: while Run
// runs, lines wait in a short queue (a burst past it is counted, not
// shown); before Run they wait for it; after Run they go to Out as plain
// lines. Safe for concurrent use.
func (u *UI) LogWriter() io.Writer { return u.logs }

// logSink is the writer LogWriter returns.
type logSink struct {
	now  func() time.Time
	wake chan struct{} // cap 1: lines were queued

	mu sync.Mutex
	// Guarded by mu:
	out     io.Writer // Out, written directly once Run has returned
	direct  bool      // Run has returned: write to out
	q       []string  // lines waiting to be shown
	dropped int       // lines dropped since the last shown
}

func newLogSink(out io.Writer, now func() time.Time) *logSink {
	return &logSink{out: out, now: now, wake: make(chan struct{}, 1)}
}

// Write takes one or more zerolog JSON lines.
func (l *logSink) Write(p []byte) (int, error) {
	for line := range bytes.Lines(p) {
		text, ok := renderLog(line)
		if !ok {
			continue
		}
		text = l.now().Format(timeFormat) + " " + text
		l.mu.Lock()
		switch {
		case l.direct:
			io.WriteString(l.out, text+"\n")
		case len(l.q) >= maxLogQueue:
			l.dropped++
		default:
			l.q = append(l.q, text)
		}
		l.mu.Unlock()
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// take returns the queued lines, and a line counting those dropped.
func (l *logSink) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.q
	l.q = nil
	if l.dropped > 0 {
		q = append(q, fmt.Sprintf("%s ! %d more log lines dropped", l.now().Format(timeFormat), l.dropped))
		l.dropped = 0
	}
	return q
}

// show prints queued lines on scr, from a goroutine, until stop is called;
// stop prints what is still queued.
func (l *logSink) show(scr *screen) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	flush := func() {
		for _, line := range l.take() {
			scr.print(line)
		}
	}
	wg.Go(func() {
		flush() // lines logged before Run
		for {
			select {
			case <-l.wake:
				flush()
			case <-done:
				return
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		flush()
	}
}

// detach sends every later line straight to Out, and what is queued now.
func (l *logSink) detach() {
	l.mu.Lock()
	l.direct = true
	l.mu.Unlock()
	for _, line := range l.take() {
		l.mu.Lock()
		io.WriteString(l.out, line+"\n")
		l.mu.Unlock()
	}
}

// shownLevels are the levels shown; lower ones are dropped.
var shownLevels = map[string]bool{"warn": true, "error": true, "fatal": true, "panic": true}

// skipFields are not shown: shown otherwise (level, message), noise (time,
// caller), or ourselves (node).
var skipFields = map[string]bool{"level": true, "time": true, "message": true, "msg": true, "caller": true, "node": true}

// renderLog renders one zerolog JSON line (without the time): "! LEVEL:
// MESSAGE (k=v ...)". ok is false for lines below warn and lines that are
// not a JSON object with a level.
func renderLog(line []byte) (text string, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", false
	}
	var level, msg string
	var fields []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "", false
		}
		key, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return "", false
		}
		var str string
		isStr := json.Unmarshal(v, &str) == nil
		switch {
		case key == "level" && isStr:
			level = str
		case (key == "message" || key == "msg") && isStr:
			msg = str
		case skipFields[key]:
		case isStr && str != "" && !strings.ContainsAny(str, " =\""):
			fields = append(fields, key+"="+str)
		case isStr:
			fields = append(fields, key+"="+strconv.Quote(str))
		default:
			var b bytes.Buffer
			if json.Compact(&b, v) != nil {
				return "", false
			}
			fields = append(fields, key+"="+b.String())
		}
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return "", false
	}
	if !shownLevels[level] {
		return "", false
	}
	text = "! " + level
	if msg != "" {
		text += ": " + msg
	}
	if len(fields) > 0 {
		text += " (" + strings.Join(fields, " ") + ")"
	}
	return cut(ui.Safe(text), maxLogLen), true
}

// cut shortens s to at most n bytes, on a rune boundary, marking the cut.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n - len("…")
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}
