// Package line is natchat's line UI for people: a prompt with line editing
// and input history in a terminal, events printed above the prompt, each
// line starting with the local time (15:04).
//
// Input goes through the one command grammar (ui.Dispatcher): commands go
// to the node, plain lines to the current conversation. Every string taken
// from an event (names, message text, error messages, addresses) goes
// through ui.Safe before it reaches the terminal, so a peer cannot move the
// cursor, clear the screen, set the title, ring the bell or fake a line.
//
// In a terminal, the UI puts it in raw mode and edits lines with
// golang.org/x/term: Left/Right/Home/End, Up/Down for history, Ctrl-U,
// Ctrl-W, Ctrl-K. Ctrl-C leaves at once (api.Quit); Ctrl-D on an empty line
// leaves once every message sent so far is delivered or has failed
// (api.Quit{Drain: true}), as end of input does, and Ctrl-C still leaves at
// once while it waits. The terminal is restored to its original mode on
// every way out of Run. When the input is not a terminal (a pipe, a file)
// the UI reads plain lines and prints plain lines, with no raw mode and no
// prompt.
//
// Logs must not crowd the chat: LogWriter takes zerolog's JSON lines and
// shows only warnings and errors, as system lines above the prompt.
package line

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"

	"natchat/node/api"
	"natchat/node/ui"
)

// Options configure a UI.
type Options struct {
	// Name is our name, for the prompt ("bob> ") and the greeting.
	Name string
	// In is where input comes from; nil means os.Stdin. A terminal gets raw
	// mode and line editing; anything else is read as plain lines.
	In *os.File
	// Out is where events are printed; nil means os.Stdout. When Out is an
	// *os.File that is not a terminal (output redirected), the UI runs in
	// plain mode even if In is a terminal.
	Out io.Writer
	// Now is the clock for the time shown on each line; nil means time.Now.
	// Times are shown in the location Now returns (time.Now: local).
	Now func() time.Time
}

// UI is a line UI on one input and one output. Run it once.
type UI struct {
	name string
	in   *os.File
	out  io.Writer
	now  func() time.Time
	logs *logSink
}

// New returns a UI. It does nothing to the terminal until Run.
func New(o Options) *UI {
	if o.In == nil {
		o.In = os.Stdin
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	u := &UI{name: o.Name, in: o.In, out: o.Out, now: o.Now}
	u.logs = newLogSink(o.Out, o.Now)
	return u
}

// interactive reports whether Run edits lines in a terminal: In is a
// terminal and Out is not redirected away from one.
func (u *UI) interactive() bool {
	if !term.IsTerminal(int(u.in.Fd())) {
		return false
	}
	if f, ok := u.out.(*os.File); ok && !term.IsTerminal(int(f.Fd())) {
		return false
	}
	return true
}

// Run shows the node's events and sends it the commands typed, until the
// node's event bus closes (the node stopped: /quit, Ctrl-C, Ctrl-D or end
// of input, a fatal error) or ctx is done. It returns the first error
// writing Out or switching the terminal's mode, or nil. Whichever way it
// returns, the terminal is back in the mode it was in before Run.
//
// Each event is printed before the next is asked for, which is what tells
// the node a message was shown (and its sender gets the receipt). In a
// terminal, sent events for lines typed here are not printed: the typed
// line stays on screen above the prompt. Resumed sends are printed.
//
// Input is read on a goroutine that may stay blocked on a read of In after
// Run returns (a read cannot be cancelled); once Run has returned it
// prints nothing and sends the node nothing.
func (u *UI) Run(ctx context.Context, n ui.Node) (err error) {
	sub := n.Subscribe()
	defer sub.Close()

	inCtx, stopInput := context.WithCancel(ctx)
	var d ui.Dispatcher
	scr := &screen{}
	interactive := u.interactive()

	if !interactive {
		scr.w = u.out
		stopLogs := u.logs.show(scr)
		defer func() {
			stopInput()
			stopLogs()
			scr.close()
			u.logs.detach()
		}()
		if err := scr.print(u.greeting(false)); err != nil {
			return fmt.Errorf("line: %w", err)
		}
		go u.readPlain(inCtx, n, &d, scr)
		return u.showEvents(ctx, sub, &d, scr, false)
	}

	fd := int(u.in.Fd())
	old, err := term.MakeRaw(fd)
	if err != nil {
		stopInput()
		return fmt.Errorf("line: raw mode: %w", err)
	}
	keys := newKeyReader(u.in)
	t := term.NewTerminal(struct {
		io.Reader
		io.Writer
	}{keys, u.out}, ui.Safe(u.name)+"> ")
	if w, h, err := term.GetSize(fd); err == nil && w > 0 && h > 0 {
		t.SetSize(w, h)
	}
	scr.w = t
	stopResize := watchResize(fd, t)
	stopLogs := u.logs.show(scr)
	defer func() {
		stopInput()
		stopLogs() // pending log lines are shown above the prompt
		stopResize()
		keys.stop() // bytes read from now on are not keys for us
		scr.close()
		io.WriteString(u.out, "\r\n") // leave the prompt line
		// A terminal that hung up has no mode left to restore.
		if rerr := term.Restore(fd, old); rerr != nil && err == nil && term.IsTerminal(fd) {
			err = fmt.Errorf("line: restore terminal: %w", rerr)
		}
		u.logs.detach() // later log lines go straight to Out
	}()
	if err := scr.print(u.greeting(true)); err != nil {
		return fmt.Errorf("line: %w", err)
	}
	go u.readTerminal(inCtx, n, &d, scr, t, keys)
	return u.showEvents(ctx, sub, &d, scr, true)
}

// showEvents prints the node's events until its bus closes or ctx is done.
func (u *UI) showEvents(ctx context.Context, sub *api.Sub, d *ui.Dispatcher, scr *screen, interactive bool) error {
	for {
		e, err := sub.Next(ctx)
		if err != nil {
			if errors.Is(err, api.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		d.Saw(e)
		if s, ok := e.(*api.Sent); ok && interactive && !s.Resumed {
			continue
		}
		if err := scr.print(RenderAs(e, u.now(), u.name)); err != nil {
			return fmt.Errorf("line: %w", err)
		}
		sub.Handled() // shown: recorded at once, and the receipt may go
	}
}

func (u *UI) greeting(interactive bool) string {
	s := fmt.Sprintf("%s *** natchat as %s: /msg NAME TEXT or /join #ROOM to talk, /help for more", u.now().Format(timeFormat), ui.Safe(u.name))
	if interactive {
		s += "\n" + indent + "Ctrl-D leaves once your messages are delivered, Ctrl-C at once"
	}
	return s
}

// readTerminal reads lines from the terminal until ctx is done or the node
// stops taking commands.
func (u *UI) readTerminal(ctx context.Context, n ui.Node, d *ui.Dispatcher, scr *screen, t *term.Terminal, keys *keyReader) {
	for {
		line, err := t.ReadLine()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil, errors.Is(err, term.ErrPasteIndicator):
			if !u.handle(ctx, n, d, scr, line) {
				return
			}
			continue
		case keys.ctrlC:
			// x/term reports Ctrl-C as io.EOF, like Ctrl-D on an empty
			// line; the key reader saw which it was.
		case errors.Is(err, io.EOF) && keys.err == nil:
			// Ctrl-D on an empty line: leave once sent messages are
			// settled. The Terminal cannot read lines after it returned
			// io.EOF for a key (it would return it again and again), so
			// from now on only Ctrl-C counts: it cuts the wait short.
			t.SetPrompt("")
			scr.print(u.now().Format(timeFormat) + " *** leaving once your messages are delivered or have failed (Ctrl-C leaves now)")
			if n.Do(ctx, api.Quit{Drain: true}) != nil || !waitCtrlC(keys) || ctx.Err() != nil {
				return
			}
		default:
			// The terminal went away (hang-up) or failed: end of input.
			n.Do(ctx, api.Quit{Drain: true})
			return
		}
		n.Do(ctx, api.Quit{})
		return
	}
}

// waitCtrlC reads keys until Ctrl-C, and reports whether it came (false:
// the input ended first).
func waitCtrlC(keys *keyReader) bool {
	buf := make([]byte, 64)
	for !keys.ctrlC {
		if _, err := keys.Read(buf); err != nil {
			return keys.ctrlC
		}
	}
	return true
}

// readPlain reads lines from a pipe or file; at end of input it asks the
// node to quit once sent messages are delivered or have failed.
func (u *UI) readPlain(ctx context.Context, n ui.Node, d *ui.Dispatcher, scr *screen) {
	sc := bufio.NewScanner(u.in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if ctx.Err() != nil {
			return
		}
		if !u.handle(ctx, n, d, scr, sc.Text()) {
			return
		}
	}
	if ctx.Err() != nil {
		return
	}
	if err := sc.Err(); err != nil {
		scr.print(Render(&api.Error{Code: api.CodeBadCommand, Message: "input: " + err.Error() + "; leaving"}, u.now()))
	}
	n.Do(ctx, api.Quit{Drain: true})
}

// handle runs one line of input. It reports false once the node no longer
// takes commands.
func (u *UI) handle(ctx context.Context, n ui.Node, d *ui.Dispatcher, scr *screen, line string) bool {
	cmd, local := d.Input(line)
	if local != nil {
		api.Stamp(local, u.now())
		d.Saw(local)
		scr.print(Render(local, u.now()))
	}
	if cmd != nil {
		return n.Do(ctx, cmd) == nil
	}
	return true
}

// screen is where lines are printed: the terminal (above the prompt,
// which it redraws) or Out. Safe for concurrent use.
type screen struct {
	mu sync.Mutex
	// Guarded by mu:
	w      io.Writer // *term.Terminal or Out; set before any print
	closed bool      // Run has returned: lines are dropped
}

// print prints text (one or more lines, without the last line end); ""
// prints nothing.
func (s *screen) print(text string) error {
	if text == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	_, err := io.WriteString(s.w, text+"\n")
	return err
}

// close drops every later line, and waits for a print under way.
func (s *screen) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}
