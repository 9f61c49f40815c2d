package e2e

import (
	"testing"
	"time"
)

// TestPeerLeftTimeout: a node killed with SIGKILL says nothing; the other
// node hears it left with reason "timeout" once the rendezvous expires it:
// not before expiry−heartbeat after the kill (its last heartbeat may be a
// heartbeat old), and no later than expiry plus 2 s.
func TestPeerLeftTimeout(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{})
	alice, bob := startPair(t, rv.addr, nodeOptions{})
	killed := time.Now()
	bob.kill(t)
	e := alice.waitEvent(t, expiry+10*time.Second, "peer_left bob", func(e *event) bool {
		return e.Type == "peer_left" && e.Name == "bob"
	})
	if e.Reason != "timeout" {
		t.Errorf("peer_left %v, want reason timeout", e)
	}
	const tolerance = 300 * time.Millisecond // the last heartbeat's own trip
	if d := e.at.Sub(killed); d < expiry-heartbeat-tolerance || d > expiry+2*time.Second {
		t.Errorf("peer_left %v after the kill, want between %v and %v",
			d.Round(time.Millisecond), expiry-heartbeat-tolerance, expiry+2*time.Second)
	}
}

// TestPeerLeftQuit: a node that sends /quit exits 0, and the other node
// hears it left with reason "quit" well within a heartbeat.
func TestPeerLeftQuit(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{})
	alice, bob := startPair(t, rv.addr, nodeOptions{})
	quit := time.Now()
	bob.command(t, "/quit")
	e := alice.waitEvent(t, waitLong, "peer_left bob", func(e *event) bool {
		return e.Type == "peer_left" && e.Name == "bob"
	})
	if e.Reason != "quit" {
		t.Errorf("peer_left %v, want reason quit", e)
	}
	if d := e.at.Sub(quit); d > heartbeat {
		t.Errorf("peer_left %v after /quit, want within %v", d.Round(time.Millisecond), heartbeat)
	}
	if code := bob.exitCode(t, waitLong); code != 0 {
		t.Errorf("bob: exit %d after /quit, want 0", code)
	}
}

// TestEndOfInput: a node whose input ends first waits for its messages to
// be delivered, then leaves (reason "quit") and exits 0.
func TestEndOfInput(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{})
	alice, bob := startPair(t, rv.addr, nodeOptions{})
	b := sendBatch(t, bob, alice, "last-words", 3)
	bob.stdin.Close()
	b.checkDelivered(t, waitLong)
	e := alice.waitEvent(t, waitLong, "peer_left bob", func(e *event) bool {
		return e.Type == "peer_left" && e.Name == "bob"
	})
	if e.Reason != "quit" {
		t.Errorf("peer_left %v, want reason quit", e)
	}
	if code := bob.exitCode(t, waitLong); code != 0 {
		t.Errorf("bob: exit %d at end of input, want 0", code)
	}
}
