package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"natchat/wire"
)

// TestNoPlaintextOnWire: with a recording proxy between the nodes and the
// rendezvous (and their signaling blocked, so every byte between them
// passes through it), distinctive message texts are delivered both ways
// but appear in no datagram, whole or in part.
func TestNoPlaintextOnWire(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{})
	proxy := startProxy(t, rv.addr, noSignaling)
	alice, bob := startPair(t, proxy.addr(), nodeOptions{})

	secret := func() string {
		b := make([]byte, 16)
		rand.Read(b)
		return hex.EncodeToString(b)
	}
	secrets := []string{secret(), secret()}
	ab := sendSecret(t, alice, bob, secrets[0])
	ba := sendSecret(t, bob, alice, secrets[1])
	ab.checkDelivered(t, waitLong)
	ba.checkDelivered(t, waitLong)
	checkWho(t, alice, "bob", "relay")

	var relay, relayed, names int
	for _, d := range proxy.datagrams() {
		if d.typ() == wire.TypeRegister && bytes.Contains(d.b, []byte("alice")) {
			names++ // the scan sees what is in the clear
		}
		switch d.typ() {
		case wire.TypeRelay:
			relay++
		case wire.TypeRelayed:
			relayed++
		}
		for _, s := range secrets {
			if bytes.Contains(d.b, []byte(s)) || bytes.Contains(d.b, []byte(s[:8])) {
				t.Errorf("a %v datagram (to rendezvous: %v) holds message text %q: %x", d.typ(), d.toRV, s, d.b)
			}
		}
	}
	if names == 0 {
		t.Errorf("no Register datagram holds the name alice: the capture is not what was sent")
	}
	if relay == 0 || relayed == 0 {
		t.Fatalf("captured %d relay and %d relayed datagrams, want some of each", relay, relayed)
	}
	t.Logf("checked %d datagrams, %d relay, %d relayed", len(proxy.datagrams()), relay, relayed)
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
