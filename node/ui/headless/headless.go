// Package headless is the front end for scripts: commands on an input
// stream, one per line (the same grammar as every front end), and events on
// an output stream, one JSON object per line (docs/HEADLESS.md is the
// contract; package natchat/headless decodes it).
package headless

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"time"

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
	w := &writer{enc: json.NewEncoder(out)}
	w.enc.SetEscapeHTML(false)
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
	enc *json.Encoder
}

func (w *writer) write(e api.Event) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.enc.Encode(e)
}
