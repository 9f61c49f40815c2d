package rendezvous_test

import (
	"testing"

	"natchat/relay"
	"natchat/rendezvous"
	"natchat/wire"
)

// BenchmarkRelay measures the rendezvous's relay hot path: one 1200-byte
// Relay datagram from a registered node, parsed, checked, rate-metered and
// forwarded as Relayed (the socket write itself is discarded).
func BenchmarkRelay(b *testing.B) {
	h := newHarness(b, func(o *rendezvous.Options) {
		o.Relay = relay.Limits{PacketsPerSec: -1, BytesPerSec: -1}
	})
	alice := newNode(b, "alice", "198.51.100.1:1000")
	bob := newNode(b, "bob", "198.51.100.2:2000")
	h.mustRegister(alice, bob)
	pkt := wire.Marshal(&wire.Relay{Session: alice.session, Dst: bob.key, Payload: make([]byte, 1200)})
	h.conn.discard.Store(true)
	b.ReportAllocs()
	b.SetBytes(1200)
	b.ResetTimer()
	for range b.N {
		h.s.Handle(pkt, alice.addr)
	}
}
