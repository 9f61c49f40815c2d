package line

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"natchat/node/api"
	"natchat/node/ui"
)

var _ ui.Node = (*fakeNode)(nil)

// fakeNode is a node with a real bus that records the commands it is given.
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
	case <-time.After(5 * time.Second):
		t.Fatalf("no command within 5s, want %#v", want)
	}
}

// noCmd checks that no command is waiting.
func (f *fakeNode) noCmd(t *testing.T) {
	t.Helper()
	select {
	case c := <-f.cmds:
		t.Fatalf("unexpected command %#v", c)
	default:
	}
}

// output collects what the UI prints and wakes waiters.
type output struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newOutput() *output { return &output{changed: make(chan struct{})} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.b.Write(p)
	close(o.changed)
	o.changed = make(chan struct{})
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// waitFor waits until the output from byte from on contains s, and returns
// the offset just past it.
func (o *output) waitFor(t *testing.T, from int, s string) int {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for {
		o.mu.Lock()
		all := o.b.String()
		changed := o.changed
		o.mu.Unlock()
		if from > len(all) {
			from = len(all)
		}
		if i := strings.Index(all[from:], s); i >= 0 {
			return from + i + len(s)
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no %q in the output within 5s; output from %d:\n%s", s, from, all[from:])
		}
	}
}

// plainUI runs a UI reading a pipe (not a terminal) and writing to an
// output; it returns the pipe's write end and Run's result.
func plainUI(t *testing.T, ctx context.Context, n *fakeNode) (*UI, *os.File, *output, chan error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(); r.Close() })
	out := newOutput()
	u := New(Options{Name: "bob", In: r, Out: out, Now: func() time.Time { return at }})
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx, n) }()
	out.waitFor(t, 0, "natchat as bob") // subscribed: events published from now on are shown
	return u, w, out, done
}

func typeLine(t *testing.T, w io.Writer, line string) {
	t.Helper()
	if _, err := io.WriteString(w, line+"\n"); err != nil {
		t.Fatal(err)
	}
}

func waitRun(t *testing.T, done chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s")
	}
}

// TestRunPlain drives the UI over a pipe: commands, plain text to the
// current conversation, /help, errors, events shown, end of input.
func TestRunPlain(t *testing.T) {
	n := newFakeNode()
	_, w, out, done := plainUI(t, context.Background(), n)

	// Plain text before any conversation: a local error, nothing sent.
	typeLine(t, w, "hi")
	pos := out.waitFor(t, 0, "15:04 ! start a conversation with /msg NAME TEXT or /join #ROOM\n")
	n.noCmd(t)

	// The first writer becomes the conversation once their message is shown.
	shown := make(chan string, 1)
	n.bus.PublishMessage(&api.Message{ID: "m1", From: "alice", Text: "hello bob", Path: api.PathDirect}, func() {
		shown <- out.String() // runs when the UI asks for the next event
	})
	pos = out.waitFor(t, pos, "15:04 <alice> hello bob\n")
	typeLine(t, w, "hello alice")
	n.wantCmd(t, api.Send{To: "alice", Text: "hello alice"})

	typeLine(t, w, "/msg carol yo")
	n.wantCmd(t, api.Send{To: "carol", Text: "yo"})
	typeLine(t, w, "again")
	n.wantCmd(t, api.Send{To: "carol", Text: "again"})
	typeLine(t, w, "/who")
	n.wantCmd(t, api.Who{})
	typeLine(t, w, "/fingerprint alice")
	n.wantCmd(t, api.ShowFingerprint{Name: "alice"})
	typeLine(t, w, "/trust alice")
	n.wantCmd(t, api.Trust{Name: "alice"})

	typeLine(t, w, "/help")
	pos = out.waitFor(t, pos, Render(&api.Help{Commands: ui.Help()}, at)+"\n")
	typeLine(t, w, "/nope")
	pos = out.waitFor(t, pos, "15:04 ! unknown command /nope (try /help)\n")
	typeLine(t, w, "/msg")
	pos = out.waitFor(t, pos, "15:04 ! usage: /msg NAME TEXT\n")
	n.noCmd(t)

	// Events: a sent line is shown when input is not a terminal (nothing
	// echoes what was typed).
	n.bus.Publish(&api.Sent{ID: "s1", To: "carol", Text: "yo"})
	n.bus.Publish(&api.Delivered{ID: "s1", To: "carol"})
	pos = out.waitFor(t, pos, "15:04 → carol: yo\n15:04 ✓ delivered to carol\n")

	// The shown hook of alice's message ran after it was printed.
	select {
	case s := <-shown:
		if !strings.Contains(s, "<alice> hello bob") {
			t.Errorf("message marked shown before it was printed; output then:\n%s", s)
		}
	default:
		t.Error("message not marked shown after the next event was asked for")
	}

	// End of input: leave once sent messages are settled.
	w.Close()
	n.wantCmd(t, api.Quit{Drain: true})
	n.bus.Publish(&api.PeerLeft{Name: "alice", Reason: api.ReasonQuit})
	out.waitFor(t, pos, "15:04 *** alice left\n")
	n.bus.Close()
	waitRun(t, done)
	checkInert(t, strings.ReplaceAll(out.String(), "\n", "\n"+indent))
}

// TestRunPlainRooms drives the room commands over a pipe: the first
// room message makes its room the conversation; /join, /msg #ROOM and
// /part move it; room events are shown.
func TestRunPlainRooms(t *testing.T) {
	n := newFakeNode()
	_, w, out, done := plainUI(t, context.Background(), n)

	n.bus.PublishMessage(&api.Message{ID: "r1", From: "ann", Room: "#dev", Text: "hi all", Path: api.PathDirect}, nil)
	pos := out.waitFor(t, 0, "15:04 [#dev] <ann> hi all\n")
	typeLine(t, w, "hi ann")
	n.wantCmd(t, api.Send{To: "#dev", Text: "hi ann"})
	typeLine(t, w, "/me waves")
	n.wantCmd(t, api.Send{To: "#dev", Text: "waves", Kind: api.KindEmote})

	typeLine(t, w, "/join #ops")
	n.wantCmd(t, api.Join{Room: "#ops"})
	n.bus.Publish(&api.RoomJoined{Room: "#ops", Name: "bob", Total: 3, Online: 2})
	pos = out.waitFor(t, pos, "15:04 *** you joined #ops (3 members, 2 online)\n")
	typeLine(t, w, "morning")
	n.wantCmd(t, api.Send{To: "#ops", Text: "morning"})
	n.bus.Publish(&api.RoomJoined{Room: "#ops", Name: "leslie"})
	n.bus.Publish(&api.RoomLeft{Room: "#ops", Name: "leslie", Reason: api.RoomReasonExpired})
	pos = out.waitFor(t, pos, "15:04 *** leslie has joined #ops\n15:04 *** leslie was dropped from #ops (away too long)\n")

	typeLine(t, w, "/rooms")
	n.wantCmd(t, api.ListRooms{})
	n.bus.Publish(&api.Rooms{Rooms: []api.RoomInfo{{Room: "#dev", Members: 2, Online: 2}, {Room: "#ops", Members: 3, Online: 1}}})
	pos = out.waitFor(t, pos, "15:04 *** 2 rooms:\n        #dev  2 members, 2 online\n        #ops  3 members, 1 online\n")

	typeLine(t, w, "/part")
	n.wantCmd(t, api.Part{Room: "#ops"})
	n.bus.Publish(&api.RoomLeft{Room: "#ops", Name: "bob", Reason: api.RoomReasonPart})
	pos = out.waitFor(t, pos, "15:04 *** you left #ops\n")
	typeLine(t, w, "anyone?")
	pos = out.waitFor(t, pos, "15:04 ! start a conversation with /msg NAME TEXT or /join #ROOM\n")
	typeLine(t, w, "/part")
	pos = out.waitFor(t, pos, "15:04 ! usage: /part #ROOM (you are not talking in a room)\n")
	typeLine(t, w, "/join dev")
	pos = out.waitFor(t, pos, "15:04 ! a room name starts with '#'\n")
	n.noCmd(t)

	typeLine(t, w, "/msg #dev back")
	n.wantCmd(t, api.Send{To: "#dev", Text: "back"})
	n.bus.Publish(&api.Sent{ID: "s1", To: "#dev", Room: "#dev", Text: "back"})
	n.bus.Publish(&api.Stored{ID: "s1", To: "ann", Room: "#dev"})
	n.bus.Publish(&api.Delivered{ID: "s1", To: "#dev", Room: "#dev", Members: "1/2"})
	out.waitFor(t, pos, "15:04 → #dev: back\n15:04 ✉ [#dev] stored for ann, who is away\n15:04 ✓ delivered to 1/2 of #dev\n")

	w.Close()
	n.wantCmd(t, api.Quit{Drain: true})
	n.bus.Close()
	waitRun(t, done)
}

// TestRunShownAfterPrinted: a message counts as shown (its sender's receipt)
// only after the UI printed it, for every message of a burst.
func TestRunShownAfterPrinted(t *testing.T) {
	n := newFakeNode()
	_, _, out, done := plainUI(t, context.Background(), n)
	const count = 20
	var wg sync.WaitGroup
	for i := range count {
		text := fmt.Sprintf("message %02d", i)
		wg.Add(1)
		n.bus.PublishMessage(&api.Message{ID: text, From: "alice", Text: text}, func() {
			defer wg.Done()
			if !strings.Contains(out.String(), "<alice> "+text+"\n") {
				t.Errorf("%s marked shown before it was printed", text)
			}
		})
	}
	out.waitFor(t, 0, fmt.Sprintf("<alice> message %02d\n", count-1))
	n.bus.Publish(&api.PeerJoined{Name: "carol"}) // asking for the event after the last message marks it shown
	out.waitFor(t, 0, "carol is online")
	wg.Wait()
	n.bus.Close()
	waitRun(t, done)
}

// TestRunHostile: text from a peer reaches Out inert.
func TestRunHostile(t *testing.T) {
	n := newFakeNode()
	_, _, out, done := plainUI(t, context.Background(), n)
	var all strings.Builder
	for _, h := range hostile {
		all.WriteString(h.in)
	}
	n.bus.PublishMessage(&api.Message{ID: "x", From: "mal\x1b[31mlory", Text: all.String()}, nil)
	n.bus.Publish(&api.Error{Code: api.CodeBadText, Message: "\x1b]0;pwned\x07", To: "\r<alice>"})
	out.waitFor(t, 0, "! to ␍<alice>: ␛]0;pwned␇\n")
	n.bus.Close()
	waitRun(t, done)
	got := out.String()
	checkInert(t, strings.ReplaceAll(got, "\n", "\n"+indent))
	for _, h := range hostile {
		if !strings.Contains(got, h.shown) {
			t.Errorf("output does not show %q as %q:\n%s", h.in, h.shown, got)
		}
	}
	if !strings.Contains(got, "15:04 <mal␛[31mlory> ") {
		t.Errorf("hostile name not shown inert:\n%s", got)
	}
}

// TestRunContextDone: Run returns when ctx is done; the input goroutine,
// still blocked on its read, sends nothing once it returns.
func TestRunContextDone(t *testing.T) {
	n := newFakeNode()
	ctx, cancel := context.WithCancel(context.Background())
	_, w, _, done := plainUI(t, ctx, n)
	cancel()
	waitRun(t, done)
	typeLine(t, w, "/who") // read by the goroutine left behind
	w.Close()
	waitGone(t, "line.(*UI).readPlain")
	n.noCmd(t)
}

// waitGone waits until no goroutine runs function fn.
func waitGone(t *testing.T, fn string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		if !strings.Contains(string(buf[:runtime.Stack(buf, true)]), fn) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a goroutine still runs %s after 5s", fn)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

// TestRunQuitCommand: /quit asks the node to leave at once.
func TestRunQuitCommand(t *testing.T) {
	n := newFakeNode()
	_, w, _, done := plainUI(t, context.Background(), n)
	typeLine(t, w, "/quit")
	n.wantCmd(t, api.Quit{})
	n.bus.Close()
	waitRun(t, done)
}

// TestLogWriter: warnings and errors are shown as system lines, lower
// levels and garbage are not; lines logged before Run wait for it, lines
// after it go straight to Out.
func TestLogWriter(t *testing.T) {
	n := newFakeNode()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	out := newOutput()
	u := New(Options{Name: "bob", In: r, Out: out, Now: func() time.Time { return at }})
	lw := u.LogWriter()
	io.WriteString(lw, `{"level":"warn","node":"bob","time":"2026-03-04T15:04:00Z","message":"before run"}`+"\n")
	done := make(chan error, 1)
	go func() { done <- u.Run(context.Background(), n) }()
	pos := out.waitFor(t, 0, "15:04 ! warn: before run\n")

	io.WriteString(lw, `{"level":"debug","message":"chatty"}`+"\n")
	io.WriteString(lw, `{"level":"info","message":"also chatty"}`+"\n")
	io.WriteString(lw, "not json at all\n")
	io.WriteString(lw, `{"message":"no level"}`+"\n")
	io.WriteString(lw, `{"level":"error","peer":"al\u001b[2Jice","rtt_ms":12.5,"error":"read udp: i/o timeout","message":"punch failed\r"}`+"\n")
	io.WriteString(lw, `{"level":"warn","msg":"rendezvous silent for three heartbeats"}`+"\n"+`{"level":"warn","message":"two in one write"}`+"\n")
	pos = out.waitFor(t, pos, "15:04 ! error: punch failed␍ (peer=al␛[2Jice rtt_ms=12.5 error=\"read udp: i/o timeout\")\n")
	pos = out.waitFor(t, pos, "15:04 ! warn: rendezvous silent for three heartbeats\n")
	pos = out.waitFor(t, pos, "15:04 ! warn: two in one write\n")
	n.bus.Close()
	waitRun(t, done)
	io.WriteString(lw, `{"level":"warn","message":"after run"}`+"\n")
	out.waitFor(t, pos, "15:04 ! warn: after run\n")
	if s := out.String(); strings.Contains(s, "chatty") || strings.Contains(s, "no level") || strings.Contains(s, "not json") {
		t.Errorf("low-level or unparsable log lines shown:\n%s", s)
	}
}

// TestLogWriterNeverBlocks: a flood of warnings while nothing shows them
// is bounded and counted, and Write returns at once.
func TestLogWriterNeverBlocks(t *testing.T) {
	u := New(Options{Name: "bob", In: os.Stdin, Out: io.Discard})
	lw := u.LogWriter()
	line := []byte(`{"level":"warn","message":"flood"}` + "\n")
	for range 10 * maxLogQueue {
		if n, err := lw.Write(line); n != len(line) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	q := u.logs.take()
	if len(q) != maxLogQueue+1 || !strings.HasSuffix(q[len(q)-1], fmt.Sprintf("! %d more log lines dropped", 9*maxLogQueue)) {
		t.Fatalf("queue after a flood: %d lines, last %q", len(q), q[len(q)-1])
	}
}

func TestRenderLog(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string // "" when not shown
	}{
		{`{"level":"warn","message":"m"}`, "! warn: m"},
		{`{"level":"fatal","message":"m","caller":"x.go:1","time":1}`, "! fatal: m"},
		{`{"level":"panic"}`, "! panic"},
		{`{"level":"warn","message":"m","ok":true,"list":[1, 2],"empty":""}`, `! warn: m (ok=true list=[1,2] empty="")`},
		{`{"level":"trace","message":"m"}`, ""},
		{`{"level":"info","message":"m"}`, ""},
		{`{"level":7,"message":"m"}`, ""},
		{`["level","warn"]`, ""},
		{`{"level":"warn","message":"m"`, ""},
		{``, ""},
		{`{"level":"warn","message":"` + strings.Repeat("ü", 400) + `"}`, "! warn: " + strings.Repeat("ü", (maxLogLen-len("! warn: ")-len("…"))/2) + "…"},
	} {
		got, ok := renderLog([]byte(c.in))
		if ok != (c.want != "") || got != c.want {
			t.Errorf("renderLog(%s) = %q, %v; want %q", c.in, got, ok, c.want)
		}
	}
}
