package rendezvous_test

import (
	"net/netip"
	"slices"
	"testing"

	"natchat/rendezvous"
	"natchat/wire"
)

// FuzzHandle feeds arbitrary datagrams, from a registered node's address or
// a stranger's, to a server with two registered nodes: it must not panic,
// must not amplify towards an unproven source, and must keep both nodes.
func FuzzHandle(f *testing.F) {
	h := newHarness(f, func(o *rendezvous.Options) { o.SourceRate = -1 })
	a := newNode(f, "alice", "198.51.100.1:1000")
	b := newNode(f, "bob", "198.51.100.2:2000")
	c := newNode(f, "carol", "198.51.100.3:3000")
	h.mustRegister(a, b)
	for _, d := range corpus(h, a, b, c) {
		f.Add(d.b, d.src == a.addr)
	}
	f.Add(stunBinding(f), false)
	f.Add(append([]byte{wire.Magic, 2, byte(wire.TypeRegister)}, make([]byte, 200)...), false)
	stranger := netip.MustParseAddrPort("192.0.2.1:1")

	f.Fuzz(func(t *testing.T, d []byte, fromA bool) {
		if m, err := wire.Parse(d); err == nil {
			if l, ok := m.(*wire.Leave); ok && (l.Session == a.session || l.Session == b.session) {
				return // a node's own Leave may remove it
			}
		}
		src := stranger
		if fromA {
			src = a.addr
		}
		for _, p := range h.handle(d, src) {
			m, err := wire.Parse(p.b)
			if wire.IsSTUN(p.b) {
				continue // STUN answers are bounded by the source rate instead
			}
			if err != nil {
				t.Fatalf("unparsable reply % x", p.b)
			}
			// Cookies and errors are what an unproven source can get.
			if typ := m.Type(); (typ == wire.TypeError || typ == wire.TypeCookie) && len(p.b) > len(d) {
				t.Fatalf("%d-byte datagram got a %d-byte %v", len(d), len(p.b), typ)
			}
		}
		online := h.s.Online()
		if !slices.Contains(online, "alice") || !slices.Contains(online, "bob") {
			t.Fatalf("online %q after % x", online, d)
		}
	})
}
