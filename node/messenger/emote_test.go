package messenger

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"natchat/node/api"
	"natchat/node/mailbox"
	"natchat/wire"
)

// TestEmoteLive: an emote keeps its kind end to end, live: Sent and the
// peer's Message say "emote"; plain text still says nothing.
func TestEmoteLive(t *testing.T) {
	w := newWorld(t)
	a := w.start("alice", nil, "", Options{})
	b := w.start("bob", nil, "", Options{})
	a.m.SendKind("bob", wire.MsgEmote, "waves")
	a.m.Send("bob", "hi")
	s1 := a.next(t, "sent", isType(api.TypeSent)).(*api.Sent)
	s2 := a.next(t, "sent", isType(api.TypeSent)).(*api.Sent)
	if s1.Kind != api.KindEmote || s1.Text != "waves" || s2.Kind != api.KindText {
		t.Fatalf("sent %+v then %+v", s1, s2)
	}
	m1 := b.next(t, "message", isType(api.TypeMessage)).(*api.Message)
	m2 := b.next(t, "message", isType(api.TypeMessage)).(*api.Message)
	if m1.ID != s1.ID || m1.Kind != api.KindEmote || m1.Text != "waves" || m1.From != "alice" {
		t.Fatalf("bob's first message %+v", m1)
	}
	if m2.ID != s2.ID || m2.Kind != api.KindText || m2.Text != "hi" {
		t.Fatalf("bob's second message %+v", m2)
	}
	a.next(t, "delivered", isType(api.TypeDelivered))
	a.next(t, "delivered", isType(api.TypeDelivered))
}

// TestEmoteResumedAfterRestart: the kind is in the outbox, so a restarted
// sender resends an emote as an emote.
func TestEmoteResumedAfterRestart(t *testing.T) {
	w := newWorld(t)
	_, aPriv, _ := ed25519.GenerateKey(rand.Reader)
	aDir := t.TempDir()
	a := w.start("alice", aPriv, aDir, Options{})
	b := w.start("bob", nil, "", Options{})
	w.mu.Lock()
	w.refuse = true // bob cannot be reached
	w.mu.Unlock()
	a.m.SendKind("bob", wire.MsgEmote, "is waiting")
	s := a.next(t, "sent", isType(api.TypeSent)).(*api.Sent)
	a.stop()
	w.mu.Lock()
	w.refuse = false
	w.mu.Unlock()
	a2 := w.start("alice", aPriv, aDir, Options{})
	r := a2.next(t, "resumed sent", isType(api.TypeSent)).(*api.Sent)
	if !r.Resumed || r.ID != s.ID || r.Kind != api.KindEmote || r.Text != "is waiting" {
		t.Fatalf("resumed %+v, want the emote %s", r, s.ID)
	}
	if m := b.next(t, "message", isType(api.TypeMessage)).(*api.Message); m.ID != s.ID || m.Kind != api.KindEmote {
		t.Fatalf("bob got %+v", m)
	}
	a2.next(t, "delivered", isType(api.TypeDelivered))
}

// TestEmoteThroughMailbox: an emote to an offline peer is sealed with its
// kind and shown as an emote from the mailbox.
func TestEmoteThroughMailbox(t *testing.T) {
	w := newMailWorld(t)
	a := w.start("alice", nil, "", Options{})
	b := w.start("bob", nil, "", Options{})
	w.setOffline("bob", true)
	a.m.SendKind("bob", wire.MsgEmote, "is waiting")
	s := a.next(t, "sent", isType(api.TypeSent)).(*api.Sent)
	if s.Kind != api.KindEmote {
		t.Fatalf("sent %+v", s)
	}
	if st := a.next(t, "stored", isType(api.TypeStored)).(*api.Stored); st.ID != s.ID {
		t.Fatalf("stored %+v", st)
	}
	w.setOffline("bob", false)
	w.box.drain(t, b)
	m := b.next(t, "message", isType(api.TypeMessage)).(*api.Message)
	if m.ID != s.ID || m.Kind != api.KindEmote || m.Text != "is waiting" || m.Via != api.ViaMailbox || m.From != "alice" {
		t.Fatalf("bob: %+v", m)
	}
	a.next(t, "delivered", isType(api.TypeDelivered))
}

// TestUnknownKindDroppedLive: a message of a kind this node does not know
// is not shown (not as text either) and not acknowledged; what follows is.
func TestUnknownKindDroppedLive(t *testing.T) {
	w := newWorld(t)
	a := w.start("alice", nil, "", Options{})
	b := w.start("bob", nil, "", Options{})
	st, err := sessions{w, a.key}.OpenChat(context.Background(), b.key)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.Write(wire.AppendMsg(nil, &wire.Msg{ID: wire.MsgID{1}, Seq: 1, SentMS: 1, Kind: 0xfe, Text: "from the future"}))
	st.Write(wire.AppendMsg(nil, &wire.Msg{ID: wire.MsgID{2}, Seq: 2, SentMS: 1, Kind: wire.MsgEmote, Text: "waves"}))
	var acks []wire.MsgID
	readFrames(st, func(k wire.FrameKind, body []byte) error {
		id, _ := wire.ParseAck(body)
		acks = append(acks, id)
		return errors.New("done")
	})
	if len(acks) != 1 || acks[0] != (wire.MsgID{2}) {
		t.Fatalf("acks %v, want only the emote's", acks)
	}
	m := b.next(t, "message", isType(api.TypeMessage)).(*api.Message)
	if m.Text != "waves" || m.Kind != api.KindEmote {
		t.Fatalf("bob showed %+v first", m)
	}
}

// TestUnknownKindDroppedFromMailbox: the same from the mailbox; there it
// is acknowledged, so that it does not block the mailbox.
func TestUnknownKindDroppedFromMailbox(t *testing.T) {
	w := newMailWorld(t)
	_, aPriv, _ := ed25519.GenerateKey(rand.Reader)
	a := w.start("alice", aPriv, "", Options{})
	b := w.start("bob", nil, "", Options{})
	for i, msg := range []*wire.Msg{
		{ID: wire.MsgID{1}, Seq: 1, SentMS: 1, Kind: 0xfe, Text: "from the future"},
		{ID: wire.MsgID{2}, Seq: 2, SentMS: 1, Kind: wire.MsgText, Text: "hi"},
	} {
		blob, err := mailbox.Seal(aPriv, b.key, msg)
		if err != nil {
			t.Fatal(err)
		}
		w.box.mu.Lock()
		w.box.held[b.key] = append(w.box.held[b.key], boxed{from: a.key, id: msg.ID, storedMS: int64(i + 1), blob: blob})
		w.box.mu.Unlock()
	}
	w.box.drain(t, b) // both acknowledged
	m := b.next(t, "message", isType(api.TypeMessage)).(*api.Message)
	if m.Text != "hi" || m.Kind != api.KindText {
		t.Fatalf("bob showed %+v first", m)
	}
	select {
	case e := <-b.events:
		t.Fatalf("bob: %T %+v", e, e)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestSendUnknownKind: a kind this node does not know is refused at once.
func TestSendUnknownKind(t *testing.T) {
	w := newWorld(t)
	a := w.start("alice", nil, "", Options{})
	a.m.SendKind("bob", 0xfe, "x")
	if e := a.next(t, "error", isType(api.TypeError)).(*api.Error); e.Code != api.CodeBadCommand || e.To != "bob" {
		t.Fatalf("error %+v", e)
	}
	if _, ok := WireKind("shout"); ok {
		t.Fatal("WireKind took an unknown kind")
	}
	for _, k := range []string{api.KindText, api.KindEmote} {
		wk, ok := WireKind(k)
		if back, ok2 := APIKind(wk); !ok || !ok2 || back != k {
			t.Fatalf("kind %q: wire %d, back %q", k, wk, back)
		}
	}
}
