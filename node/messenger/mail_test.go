package messenger

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"natchat/node/api"
	"natchat/node/mailbox"
	"natchat/node/store"
	"natchat/wire"
)

// fakeBox is the rendezvous's mailboxes, as the messengers of a world see
// them through their Mailbox (mailDir): deposits are kept per recipient,
// in order; an acknowledgement deletes the message and sends its sender a
// receipt; Deposit to a name the directory has online says MailOnline.
type fakeBox struct {
	w  *world
	mu sync.Mutex
	// Guarded by mu:
	held     map[wire.Key][]boxed // by recipient, oldest first
	deposits []deposit            // every Deposit, in order
	acks     []wire.MailRef       // every AckMail (Peer: the sender)
	kept     []wire.MailRef       // every KeepMail
	left     []wire.MailRef       // every LeaveMail
	racks    []wire.MailRef       // every AckReceipt (Peer: the recipient)
	// onAckReceipt, if set, is called on each AckReceipt.
	onAckReceipt func(wire.MailRef)
	status       func(to wire.Key, id wire.MsgID) (wire.MailStatus, bool)
	clock        int64
}

type boxed struct {
	from     wire.Key
	id       wire.MsgID
	storedMS int64
	blob     []byte
}

type deposit struct {
	from, to wire.Key
	id       wire.MsgID
	status   wire.MailStatus
}

// mailDir is one peer's directory and mailbox.
type mailDir struct {
	*fakeDir
	box  *fakeBox
	self wire.Key
}

var _ Mailbox = mailDir{}

func (d mailDir) Deposit(ctx context.Context, to wire.Key, id wire.MsgID, blob []byte) (wire.MailStatus, error) {
	st := d.box.deposit(d.self, to, id, blob)
	return st, nil
}

func (d mailDir) AckMail(from wire.Key, id wire.MsgID) { d.box.ack(d.self, from, id) }

func (d mailDir) KeepMail(from wire.Key, id wire.MsgID) {
	d.box.mu.Lock()
	d.box.kept = append(d.box.kept, wire.MailRef{Peer: from, ID: id})
	d.box.mu.Unlock()
}

func (d mailDir) LeaveMail(from wire.Key, id wire.MsgID) {
	d.box.mu.Lock()
	d.box.left = append(d.box.left, wire.MailRef{Peer: from, ID: id})
	d.box.mu.Unlock()
}

func (d mailDir) AckReceipt(ref wire.MailRef) {
	d.box.mu.Lock()
	hook := d.box.onAckReceipt
	d.box.mu.Unlock()
	if hook != nil {
		hook(ref) // before the ack counts: waitReceiptAcks then sees what the hook did
	}
	d.box.mu.Lock()
	d.box.racks = append(d.box.racks, ref)
	d.box.mu.Unlock()
}

// receiptAcks returns how many times the receipt for id was acknowledged.
func (b *fakeBox) receiptAcks(id wire.MsgID) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, r := range b.racks {
		if r.ID == id {
			n++
		}
	}
	return n
}

// waitReceiptAcks waits until the receipt for id was acknowledged n times.
func (b *fakeBox) waitReceiptAcks(t *testing.T, id wire.MsgID, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for b.receiptAcks(id) < n {
		if time.Now().After(deadline) {
			t.Fatalf("receipt for %s acknowledged %d times, want %d", id, b.receiptAcks(id), n)
		}
		time.Sleep(5 * time.Millisecond) // polling the fake, with a deadline
	}
}

func (b *fakeBox) deposit(from, to wire.Key, id wire.MsgID, blob []byte) (st wire.MailStatus) {
	b.mu.Lock()
	defer b.mu.Unlock()
	defer func() { b.deposits = append(b.deposits, deposit{from: from, to: to, id: id, status: st}) }()
	if b.status != nil {
		if s, ok := b.status(to, id); ok {
			return s
		}
	}
	d := b.w.dir
	d.mu.Lock()
	name := ""
	for n, k := range d.byName {
		if k == to {
			name = n
		}
	}
	offline := d.offline[name]
	d.mu.Unlock()
	switch {
	case name == "":
		return wire.MailUnknown
	case !offline:
		return wire.MailOnline
	case len(blob) > wire.MaxMailBlob:
		return wire.MailTooBig
	}
	for _, x := range b.held[to] {
		if x.from == from && x.id == id {
			return wire.MailStored // idempotent
		}
	}
	b.clock++
	b.held[to] = append(b.held[to], boxed{from: from, id: id, storedMS: b.clock, blob: blob})
	return wire.MailStored
}

func (b *fakeBox) ack(self, from wire.Key, id wire.MsgID) {
	b.mu.Lock()
	b.acks = append(b.acks, wire.MailRef{Peer: from, ID: id})
	n := len(b.held[self])
	b.held[self] = slices.DeleteFunc(b.held[self], func(x boxed) bool { return x.from == from && x.id == id })
	if len(b.held[self]) == n {
		b.mu.Unlock()
		return // acknowledged before
	}
	b.mu.Unlock()
	b.receipt(from, wire.Receipt{MailRef: wire.MailRef{Peer: self, ID: id}, Status: wire.ReceiptDelivered})
}

// receipt gives r to the running messenger of sender.
func (b *fakeBox) receipt(sender wire.Key, r wire.Receipt) {
	b.w.mu.Lock()
	p := b.w.ms[sender]
	b.w.mu.Unlock()
	if p != nil {
		p.m.MailReceipt(r)
	}
}

// heldFor returns what waits in p's mailbox.
func (b *fakeBox) heldFor(k wire.Key) []boxed {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.held[k])
}

func (b *fakeBox) depositLog() []deposit {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.deposits)
}

// give hands p what waits in its mailbox, as the rendezvous client does
// after registering (the drain's start is the caller's).
func (b *fakeBox) give(p *peer) int {
	msgs := b.heldFor(p.key)
	for _, x := range msgs {
		p.m.ReceiveMail(x.from, x.id, x.storedMS, x.blob)
	}
	return len(msgs)
}

// drain runs a whole drain for p: its start, the messages, and its end
// once all are acknowledged.
func (b *fakeBox) drain(t *testing.T, p *peer) {
	t.Helper()
	p.m.MailDrain(true)
	b.give(p)
	deadline := time.Now().Add(10 * time.Second)
	for len(b.heldFor(p.key)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d messages never acknowledged", p.name, len(b.heldFor(p.key)))
		}
		time.Sleep(10 * time.Millisecond) // polling the fake, with a deadline
	}
	p.m.MailDrain(false)
}

// newMailWorld is a world whose peers have mailboxes.
func newMailWorld(t *testing.T) *world {
	w := newWorld(t)
	w.box = &fakeBox{w: w, held: map[wire.Key][]boxed{}}
	return w
}

func (w *world) setOffline(name string, off bool) {
	w.dir.mu.Lock()
	w.dir.offline[wire.NameKey(name)] = off
	w.dir.mu.Unlock()
}

// collect reads p's events until it has n of type typ (others of the
// types in also are kept too), and returns them all in order.
func collect(t *testing.T, p *peer, n int, typ string) []api.Event {
	t.Helper()
	var out []api.Event
	for got := 0; got < n; {
		e := p.next(t, fmt.Sprintf("%d %s events (have %d)", n, typ, got), func(api.Event) bool { return true })
		out = append(out, e)
		if e.EventType() == typ {
			got++
		}
	}
	return out
}

func ofType[T api.Event](evs []api.Event) []T {
	var out []T
	for _, e := range evs {
		if t, ok := e.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// TestOfflineStoredThenDelivered: bob is offline; alice's messages are
// stored, in order, and stay (no undelivered at the deadline); bob comes
// back and shows them, in order, once, from the mailbox with their
// original times; alice hears delivered for each.
func TestOfflineStoredThenDelivered(t *testing.T) {
	w := newMailWorld(t)
	a := w.start("alice", nil, "", Options{DeliveryTimeout: 300 * time.Millisecond})
	b := w.start("bob", nil, "", Options{})
	w.setOffline("bob", true)
	const n = 10
	for i := range n {
		a.m.Send("bob", fmt.Sprint("message number ", i))
	}
	evs := collect(t, a, n, api.TypeStored)
	sent, stored := ofType[*api.Sent](evs), ofType[*api.Stored](evs)
	if len(sent) != n || len(ofType[*api.Error](evs)) != 0 {
		t.Fatalf("alice: %d sent, errors %v", len(sent), ofType[*api.Error](evs))
	}
	for i := range n {
		if stored[i].ID != sent[i].ID || stored[i].To != "bob" {
			t.Fatalf("stored %d: %+v, sent %+v", i, stored[i], sent[i])
		}
	}
	// Past the delivery timeout: no undelivered for a stored message.
	select {
	case e := <-a.events:
		t.Fatalf("alice got %T %+v while bob is away", e, e)
	case <-time.After(600 * time.Millisecond):
	}
	out, err := a.st.Outbox()
	if err != nil || len(out) != n || !out[0].Stored || !out[n-1].Stored {
		t.Fatalf("outbox: %d messages, %v", len(out), err)
	}
	held := w.box.heldFor(b.key)
	if len(held) != n {
		t.Fatalf("bob's mailbox holds %d", len(held))
	}
	for i, x := range held {
		if x.from != a.key || x.id.String() != sent[i].ID {
			t.Fatalf("mailbox entry %d: %s from %s", i, x.id, x.from.Short())
		}
		if strings.Contains(string(x.blob), "message number") {
			t.Fatalf("the deposited blob holds the text in the clear")
		}
	}

	// Bob comes back.
	w.setOffline("bob", false)
	w.box.drain(t, b)
	for i := range n {
		m := b.next(t, "message", isType(api.TypeMessage)).(*api.Message)
		// sent_ts is alice's clock when she sent it (just before her sent
		// event), not when it was stored or fetched (600 ms later).
		lag := sent[i].TS.Sub(m.SentTS)
		if m.Text != fmt.Sprint("message number ", i) || m.ID != sent[i].ID || m.Via != api.ViaMailbox || m.From != "alice" ||
			lag < -time.Millisecond || lag > 300*time.Millisecond {
			t.Fatalf("bob's message %d: %+v", i, m)
		}
	}
	d := collect(t, a, n, api.TypeDelivered)
	for i, e := range ofType[*api.Delivered](d) {
		if e.ID != sent[i].ID {
			t.Fatalf("delivered %d: %s, want %s", i, e.ID, sent[i].ID)
		}
	}
	if len(d) != n {
		t.Fatalf("alice got %d other events with her delivered: %v", len(d)-n, d)
	}
	// The outbox is empty (Done is asynchronous).
	deadline := time.Now().Add(5 * time.Second)
	for {
		if out, _ := a.st.Outbox(); len(out) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("outbox not emptied")
		}
		time.Sleep(10 * time.Millisecond) // polling, with a deadline
	}
	// Drain counted them as done when stored; the conversation retires.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a.m.Drain(ctx)
	if ctx.Err() != nil {
		t.Fatal("Drain did not return")
	}
}

// TestDepositAfterGrace: bob is online for the rendezvous but cannot be
// reached; the deposit (after the grace) is answered "online", and alice
// tries live again; once bob is gone for the rendezvous too, the message
// is stored.
func TestDepositAfterGrace(t *testing.T) {
	w := newMailWorld(t)
	const grace = 200 * time.Millisecond
	a := w.start("alice", nil, "", Options{OfflineGrace: grace})
	b := w.start("bob", nil, "", Options{})
	w.mu.Lock()
	w.refuse = true
	w.mu.Unlock()
	start := time.Now()
	a.m.Send("bob", "hello?")
	a.next(t, "sent", isType(api.TypeSent))
	deadline := time.Now().Add(10 * time.Second)
	for {
		log := w.box.depositLog()
		if len(log) >= 2 {
			if log[0].status != wire.MailOnline {
				t.Fatalf("first deposit: %v, want online", log[0].status)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no deposits")
		}
		time.Sleep(10 * time.Millisecond) // polling, with a deadline
	}
	if d := time.Since(start); d < grace {
		t.Fatalf("deposited %v after the send, before the grace of %v", d, grace)
	}
	w.setOffline("bob", true) // bob's presence expires
	st := a.next(t, "stored", isType(api.TypeStored)).(*api.Stored)
	w.mu.Lock()
	w.refuse = false
	w.mu.Unlock()
	w.setOffline("bob", false)
	w.box.drain(t, b)
	if m := b.next(t, "message", isType(api.TypeMessage)).(*api.Message); m.ID != st.ID || m.Via != api.ViaMailbox {
		t.Fatalf("bob: %+v", m)
	}
	a.next(t, "delivered", isType(api.TypeDelivered))
}

// TestMailboxRefusals: every outcome of a deposit but stored is an error
// for that message (mailbox_full for a full mailbox or share, unknown_peer,
// too_old), and the conversation goes on.
func TestMailboxRefusals(t *testing.T) {
	w := newMailWorld(t)
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	a := w.start("alice", nil, "", Options{Now: now, MailboxAge: time.Hour, DeliveryTimeout: 48 * time.Hour})
	b := w.start("bob", nil, "", Options{})
	w.setOffline("bob", true)
	var mu sync.Mutex
	script := map[string]wire.MailStatus{}
	w.box.mu.Lock()
	w.box.status = func(to wire.Key, id wire.MsgID) (wire.MailStatus, bool) {
		mu.Lock()
		defer mu.Unlock()
		s, ok := script[id.String()]
		return s, ok
	}
	w.box.mu.Unlock()
	// Hold the messages back (the rendezvous is down) to script them.
	w.dir.mu.Lock()
	w.dir.down = true
	w.dir.mu.Unlock()
	texts := []string{"full", "share", "unknown", "quota", "fine"}
	var ids []string
	for _, text := range texts {
		a.m.Send("bob", text)
		ids = append(ids, a.next(t, "sent", isType(api.TypeSent)).(*api.Sent).ID)
	}
	mu.Lock()
	script[ids[0]], script[ids[1]], script[ids[2]], script[ids[3]] = wire.MailFull, wire.MailShare, wire.MailUnknown, wire.MailQuota
	mu.Unlock()
	w.dir.mu.Lock()
	w.dir.down = false
	w.dir.mu.Unlock()
	evs := collect(t, a, 1, api.TypeStored)
	errs := ofType[*api.Error](evs)
	if len(errs) != 4 || errs[0].Code != api.CodeMailboxFull || errs[0].ID != ids[0] || !strings.Contains(errs[0].Message, "full") ||
		errs[1].Code != api.CodeMailboxFull || errs[1].ID != ids[1] || !strings.Contains(errs[1].Message, "share") ||
		errs[2].Code != api.CodeUnknownPeer || errs[2].ID != ids[2] ||
		errs[3].Code != api.CodeMailboxFull || errs[3].ID != ids[3] || !strings.Contains(errs[3].Message, "offline mailboxes") {
		t.Fatalf("errors %+v", errs)
	}
	if s := ofType[*api.Stored](evs); s[0].ID != ids[4] {
		t.Fatalf("stored %+v", s)
	}

	// A message older than the mailbox keeps: too_old.
	w.dir.mu.Lock()
	w.dir.down = true
	w.dir.mu.Unlock()
	a.m.Send("bob", "ancient")
	old := a.next(t, "sent", isType(api.TypeSent)).(*api.Sent)
	offset.Store(int64(2 * time.Hour))
	w.dir.mu.Lock()
	w.dir.down = false
	w.dir.mu.Unlock()
	e := a.next(t, "error", isType(api.TypeError)).(*api.Error)
	if e.Code != api.CodeTooOld || e.ID != old.ID || e.To != "bob" {
		t.Fatalf("old message: %+v", e)
	}
	_ = b
}

// TestLongestMessageFitsMailbox: MailTooBig cannot happen: the longest
// text a node sends seals within the mailbox's limit.
func TestLongestMessageFitsMailbox(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	text := strings.Repeat("€", wire.MaxTextLen/3) + "x"
	if len(text) != wire.MaxTextLen {
		t.Fatalf("text of %d bytes", len(text))
	}
	blob, err := mailbox.Seal(priv, wire.Key(pub), &wire.Msg{ID: wire.MsgID{1}, Seq: ^uint64(0), SentMS: -1, Text: text})
	if err != nil || len(blob) > wire.MaxMailBlob {
		t.Fatalf("sealed %d bytes (limit %d): %v", len(blob), wire.MaxMailBlob, err)
	}
}

// TestStoredSurvivesRestart: a stored message is not deposited again by
// a restarted sender (Sent resumed, then Stored at once), and its receipt
// reaches the new run.
func TestStoredSurvivesRestart(t *testing.T) {
	w := newMailWorld(t)
	_, aPriv, _ := ed25519.GenerateKey(rand.Reader)
	aDir := t.TempDir()
	a := w.start("alice", aPriv, aDir, Options{})
	b := w.start("bob", nil, "", Options{})
	w.setOffline("bob", true)
	a.m.Send("bob", "while you were out")
	st := a.next(t, "stored", isType(api.TypeStored)).(*api.Stored)
	a.stop()
	a2 := w.start("alice", aPriv, aDir, Options{DeliveryTimeout: 200 * time.Millisecond})
	r := a2.next(t, "resumed", isType(api.TypeSent)).(*api.Sent)
	if !r.Resumed || r.ID != st.ID {
		t.Fatalf("resumed %+v", r)
	}
	if s := a2.next(t, "stored", isType(api.TypeStored)).(*api.Stored); s.ID != st.ID {
		t.Fatalf("stored %+v", s)
	}
	select {
	case e := <-a2.events:
		t.Fatalf("restarted alice: %T %+v", e, e)
	case <-time.After(500 * time.Millisecond):
	}
	if n := len(w.box.depositLog()); n != 1 {
		t.Fatalf("%d deposits, want 1", n)
	}
	w.setOffline("bob", false)
	w.box.drain(t, b)
	b.next(t, "message", isType(api.TypeMessage))
	if d := a2.next(t, "delivered", isType(api.TypeDelivered)).(*api.Delivered); d.ID != st.ID {
		t.Fatalf("delivered %+v", d)
	}
}

// TestReceiptExpired: the rendezvous's receipt that a stored message
// expired unread is reported, and the message leaves the outbox.
func TestReceiptExpired(t *testing.T) {
	w := newMailWorld(t)
	a := w.start("alice", nil, "", Options{})
	b := w.start("bob", nil, "", Options{})
	w.setOffline("bob", true)
	a.m.Send("bob", "too late")
	st := a.next(t, "stored", isType(api.TypeStored)).(*api.Stored)
	id, _ := wire.ParseMsgID(st.ID)
	a.m.MailReceipt(wire.Receipt{MailRef: wire.MailRef{Peer: b.key, ID: id}, Status: wire.ReceiptExpired})
	if e := a.next(t, "expired", isType(api.TypeExpired)).(*api.Expired); e.ID != st.ID || e.To != "bob" {
		t.Fatalf("expired %+v", e)
	}
	w.box.waitReceiptAcks(t, id, 1)
	// Again (the rendezvous repeats until acknowledged): taken, quietly.
	a.m.MailReceipt(wire.Receipt{MailRef: wire.MailRef{Peer: b.key, ID: id}, Status: wire.ReceiptExpired})
	w.box.waitReceiptAcks(t, id, 2)
	select {
	case e := <-a.events:
		t.Fatalf("a repeated receipt gave %T %+v", e, e)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestMailboxRefusesForgeries: from our mailbox, a blob that does not open
// (altered, forged by another key, under another ID) is refused, never
// shown, and acknowledged; one from a key that is not the one pinned for
// its name is refused with key_changed and left in the mailbox; one shown
// before is acknowledged and not shown again.
func TestMailboxRefusesForgeries(t *testing.T) {
	w := newMailWorld(t)
	_, aPriv, _ := ed25519.GenerateKey(rand.Reader)
	a := w.start("alice", aPriv, "", Options{})
	b := w.start("bob", nil, "", Options{})
	// Bob meets alice (her key is pinned).
	a.m.Send("bob", "hi")
	first := b.next(t, "message", isType(api.TypeMessage)).(*api.Message)
	a.next(t, "delivered", isType(api.TypeDelivered))
	_, mPriv, _ := ed25519.GenerateKey(rand.Reader)
	mallory := wire.Key(mPriv.Public().(ed25519.PublicKey))
	w.dir.set("mallory", mallory)

	seal := func(priv ed25519.PrivateKey, id wire.MsgID, text string) []byte {
		blob, err := mailbox.Seal(priv, b.key, &wire.Msg{ID: id, Seq: 9, SentMS: 1, Text: text})
		if err != nil {
			t.Fatal(err)
		}
		return blob
	}
	good := seal(aPriv, wire.MsgID{1}, "genuine")
	altered := seal(aPriv, wire.MsgID{2}, "altered")
	altered[len(altered)-5] ^= 0x40
	forged := seal(mPriv, wire.MsgID{3}, "from alice, honest") // under alice's key
	swapped := seal(aPriv, wire.MsgID{4}, "moved")
	firstID, _ := wire.ParseMsgID(first.ID)

	b.m.MailDrain(true)
	b.m.ReceiveMail(a.key, wire.MsgID{2}, 1, altered)
	b.m.ReceiveMail(a.key, wire.MsgID{3}, 2, forged)
	b.m.ReceiveMail(a.key, wire.MsgID{5}, 3, swapped) // sealed as 4
	b.m.ReceiveMail(a.key, firstID, 4, seal(aPriv, firstID, "hi"))
	b.m.ReceiveMail(a.key, wire.MsgID{1}, 5, good)
	m := b.next(t, "message", isType(api.TypeMessage)).(*api.Message)
	if m.Text != "genuine" || m.Via != api.ViaMailbox {
		t.Fatalf("bob showed %+v", m)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		w.box.mu.Lock()
		acks := slices.Clone(w.box.acks)
		w.box.mu.Unlock()
		want := []wire.MailRef{{Peer: a.key, ID: wire.MsgID{2}}, {Peer: a.key, ID: wire.MsgID{3}}, {Peer: a.key, ID: wire.MsgID{5}},
			{Peer: a.key, ID: firstID}, {Peer: a.key, ID: wire.MsgID{1}}}
		if slices.Equal(acks, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("acks %v, want %v", acks, want)
		}
		time.Sleep(10 * time.Millisecond) // polling, with a deadline
	}

	// Mallory's key under alice's name: the rendezvous cannot bind it so,
	// but a pinned name that the rendezvous now gives another key is the
	// same case: bob pinned "carol" to one key, the mail comes from
	// another key the rendezvous calls carol.
	_, cPriv, _ := ed25519.GenerateKey(rand.Reader)
	carol := wire.Key(cPriv.Public().(ed25519.PublicKey))
	if err := b.st.SetPin("carol", wire.Key{0xCC}); err != nil {
		t.Fatal(err)
	}
	w.dir.set("carol", carol)
	b.m.ReceiveMail(carol, wire.MsgID{7}, 6, seal(cPriv, wire.MsgID{7}, "I am carol"))
	e := b.next(t, "error", isType(api.TypeError)).(*api.Error)
	if e.Code != api.CodeKeyChanged || e.Peer != "carol" {
		t.Fatalf("error %+v", e)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		w.box.mu.Lock()
		kept := slices.Clone(w.box.kept)
		w.box.mu.Unlock()
		if slices.Equal(kept, []wire.MailRef{{Peer: carol, ID: wire.MsgID{7}}}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kept %v", kept)
		}
		time.Sleep(10 * time.Millisecond) // polling, with a deadline
	}
	select {
	case ev := <-b.events:
		t.Fatalf("bob got %T %+v", ev, ev)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestMailboxBeforeLive: while bob drains his mailbox, a live message
// from alice waits, so that her older stored messages are shown first;
// a drain that does not end holds live messages only DrainWait.
func TestMailboxBeforeLive(t *testing.T) {
	w := newMailWorld(t)
	a := w.start("alice", nil, "", Options{})
	const drainWait = time.Second
	b := w.start("bob", nil, "", Options{DrainWait: drainWait})
	w.setOffline("bob", true)
	for i := range 3 {
		a.m.Send("bob", fmt.Sprint("stored ", i))
	}
	collect(t, a, 3, api.TypeStored)
	// Bob registers: his drain starts, and alice (who sees him online)
	// writes a new message live before the stored ones reach him.
	w.setOffline("bob", false)
	b.m.MailDrain(true)
	a.m.Send("bob", "live")
	a.next(t, "sent", isType(api.TypeSent))
	select {
	case e := <-b.events:
		t.Fatalf("bob showed %T %+v during the drain, before the mailbox's messages", e, e)
	case <-time.After(drainWait / 3):
	}
	w.box.give(b)
	var got []string
	for range 4 {
		got = append(got, b.next(t, "message", isType(api.TypeMessage)).(*api.Message).Text)
	}
	if want := []string{"stored 0", "stored 1", "stored 2", "live"}; !slices.Equal(got, want) {
		t.Fatalf("bob showed %q, want %q", got, want)
	}
	b.m.MailDrain(false)
	collect(t, a, 4, api.TypeDelivered)

	// A drain that never ends holds a live message for DrainWait only.
	b.m.MailDrain(true)
	start := time.Now()
	a.m.Send("bob", "late")
	if m := b.next(t, "message", isType(api.TypeMessage)).(*api.Message); m.Text != "late" || m.Via != "" {
		t.Fatalf("bob: %+v", m)
	}
	if d := time.Since(start); d < drainWait/2 {
		t.Fatalf("shown after %v, during a drain", d)
	}
}

// TestStoredGivenUp: a stored message whose receipt never comes (a
// rendezvous that lost its mailboxes) is given up as expired a day past
// the mailbox's age limit, so the outbox does not keep it for ever.
func TestStoredGivenUp(t *testing.T) {
	w := newMailWorld(t)
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	a := w.start("alice", nil, "", Options{Now: now, MailboxAge: time.Hour})
	w.start("bob", nil, "", Options{})
	w.setOffline("bob", true)
	a.m.Send("bob", "into the void")
	st := a.next(t, "stored", isType(api.TypeStored)).(*api.Stored)
	offset.Store(int64(time.Hour + storedSlack - time.Minute))
	a.m.Send("bob", "still there?") // wakes the conversation
	if s := a.next(t, "stored", isType(api.TypeStored)).(*api.Stored); s.ID == st.ID {
		t.Fatal("stored twice")
	}
	offset.Store(int64(time.Hour + storedSlack + time.Minute))
	a.m.Send("bob", "hello?")
	evs := collect(t, a, 1, api.TypeExpired)
	if e := ofType[*api.Expired](evs); e[0].ID != st.ID || e[0].To != "bob" {
		t.Fatalf("expired %+v, want %s", e[0], st.ID)
	}
}

// TestLiveWaitsForStored: messages queued behind ones in the peer's
// mailbox are not written live until the stored ones' receipts are in, so
// they cannot overtake them even when the peer shows live messages before
// it has fetched its mail.
func TestLiveWaitsForStored(t *testing.T) {
	w := newMailWorld(t)
	a := w.start("alice", nil, "", Options{})
	b := w.start("bob", nil, "", Options{})
	w.setOffline("bob", true)
	for i := range 3 {
		a.m.Send("bob", fmt.Sprint("stored ", i))
	}
	collect(t, a, 3, api.TypeStored)

	// Bob is back but has not fetched his mail yet.
	w.setOffline("bob", false)
	for i := range 2 {
		a.m.Send("bob", fmt.Sprint("later ", i))
	}
	collect(t, a, 2, api.TypeSent)
	select {
	case e := <-b.events:
		if m, ok := e.(*api.Message); ok {
			t.Fatalf("bob was shown %q before his mail", m.Text)
		}
	case <-time.After(500 * time.Millisecond):
	}

	w.box.drain(t, b)
	var got []string
	for range 5 {
		m := b.next(t, "message", isType(api.TypeMessage)).(*api.Message)
		got = append(got, m.Text)
	}
	want := []string{"stored 0", "stored 1", "stored 2", "later 0", "later 1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("bob was shown %q, want %q", got, want)
	}
	collect(t, a, 5, api.TypeDelivered)
}

// spyStore is a store that logs Done and Flush.
type spyStore struct {
	*store.Store
	mu  sync.Mutex
	log []string
}

func (s *spyStore) note(e string) { s.mu.Lock(); s.log = append(s.log, e); s.mu.Unlock() }

func (s *spyStore) Done(ids ...wire.MsgID) {
	for _, id := range ids {
		s.note("done " + id.String())
	}
	s.Store.Done(ids...)
}

func (s *spyStore) Flush() error {
	s.note("flush")
	return s.Store.Flush()
}

// TestReceiptAckAfterDurable: a receipt is acknowledged to the rendezvous
// only once its message is durably out of the outbox (Done, then a
// flush); so is a repeated one, for a message no longer in flight.
func TestReceiptAckAfterDurable(t *testing.T) {
	w := newMailWorld(t)
	var spy *spyStore
	w.wrapStore = func(st *store.Store) Store { spy = &spyStore{Store: st}; return spy }
	a := w.start("alice", nil, "", Options{})
	w.wrapStore = nil
	b := w.start("bob", nil, "", Options{})
	w.box.onAckReceipt = func(ref wire.MailRef) { spy.note("ack " + ref.ID.String()) }
	w.setOffline("bob", true)
	a.m.Send("bob", "later")
	st := a.next(t, "stored", isType(api.TypeStored)).(*api.Stored)
	id, _ := wire.ParseMsgID(st.ID)
	for round := 1; round <= 2; round++ {
		a.m.MailReceipt(wire.Receipt{MailRef: wire.MailRef{Peer: b.key, ID: id}, Status: wire.ReceiptDelivered})
		if round == 1 {
			a.next(t, "delivered", isType(api.TypeDelivered))
		}
		w.box.waitReceiptAcks(t, id, round)
		spy.mu.Lock()
		log := slices.Clone(spy.log)
		spy.mu.Unlock()
		// The round's ack, and the last Done before it.
		ack, seen := -1, 0
		for i, e := range log {
			if e == "ack "+id.String() {
				if seen++; seen == round {
					ack = i
				}
			}
		}
		done := -1
		for i := range max(ack, 0) {
			if log[i] == "done "+id.String() {
				done = i
			}
		}
		if ack < 0 || done < 0 || !slices.Contains(log[done:ack], "flush") {
			t.Fatalf("round %d: store and ack log %v: the ack does not follow a durable Done", round, log)
		}
	}
	if out, err := a.st.Outbox(); err != nil || len(out) != 0 {
		t.Fatalf("outbox %v, %v", out, err)
	}
}

// TestReceiptBeforeStart: a receipt that comes while the messenger loads
// its outbox (here: before Start) is held until the outbox is back in its
// conversations: the stored message is delivered, not taken for one no
// longer in flight (and later falsely expired).
func TestReceiptBeforeStart(t *testing.T) {
	w := newMailWorld(t)
	_, aPriv, _ := ed25519.GenerateKey(rand.Reader)
	a := w.start("alice", aPriv, "", Options{})
	b := w.start("bob", nil, "", Options{})
	w.setOffline("bob", true)
	a.m.Send("bob", "while you were out")
	st := a.next(t, "stored", isType(api.TypeStored)).(*api.Stored)
	id, _ := wire.ParseMsgID(st.ID)
	a.cancel()
	a.m.Wait()
	if err := a.st.Close(); err != nil {
		t.Fatal(err)
	}
	w.beforeStart = func(p *peer) {
		p.m.MailReceipt(wire.Receipt{MailRef: wire.MailRef{Peer: b.key, ID: id}, Status: wire.ReceiptDelivered})
	}
	a2 := w.start("alice", aPriv, a.stDir, Options{})
	w.beforeStart = nil
	if d := a2.next(t, "delivered", isType(api.TypeDelivered)).(*api.Delivered); d.ID != st.ID {
		t.Fatalf("delivered %+v", d)
	}
	w.box.waitReceiptAcks(t, id, 1)
	if out, err := a2.st.Outbox(); err != nil || len(out) != 0 {
		t.Fatalf("outbox %v, %v", out, err)
	}
}

// TestMailQueueFull: a message that does not fit the mail queue is
// refused (ReceiveMail returns false), not dropped as if taken.
func TestMailQueueFull(t *testing.T) {
	w := newMailWorld(t)
	w.manual = true
	_, aPriv, _ := ed25519.GenerateKey(rand.Reader)
	a := w.start("alice", aPriv, "", Options{})
	a.cancel() // the mail goroutine stops: nothing leaves the queue
	a.m.Wait()
	for i := range mailQueue {
		if !a.m.ReceiveMail(wire.Key{1}, wire.MsgID{byte(i)}, 1, []byte("x")) {
			t.Fatalf("message %d refused with room in the queue", i)
		}
	}
	if a.m.ReceiveMail(wire.Key{1}, wire.MsgID{0xFF}, 1, []byte("x")) {
		t.Fatal("a message past the queue was taken")
	}
}

// TestMailSenderLookupFails: when the sender's name cannot be found for
// now, the message is left (LeaveMail), and so are that sender's later
// ones, shown neither before it nor instead of it; when it comes again it
// is shown, then the others, in order.
func TestMailSenderLookupFails(t *testing.T) {
	w := newMailWorld(t)
	_, aPriv, _ := ed25519.GenerateKey(rand.Reader)
	// Alice has a name, but bob has not pinned it: he looks it up.
	w.dir.set("alice", wire.Key(aPriv.Public().(ed25519.PublicKey)))
	ak := wire.Key(aPriv.Public().(ed25519.PublicKey))
	b := w.start("bob", nil, "", Options{})
	seal := func(id wire.MsgID, text string) []byte {
		blob, err := mailbox.Seal(aPriv, b.key, &wire.Msg{ID: id, Seq: uint64(id[0]), SentMS: 1, Text: text})
		if err != nil {
			t.Fatal(err)
		}
		return blob
	}
	w.dir.mu.Lock()
	w.dir.down = true
	w.dir.mu.Unlock()
	b.m.MailDrain(true)
	for i := 1; i <= 3; i++ {
		if !b.m.ReceiveMail(ak, wire.MsgID{byte(i)}, int64(i), seal(wire.MsgID{byte(i)}, fmt.Sprint("m", i))) {
			t.Fatal("refused")
		}
	}
	want := []wire.MailRef{{Peer: ak, ID: wire.MsgID{1}}, {Peer: ak, ID: wire.MsgID{2}}, {Peer: ak, ID: wire.MsgID{3}}}
	deadline := time.Now().Add(5 * time.Second)
	for {
		w.box.mu.Lock()
		left := slices.Clone(w.box.left)
		w.box.mu.Unlock()
		if slices.Equal(left, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left %v, want %v", left, want)
		}
		time.Sleep(10 * time.Millisecond) // polling, with a deadline
	}
	select {
	case e := <-b.events:
		t.Fatalf("bob: %T %+v", e, e)
	case <-time.After(100 * time.Millisecond):
	}
	// Fetched again: all three, in order.
	w.dir.mu.Lock()
	w.dir.down = false
	w.dir.mu.Unlock()
	for i := 1; i <= 3; i++ {
		b.m.ReceiveMail(ak, wire.MsgID{byte(i)}, int64(i), seal(wire.MsgID{byte(i)}, fmt.Sprint("m", i)))
	}
	for i := 1; i <= 3; i++ {
		if m := b.next(t, "message", isType(api.TypeMessage)).(*api.Message); m.Text != fmt.Sprint("m", i) {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
}
