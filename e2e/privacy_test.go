package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"natchat/ctrl"
	"natchat/wire"
)

// TestNoPlaintextOnWire: with a recording proxy between the nodes and the
// rendezvous (and the nodes on the relay, so every byte between them
// passes through it), an observer on that path sees none of the message
// texts, whole or in part, and, since protocol v2, neither the nodes'
// names nor their identity keys in the registration (the Noise handshake
// encrypts both) nor in any control message (all sealed). What it does
// see are the keys in the relay headers: who relays to whom. The same
// holds for a message that goes through bob's mailbox.
func TestNoPlaintextOnWire(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{})
	proxy := startProxy(t, rv.addr, nil)
	secret := func() string {
		b := make([]byte, 16)
		rand.Read(b)
		return hex.EncodeToString(b)
	}
	// Names no random byte string will hold by chance.
	alice := startNode(t, "alice-"+secret()[:12], proxy.addr(), nodeOptions{noDirect: true})
	bob := startNode(t, "bob-"+secret()[:12], proxy.addr(), nodeOptions{noDirect: true})
	alice.waitRegistered(t)
	bob.waitRegistered(t)
	alice.waitPeerJoined(t, bob.name)
	bob.waitPeerJoined(t, alice.name)

	secrets := []string{secret(), secret()}
	ab := sendSecret(t, alice, bob, secrets[0])
	ba := sendSecret(t, bob, alice, secrets[1])
	ab.checkDelivered(t, waitLong)
	ba.checkDelivered(t, waitLong)
	checkWho(t, alice, bob.name, "relay")

	// And through bob's mailbox: deposited, then fetched.
	m := bob.mark()
	bob.command(t, "/dereg")
	bob.waitEventFrom(t, m, waitLong, "deregistered", isType("deregistered"))
	secrets = append(secrets, secret())
	stored := sendSecret(t, alice, bob, secrets[2])
	alice.waitEvent(t, waitLong, "stored", func(e *event) bool { return e.Type == "stored" && e.ID == stored.ids[0] })
	m = bob.mark()
	bob.command(t, "/reg")
	if e, _ := bob.waitEventFrom(t, m, waitLong, "the stored message", isType("message")); e.Text != secrets[2] || e.Via != "mailbox" {
		t.Fatalf("bob: %v, want the stored message from the mailbox", e)
	}
	alice.waitEvent(t, waitLong, "delivered", func(e *event) bool { return e.Type == "delivered" && e.ID == stored.ids[0] })

	keys := map[string]wire.Key{alice.name: selfKey(t, alice), bob.name: selfKey(t, bob)}
	statics := map[string][32]byte{}
	for name, k := range keys {
		s, err := ctrl.StaticOf(k)
		if err != nil {
			t.Fatal(err)
		}
		statics[name] = s
	}
	count := map[wire.Type]int{}
	for _, d := range proxy.datagrams() {
		typ := d.typ()
		count[typ]++
		for _, s := range secrets {
			if bytes.Contains(d.b, []byte(s)) || bytes.Contains(d.b, []byte(s[:8])) {
				t.Errorf("a %v datagram (to rendezvous: %v) holds message text %q: %x", typ, d.toRV, s, d.b)
			}
		}
		for name, k := range keys {
			if bytes.Contains(d.b, []byte(name)) {
				t.Errorf("a %v datagram (to rendezvous: %v) holds the name %s: %x", typ, d.toRV, name, d.b)
			}
			if st := statics[name]; bytes.Contains(d.b, st[:]) {
				t.Errorf("a %v datagram (to rendezvous: %v) holds %s's Noise static key", typ, d.toRV, name)
			}
			if i := bytes.Index(d.b, k[:]); i >= 0 {
				// Only where relay headers carry them: the destination of
				// a Relay, the source of a Relayed.
				if !(typ == wire.TypeRelay && i == wire.HeaderLen+8) && !(typ == wire.TypeRelayed && i == wire.HeaderLen) {
					t.Errorf("a %v datagram (to rendezvous: %v) holds %s's key at byte %d", typ, d.toRV, name, i)
				}
			}
		}
	}
	// The capture is what was sent: both registrations, and the relay.
	if count[wire.TypeHandshake] < 2 || count[wire.TypeHandshakeReply] < 2 || count[wire.TypeSealed] == 0 {
		t.Errorf("captured %v: not both registrations", count)
	}
	if count[wire.TypeRelay] == 0 || count[wire.TypeRelayed] == 0 {
		t.Fatalf("captured %v: want relay and relayed datagrams", count)
	}
	t.Logf("checked %d datagrams: %v", len(proxy.datagrams()), count)
}

// selfKey returns n's identity key, as /fingerprint shows it.
func selfKey(t *testing.T, n *node) wire.Key {
	t.Helper()
	e := n.ask(t, "/fingerprint", "own fingerprint", func(e *event) bool { return e.Type == "fingerprint" && e.Self })
	b, err := hex.DecodeString(e.Key)
	var k wire.Key
	if err != nil || len(b) != len(k) {
		t.Fatalf("%s: /fingerprint key %q", n.label, e.Key)
	}
	copy(k[:], b)
	return k
}

// sendSecret sends text from→to as one message.
func sendSecret(t *testing.T, from, to *node, text string) *batch {
	t.Helper()
	b := &batch{from: from, to: to, mark: to.mark(), texts: []string{text}}
	mark := from.mark()
	from.command(t, "/msg "+to.name+" "+text)
	e, _ := from.waitEventFrom(t, mark, waitLong, "sent event", func(e *event) bool { return e.Type == "sent" && e.Text == text })
	b.ids = []string{e.ID}
	return b
}
