package e2e

import "testing"

// TestEmote: /me sends an emote to the current conversation, live and
// through the mailbox, and it arrives as a message of kind emote.
func TestEmote(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{})
	alice, bob := startPair(t, rv.addr, nodeOptions{})

	// No conversation yet: like a plain line.
	m := bob.mark()
	bob.command(t, "/me waves")
	if e, _ := bob.waitEventFrom(t, m, waitLong, "error", isType("error")); e.Code != "no_target" {
		t.Fatalf("/me before any conversation: %v, want no_target", e)
	}

	// Live, after /msg set the conversation.
	am, bm := alice.mark(), bob.mark()
	alice.command(t, "/msg bob hi")
	alice.command(t, "/me waves")
	sent := alice.waitEvents(t, am, 2, waitLong, "sent events", isType("sent"))
	if sent[0].Text != "hi" || sent[0].Kind != "" || sent[1].Text != "waves" || sent[1].Kind != "emote" || sent[1].To != "bob" {
		t.Fatalf("alice sent %v then %v", sent[0], sent[1])
	}
	msgs := bob.waitEvents(t, bm, 2, waitLong, "messages", isType("message"))
	if msgs[0].Text != "hi" || msgs[0].Kind != "" {
		t.Fatalf("bob's first message: %v", msgs[0])
	}
	if e := msgs[1]; e.ID != sent[1].ID || e.Text != "waves" || e.Kind != "emote" || e.From != "alice" || e.Via != "" {
		t.Fatalf("bob's emote: %v", e)
	}
	alice.waitEvents(t, am, 2, waitLong, "delivered", isType("delivered"))

	// Through the mailbox.
	am, bm = alice.mark(), bob.mark()
	bob.command(t, "/dereg")
	bob.waitEventFrom(t, bm, waitLong, "deregistered", isType("deregistered"))
	alice.waitEventFrom(t, am, waitLong, "bob left", func(e *event) bool { return e.Type == "peer_left" && e.Name == "bob" })
	alice.command(t, "/me is waiting")
	s, _ := alice.waitEventFrom(t, am, waitLong, "sent", isType("sent"))
	if s.Kind != "emote" || s.Text != "is waiting" {
		t.Fatalf("alice sent %v", s)
	}
	alice.waitEventFrom(t, am, waitLong, "stored", func(e *event) bool { return e.Type == "stored" && e.ID == s.ID })
	bm = bob.mark()
	bob.command(t, "/reg")
	e, _ := bob.waitEventFrom(t, bm, waitLong, "the emote", isType("message"))
	if e.ID != s.ID || e.Text != "is waiting" || e.Kind != "emote" || e.Via != "mailbox" || e.From != "alice" {
		t.Fatalf("bob's emote from the mailbox: %v", e)
	}
	alice.waitEventFrom(t, am, waitLong, "delivered", func(e *event) bool { return e.Type == "delivered" && e.ID == s.ID })
	if errs := alice.events(0, isType("error")); len(errs) > 0 {
		t.Errorf("alice: errors %v", errs)
	}
}
