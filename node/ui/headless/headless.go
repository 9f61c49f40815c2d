// Package headless is the front end for scripts: commands on an input
// stream, one per line (the same grammar as every front end), and events on
// an output stream, one JSON object per line (docs/HEADLESS.md is the
// contract; package natchat/headless decodes it).
package headless

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
	"unicode/utf8"

	"natchat/node/api"
	"natchat/node/ui"
)

// Run reads commands from in and writes events to out until the node's
// event bus closes (it stopped: /quit, a fatal error, ctx). At end of input
// it asks the node to quit once every message sent so far is delivered or
// has failed (api.Quit{Drain: true}), and keeps writing events until then.
// It returns the first error writing out, or nil.
func Run(ctx context.Context, n ui.Node, in io.Reader, out io.Writer) error {
	sub := n.Subscribe()
	defer sub.Close()
	w := newWriter(out)
	var d ui.Dispatcher

	inCtx, stopInput := context.WithCancel(ctx)
	defer stopInput()
	// The reader may stay blocked on in after Run returns (a read cannot be
	// cancelled); it never blocks on anything else once inCtx is done.
	go readInput(inCtx, n, &d, w, in)

	for {
		e, err := sub.Next(ctx)
		if err != nil {
			if errors.Is(err, api.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		d.Saw(e)
		if err := w.write(e); err != nil {
			return err
		}
		sub.Handled() // a message is recorded as shown right after it is written
	}
}

func readInput(ctx context.Context, n ui.Node, d *ui.Dispatcher, w *writer, in io.Reader) {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		cmd, local := d.Input(sc.Text())
		if local != nil {
			w.write(api.Stamp(local, time.Now()))
		}
		if cmd != nil {
			if n.Do(ctx, cmd) != nil {
				return
			}
		}
	}
	if err := sc.Err(); err != nil {
		w.write(api.Stamp(&api.Error{Code: api.CodeBadCommand, Message: "input: " + err.Error() + "; quitting"}, time.Now()))
	}
	n.Do(ctx, api.Quit{Drain: true})
}

// writer writes events as JSON lines, one at a time.
type writer struct {
	mu  sync.Mutex
	out io.Writer
	js  bytes.Buffer // what enc writes: one event's JSON line
	enc *json.Encoder
	buf []byte
}

func newWriter(out io.Writer) *writer {
	w := &writer{out: out}
	w.enc = json.NewEncoder(&w.js)
	w.enc.SetEscapeHTML(false)
	return w
}

func (w *writer) write(e api.Event) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.js.Reset()
	if err := w.enc.Encode(e); err != nil {
		return err
	}
	w.buf = escapeControls(w.buf[:0], w.js.Bytes()) // keeps Encode's newline
	_, err := w.out.Write(w.buf)
	return err
}

// escapeControls appends js (JSON from encoding/json) to dst with the
// characters a terminal may act on that encoding/json leaves raw written
// as \uXXXX escapes: DEL, the C1 controls (U+009B alone starts a control
// sequence in some terminals) and the bidirectional formatting characters
// (which reorder what follows them on screen). They can only stand inside
// strings, where the escape decodes to the same text, so a script reads
// what the peer sent and a person who runs headless in a terminal sees no
// peer-made control sequence.
func escapeControls(dst, js []byte) []byte {
	for _, r := range string(js) {
		switch {
		case r == 0x7f, r >= 0x80 && r <= 0x9f,
			r == 0x061c, r == 0x200e, r == 0x200f,
			r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
			dst = fmt.Appendf(dst, `\u%04x`, r)
		default:
			dst = utf8.AppendRune(dst, r)
		}
	}
	return dst
}
