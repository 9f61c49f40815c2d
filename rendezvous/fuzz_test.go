package rendezvous_test

import (
	"slices"
	"testing"

	"natchat/rendezvous"
	"natchat/wire"
)

// FuzzHandle feeds arbitrary datagrams, from a registered node's address or
// a stranger's, to a server with two registered nodes: it must not panic,
// must not amplify towards the stranger (whose address no session has
// validated), and must keep both nodes. The seeds are one datagram of every
// type, handshake and sealed ones included.
func FuzzHandle(f *testing.F) {
	h := newHarness(f, func(o *rendezvous.Options) { o.SourceRate = -1 })
	a := newNode(f, "alice", "198.51.100.1:1000")
	b := newNode(f, "bob", "198.51.100.2:2000")
	c := newNode(f, "carol", "198.51.100.3:3000")
	h.mustRegister(a, b)
	for _, d := range corpus(h, a, b, c) {
		if d.name == "sealed leave" {
			continue // alice's own Leave removes her
		}
		f.Add(d.b, d.src == a.addr)
	}
	f.Add(stunBinding(f), false)
	f.Add(append([]byte{wire.Magic, wire.Version, byte(wire.TypeHandshake)}, make([]byte, 200)...), false)
	f.Add(append(append([]byte{wire.Magic, wire.Version, byte(wire.TypeSealed)}, a.session[:]...), make([]byte, 60)...), true)

	f.Fuzz(func(t *testing.T, d []byte, fromA bool) {
		src := stranger
		if fromA {
			src = a.addr
		}
		for _, p := range h.handle(d, src) {
			if wire.IsSTUN(p.b) {
				continue // STUN answers are bounded by the source rate instead
			}
			if _, err := wire.Parse(p.b); err != nil {
				t.Fatalf("unparsable reply % x", p.b)
			}
			if p.to == stranger && len(p.b) > len(d) {
				t.Fatalf("%d-byte datagram got a %d-byte reply", len(d), len(p.b))
			}
		}
		h.flush()
		online := h.s.Online()
		if !slices.Contains(online, "alice") || !slices.Contains(online, "bob") {
			t.Fatalf("online %q after % x", online, d)
		}
	})
}
