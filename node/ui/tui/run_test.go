package tui

import (
	"context"
	"os"
	"testing"
	"time"

	"natchat/node/api"
	"natchat/node/ui"
)

var _ ui.Node = (*fakeNode)(nil)

// fakeNode is a node with a real bus that records the commands it is
// given.
type fakeNode struct {
	bus  *api.Bus
	cmds chan api.Command
}

func newFakeNode() *fakeNode {
	return &fakeNode{bus: api.NewBus(func() time.Time { return at }), cmds: make(chan api.Command, 100)}
}

func (f *fakeNode) Subscribe() *api.Sub { return f.bus.Subscribe() }

func (f *fakeNode) Do(ctx context.Context, c api.Command) error {
	select {
	case f.cmds <- c:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// wantCmd waits for the next command and checks it is want.
func (f *fakeNode) wantCmd(t *testing.T, want api.Command) {
	t.Helper()
	select {
	case c := <-f.cmds:
		if c != want {
			t.Fatalf("command %#v, want %#v", c, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no command within 10s, want %#v", want)
	}
}

// run runs a UI on a pipe for keys and a file for the screen (no
// terminal: bubbletea draws all the same), and returns the pipe's write
// end and Run's result.
func run(t *testing.T, ctx context.Context, n *fakeNode) (*os.File, chan error) {
	t.Helper()
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.CreateTemp(t.TempDir(), "screen")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inR.Close(); inW.Close(); out.Close() })
	u := New(Options{Name: "bob", In: inR, Out: out, Now: func() time.Time { return at }})
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx, n) }()
	return inW, done
}

func waitDone(t *testing.T, done chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s")
	}
}

// Run asks for the history, hands events to the model (a message is
// handled, so its sender gets the receipt, once the model has it), sends
// what is typed, and Ctrl-C quits at once.
func TestRunQuitsOnCtrlC(t *testing.T) {
	n := newFakeNode()
	keys, done := run(t, t.Context(), n)
	n.wantCmd(t, api.History{N: startHistory})

	shown := make(chan struct{})
	n.bus.PublishMessage(&api.Message{ID: "1", From: "alice", Text: "hi", Path: api.PathRelay}, func() { close(shown) })
	select {
	case <-shown:
	case <-time.After(10 * time.Second):
		t.Fatal("the message was not handled within 10s")
	}
	keys.WriteString("hello\r")
	n.wantCmd(t, api.Send{To: "alice", Text: "hello"})
	keys.Write([]byte{3}) // Ctrl-C
	n.wantCmd(t, api.Quit{})
	waitDone(t, done)
}

// When the node stops (its bus closes), Run returns.
func TestRunEndsWithTheNode(t *testing.T) {
	n := newFakeNode()
	_, done := run(t, t.Context(), n)
	n.wantCmd(t, api.History{N: startHistory})
	n.bus.Close()
	waitDone(t, done)
}

// Run returns when its context is done (SIGTERM, SIGINT from outside).
func TestRunEndsWithTheContext(t *testing.T) {
	n := newFakeNode()
	ctx, cancel := context.WithCancel(t.Context())
	_, done := run(t, ctx, n)
	n.wantCmd(t, api.History{N: startHistory})
	cancel()
	waitDone(t, done)
}
