// Package tui is natchat's full-screen terminal client, in the manner of
// weechat, irssi and gomuks, built on bubbletea, bubbles and lipgloss:
//
//	 bob · 127.0.0.1:36739 · connected · unread 1                     [3] #dev
//	 1 status   │                                        │ #dev · 2 online
//	 2 #lobby   │ 06:03 <carol> morning all              │ bob          you
//	 3 #dev     │ 06:03 <bob> morning carol  ✓ delivered │ alice direct 5ms
//	 4 alice (1)│ 06:03 * alice goes out to buy snacks   │
//	            │ 06:03 *** carol has left the chat      │
//	bob> see you at 12, I'll bring
//
// A status line at the top (our name, our public endpoint, the
// rendezvous's state, unread messages), the conversations (rooms and
// peers, with unread counts) on the left, the conversation on screen in
// the middle, who is online in it on the right (with the path to each and
// its round trip), and the input line at the bottom. Incoming messages
// never touch what is being typed.
//
// Every command goes through the one grammar (ui.Dispatcher); the
// conversation plain text goes to is always the one on screen. The node's
// events come in on a goroutine reading its api.Sub and reach the model as
// messages; a message is marked handled (its sender gets the receipt) once
// the model has applied it. Every string from a peer goes through ui.Safe
// before it is drawn.
//
// Logs never reach the chat screen: LogWriter keeps the last lines for a
// log view (F2), and the command line sends them to a file as well.
package tui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"golang.org/x/term"

	"natchat/node/api"
	"natchat/node/ui"
)

// Options configure a UI.
type Options struct {
	// Name is our name, for the prompt ("bob> ") and the status line.
	Name string
	// In is the terminal keys come from; nil means os.Stdin.
	In *os.File
	// Out is the terminal the screen is drawn on; nil means os.Stdout.
	Out *os.File
	// Now is the clock for the times shown; nil means time.Now. Times are
	// shown in the location Now returns (time.Now: local).
	Now func() time.Time
}

// UI is a full-screen client on one terminal. Run it once.
type UI struct {
	name string
	in   *os.File
	out  *os.File
	now  func() time.Time
	logs *logRing
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
	return &UI{name: o.Name, in: o.In, out: o.Out, now: o.Now, logs: newLogRing(maxLogLines, o.Now)}
}

// Usable reports whether the full-screen client can run on in and out:
// both are terminals and $TERM is set and not "dumb".
func Usable(in, out *os.File) bool {
	t := os.Getenv("TERM")
	return t != "" && t != "dumb" && term.IsTerminal(int(in.Fd())) && term.IsTerminal(int(out.Fd()))
}

// LogWriter returns where to send zerolog's JSON log lines: the last
// maxLogLines of them are kept for the log view (F2), and each is written
// to file as well (nil: nowhere else). Nothing of them ever reaches the
// chat, not even an error writing file (it shows in the log view). Write
// never blocks on the screen. Safe for concurrent use.
func (u *UI) LogWriter(file io.Writer) io.Writer {
	if file == nil {
		return u.logs
	}
	return &teeLog{ring: u.logs, file: file}
}

// teeLog writes log lines to the log view and to a file.
type teeLog struct {
	ring *logRing
	file io.Writer

	mu     sync.Mutex
	failed bool // guarded by mu: writing file failed (said once)
}

func (t *teeLog) Write(p []byte) (int, error) {
	t.ring.Write(p)
	if _, err := t.file.Write(p); err != nil {
		t.mu.Lock()
		said := t.failed
		t.failed = true
		t.mu.Unlock()
		if !said {
			msg, _ := json.Marshal(err.Error())
			fmt.Fprintf(t.ring, "{\"level\":\"error\",\"message\":\"writing the log file failed; logs are only in this view now\",\"error\":%s}\n", msg)
		}
	}
	return len(p), nil
}

// Run shows the node's events and sends it the commands typed, until the
// user quits (Ctrl-C, /quit: api.Quit is sent first), the node's event bus
// closes (the node stopped), or ctx is done. The terminal is restored
// whichever way it returns. It returns an error only when the terminal
// could not be used.
func (u *UI) Run(ctx context.Context, n ui.Node) error {
	sub := n.Subscribe()
	defer sub.Close()

	runCtx, stop := context.WithCancel(ctx)
	defer stop()

	r := lipgloss.NewRenderer(u.out)
	cmds := newCmdQueue()
	m := newModel(modelOptions{
		name:     u.name,
		now:      u.now,
		renderer: r,
		send:     cmds.push,
		logs:     u.logs,
	})
	// Not tea.WithContext: a program killed by its context closes the
	// terminal's reader without waiting for the goroutine reading it.
	// The end of ctx quits it like a key would.
	p := tea.NewProgram(m,
		tea.WithInput(u.in),
		tea.WithOutput(u.out),
		tea.WithAltScreen(),
		tea.WithoutSignalHandler(), // the command line's context carries SIGINT and SIGTERM
	)

	var wg sync.WaitGroup
	wg.Go(func() { pumpEvents(runCtx, sub, p.Send) })
	wg.Go(func() { u.logs.pump(runCtx, p.Send) })
	wg.Go(func() {
		<-runCtx.Done()
		p.Quit() // nothing once the program has ended
	})
	// Commands go to the node in the order they were typed, from one
	// goroutine; it may outlive the screen a moment to deliver the last
	// (api.Quit), bounded by quitWait.
	sendCtx, stopSend := context.WithCancel(context.Background())
	sendDone := make(chan struct{})
	go func() {
		defer close(sendDone)
		cmds.run(sendCtx, n)
	}()

	_, err := p.Run()
	stop()
	wg.Wait()
	cmds.close()
	select {
	case <-sendDone:
	case <-time.After(quitWait):
	case <-ctx.Done():
	}
	stopSend()
	<-sendDone

	if err != nil && !errors.Is(err, tea.ErrProgramKilled) {
		return fmt.Errorf("tui: %w", err)
	}
	return nil
}

// quitWait bounds how long Run waits, after the screen is gone, for the
// node to take the commands still queued (the last is usually api.Quit).
const quitWait = 5 * time.Second

// eventMsg carries one event from the node to the model. applied, when not
// nil, is closed once the model has applied it.
type eventMsg struct {
	ev      api.Event
	applied chan struct{}
}

// closedMsg says the node's event bus closed: the node stopped.
type closedMsg struct{}

// pumpEvents reads the node's events and hands each to the model through
// send, waiting until the model has applied it before it says the event
// was handled (for a message, that is when its sender gets the receipt).
func pumpEvents(ctx context.Context, sub *api.Sub, send func(tea.Msg)) {
	for {
		e, err := sub.Next(ctx)
		if err != nil {
			if errors.Is(err, api.ErrClosed) {
				send(closedMsg{})
			}
			return
		}
		applied := make(chan struct{})
		send(eventMsg{ev: e, applied: applied})
		select {
		case <-applied:
		case <-ctx.Done():
			return // the screen is gone: not shown, so not handled
		}
		sub.Handled()
	}
}

// cmdQueue carries the model's commands to the node in order, without
// ever blocking the model.
type cmdQueue struct {
	wake chan struct{} // cap 1

	mu sync.Mutex
	// Guarded by mu:
	q      []api.Command
	closed bool
}

func newCmdQueue() *cmdQueue { return &cmdQueue{wake: make(chan struct{}, 1)} }

func (c *cmdQueue) push(cmd api.Command) {
	c.mu.Lock()
	if !c.closed {
		c.q = append(c.q, cmd)
	}
	c.mu.Unlock()
	c.poke()
}

func (c *cmdQueue) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// close takes no more commands; run returns once it has sent those queued.
func (c *cmdQueue) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.poke()
}

// run sends the queued commands to n until close (and the queue is empty),
// ctx is done, or the node takes no more.
func (c *cmdQueue) run(ctx context.Context, n ui.Node) {
	for {
		c.mu.Lock()
		q, closed := c.q, c.closed
		c.q = nil
		c.mu.Unlock()
		for _, cmd := range q {
			if n.Do(ctx, cmd) != nil {
				return
			}
		}
		if closed && len(q) == 0 {
			return
		}
		if len(q) > 0 {
			continue
		}
		select {
		case <-c.wake:
		case <-ctx.Done():
			return
		}
	}
}
