package rvclient_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"natchat/ctrl"
	"natchat/node/rvclient"
	"natchat/wire"
)

// fakeRV is a scripted rendezvous for one client: it answers Hello and
// the handshake as the real one does, opens the client's sealed datagrams
// and records them, and lets the test (or its hook) send sealed messages
// back. Datagrams go both ways through one goroutine, in order.
type fakeRV struct {
	t    *testing.T
	key  ctrl.ServerKey
	q    chan func()
	c    *rvclient.Client
	obs  *mailObs
	sess wire.SessionID

	mu   sync.Mutex
	keys *ctrl.Keys
	got  []wire.Message // sealed messages from the client, in order
	// hook answers a sealed message from the client (nil: nothing).
	hook func(m wire.Message)
	// box is the mailbox the default hook serves: messages in order.
	box []boxMail
}

type boxMail struct {
	from     wire.Key
	id       wire.MsgID
	storedMS int64
	blob     []byte
}

// mailObs is the client's observer: it records what it is told, and acks
// (or keeps) each message it gets, unless told to hold them.
type mailObs struct {
	mu       sync.Mutex
	c        *rvclient.Client
	log      []string
	mail     []boxMail
	drains   []bool
	receipts []wire.Receipt
	refuse   map[wire.MsgID]bool // receipts not taken
	hold     bool                // neither ack nor keep
	keep     bool                // keep instead of ack
	waiting  []uint32
	// take, if set, says what to do with a message: refuse it at once
	// (false), or, taken, "ack", "keep", "leave" or "hold" it.
	take func(from wire.Key, id wire.MsgID) (bool, string)
	// Receipts to acknowledge, in order, by one goroutine at a time.
	rackMu  sync.Mutex
	pending []wire.MailRef
	calls   []wire.MsgID // every Mail call, taken or not
}

func (o *mailObs) note(s string) { o.mu.Lock(); o.log = append(o.log, s); o.mu.Unlock() }

func (o *mailObs) Registered(netip.AddrPort)                   { o.note("registered") }
func (o *mailObs) Joined(wire.Key, string)                     {}
func (o *mailObs) Left(wire.Key, string, string)               {}
func (o *mailObs) Refused(code, _ string)                      { o.note("refused " + code) }
func (o *mailObs) Unreachable(string)                          {}
func (o *mailObs) Signaled(wire.Key, string, []byte)           {}
func (o *mailObs) ServerKeyChanged(pinned, off ctrl.PublicKey) {}
func (o *mailObs) ServerKeyLearned(ctrl.PublicKey)             {}

func (o *mailObs) MailWaiting(count, _ uint32) {
	o.mu.Lock()
	o.waiting = append(o.waiting, count)
	o.mu.Unlock()
}

func (o *mailObs) Mail(from wire.Key, id wire.MsgID, storedMS int64, blob []byte) bool {
	o.mu.Lock()
	o.calls = append(o.calls, id)
	hold, keep, take := o.hold, o.keep, o.take
	what := ""
	if take != nil {
		var ok bool
		if ok, what = take(from, id); !ok {
			o.mu.Unlock()
			return false
		}
	}
	o.mail = append(o.mail, boxMail{from: from, id: id, storedMS: storedMS, blob: blob})
	o.mu.Unlock()
	if hold || what == "hold" {
		return true
	}
	// Later, off the read path, as the node does after showing it.
	go func() {
		switch {
		case what == "leave":
			o.c.LeaveMail(from, id)
		case keep || what == "keep":
			o.c.KeepMail(from, id)
		default:
			o.c.AckMail(from, id)
		}
	}()
	return true
}

func (o *mailObs) MailDrain(active bool) {
	o.mu.Lock()
	o.drains = append(o.drains, active)
	o.mu.Unlock()
}

func (o *mailObs) MailReceipt(r wire.Receipt) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.receipts = append(o.receipts, r)
	if o.refuse[r.ID] {
		return
	}
	o.pending = append(o.pending, r.MailRef)
	// Later, off the read path, in order, as the node does once the
	// outcome is durable.
	go func() {
		o.rackMu.Lock()
		defer o.rackMu.Unlock()
		o.mu.Lock()
		refs := o.pending
		o.pending = nil
		o.mu.Unlock()
		for _, ref := range refs {
			o.c.AckReceipt(ref)
		}
	}()
}

func (o *mailObs) snapshot() (mail []boxMail, drains []bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.mail), slices.Clone(o.drains)
}

var _ rvclient.MailObserver = (*mailObs)(nil)

func newFakeRV(t *testing.T) *fakeRV {
	f := &fakeRV{t: t, q: make(chan func(), 4096), sess: wire.SessionID{7, 7}}
	var err error
	if f.key, err = ctrl.NewServerKey(); err != nil {
		t.Fatal(err)
	}
	f.hook = f.serveBox
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	f.obs = &mailObs{refuse: map[wire.MsgID]bool{}}
	f.c, err = rvclient.New(rvclient.Options{Name: "bob", Identity: priv, Observer: f.obs, Heartbeat: 10 * time.Second,
		ServerKey: f.key.Public, Send: func(b []byte) {
			b = slices.Clone(b)
			f.q <- func() { f.fromClient(b) }
		}})
	if err != nil {
		t.Fatal(err)
	}
	f.obs.c = f.c
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case fn := <-f.q:
				fn()
			}
		}
	}()
	go func() { defer wg.Done(); f.c.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return f
}

// fromClient takes one datagram from the client (on the queue goroutine).
func (f *fakeRV) fromClient(b []byte) {
	if wire.IsSTUN(b) {
		return
	}
	msg, err := wire.Parse(b)
	if err != nil {
		return
	}
	switch m := msg.(type) {
	case *wire.Hello:
		f.c.Handle(wire.Marshal(&wire.CookieReply{Nonce: m.Nonce, Cookie: wire.Cookie{1}, ServerKey: f.key.Public}))
	case *wire.Handshake:
		resp, _, _, err := ctrl.Respond(f.key, m.Cookie, m.Noise)
		if err != nil {
			f.t.Errorf("handshake: %v", err)
			return
		}
		out, keys, err := resp.Finish(wire.AppendHandshakeResult(nil, &wire.HandshakeResult{Session: f.sess,
			Observed: netip.MustParseAddrPort("198.51.100.9:4000"), HeartbeatMS: 10000, ExpiryMS: 30000}))
		if err != nil {
			f.t.Errorf("handshake: %v", err)
			return
		}
		f.mu.Lock()
		f.keys = keys
		f.mu.Unlock()
		f.c.Handle(wire.Marshal(&wire.HandshakeReply{Noise: out}))
	case *wire.Sealed:
		f.mu.Lock()
		keys := f.keys
		f.mu.Unlock()
		if keys == nil {
			return
		}
		pt, err := keys.Open(nil, b)
		if err != nil {
			f.t.Errorf("sealed datagram from the client does not open: %v", err)
			return
		}
		inner, err := wire.ParseInner(pt)
		if err != nil {
			f.t.Errorf("sealed datagram from the client: %v", err)
			return
		}
		switch inner.(type) {
		case *wire.Heartbeat:
			f.send(&wire.HeartbeatAck{Observed: netip.MustParseAddrPort("198.51.100.9:4000")})
		case *wire.PeersRequest:
			f.send(&wire.Peers{Part: 0, Parts: 1})
		}
		f.mu.Lock()
		f.got = append(f.got, inner)
		hook := f.hook
		f.mu.Unlock()
		if hook != nil {
			hook(inner)
		}
	}
}

// send seals m to the client (on the queue goroutine, or from a hook).
func (f *fakeRV) send(m wire.Message) {
	f.mu.Lock()
	b := f.keys.Seal(nil, f.sess, wire.AppendInner(nil, m))
	f.mu.Unlock()
	f.c.Handle(b)
}

// sendLater queues m for the client from the test goroutine.
func (f *fakeRV) sendLater(m wire.Message) { f.q <- func() { f.send(m) } }

func (f *fakeRV) setHook(h func(wire.Message)) {
	f.mu.Lock()
	f.hook = h
	f.mu.Unlock()
}

// received returns the sealed messages of type T the client sent.
func received[T wire.Message](f *fakeRV) []T {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []T
	for _, m := range f.got {
		if t, ok := m.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// serveBox is the default hook: a mailbox as the real rendezvous keeps
// it. Fetch: the oldest messages in all their parts, or an empty notice;
// Ack: delete.
func (f *fakeRV) serveBox(m wire.Message) {
	switch m := m.(type) {
	case *wire.MailFetch:
		f.serveFetch(m, nil)
	case *wire.MailAck:
		f.mu.Lock()
		for _, r := range m.Refs {
			f.box = slices.DeleteFunc(f.box, func(bm boxMail) bool { return bm.from == r.Peer && bm.id == r.ID })
		}
		f.mu.Unlock()
	}
}

// serveFetch answers a fetch from the mailbox, leaving out every part of
// the messages at the indexes lost says (nil: none).
func (f *fakeRV) serveFetch(m *wire.MailFetch, lost func(index int) bool) {
	f.mu.Lock()
	n := min(int(m.Max), len(f.box))
	out := slices.Clone(f.box[:n])
	f.mu.Unlock()
	if n == 0 {
		f.send(&wire.MailNotice{})
		return
	}
	for x, bm := range out {
		if lost != nil && lost(x) {
			continue
		}
		parts := wire.MailParts(bm.blob)
		for i, p := range parts {
			f.send(&wire.Mail{From: bm.from, ID: bm.id, StoredMS: bm.storedMS, Tag: m.Tag, Index: uint8(x), Count: uint8(n),
				Part: uint8(i), Parts: uint8(len(parts)), Data: p})
		}
	}
}

func blobOf(i, size int) []byte {
	b := bytes.Repeat([]byte{byte(i)}, size)
	copy(b, fmt.Sprint("blob ", i))
	return b
}

// fill puts n messages from two senders into the fake's mailbox, of sizes
// from one part to the most.
func (f *fakeRV) fill(n int) []boxMail {
	alice, carol := wire.Key{0xA}, wire.Key{0xC}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range n {
		from := alice
		if i%3 == 2 {
			from = carol
		}
		size := []int{10, wire.MailPartLen, wire.MailPartLen + 1, wire.MaxMailBlob}[i%4]
		f.box = append(f.box, boxMail{from: from, id: wire.MsgID{byte(i)}, storedMS: 1000 + int64(i), blob: blobOf(i, size)})
	}
	return slices.Clone(f.box)
}

func sameMail(t *testing.T, got, want []boxMail) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.from != w.from || g.id != w.id || g.storedMS != w.storedMS || !bytes.Equal(g.blob, w.blob) {
			t.Fatalf("message %d: got %s/%s stored %d (%d bytes), want %s/%s stored %d (%d bytes)",
				i, g.from.Short(), g.id, g.storedMS, len(g.blob), w.from.Short(), w.id, w.storedMS, len(w.blob))
		}
	}
}

// TestMailDrain: registered, the client fetches at once; it gets the
// oldest eight, in order, acknowledges them (in batches), fetches the
// rest, and ends the drain at the empty notice.
func TestMailDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRV(t)
		want := f.fill(20)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		mail, drains := f.obs.snapshot()
		sameMail(t, mail, want)
		if !slices.Equal(drains, []bool{true, false}) {
			t.Fatalf("drain reports %v, want [true false]", drains)
		}
		f.mu.Lock()
		left := len(f.box)
		f.mu.Unlock()
		if left != 0 {
			t.Fatalf("%d messages left in the mailbox", left)
		}
		fetches := received[*wire.MailFetch](f)
		if len(fetches) != 4 { // 8 + 8 + 4, then the empty answer
			t.Errorf("%d fetches, want 4", len(fetches))
		}
		for _, a := range received[*wire.MailAck](f) {
			if len(a.Refs) == 0 || len(a.Refs) > wire.MaxMailAcks {
				t.Errorf("an ack of %d refs", len(a.Refs))
			}
		}
		// A later notice (a deposit that raced our registration) starts
		// another drain.
		f.mu.Lock()
		f.box = append(f.box, boxMail{from: wire.Key{0xA}, id: wire.MsgID{99}, storedMS: 5000, blob: []byte("late")})
		f.mu.Unlock()
		f.sendLater(&wire.MailNotice{Count: 1, Bytes: 4})
		time.Sleep(5 * time.Second)
		synctest.Wait()
		mail, drains = f.obs.snapshot()
		if len(mail) != 21 || mail[20].id != (wire.MsgID{99}) || !slices.Equal(drains, []bool{true, false, true, false}) {
			t.Fatalf("after a notice: %d messages, drains %v", len(mail), drains)
		}
		f.obs.mu.Lock()
		waiting := slices.Clone(f.obs.waiting)
		f.obs.mu.Unlock()
		if !slices.Equal(waiting, []uint32{1}) {
			t.Fatalf("MailWaiting %v, want [1]", waiting)
		}
	})
}

// TestMailReassembly: parts out of order, repeated, disagreeing with the
// first part's count, and the oldest message completed last: the client
// hands out each message once, whole, oldest first.
func TestMailReassembly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRV(t)
		a, b := wire.Key{0xA}, wire.Key{0xB}
		old := blobOf(1, 2*wire.MailPartLen+5)
		young := blobOf(2, 10)
		f.setHook(func(m wire.Message) {
			fm, ok := m.(*wire.MailFetch)
			if !ok {
				return
			}
			tag := fm.Tag
			p := wire.MailParts(old)
			f.send(&wire.Mail{From: a, ID: wire.MsgID{1}, StoredMS: 10, Tag: tag, Index: 0, Count: 2, Part: 2, Parts: 3, Data: p[2]})
			f.send(&wire.Mail{From: b, ID: wire.MsgID{2}, StoredMS: 20, Tag: tag, Index: 1, Count: 2, Part: 0, Parts: 1, Data: young})
			f.send(&wire.Mail{From: a, ID: wire.MsgID{1}, StoredMS: 10, Tag: tag, Index: 0, Count: 2, Part: 0, Parts: 2, Data: []byte("liar")}) // disagrees
			f.send(&wire.Mail{From: a, ID: wire.MsgID{1}, StoredMS: 10, Tag: tag, Index: 0, Count: 2, Part: 2, Parts: 3, Data: []byte("again")})
			f.send(&wire.Mail{From: b, ID: wire.MsgID{3}, StoredMS: 5, Tag: tag, Index: 0, Count: 2, Part: 0, Parts: 1, Data: []byte("taken")}) // index of another
			f.send(&wire.Mail{From: b, ID: wire.MsgID{4}, StoredMS: 5, Tag: tag, Index: 0, Count: 1, Part: 0, Parts: 1, Data: []byte("count")}) // count disagrees
			f.send(&wire.Mail{From: a, ID: wire.MsgID{1}, StoredMS: 10, Tag: tag, Index: 0, Count: 2, Part: 0, Parts: 3, Data: p[0]})
			f.send(&wire.Mail{From: b, ID: wire.MsgID{2}, StoredMS: 20, Tag: tag, Index: 1, Count: 2, Part: 0, Parts: 1, Data: young})
			f.send(&wire.Mail{From: a, ID: wire.MsgID{1}, StoredMS: 10, Tag: tag, Index: 0, Count: 2, Part: 1, Parts: 3, Data: p[1]})
			f.setHook(nil)
		})
		f.obs.mu.Lock()
		f.obs.hold = true
		f.obs.mu.Unlock()
		time.Sleep(time.Second)
		synctest.Wait()
		mail, _ := f.obs.snapshot()
		sameMail(t, mail, []boxMail{{from: a, id: wire.MsgID{1}, storedMS: 10, blob: old}, {from: b, id: wire.MsgID{2}, storedMS: 20, blob: young}})
	})
}

// TestMailBounds: a rendezvous that puts more messages in an answer than
// it may (a ninth at an index already taken) gets eight reassembled; a
// message never completed is dropped after a while, and holds back the
// ones after it until the answer is fetched again.
func TestMailBounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRV(t)
		x, y := wire.Key{2}, wire.Key{3}
		fetches := 0
		f.setHook(func(m wire.Message) {
			fm, ok := m.(*wire.MailFetch)
			if !ok {
				return
			}
			fetches++
			tag := fm.Tag
			switch fetches {
			case 1:
				for part := range 2 {
					for i := range 9 {
						f.send(&wire.Mail{From: wire.Key{1}, ID: wire.MsgID{byte(i)}, StoredMS: int64(i), Tag: tag, Index: uint8(min(i, 7)), Count: 8,
							Part: uint8(part), Parts: 2, Data: []byte{'a' + byte(part)}})
					}
				}
			case 2:
				// The first never completes; the second waits for it.
				f.send(&wire.Mail{From: x, ID: wire.MsgID{1}, StoredMS: 100, Tag: tag, Index: 0, Count: 2, Part: 0, Parts: 3, Data: []byte("x")})
				f.send(&wire.Mail{From: y, ID: wire.MsgID{1}, StoredMS: 101, Tag: tag, Index: 1, Count: 2, Part: 0, Parts: 1, Data: []byte("y")})
			case 3:
				f.send(&wire.Mail{From: y, ID: wire.MsgID{1}, StoredMS: 101, Tag: tag, Index: 1, Count: 2, Part: 0, Parts: 1, Data: []byte("y")})
				f.send(&wire.Mail{From: x, ID: wire.MsgID{1}, StoredMS: 100, Tag: tag, Index: 0, Count: 2, Part: 0, Parts: 1, Data: []byte("x")})
			default:
				f.send(&wire.MailNotice{})
			}
		})
		time.Sleep(time.Second)
		synctest.Wait()
		if mail, _ := f.obs.snapshot(); len(mail) != 8 || mail[7].id != (wire.MsgID{7}) {
			t.Fatalf("%d messages handed out, want the first 8", len(mail))
		}
		time.Sleep(partialTimeout - 2*time.Second)
		synctest.Wait()
		if mail, _ := f.obs.snapshot(); len(mail) != 8 {
			t.Fatalf("%d messages handed out before an older incomplete one, want 8", len(mail))
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		mail, drains := f.obs.snapshot()
		if len(mail) != 10 || mail[8].from != x || mail[9].from != y {
			t.Fatalf("%d messages handed out, want the 8, then x and y after fetching again", len(mail))
		}
		if !slices.Equal(drains, []bool{true, false}) {
			t.Fatalf("drains %v", drains)
		}
	})
}

// TestMailAnswerGap: when every part of a message of an answer is lost,
// the ones after it are not handed out before it: the client fetches
// again (with a new tag) and hands out all of them in order, each once.
func TestMailAnswerGap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRV(t)
		var want []boxMail
		for i := range 3 {
			want = append(want, boxMail{from: wire.Key{0xA}, id: wire.MsgID{byte(i + 1)}, storedMS: 1000 + int64(i), blob: blobOf(i, 10)})
		}
		f.mu.Lock()
		f.box = slices.Clone(want)
		f.mu.Unlock()
		fetches := 0
		f.setHook(func(m wire.Message) {
			fm, ok := m.(*wire.MailFetch)
			if !ok {
				f.serveBox(m)
				return
			}
			fetches++
			if fetches == 1 {
				f.serveFetch(fm, func(i int) bool { return i == 0 })
				return
			}
			f.serveFetch(fm, nil)
		})
		time.Sleep(time.Second)
		synctest.Wait()
		if mail, _ := f.obs.snapshot(); len(mail) != 0 {
			t.Fatalf("%d messages handed out while the oldest of the answer is missing", len(mail))
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		mail, drains := f.obs.snapshot()
		sameMail(t, mail, want)
		if !slices.Equal(drains, []bool{true, false}) {
			t.Fatalf("drains %v, want [true false]", drains)
		}
		fs := received[*wire.MailFetch](f)
		if len(fs) != 3 { // the lossy answer, again, then the empty one
			t.Fatalf("%d fetches, want 3", len(fs))
		}
		if fs[0].Tag == fs[1].Tag || fs[1].Tag == fs[2].Tag {
			t.Fatalf("fetch tags %d, %d, %d: not new each time", fs[0].Tag, fs[1].Tag, fs[2].Tag)
		}
	})
}

// TestMailStaleTag: a part with the tag of an earlier fetch (a late part
// of an earlier answer) is ignored.
func TestMailStaleTag(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRV(t)
		want := f.fill(2)
		var first uint16
		fetches := 0
		f.setHook(func(m wire.Message) {
			fm, ok := m.(*wire.MailFetch)
			if !ok {
				f.serveBox(m)
				return
			}
			fetches++
			switch fetches {
			case 1:
				first = fm.Tag // the answer is lost
			case 2:
				f.send(&wire.Mail{From: wire.Key{0xE}, ID: wire.MsgID{0xE}, StoredMS: 1, Tag: first, Index: 0, Count: 2, Part: 0, Parts: 1, Data: []byte("stale")})
				f.serveFetch(fm, nil)
				f.send(&wire.Mail{From: wire.Key{0xE}, ID: wire.MsgID{0xF}, StoredMS: 1, Tag: first, Index: 0, Count: 1, Part: 0, Parts: 1, Data: []byte("stale")})
			default:
				f.serveBox(m)
			}
		})
		time.Sleep(10 * time.Second)
		synctest.Wait()
		mail, drains := f.obs.snapshot()
		sameMail(t, mail, want)
		if !slices.Equal(drains, []bool{true, false}) {
			t.Fatalf("drains %v, want [true false]", drains)
		}
		if fs := received[*wire.MailFetch](f); len(fs) != 3 {
			t.Fatalf("%d fetches, want 3 (lost, answered, empty)", len(fs))
		}
	})
}

// TestMailKept: messages the node sets aside are not handed out again;
// a drain that gets nothing else ends.
func TestMailKept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRV(t)
		f.obs.mu.Lock()
		f.obs.keep = true
		f.obs.mu.Unlock()
		want := f.fill(3)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		mail, drains := f.obs.snapshot()
		sameMail(t, mail, want)
		if !slices.Equal(drains, []bool{true, false}) {
			t.Fatalf("drains %v, want [true false]", drains)
		}
		if n := len(received[*wire.MailAck](f)); n != 0 {
			t.Fatalf("%d acks for messages set aside", n)
		}
		fetches := received[*wire.MailFetch](f)
		if n := len(fetches); n != 2 {
			t.Fatalf("%d fetches, want 2 (the second brings only what was set aside)", n)
		}
		// The second skips the three set aside, so that they do not fill
		// every answer and hide what comes after them.
		if fetches[0].Skip != 0 || fetches[1].Skip != 3 {
			t.Fatalf("fetches skip %d then %d, want 0 then 3", fetches[0].Skip, fetches[1].Skip)
		}
	})
}

// TestMailFetchUnanswered: a rendezvous that does not answer fetches gets
// a few, then the drain ends (it starts again with the next registration
// or notice).
func TestMailFetchUnanswered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRV(t)
		f.setHook(nil)
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := len(received[*wire.MailFetch](f)); n != 5 {
			t.Fatalf("%d fetches, want 5", n)
		}
		if _, drains := f.obs.snapshot(); !slices.Equal(drains, []bool{true, false}) {
			t.Fatalf("drains %v", drains)
		}
	})
}

// partialTimeout is rvclient's.
const partialTimeout = 10 * time.Second

// TestMailReceipts: each receipt goes to the observer; those it took are
// acknowledged, in one datagram.
func TestMailReceipts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRV(t)
		time.Sleep(time.Second)
		f.obs.mu.Lock()
		f.obs.refuse[wire.MsgID{2}] = true
		f.obs.mu.Unlock()
		rs := []wire.Receipt{
			{MailRef: wire.MailRef{Peer: wire.Key{0xB}, ID: wire.MsgID{1}}, Status: wire.ReceiptDelivered},
			{MailRef: wire.MailRef{Peer: wire.Key{0xB}, ID: wire.MsgID{2}}, Status: wire.ReceiptDelivered},
			{MailRef: wire.MailRef{Peer: wire.Key{0xC}, ID: wire.MsgID{3}}, Status: wire.ReceiptExpired},
		}
		f.sendLater(&wire.MailReceipt{Receipts: rs})
		time.Sleep(time.Second)
		synctest.Wait()
		f.obs.mu.Lock()
		got := slices.Clone(f.obs.receipts)
		f.obs.mu.Unlock()
		if !slices.Equal(got, rs) {
			t.Fatalf("observer got %v", got)
		}
		acks := received[*wire.MailReceiptAck](f)
		if len(acks) != 1 || !slices.Equal(acks[0].Refs, []wire.MailRef{rs[0].MailRef, rs[2].MailRef}) {
			t.Fatalf("receipt acks %+v", acks)
		}
	})
}

// TestDeposit: every part with one TxID, all sent again each second
// until the reply; a busy rendezvous is asked again with a new TxID.
func TestDeposit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRV(t)
		blob := blobOf(5, 3*wire.MailPartLen+7)
		puts := 0
		f.setHook(func(m wire.Message) {
			p, ok := m.(*wire.MailPut)
			if !ok {
				return
			}
			puts++
			switch {
			case puts == 8: // the second resend, complete: busy
				f.send(&wire.MailPutReply{TxID: p.TxID, ID: p.ID, Status: wire.MailBusy})
			case puts == 12:
				f.send(&wire.MailPutReply{TxID: p.TxID, ID: wire.MsgID{0xEE}, Status: wire.MailFull}) // another message's: ignored
				f.send(&wire.MailPutReply{TxID: p.TxID, ID: p.ID, Status: wire.MailStored})
				f.send(&wire.MailPutReply{TxID: p.TxID, ID: p.ID, Status: wire.MailFull}) // a repeat: ignored
			}
		})
		start := time.Now()
		st, err := f.c.Deposit(context.Background(), wire.Key{0xB}, wire.MsgID{5}, blob)
		if err != nil || st != wire.MailStored {
			t.Fatalf("Deposit: %v, %v", st, err)
		}
		t.Logf("stored after %v", time.Since(start))
		all := received[*wire.MailPut](f)
		if len(all) != 12 {
			t.Fatalf("%d parts sent, want 12 (two sends for the busy deposit, one for the second)", len(all))
		}
		for i, p := range all {
			tx := all[0].TxID
			if i >= 8 {
				tx = all[8].TxID
			}
			if p.TxID != tx || p.To != (wire.Key{0xB}) || p.ID != (wire.MsgID{5}) || int(p.Part) != i%4 || p.Parts != 4 {
				t.Fatalf("part %d: %+v", i, p)
			}
		}
		if all[8].TxID == all[0].TxID {
			t.Fatal("the deposit after busy reused its TxID")
		}
		var got []byte
		for _, p := range all[:4] {
			got = append(got, p.Data...)
		}
		if !bytes.Equal(got, blob) {
			t.Fatal("the parts do not make the blob")
		}

		// No answer at all: bounded by ctx.
		f.setHook(nil)
		ctx, cancel := context.WithTimeout(context.Background(), 5500*time.Millisecond)
		defer cancel()
		before := len(received[*wire.MailPut](f))
		if _, err := f.c.Deposit(ctx, wire.Key{0xB}, wire.MsgID{6}, []byte("x")); !errors.Is(err, rvclient.ErrDepositTimeout) {
			t.Fatalf("Deposit with no answer: %v", err)
		}
		if n := len(received[*wire.MailPut](f)) - before; n != 6 {
			t.Fatalf("%d sends in 5.5 s, want 6", n)
		}
		if _, err := f.c.Deposit(context.Background(), wire.Key{0xB}, wire.MsgID{6}, make([]byte, wire.MaxMailBlob+1)); err == nil {
			t.Fatal("an oversize deposit was sent")
		}
	})
}

// TestDeregisterRegister: /dereg sends a notified leave and ends a drain;
// mailbox messages while deregistered are not acted on; /reg registers
// again and drains.
func TestDeregisterRegister(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRV(t)
		f.setHook(nil) // fetches unanswered: the drain stays on
		time.Sleep(time.Second)
		synctest.Wait()
		if !f.c.IsRegistered() {
			t.Fatal("not registered")
		}
		if !f.c.Deregister() || f.c.Deregister() {
			t.Fatal("Deregister: want true, then false")
		}
		synctest.Wait()
		if n := len(received[*wire.Leave](f)); n != 2 {
			t.Fatalf("%d leaves sent, want 2", n)
		}
		if _, drains := f.obs.snapshot(); !slices.Equal(drains, []bool{true, false}) {
			t.Fatalf("drains %v", drains)
		}
		// The old session's keys still seal: the client no longer listens.
		tag := uint16(0)
		if fs := received[*wire.MailFetch](f); len(fs) > 0 {
			tag = fs[len(fs)-1].Tag
		}
		f.sendLater(&wire.Mail{From: wire.Key{1}, ID: wire.MsgID{1}, StoredMS: 1, Tag: tag, Count: 1, Part: 0, Parts: 1, Data: []byte("x")})
		f.sendLater(&wire.MailReceipt{Receipts: []wire.Receipt{{MailRef: wire.MailRef{Peer: wire.Key{1}, ID: wire.MsgID{1}}}}})
		time.Sleep(time.Minute) // no registering meanwhile
		synctest.Wait()
		if mail, _ := f.obs.snapshot(); len(mail) != 0 || f.c.IsRegistered() {
			t.Fatalf("deregistered: %d messages handed out, registered %v", len(mail), f.c.IsRegistered())
		}
		f.c.AckMail(wire.Key{1}, wire.MsgID{1}) // nothing to send it on
		f.setHook(f.serveBox)
		want := f.fill(2)
		if !f.c.Register() || f.c.Register() {
			t.Fatal("Register: want true, then false")
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		mail, drains := f.obs.snapshot()
		sameMail(t, mail, want)
		if !slices.Equal(drains, []bool{true, false, true, false}) {
			t.Fatalf("drains %v", drains)
		}
		f.obs.mu.Lock()
		regs := slices.Clone(f.obs.log)
		f.obs.mu.Unlock()
		if !slices.Equal(regs, []string{"registered", "registered"}) {
			t.Fatalf("observer log %v", regs)
		}
	})
}

// mailClientObs is a world client's observer that takes mail too.
type mailClientObs struct {
	*client
	m *mailObs
}

func (o mailClientObs) MailWaiting(count, bytes uint32) { o.m.MailWaiting(count, bytes) }
func (o mailClientObs) Mail(from wire.Key, id wire.MsgID, storedMS int64, blob []byte) bool {
	return o.m.Mail(from, id, storedMS, blob)
}
func (o mailClientObs) MailDrain(active bool)      { o.m.MailDrain(active) }
func (o mailClientObs) MailReceipt(r wire.Receipt) { o.m.MailReceipt(r) }

// addMailClient adds a client to the world (the real rendezvous) that
// takes mail.
func (w *world) addMailClient(name string) (*client, *mailObs) {
	w.t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	nextHost++
	c := &client{name: name, addr: netip.MustParseAddrPort(fmt.Sprintf("198.51.100.%d:4000", 1+nextHost%254)),
		key: wire.Key(priv.Public().(ed25519.PublicKey)), done: make(chan error, 1)}
	m := &mailObs{refuse: map[wire.MsgID]bool{}}
	rc, err := rvclient.New(rvclient.Options{Name: name, Identity: priv, Observer: mailClientObs{c, m}, Heartbeat: 10 * time.Second,
		Rendezvous: w.rvAddr.String(),
		Send:       func(b []byte) { w.send(dgram{from: w.addrOf(c), to: w.rvAddr, b: slices.Clone(b)}) }})
	if err != nil {
		w.t.Fatal(err)
	}
	c.Client, m.c = rc, rc
	w.mu.Lock()
	w.clients[c.addr] = c
	w.mu.Unlock()
	ctx, cancel := context.WithCancel(w.ctx)
	w.t.Cleanup(cancel)
	w.wg.Add(1)
	go func() { defer w.wg.Done(); c.done <- rc.Run(ctx) }()
	return c, m
}

// TestMailboxThroughRendezvous: with the real rendezvous, alice deposits
// for bob, who is away; bob comes back and gets every message, in order,
// once; alice gets a delivered receipt for each, and acknowledges them.
func TestMailboxThroughRendezvous(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		bob, bobMail := w.addMailClient("bob")
		alice, aliceMail := w.addMailClient("alice")
		time.Sleep(time.Second)
		if !bob.IsRegistered() || !alice.IsRegistered() {
			t.Fatal("not registered")
		}
		bob.Deregister()
		time.Sleep(time.Second)
		ctx := context.Background()
		var want []boxMail
		for i := range 12 {
			size := []int{10, wire.MailPartLen, wire.MailPartLen + 1, wire.MaxMailBlob}[i%4]
			id := wire.MsgID{byte(i + 1)}
			blob := blobOf(i, size)
			st, err := alice.Deposit(ctx, bob.key, id, blob)
			if err != nil || st != wire.MailStored {
				t.Fatalf("deposit %d: %v, %v", i, st, err)
			}
			want = append(want, boxMail{from: alice.key, id: id, blob: blob})
		}
		// Again (a resend after a lost reply): stored, once.
		if st, err := alice.Deposit(ctx, bob.key, wire.MsgID{1}, want[0].blob); err != nil || st != wire.MailStored {
			t.Fatalf("repeated deposit: %v, %v", st, err)
		}
		if st, err := alice.Deposit(ctx, wire.Key{0x99}, wire.MsgID{1}, []byte("x")); err != nil || st != wire.MailUnknown {
			t.Fatalf("deposit for nobody: %v, %v", st, err)
		}
		bob.Register()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		got, drains := bobMail.snapshot()
		for i := range got {
			got[i].storedMS = 0 // the rendezvous's clock
		}
		sameMail(t, got, want)
		if len(drains) < 2 || drains[len(drains)-1] {
			t.Fatalf("bob's drains %v: not ended", drains)
		}
		bobMail.mu.Lock()
		waiting := slices.Clone(bobMail.waiting)
		bobMail.mu.Unlock()
		if len(waiting) == 0 || waiting[0] != 12 {
			t.Fatalf("bob was told %v messages wait, want 12", waiting)
		}
		aliceMail.mu.Lock()
		receipts := slices.Clone(aliceMail.receipts)
		aliceMail.mu.Unlock()
		if len(receipts) != 12 {
			t.Fatalf("alice got %d receipts, want 12: %v", len(receipts), receipts)
		}
		for _, r := range receipts {
			if r.Peer != bob.key || r.Status != wire.ReceiptDelivered {
				t.Fatalf("receipt %+v", r)
			}
		}
		// Bob online: a deposit for him is sent back to live delivery.
		if st, err := alice.Deposit(ctx, bob.key, wire.MsgID{0x77}, []byte("live?")); err != nil || st != wire.MailOnline {
			t.Fatalf("deposit for bob online: %v, %v", st, err)
		}
		// Receipts were acknowledged: no repeats on later heartbeats.
		time.Sleep(time.Minute)
		synctest.Wait()
		aliceMail.mu.Lock()
		n := len(aliceMail.receipts)
		aliceMail.mu.Unlock()
		if n != 12 {
			t.Fatalf("alice got %d receipts after a minute, want 12 (acknowledged ones repeated?)", n)
		}
	})
}

// TestMailLeftNotSkipped: a message handed out and neither acknowledged
// nor set aside (forgotten after handedTimeout, or left with LeaveMail)
// stays in the mailbox, possibly before the ones set aside: the next
// fetches skip nothing, so it is handed out again rather than hidden.
func TestMailLeftNotSkipped(t *testing.T) {
	for _, how := range []string{"hold", "leave"} {
		t.Run(how, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeRV(t)
				a := wire.Key{0xA}
				l, k, x := wire.MsgID{1}, wire.MsgID{2}, wire.MsgID{3}
				f.mu.Lock()
				f.box = []boxMail{{from: a, id: l, storedMS: 1, blob: []byte("l")}, {from: a, id: k, storedMS: 2, blob: []byte("k")}, {from: a, id: x, storedMS: 3, blob: []byte("x")}}
				f.mu.Unlock()
				f.setHook(f.serveBoxSkip)
				seen := 0
				f.obs.mu.Lock()
				f.obs.take = func(_ wire.Key, id wire.MsgID) (bool, string) {
					switch id {
					case l:
						if seen++; seen == 1 {
							return true, how
						}
					case k:
						return true, "keep"
					}
					return true, "ack"
				}
				f.obs.mu.Unlock()
				time.Sleep(time.Minute)
				synctest.Wait()
				f.obs.mu.Lock()
				calls := slices.Clone(f.obs.calls)
				f.obs.mu.Unlock()
				if !slices.Equal(calls, []wire.MsgID{l, k, x, l}) {
					t.Fatalf("handed out %v, want l, k, x, then l again", calls)
				}
				f.mu.Lock()
				left := slices.Clone(f.box)
				f.mu.Unlock()
				if len(left) != 1 || left[0].id != k {
					t.Fatalf("mailbox holds %v, want only the one set aside", left)
				}
				fs := received[*wire.MailFetch](f)
				if len(fs) < 2 || fs[1].Skip != 0 {
					t.Fatalf("fetches %+v: the one after a message was left skips", fs)
				}
				if _, drains := f.obs.snapshot(); !slices.Equal(drains, []bool{true, false}) {
					t.Fatalf("drains %v", drains)
				}
			})
		})
	}
}

// TestMailRefused: a message the observer refuses (Mail returns false)
// stops the handing out of its answer: nothing younger is handed out
// before it; it is fetched again and handed out first.
func TestMailRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRV(t)
		want := f.fill(4)
		refused := false
		f.obs.mu.Lock()
		f.obs.take = func(_ wire.Key, id wire.MsgID) (bool, string) {
			if id == want[1].id && !refused {
				refused = true
				return false, ""
			}
			return true, "ack"
		}
		f.obs.mu.Unlock()
		time.Sleep(20 * time.Second)
		synctest.Wait()
		mail, drains := f.obs.snapshot()
		sameMail(t, mail, want)
		f.obs.mu.Lock()
		calls := slices.Clone(f.obs.calls)
		f.obs.mu.Unlock()
		if !slices.Equal(calls, []wire.MsgID{want[0].id, want[1].id, want[1].id, want[2].id, want[3].id}) {
			t.Fatalf("Mail calls %v", calls)
		}
		if !slices.Equal(drains, []bool{true, false}) {
			t.Fatalf("drains %v", drains)
		}
	})
}

// TestMailKeptFull: once maxKept messages are set aside, one more set
// aside ends the drain (it could not be skipped: it would be fetched again
// and again).
func TestMailKeptFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRV(t)
		const n = 1024 + 3
		f.mu.Lock()
		for i := range n {
			f.box = append(f.box, boxMail{from: wire.Key{0xA}, id: wire.MsgID{byte(i), byte(i >> 8)}, storedMS: int64(i), blob: []byte("k")})
		}
		f.mu.Unlock()
		f.setHook(f.serveBoxSkip)
		f.obs.mu.Lock()
		f.obs.keep = true
		f.obs.mu.Unlock()
		time.Sleep(time.Minute)
		synctest.Wait()
		mail, drains := f.obs.snapshot()
		if len(mail) < 1025 {
			t.Fatalf("%d messages handed out, want at least 1025", len(mail))
		}
		if !slices.Equal(drains, []bool{true, false}) {
			t.Fatalf("drains %v, want [true false]", drains)
		}
		before := len(received[*wire.MailFetch](f))
		time.Sleep(time.Minute)
		synctest.Wait()
		if after := len(received[*wire.MailFetch](f)); after != before || before > n/wire.MailFetchMax+3 {
			t.Fatalf("%d fetches, then %d a minute later", before, after)
		}
	})
}

// TestMailReceiptAcks: a receipt is acknowledged only once the observer
// says so (AckReceipt), in batches of at most wire.MaxMailAcks; a repeat
// of one the observer has is not handed out again.
func TestMailReceiptAcks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRV(t)
		time.Sleep(time.Second)
		var rs []wire.Receipt
		for i := range 20 {
			rs = append(rs, wire.Receipt{MailRef: wire.MailRef{Peer: wire.Key{0xB}, ID: wire.MsgID{byte(i)}}, Status: wire.ReceiptDelivered})
		}
		f.obs.mu.Lock()
		for _, r := range rs {
			f.obs.refuse[r.ID] = true // held: not acknowledged yet
		}
		f.obs.mu.Unlock()
		f.sendLater(&wire.MailReceipt{Receipts: rs[:16]})
		f.sendLater(&wire.MailReceipt{Receipts: rs[:16]}) // a repeat
		f.sendLater(&wire.MailReceipt{Receipts: rs[16:]})
		time.Sleep(time.Second)
		synctest.Wait()
		f.obs.mu.Lock()
		n := len(f.obs.receipts)
		f.obs.mu.Unlock()
		if n != 20 {
			t.Fatalf("observer got %d receipts, want 20", n)
		}
		if acks := received[*wire.MailReceiptAck](f); len(acks) != 0 {
			t.Fatalf("receipts acknowledged before the observer said so: %+v", acks)
		}
		for _, r := range rs {
			f.c.AckReceipt(r.MailRef)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		var got []wire.MailRef
		acks := received[*wire.MailReceiptAck](f)
		for _, a := range acks {
			if len(a.Refs) > wire.MaxMailAcks {
				t.Fatalf("an ack of %d refs", len(a.Refs))
			}
			got = append(got, a.Refs...)
		}
		if len(acks) != 2 || len(got) != 20 {
			t.Fatalf("%d acks of %d refs, want 2 of 20", len(acks), len(got))
		}
	})
}

// serveBoxSkip is serveBox with fetches that skip the oldest Skip
// messages, as the real rendezvous does.
func (f *fakeRV) serveBoxSkip(m wire.Message) {
	fm, ok := m.(*wire.MailFetch)
	if !ok {
		f.serveBox(m)
		return
	}
	f.mu.Lock()
	box := f.box
	f.box = f.box[min(int(fm.Skip), len(f.box)):]
	f.mu.Unlock()
	f.serveFetch(fm, nil)
	f.mu.Lock()
	f.box = box
	f.mu.Unlock()
}
