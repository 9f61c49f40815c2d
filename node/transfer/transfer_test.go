package transfer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"natchat/node/api"
	"natchat/node/files"
	"natchat/node/session"
	"natchat/node/store"
	"natchat/wire"
)

var _ Stream = (*session.Stream)(nil)

// wait bounds every wait for an event.
const wait = 15 * time.Second

// Errors of the test streams.
var (
	errReset  = errors.New("stream reset by the peer")
	errBroken = errors.New("connection lost")
)

// pipeBuf is a test stream's buffer each way, like a QUIC stream's flow
// control window.
const pipeBuf = 64 << 10

// halfPipe is one direction of a test stream.
type halfPipe struct {
	mu      sync.Mutex
	cond    sync.Cond
	buf     []byte
	fin     bool // the writer closed it
	stopped bool // the reader cancelled it
	broken  bool // the connection died
}

func newHalfPipe() *halfPipe {
	h := &halfPipe{}
	h.cond.L = &h.mu
	return h
}

func (h *halfPipe) write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for len(p) > 0 {
		for len(h.buf) >= pipeBuf && !h.stopped && !h.broken && !h.fin {
			h.cond.Wait()
		}
		switch {
		case h.broken:
			return n, errBroken
		case h.stopped:
			return n, errReset
		case h.fin:
			return n, io.ErrClosedPipe
		}
		c := min(len(p), pipeBuf-len(h.buf))
		h.buf = append(h.buf, p[:c]...)
		p, n = p[c:], n+c
		h.cond.Broadcast()
	}
	return n, nil
}

func (h *halfPipe) read(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for len(h.buf) == 0 && !h.fin && !h.stopped && !h.broken {
		h.cond.Wait()
	}
	switch {
	case h.broken:
		return 0, errBroken
	case h.stopped:
		return 0, net.ErrClosed
	case len(h.buf) == 0:
		return 0, io.EOF
	}
	n := copy(p, h.buf)
	h.buf = append(h.buf[:0], h.buf[n:]...)
	h.cond.Broadcast()
	return n, nil
}

func (h *halfPipe) set(f func(*halfPipe)) {
	h.mu.Lock()
	f(h)
	h.cond.Broadcast()
	h.mu.Unlock()
}

// pipeEnd is one end of an in-memory stream with a session stream's
// semantics: CloseWrite FINs (the peer reads what was written, then EOF);
// Close FINs and stops reading (the peer's writes fail).
type pipeEnd struct{ in, out *halfPipe }

func newPipe() (*pipeEnd, *pipeEnd) {
	ab, ba := newHalfPipe(), newHalfPipe()
	return &pipeEnd{in: ba, out: ab}, &pipeEnd{in: ab, out: ba}
}

func (e *pipeEnd) Read(p []byte) (int, error)  { return e.in.read(p) }
func (e *pipeEnd) Write(p []byte) (int, error) { return e.out.write(p) }
func (e *pipeEnd) CloseWrite() error {
	e.out.set(func(h *halfPipe) { h.fin = true })
	return nil
}
func (e *pipeEnd) Close() error {
	e.CloseWrite()
	e.in.set(func(h *halfPipe) { h.stopped, h.buf = true, nil })
	return nil
}

// cut breaks the stream both ways, as a lost connection does.
func (e *pipeEnd) cut() {
	e.in.set(func(h *halfPipe) { h.broken = true })
	e.out.set(func(h *halfPipe) { h.broken = true })
}

// tap is a sender's end of a stream that counts, corrupts, cuts or holds
// what is written. Offsets count the stream's bytes, offer included.
type tap struct {
	*pipeEnd
	w       *world
	n       int64
	flipAt  int64         // flip a bit of this byte; -1: none
	flipRel int64         // or of this one, counted after the first write (the offer); -1: none
	offer   int64         // the length of the first write
	cutAt   int64         // cut the stream here; -1: none
	pauseAt int64         // hold writes here until gate is closed; -1: none
	reached chan struct{} // closed when a write is held
	gate    chan struct{}
	closed  chan struct{}
	once    sync.Once
}

func (t *tap) Write(p []byte) (int, error) {
	if t.n == 0 {
		t.offer = int64(len(p))
		if t.flipRel >= 0 {
			t.flipAt = t.offer + t.flipRel
		}
	}
	// Write up to the next pause or cut first.
	for _, at := range []int64{t.pauseAt, t.cutAt} {
		if at > t.n && at < t.n+int64(len(p)) {
			k, err := t.Write(p[:at-t.n])
			if err != nil {
				return k, err
			}
			k2, err := t.Write(p[k:])
			return k + k2, err
		}
	}
	if t.pauseAt >= 0 && t.n >= t.pauseAt {
		t.pauseAt = -1
		close(t.reached)
		select {
		case <-t.gate:
		case <-t.closed:
		}
	}
	if t.cutAt >= 0 && t.n >= t.cutAt {
		t.cutAt = -1
		t.pipeEnd.cut()
	}
	if t.flipAt >= t.n && t.flipAt < t.n+int64(len(p)) {
		p = bytes.Clone(p)
		p[t.flipAt-t.n] ^= 0x10
	}
	k, err := t.pipeEnd.Write(p)
	t.n += int64(k)
	t.w.sent.Add(int64(k))
	return k, err
}

func (t *tap) Close() error {
	t.once.Do(func() { close(t.closed) })
	return t.pipeEnd.Close()
}

// world connects Managers by in-memory streams: OpenFile makes a pipe and
// runs the other side's Serve.
type world struct {
	t     *testing.T
	mu    sync.Mutex
	nodes map[wire.Key]*node
	names map[string]wire.Key
	// opened counts the streams opened; tapFor, if set, configures the
	// tap of stream number i (from 0).
	opened int
	tapFor func(i int, t *tap)
	refuse bool // OpenFile fails
	sent   atomic.Int64
	serves sync.WaitGroup
}

type node struct {
	w          *world
	name       string
	key        wire.Key
	dir        string
	m          *Manager
	ctx        context.Context
	cancel     context.CancelFunc
	events     chan api.Event
	readerDone chan struct{} // the event reader ended
	seen       []api.Event
	accept     []int64 // offsets of the FileAccepts this node got as a sender
	amu        sync.Mutex
}

func newWorld(t *testing.T) *world {
	w := &world{t: t, nodes: map[wire.Key]*node{}, names: map[string]wire.Key{}}
	t.Cleanup(func() {
		w.mu.Lock()
		nodes := slices.Collect(func(yield func(*node) bool) {
			for _, n := range w.nodes {
				if !yield(n) {
					return
				}
			}
		})
		w.mu.Unlock()
		for _, n := range nodes {
			n.stop()
		}
		w.waitServes()
	})
	return w
}

func keyOf(name string) wire.Key {
	s := sha256.Sum256([]byte(name))
	return wire.Key(s)
}

// start starts a node called name; dir "" is a new downloads directory.
func (w *world) start(name, dir string, tune func(*Options, *Manager)) *node {
	w.t.Helper()
	if dir == "" {
		dir = filepath.Join(w.t.TempDir(), "downloads")
		if err := os.MkdirAll(dir, 0o700); err != nil { // the node makes it at its first accept; tests look in it before
			w.t.Fatal(err)
		}
	}
	n := &node{w: w, name: name, key: keyOf(name), dir: dir, events: make(chan api.Event, 100000), readerDone: make(chan struct{})}
	bus := api.NewBus(nil)
	o := Options{Self: n.key, Bus: bus, Sessions: sessions{w, n.key}, Peers: peers{w}, Downloads: dir,
		PathOf: func(wire.Key) string { return api.PathDirect }, Logger: zerolog.Nop()}
	if tune != nil {
		tune(&o, nil)
	}
	m, err := New(o)
	if err != nil {
		w.t.Fatal(err)
	}
	m.sweepEvery = 10 * time.Millisecond
	m.onAccept = func(_ wire.FileID, off int64) {
		n.amu.Lock()
		n.accept = append(n.accept, off)
		n.amu.Unlock()
	}
	if tune != nil {
		tune(&o, m)
	}
	n.m = m
	n.ctx, n.cancel = context.WithCancel(context.Background())
	sub := bus.Subscribe()
	go func() {
		defer close(n.readerDone)
		for {
			e, err := sub.Next(n.ctx)
			if err != nil {
				return
			}
			n.events <- e
		}
	}()
	m.Start(n.ctx)
	w.mu.Lock()
	w.nodes[n.key] = n
	w.names[name] = n.key
	w.mu.Unlock()
	return n
}

// stop stops n and waits for its goroutines.
func (n *node) stop() {
	n.w.mu.Lock()
	if n.w.nodes[n.key] == n {
		delete(n.w.nodes, n.key)
	}
	n.w.mu.Unlock()
	n.cancel()
	n.m.Wait()
	<-n.readerDone
}

func (w *world) waitServes() {
	w.t.Helper()
	done := make(chan struct{})
	go func() { w.serves.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		w.t.Fatal("Serve did not return")
	}
}

type sessions struct {
	w    *world
	self wire.Key
}

func (s sessions) OpenFile(ctx context.Context, to wire.Key) (Stream, error) {
	w := s.w
	w.mu.Lock()
	dst, refuse, i := w.nodes[to], w.refuse, w.opened
	w.opened++
	w.mu.Unlock()
	if dst == nil || refuse {
		return nil, errors.New("no session")
	}
	a, b := newPipe()
	t := &tap{pipeEnd: a, w: w, flipAt: -1, flipRel: -1, cutAt: -1, pauseAt: -1, reached: make(chan struct{}), gate: make(chan struct{}), closed: make(chan struct{})}
	if w.tapFor != nil {
		w.tapFor(i, t)
	}
	w.serves.Go(func() { dst.m.Serve(dst.ctx, s.self, b) })
	return t, nil
}

type peers struct{ w *world }

func (p peers) KeyOf(_ context.Context, name string) (wire.Key, *api.Error) {
	p.w.mu.Lock()
	defer p.w.mu.Unlock()
	k, ok := p.w.names[name]
	switch {
	case !ok:
		return wire.Key{}, &api.Error{Code: api.CodeUnknownPeer, Message: name + " is unknown"}
	case p.w.nodes[k] == nil:
		return wire.Key{}, &api.Error{Code: api.CodePeerOffline, Message: name + " is offline"}
	}
	return k, nil
}

func (p peers) NameOf(_ context.Context, key wire.Key) (string, error) {
	p.w.mu.Lock()
	defer p.w.mu.Unlock()
	for n, k := range p.w.names {
		if k == key {
			return n, nil
		}
	}
	return "", errors.New("unknown key")
}

// next waits for n's next event that match accepts.
func (n *node) next(match func(api.Event) bool) api.Event {
	n.w.t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case e := <-n.events:
			n.seen = append(n.seen, e)
			if match(e) {
				return e
			}
		case <-timeout:
			n.w.t.Fatalf("%s: no event in time; seen %s", n.name, describe(n.seen))
			return nil
		}
	}
}

func describe(es []api.Event) string {
	var b strings.Builder
	for _, e := range es {
		b.WriteString(e.EventType())
		switch e := e.(type) {
		case *api.FileFailed:
			b.WriteString("(" + e.Reason + ")")
		case *api.Error:
			b.WriteString("(" + e.Code + ": " + e.Message + ")")
		}
		b.WriteString(" ")
	}
	return b.String()
}

// drain returns the events queued in c.
func drain(c chan api.Event) []api.Event {
	var es []api.Event
	for len(c) > 0 {
		es = append(es, <-c)
	}
	return es
}

func isType(typ string) func(api.Event) bool {
	return func(e api.Event) bool { return e.EventType() == typ }
}

func ofID(typ, id string) func(api.Event) bool {
	return func(e api.Event) bool {
		if e.EventType() != typ {
			return false
		}
		switch e := e.(type) {
		case *api.FileOffer:
			return e.ID == id
		case *api.FileProgress:
			return e.ID == id
		case *api.FileDone:
			return e.ID == id
		case *api.FileFailed:
			return e.ID == id
		case *api.Error:
			return e.ID == id
		}
		return false
	}
}

// outcome waits for the file_done or file_failed of id.
func (n *node) outcome(id string) api.Event {
	n.w.t.Helper()
	return n.next(func(e api.Event) bool { return ofID(api.TypeFileDone, id)(e) || ofID(api.TypeFileFailed, id)(e) })
}

func (n *node) done(id string) *api.FileDone {
	n.w.t.Helper()
	e := n.outcome(id)
	d, ok := e.(*api.FileDone)
	if !ok {
		n.w.t.Fatalf("%s: %s failed: %s", n.name, id, e.(*api.FileFailed).Reason)
	}
	return d
}

func (n *node) failed(id, reason string) *api.FileFailed {
	n.w.t.Helper()
	e := n.outcome(id)
	f, ok := e.(*api.FileFailed)
	if !ok {
		n.w.t.Fatalf("%s: %s done, want it failed (%s)", n.name, id, reason)
	}
	if !strings.HasPrefix(f.Reason, reason) {
		n.w.t.Fatalf("%s: %s failed: %q, want %q", n.name, id, f.Reason, reason)
	}
	return f
}

// offered waits for the sender's file_offer and the receiver's.
func offered(a, b *node) string {
	a.w.t.Helper()
	so := a.next(isType(api.TypeFileOffer)).(*api.FileOffer)
	ro := b.next(ofID(api.TypeFileOffer, so.ID)).(*api.FileOffer)
	if so.To != b.name || ro.From != a.name || ro.Name != so.Name || ro.Size != so.Size || ro.SHA256 != so.SHA256 {
		a.w.t.Fatalf("offers differ: sent %+v, received %+v", so, ro)
	}
	return so.ID
}

// testFile writes size random bytes to dir/name.
func testFile(t *testing.T, dir, name string, size int, seed uint64) (string, []byte) {
	t.Helper()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, data
}

func checkFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes, not the %d sent", path, len(got), len(want))
	}
}

// entries lists dir, hidden files included.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

const size5M = 5 << 20

func TestSendAcceptVerify(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.start("alice", "", nil), w.start("bob", "", nil)
	path, data := testFile(t, "", "photo 1.jpg", size5M, 1)
	alice.m.Send(context.Background(), "bob", path)
	id := offered(alice, bob)
	bob.m.Accept(id)
	rd := bob.done(id)
	sd := alice.done(id)
	if filepath.Base(rd.Path) != "photo 1.jpg" || filepath.Dir(rd.Path) != bob.dir || sd.Path != path {
		t.Errorf("saved as %s, sent %s", rd.Path, sd.Path)
	}
	sum := sha256.Sum256(data)
	if rd.SHA256 != hexSum(sum) || sd.SHA256 != rd.SHA256 {
		t.Errorf("sha256 %s and %s, want %x", rd.SHA256, sd.SHA256, sum)
	}
	checkFile(t, rd.Path, data)
	w.waitServes()
	if got := entries(t, bob.dir); !slices.Equal(got, []string{"photo 1.jpg"}) {
		t.Errorf("downloads hold %v", got)
	}
	// Events in order, each side: offer, progress with growing bytes,
	// done.
	for _, n := range []*node{alice, bob} {
		var types []string
		last := int64(-1)
		for _, e := range n.seen {
			types = append(types, e.EventType())
			if p, ok := e.(*api.FileProgress); ok {
				if p.ID != id || p.Bytes < last || p.Bytes > p.Total || p.Total != size5M || p.Path != api.PathDirect {
					t.Errorf("%s: progress %+v after %d", n.name, p, last)
				}
				last = p.Bytes
			}
		}
		if len(types) < 2 || types[0] != api.TypeFileOffer || types[len(types)-1] != api.TypeFileDone {
			t.Errorf("%s: events %v", n.name, types)
		}
		for _, typ := range types[1 : len(types)-1] {
			if typ != api.TypeFileProgress {
				t.Errorf("%s: events %v", n.name, types)
			}
		}
	}
	if s := w.sent.Load(); s > size5M+size5M/100 {
		t.Errorf("%d bytes sent for %d", s, size5M)
	}
}

func TestEmptyFile(t *testing.T) {
	w := newWorld(t)
	alice := w.start("alice", "", nil)
	bob := w.start("bob", "", func(o *Options, _ *Manager) { o.AcceptFrom = []string{"alice"} })
	path, _ := testFile(t, "", "empty", 0, 1)
	alice.m.Send(context.Background(), "bob", path)
	id := offered(alice, bob)
	checkFile(t, bob.done(id).Path, nil)
	alice.done(id)
}

func TestReject(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.start("alice", "", nil), w.start("bob", "", nil)
	path, _ := testFile(t, "", "a.txt", 1000, 2)
	alice.m.Send(context.Background(), "bob", path)
	id := offered(alice, bob)
	bob.m.Reject(id)
	bob.failed(id, api.FileRejected)
	if f := alice.failed(id, api.FileRejected); f.Reason != "rejected by the peer" {
		t.Errorf("sender's reason %q", f.Reason)
	}
	w.waitServes()
	if got := entries(t, bob.dir); len(got) != 0 {
		t.Errorf("downloads hold %v", got)
	}
	// The offer is gone: commands on it are refused.
	bob.m.Accept(id)
	if e := bob.next(isType(api.TypeError)).(*api.Error); e.Code != api.CodeBadCommand || e.ID != id {
		t.Errorf("accept after reject: %+v", e)
	}
}

func TestNoDownloads(t *testing.T) {
	w := newWorld(t)
	alice := w.start("alice", "", nil)
	w.start("bob", "", func(o *Options, _ *Manager) { o.Downloads = "" })
	path, _ := testFile(t, "", "a.txt", 1000, 2)
	alice.m.Send(context.Background(), "bob", path)
	id := alice.next(isType(api.TypeFileOffer)).(*api.FileOffer).ID
	alice.failed(id, "rejected: this node takes no files")
}

func TestDecideWithin(t *testing.T) {
	w := newWorld(t)
	alice := w.start("alice", "", nil)
	bob := w.start("bob", "", func(o *Options, _ *Manager) { o.DecideWithin = 50 * time.Millisecond })
	path, _ := testFile(t, "", "a.txt", 1000, 2)
	alice.m.Send(context.Background(), "bob", path)
	id := offered(alice, bob)
	bob.failed(id, "rejected: not answered within 50ms")
	alice.failed(id, "rejected: not answered within 50ms")
}

func TestUnknownID(t *testing.T) {
	w := newWorld(t)
	bob := w.start("bob", "", nil)
	for i, f := range []func(string){bob.m.Accept, bob.m.Reject, bob.m.Cancel} {
		id := []string{"zz", "0123456789abcdef", ""}[i]
		f(id)
		if e := bob.next(isType(api.TypeError)).(*api.Error); e.Code != api.CodeBadCommand {
			t.Errorf("command on %q: %+v", id, e)
		}
	}
}

func TestSendRefused(t *testing.T) {
	w := newWorld(t)
	alice := w.start("alice", "", func(o *Options, _ *Manager) { o.MaxSize = 1000 })
	w.start("bob", "", nil)
	dir := t.TempDir()
	big, _ := testFile(t, dir, "big", 1001, 3)
	small, _ := testFile(t, dir, "small", 10, 3)
	unreadable, _ := testFile(t, dir, "secret", 10, 3)
	os.Chmod(unreadable, 0)
	for _, c := range []struct{ to, path, code string }{
		{"bob", filepath.Join(dir, "missing"), api.CodeNoFile},
		{"bob", dir, api.CodeNoFile},
		{"bob", big, api.CodeTooBig},
		{"carol", small, api.CodeUnknownPeer},
	} {
		alice.m.Send(context.Background(), c.to, c.path)
		if e := alice.next(isType(api.TypeError)).(*api.Error); e.Code != c.code {
			t.Errorf("send %s to %s: %+v, want %s", c.path, c.to, e, c.code)
		}
	}
	if os.Getuid() != 0 {
		alice.m.Send(context.Background(), "bob", unreadable)
		if e := alice.next(isType(api.TypeError)).(*api.Error); e.Code != api.CodeNoFile {
			t.Errorf("send unreadable: %+v", e)
		}
	}
	// Offline: the peer is known but not running, or no stream opens.
	w.start("carol", "", nil).stop()
	alice.m.Send(context.Background(), "carol", small)
	if e := alice.next(isType(api.TypeError)).(*api.Error); e.Code != api.CodePeerOffline || e.To != "carol" {
		t.Errorf("send to offline carol: %+v", e)
	}
	w.mu.Lock()
	w.refuse = true
	w.mu.Unlock()
	alice.m.Send(context.Background(), "bob", small)
	o := alice.next(isType(api.TypeFileOffer)).(*api.FileOffer)
	alice.failed(o.ID, api.FilePeerOffline)
}

func TestTooBigForReceiver(t *testing.T) {
	w := newWorld(t)
	alice := w.start("alice", "", nil)
	bob := w.start("bob", "", func(o *Options, _ *Manager) { o.MaxSize = 100 << 10 })
	path, _ := testFile(t, "", "a.bin", 100<<10+1, 4)
	alice.m.Send(context.Background(), "bob", path)
	o := alice.next(isType(api.TypeFileOffer)).(*api.FileOffer)
	alice.failed(o.ID, "too big: larger than 102400 bytes")
	w.waitServes()
	if len(bob.seen) != 0 || len(bob.events) != 0 {
		t.Errorf("receiver events %s", describe(bob.seen))
	}
}

func TestPerPeer(t *testing.T) {
	w := newWorld(t)
	alice := w.start("alice", "", nil)
	bob := w.start("bob", "", func(o *Options, _ *Manager) { o.PerPeer = 2 })
	path, _ := testFile(t, "", "a.bin", 1000, 5)
	var ids []string
	for range 2 {
		alice.m.Send(context.Background(), "bob", path)
		ids = append(ids, offered(alice, bob))
	}
	alice.m.Send(context.Background(), "bob", path)
	third := alice.next(isType(api.TypeFileOffer)).(*api.FileOffer).ID
	alice.failed(third, api.FileBusy)
	// One done, and there is room again.
	bob.m.Accept(ids[0])
	bob.done(ids[0])
	alice.done(ids[0])
	alice.m.Send(context.Background(), "bob", path)
	id := offered(alice, bob)
	bob.m.Accept(id)
	bob.m.Accept(ids[1])
	for range 2 {
		if d := bob.next(isType(api.TypeFileDone)).(*api.FileDone); d.ID != id && d.ID != ids[1] {
			t.Errorf("done %s", d.ID)
		}
	}
}

func TestAutoAcceptAndNumberedName(t *testing.T) {
	w := newWorld(t)
	alice := w.start("alice", "", nil)
	bob := w.start("bob", "", func(o *Options, _ *Manager) { o.AcceptFrom = []string{"alice"} })
	if err := os.WriteFile(filepath.Join(bob.dir, "a.txt"), []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	path, data := testFile(t, "", "a.txt", 300<<10, 6)
	for i, want := range []string{"a (1).txt", "a (2).txt"} {
		alice.m.Send(context.Background(), "bob", path)
		id := offered(alice, bob)
		d := bob.done(id) // no /accept
		if filepath.Base(d.Path) != want {
			t.Errorf("send %d saved as %s, want %s", i, d.Path, want)
		}
		checkFile(t, d.Path, data)
		alice.done(id)
	}
	checkFile(t, filepath.Join(bob.dir, "a.txt"), []byte("old"))
}

// rawOffer offers a file to bob's Serve on a raw stream from the key of
// from, and returns the first frame bob answers with (kind 0: none, the
// stream ended).
func rawOffer(t *testing.T, w *world, bob *node, from string, o *wire.FileOffer, hashes [][32]byte) (wire.FrameKind, []byte) {
	t.Helper()
	a, b := newPipe()
	w.serves.Go(func() { bob.m.Serve(bob.ctx, keyOf(from), b) })
	defer a.Close()
	a.Write(wire.AppendFileHashFrames(wire.AppendFileOffer(nil, o), hashes))
	k, body, err := readFrame(bufio.NewReader(a), nil)
	if err != nil {
		return 0, nil
	}
	return k, body
}

func TestHostileNames(t *testing.T) {
	w := newWorld(t)
	w.start("mallory", "", nil)
	bob := w.start("bob", "", nil)
	hashes := [][32]byte{sha256.Sum256([]byte("x"))}
	offer := func(name string) *wire.FileOffer {
		return &wire.FileOffer{ID: newID(), Size: 1, BlockSize: wire.MinFileBlockSize, SHA256: hashes[0], Name: name}
	}
	for _, name := range []string{
		"", "\xff\xfe.txt",
		"../etc/passwd", "a/b", `a\b`, ".", "..", "/etc/passwd", `C:\x`, "C:x",
		"bell\a.txt", "del\x7f", "c1\u0085", "evil\u202egnp.exe", "iso\u2066x", "zero\u200bwidth",
		" lead", "trail ", ".hidden", "trail.", "CON", "con.txt", "LPT9.log", "nul",
		strings.Repeat("長", 86), // 258 bytes: refused at parse
	} {
		k, body := rawOffer(t, w, bob, "mallory", offer(name), hashes)
		if len(name) > wire.MaxFileNameLen {
			if k != 0 {
				t.Errorf("%q (%d bytes): frame %d, want the stream closed", name, len(name), k)
			}
			continue
		}
		if k != wire.FrameFileReject {
			t.Errorf("%q: frame %d, want a reject", name, k)
			continue
		}
		if j, err := wire.ParseFileReject(body); err != nil || j.Code != wire.FileRejectBadName {
			t.Errorf("%q: reject %+v, %v", name, j, err)
		}
	}
	// A name that is fine is offered, and waits for an answer.
	a, b := newPipe()
	w.serves.Go(func() { bob.m.Serve(bob.ctx, keyOf("mallory"), b) })
	fine := offer("résumé.pdf")
	a.Write(wire.AppendFileHashFrames(wire.AppendFileOffer(nil, fine), hashes))
	bob.next(ofID(api.TypeFileOffer, fine.ID.String()))
	bob.m.Reject(fine.ID.String())
	if k, body, err := readFrame(bufio.NewReader(a), nil); err != nil || k != wire.FrameFileReject {
		t.Errorf("fine name: frame %d %x, %v; want a reject", k, body, err)
	}
	a.Close()
	// A peer with no name: closed without an answer.
	if k, _ := rawOffer(t, w, bob, "stranger", offer("ok.txt"), hashes); k != 0 {
		t.Errorf("stranger: frame %d", k)
	}
	w.waitServes()
	var offers []string
	for _, e := range slices.Concat(bob.seen, drain(bob.events)) {
		if o, ok := e.(*api.FileOffer); ok {
			offers = append(offers, o.Name)
		}
	}
	if !slices.Equal(offers, []string{"résumé.pdf"}) {
		t.Errorf("offers published: %q", offers)
	}
	if got := entries(t, bob.dir); len(got) != 0 {
		t.Errorf("downloads hold %v", got)
	}
}

// TestOldBlockHashesRefused: an offer followed by the retired per-block
// hash frame (an older natchat) is answered with FileRejectVersion, which
// the sender's user reads as "unsupported version".
func TestOldBlockHashesRefused(t *testing.T) {
	w := newWorld(t)
	w.start("mallory", "", nil)
	bob := w.start("bob", "", nil)
	sum := sha256.Sum256([]byte("x"))
	o := &wire.FileOffer{ID: newID(), Size: 1, BlockSize: wire.MinFileBlockSize, SHA256: sum, Name: "old.txt"}
	a, b := newPipe()
	w.serves.Go(func() { bob.m.Serve(bob.ctx, keyOf("mallory"), b) })
	old := wire.AppendFrame(nil, wire.FrameFileBlockHashes, append([]byte{0, 0, 0, 0}, sum[:]...))
	a.Write(append(wire.AppendFileOffer(nil, o), old...))
	k, body, err := readFrame(bufio.NewReader(a), nil)
	a.Close()
	if err != nil || k != wire.FrameFileReject {
		t.Fatalf("frame %d, %v; want a reject", k, err)
	}
	j, err := wire.ParseFileReject(body)
	if err != nil || j.Code != wire.FileRejectVersion || j.ID != o.ID {
		t.Fatalf("reject %+v, %v", j, err)
	}
	if got := rejectReason(j); !strings.HasPrefix(got, api.FileVersion+": ") {
		t.Errorf("the sender's reason: %q", got)
	}
	w.waitServes()
	for _, e := range slices.Concat(bob.seen, drain(bob.events)) {
		if _, ok := e.(*api.FileOffer); ok {
			t.Errorf("offer published: %+v", e)
		}
	}
}

func TestCancel(t *testing.T) {
	for _, side := range []string{"sender", "receiver"} {
		t.Run(side, func(t *testing.T) {
			w := newWorld(t)
			var first *tap
			w.tapFor = func(i int, tp *tap) {
				if i == 0 {
					tp.pauseAt = size5M * 4 / 10
					first = tp
				}
			}
			alice := w.start("alice", "", nil)
			bob := w.start("bob", "", func(o *Options, _ *Manager) { o.AcceptFrom = []string{"alice"} })
			path, _ := testFile(t, "", "big.bin", size5M, 7)
			alice.m.Send(context.Background(), "bob", path)
			id := offered(alice, bob)
			select {
			case <-first.reached:
			case <-time.After(wait):
				t.Fatal("the transfer did not get to 40%")
			}
			if side == "sender" {
				alice.m.Cancel(id)
				close(first.gate)
				alice.failed(id, api.FileCancelled)
				if f := bob.failed(id, api.FileCancelled); f.Reason != "cancelled by the peer" {
					t.Errorf("receiver's reason %q", f.Reason)
				}
			} else {
				bob.m.Cancel(id)
				bob.failed(id, api.FileCancelled)
				close(first.gate)
				if f := alice.failed(id, api.FileCancelled); f.Reason != "cancelled by the peer" {
					t.Errorf("sender's reason %q", f.Reason)
				}
			}
			w.waitServes()
			if got := entries(t, bob.dir); len(got) != 0 {
				t.Errorf("downloads hold %v", got)
			}
			alice.m.Cancel(id)
			if e := alice.next(isType(api.TypeError)).(*api.Error); e.Code != api.CodeBadCommand {
				t.Errorf("second cancel: %+v", e)
			}
		})
	}
}

func TestCancelBeforeAccept(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.start("alice", "", nil), w.start("bob", "", nil)
	path, _ := testFile(t, "", "a.bin", 1000, 8)
	alice.m.Send(context.Background(), "bob", path)
	id := offered(alice, bob)
	alice.m.Cancel(id)
	alice.failed(id, api.FileCancelled)
	bob.failed(id, "cancelled by the peer")
	bob.m.Accept(id)
	if e := bob.next(isType(api.TypeError)).(*api.Error); e.Code != api.CodeBadCommand {
		t.Errorf("accept after the sender's cancel: %+v", e)
	}
}

func TestCorruptBlockRefetched(t *testing.T) {
	w := newWorld(t)
	w.tapFor = func(i int, tp *tap) {
		if i == 0 {
			tp.flipAt = 1<<20 + 12345
		}
	}
	alice := w.start("alice", "", nil)
	bob := w.start("bob", "", func(o *Options, _ *Manager) { o.AcceptFrom = []string{"alice"} })
	path, data := testFile(t, "", "c.bin", size5M, 9)
	alice.m.Send(context.Background(), "bob", path)
	id := offered(alice, bob)
	checkFile(t, bob.done(id).Path, data)
	alice.done(id)
	alice.amu.Lock()
	defer alice.amu.Unlock()
	// The second attempt resumes at the corrupt block, verified up to
	// it: bs 64 KiB, the flip in block 16.
	if len(alice.accept) != 2 || alice.accept[0] != 0 || alice.accept[1] != 16*wire.MinFileBlockSize {
		t.Errorf("accepted at %v", alice.accept)
	}
	// Resent: the corrupt block, and what the receiver's stream reader
	// had read ahead of its writer when the block failed (recvBufs).
	if s := w.sent.Load(); s > size5M+size5M/20+recvBufs*bufSize {
		t.Errorf("%d bytes sent for %d", s, size5M)
	}
}

func TestCorruptEveryTime(t *testing.T) {
	w := newWorld(t)
	w.tapFor = func(i int, tp *tap) { tp.flipRel = 1000 } // the first block sent, each time
	alice := w.start("alice", "", nil)
	bob := w.start("bob", "", func(o *Options, _ *Manager) { o.AcceptFrom = []string{"alice"} })
	path, _ := testFile(t, "", "c.bin", 2<<20, 10)
	alice.m.Send(context.Background(), "bob", path)
	id := offered(alice, bob)
	bob.failed(id, api.FileVerifyFailed)
	alice.failed(id, api.FileVerifyFailed)
	w.waitServes()
	if got := entries(t, bob.dir); len(got) != 0 {
		t.Errorf("downloads hold %v", got)
	}
}

func TestResumeAfterCut(t *testing.T) {
	w := newWorld(t)
	w.tapFor = func(i int, tp *tap) {
		if i == 0 {
			tp.cutAt = size5M * 4 / 10
		}
	}
	alice := w.start("alice", "", nil)
	bob := w.start("bob", "", nil)
	path, data := testFile(t, "", "r.bin", size5M, 11)
	alice.m.Send(context.Background(), "bob", path)
	id := offered(alice, bob)
	bob.m.Accept(id)
	checkFile(t, bob.done(id).Path, data)
	alice.done(id)
	checkResumed(t, alice, w)
}

func checkResumed(t *testing.T, alice *node, w *world) {
	t.Helper()
	alice.amu.Lock()
	defer alice.amu.Unlock()
	if len(alice.accept) != 2 || alice.accept[0] != 0 || alice.accept[1] < size5M*35/100 {
		t.Errorf("accepted at %v (size %d)", alice.accept, size5M)
	}
	if s := w.sent.Load(); s > size5M+size5M/20 {
		t.Errorf("%d bytes sent for %d", s, size5M)
	}
}

func TestResumeAfterReceiverRestart(t *testing.T) {
	w := newWorld(t)
	var first *tap
	w.tapFor = func(i int, tp *tap) {
		if i == 0 {
			tp.pauseAt = size5M * 4 / 10
			first = tp
		}
	}
	alice := w.start("alice", "", nil)
	bob := w.start("bob", "", nil)
	path, data := testFile(t, "", "r.bin", size5M, 12)
	alice.m.Send(context.Background(), "bob", path)
	id := offered(alice, bob)
	bob.m.Accept(id)
	select {
	case <-first.reached:
	case <-time.After(wait):
		t.Fatal("the transfer did not get to 40%")
	}
	bob.stop()
	w.waitServes()
	if got := entries(t, bob.dir); len(got) != 2 {
		t.Fatalf("after the restart the downloads hold %v", got)
	}
	bob2 := w.start("bob", bob.dir, nil) // no AcceptFrom: a resume needs none
	close(first.gate)
	d := bob2.done(id)
	checkFile(t, d.Path, data)
	alice.done(id)
	for _, e := range bob2.seen {
		if e.EventType() == api.TypeFileOffer {
			t.Errorf("the restarted receiver offered it again: %+v", e)
		}
	}
	checkResumed(t, alice, w)
	w.waitServes()
	if got := entries(t, bob.dir); !slices.Equal(got, []string{"r.bin"}) {
		t.Errorf("downloads hold %v", got)
	}
}

// memOutbox is an Outbox in memory, shared by a node's runs.
type memOutbox struct {
	mu   sync.Mutex
	recs map[wire.FileID]store.FileOut
}

func (b *memOutbox) PutFileOut(f store.FileOut) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.recs[f.ID] = f
	return nil
}

func (b *memOutbox) DeleteFileOut(id wire.FileID) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.recs, id)
	return nil
}

func (b *memOutbox) FilesOut() ([]store.FileOut, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []store.FileOut
	for _, f := range b.recs {
		out = append(out, f)
	}
	return out, nil
}

func (b *memOutbox) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.recs)
}

// TestResumeAfterSenderRestart: the sender stops at 40 % and starts again
// with the same outbox: it offers the same ID again, the receiver resumes
// from what it verified, and the file verifies. The record goes once the
// transfer is done.
func TestResumeAfterSenderRestart(t *testing.T) {
	w := newWorld(t)
	var first *tap
	w.tapFor = func(i int, tp *tap) {
		if i == 0 {
			tp.pauseAt = size5M * 4 / 10
			first = tp
		}
	}
	box := &memOutbox{recs: map[wire.FileID]store.FileOut{}}
	withBox := func(o *Options, _ *Manager) { o.Outbox = box }
	alice := w.start("alice", "", withBox)
	bob := w.start("bob", "", func(o *Options, _ *Manager) { o.AcceptFrom = []string{"alice"} })
	path, data := testFile(t, "", "s.bin", size5M, 14)
	alice.m.Send(context.Background(), "bob", path)
	id := offered(alice, bob)
	select {
	case <-first.reached:
	case <-time.After(wait):
		t.Fatal("the transfer did not get to 40%")
	}
	alice.stop()
	if box.len() != 1 {
		t.Fatalf("after the stop the outbox holds %d files, want 1", box.len())
	}
	alice2 := w.start("alice", "", withBox)
	if o := alice2.next(isType(api.TypeFileOffer)).(*api.FileOffer); o.ID != id || o.To != "bob" {
		t.Fatalf("the restarted sender offered %+v, want %s again", o, id)
	}
	d := bob.done(id)
	checkFile(t, d.Path, data)
	alice2.done(id)
	alice2.amu.Lock()
	acc := slices.Clone(alice2.accept)
	alice2.amu.Unlock()
	if len(acc) != 1 || acc[0] < size5M*35/100 {
		t.Errorf("the restarted sender was accepted at %v (size %d)", acc, size5M)
	}
	w.waitServes()
	if box.len() != 0 {
		t.Errorf("the outbox still holds %d files after the transfer", box.len())
	}
}

// TestResumedFileChanged: a file that changed while its sender was down is
// not offered again: file_failed, and the record goes.
func TestResumedFileChanged(t *testing.T) {
	w := newWorld(t)
	box := &memOutbox{recs: map[wire.FileID]store.FileOut{}}
	path, _ := testFile(t, "", "c.bin", 1000, 15)
	box.recs[wire.FileID{5}] = store.FileOut{ID: wire.FileID{5}, To: "bob", Path: path, Size: 1000}
	w.start("bob", "", nil)
	alice := w.start("alice", "", func(o *Options, _ *Manager) { o.Outbox = box })
	alice.failed(wire.FileID{5}.String(), api.FileChanged)
	if box.len() != 0 {
		t.Errorf("the outbox still holds %d files", box.len())
	}
}

func TestSenderGivesUp(t *testing.T) {
	w := newWorld(t)
	w.tapFor = func(i int, tp *tap) {
		if i == 0 {
			tp.cutAt = 1 << 20
		}
	}
	alice := w.start("alice", "", func(_ *Options, m *Manager) {
		if m != nil {
			m.retryFor = 300 * time.Millisecond
		}
	})
	bob := w.start("bob", "", func(o *Options, m *Manager) {
		o.AcceptFrom = []string{"alice"}
		if m != nil {
			m.idleFor = 300 * time.Millisecond
		}
	})
	path, _ := testFile(t, "", "g.bin", 2<<20, 13)
	alice.m.Send(context.Background(), "bob", path)
	id := offered(alice, bob)
	w.mu.Lock()
	w.refuse = true // after the cut, no stream opens
	w.mu.Unlock()
	alice.failed(id, api.FileBroken)
	bob.failed(id, api.FileBroken)
	w.waitServes()
	if got := entries(t, bob.dir); len(got) != 0 {
		t.Errorf("downloads hold %v", got)
	}
}

// TestCannotStore: a receiver that cannot store the file fails the
// transfer both sides with the OS error.
func TestCannotStore(t *testing.T) {
	w := newWorld(t)
	alice := w.start("alice", "", nil)
	bob := w.start("bob", "", func(o *Options, m *Manager) {
		o.AcceptFrom = []string{"alice"}
		if m != nil {
			m.openPart = func(string, wire.FileID, *files.Manifest) (*files.Part, error) {
				return nil, &fs.PathError{Op: "open", Path: "x.part", Err: syscall.ENOSPC}
			}
		}
	})
	path, _ := testFile(t, "", "a.bin", 1000, 14)
	alice.m.Send(context.Background(), "bob", path)
	id := offered(alice, bob)
	const want = "disk: open x.part: no space left on device"
	if f := bob.failed(id, api.FileDisk); f.Reason != want {
		t.Errorf("receiver's reason %q", f.Reason)
	}
	if f := alice.failed(id, api.FileDisk); f.Reason != want {
		t.Errorf("sender's reason %q", f.Reason)
	}
}
