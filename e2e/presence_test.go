package e2e

import (
	"net"
	"strings"
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

// TestUnknownAndOfflinePeer: a message to a name no one registered gets
// exactly one outcome, an error with the message's id and a clear code;
// one to a registered name that is offline is stored in its mailbox.
func TestUnknownAndOfflinePeer(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{})
	alice, bob := startPair(t, rv.addr, nodeOptions{})

	outcome := func(to, text, want string) {
		t.Helper()
		mark := alice.mark()
		alice.command(t, "/msg "+to+" "+text)
		sent, _ := alice.waitEventFrom(t, mark, waitLong, "sent to "+to, isType("sent"))
		e, _ := alice.waitEventFrom(t, mark, waitLong, "outcome of "+sent.ID, func(e *event) bool {
			return (e.Type == "error" || e.Type == "delivered" || e.Type == "stored") && e.ID == sent.ID
		})
		switch {
		case want == "stored" && e.Type == "stored" && e.To == to:
		case e.Type == "error" && e.Code == want && e.To == to && e.Message != "":
		default:
			t.Fatalf("message to %s: outcome %v, want %s with to (and a message, for an error)", to, e, want)
		}
	}
	outcome("nobody", "anyone there?", "unknown_peer")

	// An offline name's messages wait in its mailbox.
	bob.command(t, "/quit")
	alice.waitEvent(t, waitLong, "bob's leave", func(e *event) bool { return e.Type == "peer_left" && e.Name == "bob" })
	outcome("bob", "are you still there?", "stored")
	outcome("BOB", "case does not matter", "stored")
}

// TestIPv6: the rendezvous serves IPv6 too; nodes register over it, see
// each other and chat both ways.
func TestIPv6(t *testing.T) {
	t.Parallel()
	probe, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatalf("no IPv6 loopback on this machine: %v", err)
	}
	addr := probe.LocalAddr().String()
	probe.Close()
	rv := startRendezvous(t, rvOptions{addr: addr})
	alice, bob := startPair(t, rv.addr, nodeOptions{listen: "[::1]:0"})
	for _, n := range []*node{alice, bob} {
		if r := n.waitRegistered(t); !strings.HasPrefix(r.Public, "[::1]:") {
			t.Errorf("%s registered as %q, want an IPv6 address", n.label, r.Public)
		}
	}
	chat(t, alice, bob, "v6", 5)
}
