package messenger

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"natchat/node/api"
	"natchat/node/store"
	"natchat/wire"
)

// fakeDir is a rendezvous directory: name → key, with online flags.
type fakeDir struct {
	mu      sync.Mutex
	byName  map[string]wire.Key
	offline map[string]bool
	down    bool // lookups time out
	lookups int
}

func (d *fakeDir) set(name string, k wire.Key) {
	d.mu.Lock()
	d.byName[wire.NameKey(name)] = k
	d.mu.Unlock()
}

func (d *fakeDir) Lookup(ctx context.Context, name string, key wire.Key) (*wire.LookupReply, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lookups++
	if d.down {
		return nil, errors.New("rendezvous did not answer")
	}
	for n, k := range d.byName {
		if (name != "" && wire.NameKey(name) == n) || (name == "" && k == key) {
			st := wire.LookupOnline
			if d.offline[n] {
				st = wire.LookupOffline
			}
			return &wire.LookupReply{Status: st, Name: n, Key: k}, nil
		}
	}
	return &wire.LookupReply{Status: wire.LookupUnknown}, nil
}

func (d *fakeDir) NameOf(ctx context.Context, key wire.Key) (string, error) {
	r, err := d.Lookup(ctx, "", key)
	if err != nil {
		return "", err
	}
	if r.Status == wire.LookupUnknown {
		return "", errors.New("unknown key")
	}
	return r.Name, nil
}

// pipeStream is one end of a net.Pipe as a Stream.
type pipeStream struct{ net.Conn }

func (p pipeStream) CloseWrite() error { return p.Conn.Close() }

// world connects messengers by pipes.
type world struct {
	t   *testing.T
	dir *fakeDir
	mu  sync.Mutex
	ms  map[wire.Key]*peer
	// refuse makes OpenChat fail (the peer is unreachable).
	refuse bool
	// manual: the next peer started has no front end; the test reads its
	// subscription itself.
	manual bool
	// box, when set, gives every peer started a mailbox (mail_test.go).
	box *fakeBox
	// wrapStore, when set, wraps the store of every peer started.
	wrapStore func(*store.Store) Store
	// beforeStart, when set, is called for every peer between New and
	// Start.
	beforeStart func(*peer)
}

type peer struct {
	w      *world
	name   string
	key    wire.Key
	st     *store.Store
	stDir  string
	m      *Messenger
	bus    *api.Bus
	sub    *api.Sub
	ctx    context.Context
	cancel context.CancelFunc
	events chan api.Event
	// later holds events next read past without matching, oldest first:
	// they are what a later next looks at first. Events of different
	// messages may interleave (a Delivered for the first message can come
	// before the Sent of the second), and a wait for one kind must not
	// lose the others.
	later []api.Event
}

// sessions is one peer's Sessions.
type sessions struct {
	w    *world
	self wire.Key
}

func (s sessions) Connected(wire.Key) bool { return false }

func (s sessions) OpenChat(ctx context.Context, to wire.Key) (Stream, error) {
	s.w.mu.Lock()
	dst, refuse := s.w.ms[to], s.w.refuse
	s.w.mu.Unlock()
	if dst == nil || refuse {
		return nil, errors.New("unreachable")
	}
	a, b := net.Pipe()
	ctx, stop := context.WithCancel(dst.ctx)
	go func() {
		defer stop()
		defer b.Close()
		dst.m.ServeChat(ctx, s.self, pipeStream{b})
	}()
	go func() { <-ctx.Done(); b.Close() }() // the receiver stopped: its streams end
	return pipeStream{a}, nil
}

func newWorld(t *testing.T) *world {
	return &world{t: t, dir: &fakeDir{byName: map[string]wire.Key{}, offline: map[string]bool{}}, ms: map[wire.Key]*peer{}}
}

func (w *world) start(name string, priv ed25519.PrivateKey, stDir string, o Options) *peer {
	w.t.Helper()
	if priv == nil {
		_, priv, _ = ed25519.GenerateKey(rand.Reader)
	}
	if stDir == "" {
		stDir = w.t.TempDir()
	}
	k := wire.Key(priv.Public().(ed25519.PublicKey))
	st, err := store.Open(stDir, k, store.Options{})
	if err != nil {
		w.t.Fatal(err)
	}
	p := &peer{w: w, name: name, key: k, st: st, stDir: stDir, bus: api.NewBus(nil), events: make(chan api.Event, 1000)}
	o.Self, o.SelfName, o.Store, o.Dir, o.Sessions, o.Bus = k, name, st, w.dir, sessions{w, k}, p.bus
	if w.box != nil {
		o.Dir, o.Identity = mailDir{fakeDir: w.dir, box: w.box, self: k}, priv
	}
	if w.wrapStore != nil {
		o.Store = w.wrapStore(st)
	}
	if o.Linger == 0 {
		o.Linger = 50 * time.Millisecond
	}
	m, err := New(o)
	if err != nil {
		w.t.Fatal(err)
	}
	p.m = m
	p.sub = p.bus.Subscribe()
	ctx, cancel := context.WithCancel(context.Background())
	p.ctx, p.cancel = ctx, cancel
	w.dir.set(name, k)
	w.mu.Lock()
	w.ms[k] = p
	w.mu.Unlock()
	if w.beforeStart != nil {
		w.beforeStart(p)
	}
	if err := m.Start(ctx); err != nil {
		w.t.Fatal(err)
	}
	if w.manual {
		w.manual = false
		return p
	}
	go func() { // the front end
		for {
			e, err := p.sub.Next(ctx)
			if err != nil {
				return
			}
			p.events <- e
		}
	}()
	w.t.Cleanup(p.stop)
	return p
}

func (p *peer) stop() {
	p.cancel()
	p.m.Wait()
	p.st.Close()
}

func (p *peer) next(t *testing.T, what string, pred func(api.Event) bool) api.Event {
	t.Helper()
	for i, e := range p.later {
		if pred(e) {
			p.later = append(p.later[:i], p.later[i+1:]...)
			return e
		}
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e := <-p.events:
			if pred(e) {
				return e
			}
			p.later = append(p.later, e)
		case <-timeout:
			t.Fatalf("%s: no %s", p.name, what)
		}
	}
}

func isType(typ string) func(api.Event) bool {
	return func(e api.Event) bool { return e.EventType() == typ }
}

func TestSendShowDeliver(t *testing.T) {
	w := newWorld(t)
	a := w.start("alice", nil, "", Options{})
	b := w.start("bob", nil, "", Options{})
	a.m.Send("Bob", "hello bob")
	sent := a.next(t, "sent", isType(api.TypeSent)).(*api.Sent)
	if sent.To != "Bob" || sent.Text != "hello bob" || sent.Resumed {
		t.Fatalf("sent %+v", sent)
	}
	msg := b.next(t, "message", isType(api.TypeMessage)).(*api.Message)
	if msg.ID != sent.ID || msg.From != "bob" && msg.From != "alice" || msg.Text != "hello bob" || msg.SentTS.IsZero() {
		t.Fatalf("message %+v", msg)
	}
	d := a.next(t, "delivered", isType(api.TypeDelivered)).(*api.Delivered)
	if d.ID != sent.ID || d.To != "Bob" {
		t.Fatalf("delivered %+v", d)
	}
}

func TestReceiptOnlyAfterShown(t *testing.T) {
	w := newWorld(t)
	a := w.start("alice", nil, "", Options{})
	w.manual = true
	b := w.start("bob", nil, "", Options{})
	// Bob's front end takes the message but has not asked for the next
	// event: it is not shown yet.
	a.m.Send("bob", "one")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if e, err := b.sub.Next(ctx); err != nil || e.EventType() != api.TypeMessage {
		t.Fatalf("bob: %v, %v", e, err)
	}
	select {
	case e := <-a.events:
		if e.EventType() == api.TypeSent {
			break
		}
		t.Fatalf("alice got %T before bob showed the message", e)
	case <-time.After(10 * time.Second):
		t.Fatal("no sent")
	}
	select {
	case e := <-a.events:
		t.Fatalf("alice got %T (%+v) before bob's front end asked for more", e, e)
	case <-time.After(300 * time.Millisecond):
	}
	go b.sub.Next(ctx) // shown: the front end asks for more
	a.next(t, "delivered", isType(api.TypeDelivered))
}

func TestNoDuplicateAfterReceiverRestart(t *testing.T) {
	w := newWorld(t)
	a := w.start("alice", nil, "", Options{})
	_, bPriv, _ := ed25519.GenerateKey(rand.Reader)
	bDir := t.TempDir()
	b := w.start("bob", bPriv, bDir, Options{})
	a.m.Send("bob", "once")
	id := b.next(t, "message", isType(api.TypeMessage)).(*api.Message).ID
	a.next(t, "delivered", isType(api.TypeDelivered))

	// The same message arrives again (a resend after a lost receipt) at a
	// restarted bob: shown before, so acknowledged and not shown.
	b.stop()
	b2 := w.start("bob", bPriv, bDir, Options{})
	mid, _ := wire.ParseMsgID(id)
	st, err := sessions{w, a.key}.OpenChat(context.Background(), b2.key)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.Write(wire.AppendMsg(nil, &wire.Msg{ID: mid, Seq: 1, SentMS: 1, Text: "once"}))
	st.Write(wire.AppendMsg(nil, &wire.Msg{ID: wire.MsgID{9}, Seq: 2, SentMS: 1, Text: "new"}))
	var acks []wire.MsgID
	readFrames(st, func(k wire.FrameKind, body []byte) error {
		id, _ := wire.ParseAck(body)
		acks = append(acks, id)
		if len(acks) == 2 {
			return errors.New("done")
		}
		return nil
	})
	if len(acks) != 2 || acks[0] != mid || acks[1] != (wire.MsgID{9}) {
		t.Fatalf("acks %v", acks)
	}
	m := b2.next(t, "message", isType(api.TypeMessage)).(*api.Message)
	if m.Text != "new" {
		t.Fatalf("restarted bob showed %q first (a duplicate?)", m.Text)
	}
}

func TestOutboxResumedAfterSenderRestart(t *testing.T) {
	w := newWorld(t)
	_, aPriv, _ := ed25519.GenerateKey(rand.Reader)
	aDir := t.TempDir()
	a := w.start("alice", aPriv, aDir, Options{})
	b := w.start("bob", nil, "", Options{})
	w.mu.Lock()
	w.refuse = true // bob cannot be reached
	w.mu.Unlock()
	a.m.Send("bob", "first")
	a.m.Send("bob", "second")
	s1 := a.next(t, "sent", isType(api.TypeSent)).(*api.Sent)
	s2 := a.next(t, "sent", isType(api.TypeSent)).(*api.Sent)
	a.stop()
	w.mu.Lock()
	w.refuse = false
	w.mu.Unlock()
	a2 := w.start("alice", aPriv, aDir, Options{})
	r1 := a2.next(t, "resumed sent", isType(api.TypeSent)).(*api.Sent)
	r2 := a2.next(t, "resumed sent", isType(api.TypeSent)).(*api.Sent)
	if !r1.Resumed || r1.ID != s1.ID || r2.ID != s2.ID || r2.Text != "second" {
		t.Fatalf("resumed %+v %+v, want %s then %s", r1, r2, s1.ID, s2.ID)
	}
	m1 := b.next(t, "message", isType(api.TypeMessage)).(*api.Message)
	m2 := b.next(t, "message", isType(api.TypeMessage)).(*api.Message)
	if m1.Text != "first" || m2.Text != "second" {
		t.Fatalf("bob got %q then %q", m1.Text, m2.Text)
	}
	a2.next(t, "delivered", isType(api.TypeDelivered))
	a2.next(t, "delivered", isType(api.TypeDelivered))
}

func TestFailFast(t *testing.T) {
	w := newWorld(t)
	a := w.start("alice", nil, "", Options{})
	w.dir.set("carol", wire.Key{7})
	w.dir.mu.Lock()
	w.dir.offline["carol"] = true
	w.dir.mu.Unlock()
	for _, c := range []struct{ to, text, code string }{
		{"nobody", "hi", api.CodeUnknownPeer},
		{"carol", "hi", api.CodePeerOffline},
		{"alice", "hi", api.CodeBadName},
		{"bad name", "hi", api.CodeBadName},
		{"carol", "   ", api.CodeBadText},
		{"carol", "\xff", api.CodeBadText},
		{"carol", strings.Repeat("x", wire.MaxTextLen+1), api.CodeBadText},
	} {
		start := time.Now()
		a.m.Send(c.to, c.text)
		e := a.next(t, "error for "+c.to, isType(api.TypeError)).(*api.Error)
		if e.Code != c.code || e.To != c.to {
			t.Errorf("send %q to %q: %+v, want code %s", c.text, c.to, e, c.code)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("send to %q failed after %v", c.to, d)
		}
	}
}

func TestLookupRetriedUntilDeadline(t *testing.T) {
	w := newWorld(t)
	a := w.start("alice", nil, "", Options{DeliveryTimeout: 1500 * time.Millisecond})
	w.start("bob", nil, "", Options{})
	w.dir.mu.Lock()
	w.dir.down = true
	w.dir.mu.Unlock()
	a.m.Send("bob", "hi")
	a.next(t, "sent", isType(api.TypeSent))
	e := a.next(t, "outcome", func(e api.Event) bool { return e.EventType() != api.TypeSent }).(*api.Error)
	if e.Code != api.CodeUndelivered {
		t.Fatalf("outcome %+v, want undelivered at the deadline", e)
	}
	w.dir.mu.Lock()
	n := w.dir.lookups
	w.dir.mu.Unlock()
	if n < 3 {
		t.Fatalf("%d lookups in 1.5 s: not retried", n)
	}
}

func TestKeyChangedAndTrust(t *testing.T) {
	w := newWorld(t)
	a := w.start("alice", nil, "", Options{})
	b := w.start("bob", nil, "", Options{})
	a.m.Send("bob", "first")
	a.next(t, "delivered", isType(api.TypeDelivered))
	b.next(t, "message", isType(api.TypeMessage))
	oldFP := b.key.Fingerprint()

	// The rendezvous now gives another key for bob (an impostor, or bob
	// reinstalled).
	b.stop()
	mallory := w.start("bob", nil, "", Options{})
	a.m.Send("bob", "second")
	a.next(t, "sent", isType(api.TypeSent))
	e := a.next(t, "error", isType(api.TypeError)).(*api.Error)
	if e.Code != api.CodeKeyChanged || e.Peer != "bob" || e.Fingerprint != oldFP || e.NewFingerprint != mallory.key.Fingerprint() || e.ID == "" {
		t.Fatalf("error %+v, want key_changed with both fingerprints", e)
	}
	// Mallory writing to alice as bob is refused too, and reported.
	mallory.m.Send("alice", "it's me, bob")
	mallory.next(t, "sent", isType(api.TypeSent))
	e2 := a.next(t, "error", isType(api.TypeError)).(*api.Error)
	if e2.Code != api.CodeKeyChanged || e2.Peer != "bob" {
		t.Fatalf("incoming from the new key: %+v", e2)
	}
	select {
	case ev := <-a.events:
		t.Fatalf("alice showed %+v from the unpinned key", ev)
	case <-time.After(200 * time.Millisecond):
	}
	// Fingerprints on demand.
	a.m.Fingerprint(context.Background(), "bob")
	fp := a.next(t, "fingerprint", isType(api.TypeFingerprint)).(*api.Fingerprint)
	if fp.Fingerprint != oldFP || !fp.Pinned {
		t.Fatalf("fingerprint %+v", fp)
	}
	a.m.Fingerprint(context.Background(), "")
	if me := a.next(t, "own fingerprint", isType(api.TypeFingerprint)).(*api.Fingerprint); !me.Self || me.Fingerprint != a.key.Fingerprint() {
		t.Fatalf("own fingerprint %+v", me)
	}
	// After /trust, it works both ways.
	a.m.Trust(context.Background(), "bob")
	if tr := a.next(t, "trusted", isType(api.TypeTrusted)).(*api.Trusted); tr.Fingerprint != mallory.key.Fingerprint() {
		t.Fatalf("trusted %+v", tr)
	}
	a.m.Send("bob", "third")
	a.next(t, "delivered", isType(api.TypeDelivered))
	if m := mallory.next(t, "message", isType(api.TypeMessage)).(*api.Message); m.Text != "third" {
		t.Fatalf("new bob got %q", m.Text)
	}
}

func TestDrain(t *testing.T) {
	w := newWorld(t)
	a := w.start("alice", nil, "", Options{})
	w.start("bob", nil, "", Options{})
	for i := range 20 {
		a.m.Send("bob", fmt.Sprint("m", i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.m.Drain(ctx)
	if ctx.Err() != nil {
		t.Fatal("Drain did not return")
	}
	n := 0
	for n < 20 {
		if a.next(t, "delivered", isType(api.TypeDelivered)) != nil {
			n++
		}
	}
	// Conversations retire once idle.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, convs := a.m.Peers(); convs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("conversation not retired")
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

// waiting returns how many messages from peer wait to be shown.
func (m *Messenger) waiting(peer wire.Key) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if in := m.inboxes[peer]; in != nil {
		return len(in.waiting)
	}
	return 0
}

func TestPeerCannotMakeUsHoldMoreThanWindow(t *testing.T) {
	w := newWorld(t)
	a := w.start("alice", nil, "", Options{})
	w.manual = true
	b := w.start("bob", nil, "", Options{Window: 16})
	const n = 100
	for i := range n {
		a.m.Send("bob", fmt.Sprint("flood ", i))
	}
	deadline := time.Now().Add(10 * time.Second)
	for b.m.waiting(a.key) < 16 {
		if time.Now().After(deadline) {
			t.Fatalf("bob holds %d waiting, want 16", b.m.waiting(a.key))
		}
		time.Sleep(10 * time.Millisecond) // polling a counter, with a deadline
	}
	time.Sleep(200 * time.Millisecond) // a window in which more would arrive if allowed
	if got := b.m.waiting(a.key); got != 16 {
		t.Fatalf("bob holds %d messages waiting for a front end that does not read, want 16", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < n; {
		e, err := b.sub.Next(ctx)
		if err != nil {
			t.Fatalf("after %d messages: %v", i, err)
		}
		if m, ok := e.(*api.Message); ok {
			if m.Text != fmt.Sprint("flood ", i) {
				t.Fatalf("message %d is %q", i, m.Text)
			}
			i++
		}
	}
	b.sub.Handled()
	for i := 0; i < n; {
		if a.next(t, "delivered", isType(api.TypeDelivered)) != nil {
			i++
		}
	}
}
