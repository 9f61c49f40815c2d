package rendezvous_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"natchat/internal/rvtest"
	"natchat/rendezvous"
	"natchat/wire"
)

// mailID returns a distinct message ID for each i.
func mailID(i int) wire.MsgID {
	var id wire.MsgID
	binary.BigEndian.PutUint64(id[:], uint64(i)+0x1000)
	return id
}

// blobOf returns size bytes that differ with seed: a stand-in for a
// sealed message, which the rendezvous never opens.
func blobOf(seed, size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(seed*31 + i*7)
	}
	return b
}

// registerAll registers n and returns everything the server sent it after
// the HandshakeReply (the snapshot, then the mailbox's notice and
// receipts, if any).
func (h *harness) registerAll(n *node) []wire.Message {
	h.t.Helper()
	hs := h.handshake(n, n.name)
	out := h.handle(hs, n.addr)
	var to []packet
	for _, p := range out {
		if p.to == n.addr {
			to = append(to, p)
		}
	}
	if len(to) == 0 {
		h.t.Fatalf("register %s: nothing back", n.name)
	}
	res, err := n.rv.Finish(to[0].b)
	if err != nil {
		h.t.Fatalf("register %s: %v", n.name, err)
	}
	n.session, n.hs = res.Session, hs
	var ms []wire.Message
	for _, p := range to[1:] {
		ms = append(ms, n.open(h.t, p.b))
	}
	h.flush()
	return ms
}

// offline registers n and has it leave: its name is bound, it is offline.
func (h *harness) offline(n *node) {
	h.t.Helper()
	h.registerAll(n)
	h.leave(n)
}

// leave has n leave.
func (h *harness) leave(n *node) {
	h.t.Helper()
	h.sealed(n, &wire.Leave{}, n.addr)
	h.flush()
}

// wait feeds datagrams from src, waits for the mailbox writes they queued
// and returns what the server wrote meanwhile.
func (h *harness) wait(src netip.AddrPort, ds ...[]byte) []packet {
	h.conn.take()
	for _, d := range ds {
		h.s.Handle(d, src)
	}
	h.s.WaitMail()
	return h.conn.take()
}

// send seals m as n and has it handled; see wait.
func (h *harness) send(n *node, m wire.Message) []packet { return h.wait(n.addr, n.seal(m)) }

// deposit sends every part of a deposit from n; see wait.
func (h *harness) deposit(n *node, tx uint32, to wire.Key, id wire.MsgID, blob []byte) []packet {
	return h.wait(n.addr, n.rv.MailPuts(tx, to, id, blob)...)
}

// depositStatus deposits and returns the one MailPutReply to n.
func (h *harness) depositStatus(n *node, tx uint32, to wire.Key, id wire.MsgID, blob []byte) wire.MailStatus {
	h.t.Helper()
	r := one[*wire.MailPutReply](h.t, h.deposit(n, tx, to, id, blob), n)
	if r.TxID != tx || r.ID != id {
		h.t.Fatalf("reply for tx %d id %s, want tx %d id %s", r.TxID, r.ID, tx, id)
	}
	return r.Status
}

// mustStore deposits and fails unless the reply is MailStored.
func (h *harness) mustStore(n *node, tx uint32, to wire.Key, id wire.MsgID, blob []byte) {
	h.t.Helper()
	if st := h.depositStatus(n, tx, to, id, blob); st != wire.MailStored {
		h.t.Fatalf("deposit %s: %v, want stored", id, st)
	}
}

// of returns the messages of type T that went to n in out.
func of[T wire.Message](t testing.TB, out []packet, n *node) []T {
	t.Helper()
	var ts []T
	for _, m := range n.msgs(t, out) {
		if v, ok := m.(T); ok {
			ts = append(ts, v)
		}
	}
	return ts
}

// one asserts that exactly one message of type T went to n in out.
func one[T wire.Message](t testing.TB, out []packet, n *node) T {
	t.Helper()
	ts := of[T](t, out, n)
	if len(ts) != 1 {
		t.Fatalf("%d %T to %s in %s, want one", len(ts), *new(T), n.name, describe(out))
	}
	return ts[0]
}

// ofMsgs returns the messages of type T in ms.
func ofMsgs[T wire.Message](ms []wire.Message) []T {
	var ts []T
	for _, m := range ms {
		if v, ok := m.(T); ok {
			ts = append(ts, v)
		}
	}
	return ts
}

// fetch sends a MailFetch as n and returns the messages it got and the
// notices.
func (h *harness) fetch(n *node, max uint8) ([]rvtest.Fetched, []*wire.MailNotice) {
	h.t.Helper()
	ms := n.msgs(h.t, h.send(n, &wire.MailFetch{Max: max}))
	got, err := rvtest.AssembleMail(ms)
	if err != nil {
		h.t.Fatal(err)
	}
	return got, ofMsgs[*wire.MailNotice](ms)
}

// ids returns the IDs of fetched messages.
func ids(fs []rvtest.Fetched) []wire.MsgID {
	out := make([]wire.MsgID, len(fs))
	for i, f := range fs {
		out[i] = f.ID
	}
	return out
}

func idRange(from, to int) []wire.MsgID {
	var out []wire.MsgID
	for i := from; i < to; i++ {
		out = append(out, mailID(i))
	}
	return out
}

// holdCommits makes the store's next write transaction with requests in
// it wait until release is called; held is closed when it waits.
func holdCommits(t *testing.T, st *rendezvous.Store) (held <-chan struct{}, release func()) {
	t.Helper()
	h, r := make(chan struct{}), make(chan struct{})
	var once sync.Once
	rendezvous.SetCommitHook(st, func(n int) {
		if n > 0 {
			once.Do(func() { close(h); <-r })
		}
	})
	var rOnce sync.Once
	release = func() { rOnce.Do(func() { close(r) }) }
	t.Cleanup(release)
	return h, release
}

func waitClosed(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// restart closes h's store and opens a new Server on the same directory:
// the rendezvous restarted. Nodes register again.
func (h *harness) restart(edit func(*rendezvous.Options)) *harness {
	h.t.Helper()
	h.s.WaitMail()
	h.s.WaitRooms()
	if err := h.store.Close(); err != nil {
		h.t.Fatal(err)
	}
	return newHarnessIn(h.t, h.dir, edit)
}

// TestMailDeposit: a deposit for an offline node is answered stored only
// once it is durable, and it survives a restart of the rendezvous.
func TestMailDeposit(t *testing.T) {
	h := newHarness(t, nil)
	a, b := newNode(t, "alice", "198.51.100.1:1000"), newNode(t, "bob", "198.51.100.2:2000")
	h.offline(b)
	h.mustRegister(a)
	blob := blobOf(1, 100)

	held, release := holdCommits(t, h.store)
	h.conn.take()
	for _, d := range a.rv.MailPuts(7, b.key, mailID(1), blob) {
		h.s.Handle(d, a.addr)
	}
	waitClosed(t, held, "the deposit's commit")
	if out := h.conn.take(); len(out) != 0 {
		t.Fatalf("answered before the deposit was durable: %s", describe(out))
	}
	release()
	h.s.WaitMail()
	r := onlyTo[*wire.MailPutReply](t, h.conn.take(), a)
	if r.TxID != 7 || r.ID != mailID(1) || r.Status != wire.MailStored {
		t.Fatalf("reply %+v", r)
	}
	text := h.scrape()
	for series, want := range map[string]float64{
		"natchat_rendezvous_mail_stored_total": 1,
		"natchat_rendezvous_mailbox_messages":  1,
		"natchat_rendezvous_mailbox_bytes":     100,
	} {
		if got := metric(t, text, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}

	h2 := h.restart(nil)
	ms := h2.registerAll(b)
	if n := ofMsgs[*wire.MailNotice](ms); len(n) != 1 || n[0].Count != 1 || n[0].Bytes != 100 {
		t.Fatalf("notice after restart: %+v", n)
	}
	got, _ := h2.fetch(b, 0)
	if len(got) != 1 || got[0].From != a.key || got[0].ID != mailID(1) || !bytes.Equal(got[0].Blob, blob) ||
		got[0].StoredMS != t0.UnixMilli() {
		t.Fatalf("fetched %+v", got)
	}
}

// TestMailOnlineAndUnknown: a deposit for a node online now is refused
// (the sender delivers live), one for a key no name is bound to too, and
// neither is stored.
func TestMailOnlineAndUnknown(t *testing.T) {
	h := newHarness(t, nil)
	a, b := newNode(t, "alice", "198.51.100.1:1000"), newNode(t, "bob", "198.51.100.2:2000")
	h.mustRegister(a, b)
	if st := h.depositStatus(a, 1, b.key, mailID(1), blobOf(1, 10)); st != wire.MailOnline {
		t.Errorf("deposit for bob online: %v", st)
	}
	if st := h.depositStatus(a, 2, a.key, mailID(2), blobOf(1, 10)); st != wire.MailOnline {
		t.Errorf("deposit for oneself: %v", st)
	}
	if st := h.depositStatus(a, 3, wire.Key{9}, mailID(3), blobOf(1, 10)); st != wire.MailUnknown {
		t.Errorf("deposit for an unknown key: %v", st)
	}
	text := h.scrape()
	if got := metric(t, text, `natchat_rendezvous_mail_rejected_total{reason="online"}`); got != 2 {
		t.Errorf("rejected online %v", got)
	}
	if got := metric(t, text, `natchat_rendezvous_mail_rejected_total{reason="unknown"}`); got != 1 {
		t.Errorf("rejected unknown %v", got)
	}
	if got := metric(t, text, "natchat_rendezvous_mailbox_messages"); got != 0 {
		t.Errorf("%v messages stored", got)
	}
}

// TestMailIdempotent: the same message deposited again, with the same
// TxID or another, is stored once and answered stored each time.
func TestMailIdempotent(t *testing.T) {
	h := newHarness(t, nil)
	a, b := newNode(t, "alice", "198.51.100.1:1000"), newNode(t, "bob", "198.51.100.2:2000")
	h.offline(b)
	h.mustRegister(a)
	blob := blobOf(2, 1500)
	h.mustStore(a, 1, b.key, mailID(1), blob)
	h.mustStore(a, 1, b.key, mailID(1), blob) // the reply was lost: all parts again
	h.mustStore(a, 2, b.key, mailID(1), blob) // after a restart of the sender
	if got := h.metric("natchat_rendezvous_mail_stored_total"); got != 1 {
		t.Errorf("stored %v times", got)
	}
	h.registerAll(b)
	if got, _ := h.fetch(b, 8); len(got) != 1 {
		t.Errorf("bob has %d messages", len(got))
	}
}

// TestMailMultiPart: a deposit of the largest blob, 17 parts (after the
// first, sent last to first), is put together and served back unchanged.
func TestMailMultiPart(t *testing.T) {
	h := newHarness(t, nil)
	a, b := newNode(t, "alice", "198.51.100.1:1000"), newNode(t, "bob", "198.51.100.2:2000")
	h.offline(b)
	h.mustRegister(a)
	blob := blobOf(3, wire.MaxMailBlob)
	parts := a.rv.MailPuts(1, b.key, mailID(1), blob)
	if len(parts) != wire.MaxMailParts {
		t.Fatalf("%d parts", len(parts))
	}
	slices.Reverse(parts[1:])
	if st := one[*wire.MailPutReply](t, h.wait(a.addr, parts...), a).Status; st != wire.MailStored {
		t.Fatalf("status %v", st)
	}
	ms := h.registerAll(b)
	if n := ofMsgs[*wire.MailNotice](ms); len(n) != 1 || n[0].Count != 1 || n[0].Bytes != wire.MaxMailBlob {
		t.Fatalf("notice %+v", n)
	}
	ms = b.msgs(t, h.send(b, &wire.MailFetch{Max: 1}))
	if n := len(ofMsgs[*wire.Mail](ms)); n != wire.MaxMailParts {
		t.Fatalf("%d Mail parts", n)
	}
	got, err := rvtest.AssembleMail(ms)
	if err != nil || len(got) != 1 || !bytes.Equal(got[0].Blob, blob) {
		t.Fatalf("fetched %d messages, err %v", len(got), err)
	}
}

// TestMailLostPart: a deposit missing a part is not answered; sent again
// whole, with the same TxID, it is stored and answered once.
func TestMailLostPart(t *testing.T) {
	h := newHarness(t, nil)
	a, b := newNode(t, "alice", "198.51.100.1:1000"), newNode(t, "bob", "198.51.100.2:2000")
	h.offline(b)
	h.mustRegister(a)
	blob := blobOf(4, 3*wire.MailPartLen)
	parts := a.rv.MailPuts(9, b.key, mailID(1), blob)
	if out := h.wait(a.addr, parts[0], parts[2]); len(out) != 0 {
		t.Fatalf("answered an incomplete deposit: %s", describe(out))
	}
	if got := rendezvous.MailHeld(h.s); got != 3*wire.MailPartLen {
		t.Errorf("%d bytes held for the partial deposit", got)
	}
	parts = a.rv.MailPuts(9, b.key, mailID(1), blob) // resent: fresh seals
	if st := one[*wire.MailPutReply](t, h.wait(a.addr, parts...), a).Status; st != wire.MailStored {
		t.Fatalf("status %v", st)
	}
	if got := rendezvous.MailHeld(h.s); got != 0 {
		t.Errorf("%d bytes still held", got)
	}
	h.registerAll(b)
	if got, _ := h.fetch(b, 8); len(got) != 1 || !bytes.Equal(got[0].Blob, blob) {
		t.Fatalf("fetched %d messages", len(got))
	}
}

// TestMailPartialLimits: a session has at most four deposits in progress;
// a deposit is dropped 10 s after its first part; and the memory all
// deposits in progress reserve is bounded: past either bound, busy.
func TestMailPartialLimits(t *testing.T) {
	h := newHarness(t, nil)
	a, b, c := newNode(t, "alice", "198.51.100.1:1000"), newNode(t, "bob", "198.51.100.2:2000"), newNode(t, "carol", "198.51.100.3:3000")
	h.offline(b)
	h.mustRegister(a, c)
	blob := blobOf(5, wire.MailPartLen+1) // two parts
	first := func(n *node, tx uint32) []packet {
		return h.wait(n.addr, n.rv.MailPuts(tx, b.key, mailID(int(tx)), blob)[0])
	}
	for tx := uint32(1); tx <= 4; tx++ {
		if out := first(a, tx); len(out) != 0 {
			t.Fatalf("first part of deposit %d answered: %s", tx, describe(out))
		}
	}
	r := one[*wire.MailPutReply](t, first(a, 5), a)
	if r.TxID != 5 || r.Status != wire.MailBusy {
		t.Fatalf("fifth deposit in progress: %+v", r)
	}

	// A part that comes more than 10 s after the first is too late: the
	// deposit is dropped, and a part other than the first starts nothing.
	h.clock.Step(11 * time.Second)
	if out := h.wait(a.addr, a.rv.MailPuts(1, b.key, mailID(1), blob)[1]); len(out) != 0 {
		t.Fatalf("a deposit completed with a part from 11 s before: %s", describe(out))
	}
	if got := rendezvous.MailHeld(h.s); got != 3*2*wire.MailPartLen {
		t.Fatalf("%d bytes held, want three deposits'", got)
	}
	// The sweep drops the others; the late deposit starts again whole.
	h.sweep()
	if got := rendezvous.MailHeld(h.s); got != 0 {
		t.Fatalf("%d bytes held after the sweep", got)
	}
	if out := first(a, 1); len(out) != 0 {
		t.Fatal(describe(out))
	}
	// A later part of a deposit refused busy starts nothing.
	if out := h.wait(a.addr, a.rv.MailPuts(5, b.key, mailID(5), blob)[1]); len(out) != 0 {
		t.Fatal(describe(out))
	}
	if st := h.depositStatus(a, 5, b.key, mailID(5), blob); st != wire.MailStored {
		t.Fatalf("after the sweep: %v", st)
	}

	// Every session's deposits in progress share a bound.
	rendezvous.SetMailHeldMax(h.s, 3*2*wire.MailPartLen)
	if out := first(c, 21); len(out) != 0 {
		t.Fatal(describe(out))
	}
	if out := first(c, 22); len(out) != 0 {
		t.Fatal(describe(out))
	}
	if r := one[*wire.MailPutReply](t, first(c, 23), c); r.Status != wire.MailBusy {
		t.Fatalf("over the global bound: %v", r.Status)
	}
	if got := h.metric(`natchat_rendezvous_mail_rejected_total{reason="busy"}`); got != 2 {
		t.Errorf("rejected busy %v", got)
	}
	// Leaving drops a node's deposits in progress.
	h.leave(c)
	if got := rendezvous.MailHeld(h.s); got != 2*wire.MailPartLen {
		t.Fatalf("%d bytes held after carol left", got)
	}
}

// TestMailLimits: the recipient's count and bytes, a sender's share, and a
// blob that could never fit.
func TestMailLimits(t *testing.T) {
	setup := func(t *testing.T, edit func(*rendezvous.Options)) (*harness, *node, *node, *node) {
		h := newHarness(t, edit)
		a, b, c := newNode(t, "alice", "198.51.100.1:1000"), newNode(t, "bob", "198.51.100.2:2000"), newNode(t, "carol", "198.51.100.3:3000")
		h.offline(b)
		h.mustRegister(a, c)
		return h, a, b, c
	}
	t.Run("count", func(t *testing.T) {
		h, a, b, _ := setup(t, func(o *rendezvous.Options) { o.MailboxCount = 3; o.MailboxShare = -1 })
		for i := range 3 {
			h.mustStore(a, uint32(i), b.key, mailID(i), blobOf(i, 10))
		}
		if st := h.depositStatus(a, 3, b.key, mailID(3), blobOf(3, 10)); st != wire.MailFull {
			t.Fatalf("fourth: %v", st)
		}
		// Bob takes one: room for one more.
		h.registerAll(b)
		got, _ := h.fetch(b, 1)
		h.send(b, &wire.MailAck{Refs: []wire.MailRef{{Peer: got[0].From, ID: got[0].ID}}})
		h.leave(b)
		h.mustStore(a, 4, b.key, mailID(3), blobOf(3, 10))
		if got := h.metric(`natchat_rendezvous_mail_rejected_total{reason="full"}`); got != 1 {
			t.Errorf("rejected full %v", got)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		h, a, b, _ := setup(t, func(o *rendezvous.Options) { o.MailboxBytes = 2500; o.MailboxShare = -1 })
		h.mustStore(a, 1, b.key, mailID(1), blobOf(1, 1000))
		h.mustStore(a, 2, b.key, mailID(2), blobOf(2, 1000))
		if st := h.depositStatus(a, 3, b.key, mailID(3), blobOf(3, 1000)); st != wire.MailFull {
			t.Fatalf("third kilobyte: %v", st)
		}
		h.mustStore(a, 4, b.key, mailID(4), blobOf(4, 500))
	})
	t.Run("share", func(t *testing.T) {
		h, a, b, c := setup(t, func(o *rendezvous.Options) { o.MailboxCount = 8 }) // 25 %: 2 each
		h.mustStore(a, 1, b.key, mailID(1), blobOf(1, 10))
		h.mustStore(a, 2, b.key, mailID(2), blobOf(2, 10))
		if st := h.depositStatus(a, 3, b.key, mailID(3), blobOf(3, 10)); st != wire.MailShare {
			t.Fatalf("alice's third: %v", st)
		}
		h.mustStore(c, 1, b.key, mailID(1), blobOf(1, 10)) // another sender's share
		if got := h.metric(`natchat_rendezvous_mail_rejected_total{reason="share"}`); got != 1 {
			t.Errorf("rejected share %v", got)
		}
	})
	t.Run("too big", func(t *testing.T) {
		// 25 % of 4096 bytes: no sender may hold more than 1024.
		h, a, b, _ := setup(t, func(o *rendezvous.Options) { o.MailboxBytes = 4096 })
		if st := h.depositStatus(a, 1, b.key, mailID(1), blobOf(1, 1025)); st != wire.MailTooBig {
			t.Fatalf("1025 bytes: %v", st)
		}
		h.mustStore(a, 2, b.key, mailID(2), blobOf(2, 1024))
		if st := h.depositStatus(a, 3, b.key, mailID(3), blobOf(3, 1)); st != wire.MailShare {
			t.Fatalf("one more byte: %v", st)
		}
	})
	t.Run("sender in all mailboxes", func(t *testing.T) {
		h, a, b, c := setup(t, func(o *rendezvous.Options) { o.MailboxSenderCount = 3; o.MailboxShare = -1 })
		d := newNode(t, "dave", "198.51.100.4:4000")
		h.offline(d)
		h.mustStore(a, 1, b.key, mailID(1), blobOf(1, 10))
		h.mustStore(a, 2, b.key, mailID(2), blobOf(2, 10))
		h.mustStore(a, 3, d.key, mailID(3), blobOf(3, 10))
		if st := h.depositStatus(a, 4, d.key, mailID(4), blobOf(4, 10)); st != wire.MailQuota {
			t.Fatalf("alice's fourth waiting message: %v", st)
		}
		h.mustStore(c, 1, d.key, mailID(1), blobOf(1, 10)) // another sender
		// Bob takes one of alice's: she may deposit one more.
		h.registerAll(b)
		got, _ := h.fetch(b, 1)
		h.send(b, &wire.MailAck{Refs: []wire.MailRef{{Peer: got[0].From, ID: got[0].ID}}})
		h.s.WaitMail()
		h.mustStore(a, 5, d.key, mailID(4), blobOf(4, 10))
		if got := h.metric(`natchat_rendezvous_mail_rejected_total{reason="quota"}`); got != 1 {
			t.Errorf("rejected quota %v", got)
		}
	})
	t.Run("sender bytes, counted again after a restart", func(t *testing.T) {
		dir := t.TempDir()
		edit := func(o *rendezvous.Options) { o.MailboxSenderBytes = 2500; o.MailboxShare = -1 }
		h := newHarnessIn(t, dir, edit)
		a, b := newNode(t, "alice", "198.51.100.1:1000"), newNode(t, "bob", "198.51.100.2:2000")
		h.offline(b)
		h.mustRegister(a)
		h.mustStore(a, 1, b.key, mailID(1), blobOf(1, 1000))
		h.mustStore(a, 2, b.key, mailID(2), blobOf(2, 1000))
		h.s.WaitMail()
		if err := h.store.Close(); err != nil {
			t.Fatal(err)
		}
		h = newHarnessIn(t, dir, edit)
		h.mustRegister(a)
		if st := h.depositStatus(a, 3, b.key, mailID(3), blobOf(3, 1000)); st != wire.MailQuota {
			t.Fatalf("alice's third kilobyte after a restart: %v", st)
		}
	})
	t.Run("unlimited", func(t *testing.T) {
		h, a, b, _ := setup(t, func(o *rendezvous.Options) { o.MailboxCount = -1; o.MailboxBytes = -1; o.MailboxShare = -1 })
		for i := range 20 {
			h.mustStore(a, uint32(i), b.key, mailID(i), blobOf(i, wire.MaxMailBlob))
		}
	})
	t.Run("share over 100", func(t *testing.T) {
		h := newHarness(t, nil)
		_, err := rendezvous.New(rendezvous.Options{Conn: newFakeConn(), Store: h.store, Key: h.key, MailboxShare: 101})
		if err == nil {
			t.Fatal("MailboxShare 101 accepted")
		}
	})
}

// TestMailNotice: a node with messages waiting is told at registration,
// after its snapshot; one without is not; and a node that registered
// while a deposit for it was being written is told when it lands.
func TestMailNotice(t *testing.T) {
	h := newHarness(t, nil)
	a, b, c := newNode(t, "alice", "198.51.100.1:1000"), newNode(t, "bob", "198.51.100.2:2000"), newNode(t, "carol", "198.51.100.3:3000")
	h.offline(b)
	h.offline(c)
	h.mustRegister(a)
	h.mustStore(a, 1, b.key, mailID(1), blobOf(1, 300))
	h.mustStore(a, 2, b.key, mailID(2), blobOf(2, 200))

	ms := h.registerAll(b)
	if _, ok := ms[0].(*wire.Peers); !ok {
		t.Fatalf("first after the reply: %s, want the snapshot", describeMsg(ms[0]))
	}
	n, ok := ms[len(ms)-1].(*wire.MailNotice)
	if !ok || n.Count != 2 || n.Bytes != 500 {
		t.Fatalf("last after the reply: %s %+v, want a notice of 2 messages, 500 bytes", describeMsg(ms[len(ms)-1]), ms[len(ms)-1])
	}
	if n := ofMsgs[*wire.MailNotice](h.registerAll(c)); len(n) != 0 {
		t.Fatalf("carol has no mail, got notices %+v", n)
	}
	h.leave(c)

	// Carol registers while alice's deposit for her is being written.
	held, release := holdCommits(t, h.store)
	h.conn.take()
	for _, d := range a.rv.MailPuts(3, c.key, mailID(3), blobOf(3, 50)) {
		h.s.Handle(d, a.addr)
	}
	waitClosed(t, held, "the deposit's commit")
	if n := ofMsgs[*wire.MailNotice](h.registerAll(c)); len(n) != 0 {
		t.Fatalf("notice before the deposit landed: %+v", n)
	}
	release()
	h.s.WaitMail()
	out := h.conn.take()
	if r := one[*wire.MailPutReply](t, out, a); r.Status != wire.MailStored {
		t.Fatalf("deposit: %v", r.Status)
	}
	if n := one[*wire.MailNotice](t, out, c); n.Count != 1 || n.Bytes != 50 {
		t.Fatalf("notice when the deposit landed: %+v", n)
	}
}

// TestMailFetch: messages come oldest first, at most Max (8 for 0) a
// fetch, each in all its parts, until acknowledged; ones whose
// acknowledgement is being written are left out; an empty mailbox answers
// with an empty notice.
func TestMailFetch(t *testing.T) {
	h := newHarness(t, nil)
	a, b := newNode(t, "alice", "198.51.100.1:1000"), newNode(t, "bob", "198.51.100.2:2000")
	h.offline(b)
	h.mustRegister(a)
	sizes := map[int]int{}
	for i := range 10 {
		sizes[i] = 100 + i*400
		h.clock.Step(time.Second)
		h.mustStore(a, uint32(i), b.key, mailID(i), blobOf(i, sizes[i]))
	}
	h.registerAll(b)
	got, _ := h.fetch(b, 3)
	if !slices.Equal(ids(got), idRange(0, 3)) {
		t.Fatalf("fetch 3: %v", ids(got))
	}
	// Every part echoes the fetch's tag and names its message's place in
	// the answer.
	for _, m := range ofMsgs[*wire.Mail](b.msgs(t, h.send(b, &wire.MailFetch{Max: 3, Tag: 0xbeef}))) {
		i := slices.Index(idRange(0, 3), m.ID)
		if m.Tag != 0xbeef || int(m.Index) != i || m.Count != 3 {
			t.Fatalf("part %d of %s: tag %#x, index %d of %d; want tag 0xbeef, index %d of 3", m.Part, m.ID, m.Tag, m.Index, m.Count, i)
		}
	}
	got, _ = h.fetch(b, 0)
	if !slices.Equal(ids(got), idRange(0, 8)) {
		t.Fatalf("fetch 0 (8): %v", ids(got))
	}
	for i, f := range got {
		if !bytes.Equal(f.Blob, blobOf(i, sizes[i])) || f.From != a.key || f.StoredMS != t0.Add(time.Duration(i+1)*time.Second).UnixMilli() {
			t.Fatalf("message %d: %d bytes from %s stored at %d", i, len(f.Blob), f.From.Short(), f.StoredMS)
		}
	}
	ack := func(from, to int) *wire.MailAck {
		m := &wire.MailAck{}
		for i := from; i < to; i++ {
			m.Refs = append(m.Refs, wire.MailRef{Peer: a.key, ID: mailID(i)})
		}
		return m
	}
	h.send(b, ack(0, 3))
	if got, _ = h.fetch(b, 8); !slices.Equal(ids(got), idRange(3, 10)) {
		t.Fatalf("after acknowledging three: %v", ids(got))
	}

	// While the acknowledgement of 3..5 is being written, a fetch leaves
	// them out.
	held, release := holdCommits(t, h.store)
	h.conn.take()
	h.s.Handle(b.seal(ack(3, 6)), b.addr)
	waitClosed(t, held, "the acknowledgement's commit")
	h.s.Handle(b.seal(&wire.MailFetch{Max: 8}), b.addr)
	got, err := rvtest.AssembleMail(b.msgs(t, h.conn.take()))
	if err != nil || !slices.Equal(ids(got), idRange(6, 10)) {
		t.Fatalf("fetch during the acknowledgement: %v, %v", ids(got), err)
	}
	release()
	h.s.WaitMail()

	// The node set aside the two oldest: it skips them.
	h.conn.take()
	h.s.Handle(b.seal(&wire.MailFetch{Max: 2, Skip: 2}), b.addr)
	got, err = rvtest.AssembleMail(b.msgs(t, h.conn.take()))
	if err != nil || !slices.Equal(ids(got), idRange(8, 10)) {
		t.Fatalf("fetch skipping two: %v, %v", ids(got), err)
	}
	h.conn.take()
	h.s.Handle(b.seal(&wire.MailFetch{Skip: 4}), b.addr)
	if out := b.msgs(t, h.conn.take()); len(out) != 1 || *out[0].(*wire.MailNotice) != (wire.MailNotice{}) {
		t.Fatalf("fetch skipping all: %v, want an empty notice", out)
	}

	h.send(b, ack(6, 10))
	got, notices := h.fetch(b, 8)
	if len(got) != 0 || len(notices) != 1 || *notices[0] != (wire.MailNotice{}) {
		t.Fatalf("empty mailbox: %d messages, notices %+v", len(got), notices)
	}
	if got := h.metric("natchat_rendezvous_mail_delivered_total"); got != 10 {
		t.Errorf("delivered %v", got)
	}
	if got := h.metric("natchat_rendezvous_mailbox_bytes"); got != 0 {
		t.Errorf("%v bytes left", got)
	}
}

// TestMailReceipts: an acknowledged message is deleted and its sender gets
// a delivered receipt: at once if online, at its registration otherwise,
// and again on each heartbeat until it acknowledges the receipt.
func TestMailReceipts(t *testing.T) {
	h := newHarness(t, nil)
	a, b := newNode(t, "alice", "198.51.100.1:1000"), newNode(t, "bob", "198.51.100.2:2000")
	h.offline(b)
	h.mustRegister(a)
	h.mustStore(a, 1, b.key, mailID(1), blobOf(1, 10))
	h.mustStore(a, 2, b.key, mailID(2), blobOf(2, 10))
	h.registerAll(b)

	want := func(id wire.MsgID) []wire.Receipt {
		return []wire.Receipt{{MailRef: wire.MailRef{Peer: b.key, ID: id}, Status: wire.ReceiptDelivered}}
	}
	out := h.send(b, &wire.MailAck{Refs: []wire.MailRef{{Peer: a.key, ID: mailID(1)}}})
	if r := one[*wire.MailReceipt](t, out, a); !slices.Equal(r.Receipts, want(mailID(1))) {
		t.Fatalf("receipt %+v", r.Receipts)
	}
	if got, _ := h.fetch(b, 8); !slices.Equal(ids(got), idRange(2, 3)) {
		t.Fatalf("after the acknowledgement bob has %v", ids(got))
	}
	// Until alice acknowledges it, every heartbeat brings it again.
	for range 2 {
		ms := a.msgs(t, h.sealed(a, &wire.Heartbeat{}, a.addr))
		r := ofMsgs[*wire.MailReceipt](ms)
		if len(ms) != 2 || len(ofMsgs[*wire.HeartbeatAck](ms)) != 1 || len(r) != 1 || !slices.Equal(r[0].Receipts, want(mailID(1))) {
			t.Fatalf("on heartbeat: %d messages, receipts %+v", len(ms), r)
		}
	}
	if out := h.send(a, &wire.MailReceiptAck{Refs: []wire.MailRef{{Peer: b.key, ID: mailID(1)}}}); len(out) != 0 {
		t.Fatalf("receipt acknowledged, then %s", describe(out))
	}
	if n := len(of[*wire.MailReceipt](t, h.sealed(a, &wire.Heartbeat{}, a.addr), a)); n != 0 {
		t.Fatalf("%d receipts after the acknowledgement", n)
	}

	// Alice offline: her receipt waits for her registration.
	h.leave(a)
	if out := h.send(b, &wire.MailAck{Refs: []wire.MailRef{{Peer: a.key, ID: mailID(2)}}}); len(out) != 0 {
		t.Fatalf("acknowledgement answered %s", describe(out))
	}
	ms := h.registerAll(a)
	if r := ofMsgs[*wire.MailReceipt](ms); len(r) != 1 || !slices.Equal(r[0].Receipts, want(mailID(2))) {
		t.Fatalf("receipts at registration %+v", r)
	}
	if got := h.metric("natchat_rendezvous_mail_delivered_total"); got != 2 {
		t.Errorf("delivered %v", got)
	}
}

// TestMailReceiptsPaged: more receipts than fit one datagram come 16 at a
// time, the next page after each acknowledgement.
func TestMailReceiptsPaged(t *testing.T) {
	h := newHarness(t, nil)
	a, b := newNode(t, "alice", "198.51.100.1:1000"), newNode(t, "bob", "198.51.100.2:2000")
	h.offline(b)
	h.mustRegister(a)
	const n = 20
	for i := range n {
		h.mustStore(a, uint32(i), b.key, mailID(i), blobOf(i, 10))
	}
	h.leave(a)
	h.registerAll(b)
	for {
		got, _ := h.fetch(b, 8)
		if len(got) == 0 {
			break
		}
		ack := &wire.MailAck{}
		for _, f := range got {
			ack.Refs = append(ack.Refs, wire.MailRef{Peer: f.From, ID: f.ID})
		}
		h.send(b, ack)
	}
	ms := h.registerAll(a)
	var seen []wire.MsgID
	rs := ofMsgs[*wire.MailReceipt](ms)
	for len(rs) == 1 {
		if len(rs[0].Receipts) > wire.MaxMailAcks {
			t.Fatalf("%d receipts in one datagram", len(rs[0].Receipts))
		}
		ack := &wire.MailReceiptAck{}
		for _, r := range rs[0].Receipts {
			seen = append(seen, r.ID)
			ack.Refs = append(ack.Refs, r.MailRef)
		}
		rs = of[*wire.MailReceipt](t, h.send(a, ack), a)
	}
	slices.SortFunc(seen, func(x, y wire.MsgID) int { return bytes.Compare(x[:], y[:]) })
	if !slices.Equal(seen, idRange(0, n)) {
		t.Fatalf("receipts for %v", seen)
	}
}

// TestMailExpiry: a message older than MailboxAge is deleted unread, and
// its sender gets an expired receipt.
func TestMailExpiry(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.MailboxAge = time.Hour })
	a, b := newNode(t, "alice", "198.51.100.1:1000"), newNode(t, "bob", "198.51.100.2:2000")
	h.offline(b)
	h.mustRegister(a)
	h.mustStore(a, 1, b.key, mailID(1), blobOf(1, 10))
	h.clock.Step(30 * time.Minute)
	h.mustStore(a, 2, b.key, mailID(2), blobOf(2, 10))
	h.clock.Step(31 * time.Minute)
	h.heartbeat(a)

	h.conn.take()
	n, err := h.s.ExpireMail(h.clock.Now())
	if err != nil || n != 1 {
		t.Fatalf("expired %d, %v; want 1", n, err)
	}
	want := []wire.Receipt{{MailRef: wire.MailRef{Peer: b.key, ID: mailID(1)}, Status: wire.ReceiptExpired}}
	if r := one[*wire.MailReceipt](t, h.conn.take(), a); !slices.Equal(r.Receipts, want) {
		t.Fatalf("receipt %+v", r.Receipts)
	}
	if got := h.metric("natchat_rendezvous_mail_expired_total"); got != 1 {
		t.Errorf("expired %v", got)
	}
	ms := h.registerAll(b)
	if n := ofMsgs[*wire.MailNotice](ms); len(n) != 1 || n[0].Count != 1 {
		t.Fatalf("notice %+v", n)
	}
	if got, _ := h.fetch(b, 8); !slices.Equal(ids(got), idRange(2, 3)) {
		t.Fatalf("bob has %v", ids(got))
	}
}

// TestMailRestart: messages, and receipts not yet taken, survive a
// restart of the rendezvous.
func TestMailRestart(t *testing.T) {
	h := newHarness(t, nil)
	a, b := newNode(t, "alice", "198.51.100.1:1000"), newNode(t, "bob", "198.51.100.2:2000")
	h.offline(b)
	h.mustRegister(a)
	for i := range 3 {
		h.clock.Step(time.Second)
		h.mustStore(a, uint32(i), b.key, mailID(i), blobOf(i, 100*(i+1)))
	}
	h.leave(a)
	h.registerAll(b)
	h.send(b, &wire.MailAck{Refs: []wire.MailRef{{Peer: a.key, ID: mailID(0)}}})

	h2 := h.restart(nil)
	ms := h2.registerAll(b)
	if n := ofMsgs[*wire.MailNotice](ms); len(n) != 1 || n[0].Count != 2 || n[0].Bytes != 500 {
		t.Fatalf("notice after restart %+v", n)
	}
	got, _ := h2.fetch(b, 8)
	if !slices.Equal(ids(got), idRange(1, 3)) || got[0].StoredMS != t0.Add(2*time.Second).UnixMilli() {
		t.Fatalf("after restart bob has %v", ids(got))
	}
	ms = h2.registerAll(a)
	want := []wire.Receipt{{MailRef: wire.MailRef{Peer: b.key, ID: mailID(0)}, Status: wire.ReceiptDelivered}}
	if r := ofMsgs[*wire.MailReceipt](ms); len(r) != 1 || !slices.Equal(r[0].Receipts, want) {
		t.Fatalf("receipts after restart %+v", r)
	}
	if got := h2.metric("natchat_rendezvous_mailbox_messages"); got != 2 {
		t.Errorf("%v messages after restart", got)
	}
}

// TestMailSessionGone: a sender that left while its deposit was being
// written gets no reply (it deposits again, and is told stored).
func TestMailSessionGone(t *testing.T) {
	h := newHarness(t, nil)
	a, b := newNode(t, "alice", "198.51.100.1:1000"), newNode(t, "bob", "198.51.100.2:2000")
	h.offline(b)
	h.mustRegister(a)
	held, release := holdCommits(t, h.store)
	for _, d := range a.rv.MailPuts(1, b.key, mailID(1), blobOf(1, 10)) {
		h.s.Handle(d, a.addr)
	}
	waitClosed(t, held, "the deposit's commit")
	h.leave(a)
	h.conn.take()
	release()
	h.s.WaitMail()
	if out := h.conn.take(); len(out) != 0 {
		t.Fatalf("after alice left: %s", describe(out))
	}
	h.registerAll(a)
	h.mustStore(a, 2, b.key, mailID(1), blobOf(1, 10))
	if got := h.metric("natchat_rendezvous_mail_stored_total"); got != 1 {
		t.Errorf("stored %v", got)
	}
}

// TestMailStranger: a node sees only its own mailbox, acknowledges only
// messages in it, and a datagram of an ended session gets nothing but
// not_registered.
func TestMailStranger(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.SourceRate = -1 })
	a, b, m := newNode(t, "alice", "198.51.100.1:1000"), newNode(t, "bob", "198.51.100.2:2000"), newNode(t, "mallory", "203.0.113.66:6666")
	h.offline(b)
	h.mustRegister(a, m)
	h.mustStore(a, 1, b.key, mailID(1), blobOf(1, 10))
	got, notices := h.fetch(m, 8)
	if len(got) != 0 || len(notices) != 1 || notices[0].Count != 0 {
		t.Fatalf("mallory fetched %d messages, notices %+v", len(got), notices)
	}
	if out := h.send(m, &wire.MailAck{Refs: []wire.MailRef{{Peer: a.key, ID: mailID(1)}}}); len(out) != 0 {
		t.Fatalf("mallory's acknowledgement answered %s", describe(out))
	}
	if got := h.metric("natchat_rendezvous_mailbox_messages"); got != 1 {
		t.Fatalf("%v messages after mallory's acknowledgement", got)
	}
	// Bob's ended session: sealed with its keys, from its address.
	d := b.seal(&wire.MailFetch{Max: 8})
	onlyError(t, h.wait(b.addr, d), b.addr, wire.CodeNotRegistered, len(d))
	d = b.seal(&wire.MailAck{Refs: []wire.MailRef{{Peer: a.key, ID: mailID(1)}}})
	onlyError(t, h.wait(b.addr, d), b.addr, wire.CodeNotRegistered, len(d))
	if got := h.metric("natchat_rendezvous_mailbox_messages"); got != 1 {
		t.Fatalf("%v messages after the ended session's acknowledgement", got)
	}
}

// TestMailFetchRateLimited: fetches count against the lookup rate.
func TestMailFetchRateLimited(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.LookupRate = 1 }) // burst 2
	b := newNode(t, "bob", "198.51.100.2:2000")
	h.mustRegister(b)
	for range 2 {
		one[*wire.MailNotice](t, h.send(b, &wire.MailFetch{}), b)
	}
	e := sealedError(t, h.send(b, &wire.MailFetch{}), b, wire.CodeRateLimited)
	if e.Request != wire.TypeMailFetch {
		t.Errorf("error for request %v", e.Request)
	}
	h.clock.Step(time.Second)
	one[*wire.MailNotice](t, h.send(b, &wire.MailFetch{}), b)
}

// TestMailProbeRateLimited: a deposit answered online or unknown tells
// what a lookup tells, and counts against the lookup rate: over it, busy.
// Deposits that are stored do not count.
func TestMailProbeRateLimited(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.LookupRate = 1 }) // burst 2
	a, b := newNode(t, "alice", "198.51.100.1:1000"), newNode(t, "bob", "198.51.100.2:2000")
	h.offline(b)
	h.mustRegister(a)
	for i := range 5 {
		h.mustStore(a, uint32(i), b.key, mailID(i), blobOf(i, 10))
	}
	for i, want := range []wire.MailStatus{wire.MailUnknown, wire.MailUnknown, wire.MailBusy} {
		if st := h.depositStatus(a, uint32(10+i), wire.Key{byte(i + 1)}, mailID(10+i), blobOf(i, 10)); st != want {
			t.Fatalf("probe %d: %v, want %v", i, st, want)
		}
	}
	h.clock.Step(time.Second)
	if st := h.depositStatus(a, 20, wire.Key{9}, mailID(20), blobOf(1, 10)); st != wire.MailUnknown {
		t.Fatalf("a second later: %v", st)
	}
}

// TestMailInconsistentParts: a part whose TxID names a deposit in
// progress of another message or size is dropped.
func TestMailInconsistentParts(t *testing.T) {
	h := newHarness(t, nil)
	a, b := newNode(t, "alice", "198.51.100.1:1000"), newNode(t, "bob", "198.51.100.2:2000")
	h.offline(b)
	h.mustRegister(a)
	blob := blobOf(1, wire.MailPartLen+1)
	parts := a.rv.MailPuts(1, b.key, mailID(1), blob)
	h.wait(a.addr, parts[0])
	other := a.rv.MailPuts(1, b.key, mailID(2), blob)[1]
	if out := h.wait(a.addr, other); len(out) != 0 {
		t.Fatalf("another message's part answered: %s", describe(out))
	}
	if st := one[*wire.MailPutReply](t, h.wait(a.addr, parts[1]), a).Status; st != wire.MailStored {
		t.Fatalf("status %v", st)
	}
	h.registerAll(b)
	if got, _ := h.fetch(b, 8); len(got) != 1 || got[0].ID != mailID(1) || !bytes.Equal(got[0].Blob, blob) {
		t.Fatalf("fetched %v", ids(got))
	}
}

// TestMailFetchSkipCapped: a skip over MaxMailSkip counts as MaxMailSkip,
// so that one fetch reads a bounded part of a mailbox.
func TestMailFetchSkipCapped(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.MailboxShare = -1; o.MailboxCount = -1; o.LookupRate = -1 })
	a, b := newNode(t, "alice", "198.51.100.1:1000"), newNode(t, "bob", "198.51.100.2:2000")
	h.offline(b)
	h.mustRegister(a)
	for i := range wire.MaxMailSkip + 2 {
		h.mustStore(a, uint32(i), b.key, mailID(i), blobOf(i, 10))
	}
	h.registerAll(b)
	h.conn.take()
	h.s.Handle(b.seal(&wire.MailFetch{Max: 8, Skip: 65535}), b.addr)
	got, err := rvtest.AssembleMail(b.msgs(t, h.conn.take()))
	if err != nil || !slices.Equal(ids(got), idRange(wire.MaxMailSkip, wire.MaxMailSkip+2)) {
		t.Fatalf("fetch skipping 65535 of %d: %v, %v", wire.MaxMailSkip+2, ids(got), err)
	}
}
