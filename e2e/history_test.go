package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestHistorySurvivesRestart: alice and bob chat (1:1 both ways, and in
// #dev); bob quits; alice sends him two messages, which wait in his
// mailbox; bob restarts on the same state directory and takes them. Then
// /history shows, on each side, the whole conversation in order with the
// right direction and state (alice's two stored messages delivered once
// bob took them), and the room's.
func TestHistorySurvivesRestart(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{extra: []string{"-default-room", ""}})
	bobID := newIdentity(t)
	alice := startNode(t, "alice", rv.addr, nodeOptions{})
	bob := startNode(t, "bob", rv.addr, bobID.options("bob#1"))
	alice.waitRegistered(t)
	bob.waitRegistered(t)

	// Both in #dev: bob first, so that alice's join sees him.
	bob.command(t, "/join #dev")
	bob.waitEvent(t, waitLong, "bob's room_joined", func(e *event) bool { return e.Type == "room_joined" && e.Name == "bob" })
	alice.command(t, "/join #dev")
	if j := alice.waitEvent(t, waitLong, "alice's room_joined", func(e *event) bool { return e.Type == "room_joined" && e.Name == "alice" }); j.Total != 2 {
		t.Fatalf("alice joined %v, want 2 members", j)
	}

	// One message each way, one at a time (so each side's order is
	// known), then one to the room.
	say := func(from, to *node, cmd, text string) string {
		t.Helper()
		m := from.mark()
		from.command(t, cmd+" "+text)
		s, _ := from.waitEventFrom(t, m, waitLong, "sent "+text, func(e *event) bool { return e.Type == "sent" && e.Text == text })
		from.waitEventFrom(t, m, waitLong, "delivered "+text, func(e *event) bool { return e.Type == "delivered" && e.ID == s.ID })
		to.waitEvent(t, waitLong, "message "+text, func(e *event) bool { return e.Type == "message" && e.ID == s.ID })
		return s.ID
	}
	say(alice, bob, "/msg bob", "hello bob")
	say(bob, alice, "/msg alice", "hi alice")
	say(alice, bob, "/msg #dev", "hello room")

	// bob leaves (end of input: a notified leave); alice's next two wait
	// in his mailbox.
	bob.stdin.Close()
	if code := bob.exitCode(t, waitLong); code != 0 {
		t.Fatalf("bob exited with %d", code)
	}
	alice.waitPeerLeft(t, "bob")
	b := deposit(t, alice, "bob", "away", 2)

	bob = startNode(t, "bob", rv.addr, bobID.options("bob#2"))
	bob.waitRegistered(t)
	for _, id := range b.ids {
		bob.waitEvent(t, waitLong, "message from the mailbox", func(e *event) bool { return e.Type == "message" && e.ID == id && e.Via == "mailbox" })
	}
	waitOutcomes(t, b, waitLong)

	// bob's view, from the history his first run and this one recorded.
	checkHistory(t, bob, "alice", []string{
		"in alice: hello bob",
		"out bob: hi alice [delivered]",
		"in alice: " + b.texts[0] + " (mailbox)",
		"in alice: " + b.texts[1] + " (mailbox)",
	})
	checkHistory(t, bob, "#dev", []string{"in alice: hello room"})
	// alice's view: her two stored messages are delivered now.
	checkHistory(t, alice, "bob", []string{
		"out alice: hello bob [delivered]",
		"in bob: hi alice",
		"out alice: " + b.texts[0] + " [delivered]",
		"out alice: " + b.texts[1] + " [delivered]",
	})
	checkHistory(t, alice, "#dev", []string{"out alice: hello room [delivered]"})

	// Without a name: the current conversation (for bob's second run,
	// alice, who wrote first).
	checkHistoryCmd(t, bob, "/history 2", "alice", []string{
		"in alice: " + b.texts[0] + " (mailbox)",
		"in alice: " + b.texts[1] + " (mailbox)",
	})
}

// waitPeerLeft waits until n has seen peer leave.
func (n *node) waitPeerLeft(t *testing.T, peer string) {
	t.Helper()
	n.waitEvent(t, waitLong, "peer_left "+peer, func(e *event) bool { return e.Type == "peer_left" && e.Name == peer })
}

// checkHistory asks n for the last 10 messages of conv and checks them,
// each written "in FROM: TEXT (via)" or "out FROM: TEXT [state]".
func checkHistory(t *testing.T, n *node, conv string, want []string) {
	t.Helper()
	checkHistoryCmd(t, n, "/history 10 "+conv, conv, want)
}

// checkHistoryCmd is checkHistory for the answer to the command cmd.
func checkHistoryCmd(t *testing.T, n *node, cmd, conv string, want []string) {
	t.Helper()
	m := n.mark()
	n.command(t, cmd)
	h, _ := n.waitEventFrom(t, m, waitLong, "history of "+conv, func(e *event) bool { return e.Type == "history" })
	var got []string
	for _, e := range h.Entries {
		s := fmt.Sprintf("in %s: %s", e.From, e.Text)
		if e.Out {
			s = fmt.Sprintf("out %s: %s [%s]", e.From, e.Text, e.State)
		}
		if e.Via != "" {
			s += " (" + e.Via + ")"
		}
		got = append(got, s)
		if e.ID == "" || e.TS.IsZero() || time.Since(e.TS) > time.Minute {
			t.Errorf("%s: history entry %+v: want an id and a recent sent_ts", n.label, e)
		}
	}
	if !strings.EqualFold(h.Conv, conv) || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s: history of %s (%q):\n  %s\nwant\n  %s", n.label, conv, h.Conv, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}
