package rendezvous_test

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"natchat/relay"
	"natchat/rendezvous"
	"natchat/wire"
)

// stillServing checks that a and b are registered and can talk.
func stillServing(t *testing.T, h *harness, a, b *node) {
	t.Helper()
	online := h.s.Online()
	if !slices.Contains(online, a.name) || !slices.Contains(online, b.name) {
		t.Fatalf("online %q, want %s and %s", online, a.name, b.name)
	}
	h.heartbeat(a)
	h.heartbeat(b)
	out := h.handle(a.rv.Relay(b.key, []byte("still there?")), a.addr)
	if rel := only[*wire.Relayed](t, out, b.addr); rel.Src != a.key || string(rel.Payload) != "still there?" {
		t.Fatalf("relayed %+v", rel)
	}
}

// noAmplification fails t if a reply in out is larger than the n-byte
// datagram that caused it.
func noAmplification(t *testing.T, out []packet, n int, what string) {
	t.Helper()
	for _, p := range out {
		if len(p.b) > n {
			t.Fatalf("%s of %d bytes got a %d-byte reply to %v", what, n, len(p.b), p.to)
		}
	}
}

func TestBadInput(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.SourceRate = -1 })
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	c := newNode(t, "carol", "198.51.100.3:3000")
	h.mustRegister(a, b)
	valid := corpus(h, a, b, c)

	t.Run("random bytes", func(t *testing.T) {
		before := droppedTotal(t, h.scrape())
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range 20000 {
			d := make([]byte, rng.IntN(1500))
			for j := range d {
				d[j] = byte(rng.Uint32())
			}
			if i%2 == 0 && len(d) >= wire.HeaderLen {
				// Half look like our protocol, to get past the header.
				d[0], d[1], d[2] = wire.Magic, wire.Version, byte(rng.IntN(0x20))
			}
			if i%10 == 1 && len(d) >= 20 {
				d[0] = byte(rng.IntN(4)) // and some like STUN
			}
			if i%4 == 2 && len(d) >= wire.SealedHeaderLen {
				// And some carry a registered session.
				d[2] = byte(wire.TypeSealed)
				if i%8 == 6 {
					d[2] = byte(wire.TypeRelay)
				}
				copy(d[wire.HeaderLen:], a.session[:])
			}
			src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), uint16(i))
			noAmplification(t, h.handle(d, src), len(d), "random datagram")
		}
		if after := droppedTotal(t, h.scrape()); after <= before {
			t.Errorf("dropped total %v → %v", before, after)
		}
		stillServing(t, h, a, b)
	})

	t.Run("truncations", func(t *testing.T) {
		before := h.metric(dropped(relay.DropMalformed))
		for _, d := range valid {
			for n := range len(d.b) {
				noAmplification(t, h.handle(d.b[:n], d.src), n, "truncated "+d.name)
			}
		}
		if after := h.metric(dropped(relay.DropMalformed)); after <= before {
			t.Errorf("malformed drops %v → %v", before, after)
		}
		if got := h.s.Online(); slices.Contains(got, c.name) {
			t.Errorf("a truncated registration went through: online %q", got)
		}
		stillServing(t, h, a, b)
	})

	t.Run("wrong magic", func(t *testing.T) {
		before := h.metric(dropped(relay.DropMalformed))
		sent := 0
		for _, d := range valid {
			for _, magic := range []byte{0x00, 0x03, 0x3f, 0x40, 0x7f, 0xab, 0xad, 0xff} {
				bad := slices.Clone(d.b)
				bad[0] = magic
				if out := h.handle(bad, d.src); len(out) != 0 {
					t.Errorf("magic 0x%02x %s answered: %s", magic, d.name, describe(out))
				}
				sent++
			}
		}
		if after := h.metric(dropped(relay.DropMalformed)); after-before != float64(sent) {
			t.Errorf("malformed drops +%v, want +%d", after-before, sent)
		}
		stillServing(t, h, a, b)
	})

	t.Run("other version", func(t *testing.T) {
		before := h.metric(dropped(relay.DropVersion))
		sent := 0
		for _, d := range valid {
			for _, v := range []byte{0, 1, 3, 0xff} {
				bad := slices.Clone(d.b)
				bad[1] = v
				typ := wire.Type(d.b[2])
				out := h.handle(bad, d.src)
				sent++
				if typ == wire.TypeError || len(bad) < wire.HeaderLen+8 {
					// An Error is not answered; a datagram too short for
					// even an empty Error cannot be.
					if len(out) != 0 {
						t.Errorf("v%d %s answered: %s", v, d.name, describe(out))
					}
					continue
				}
				e := onlyError(t, out, d.src, wire.CodeVersion, len(bad))
				if out[0].b[1] != wire.Version {
					t.Errorf("version error carries version %d, want %d", out[0].b[1], wire.Version)
				}
				if e.Request != typ {
					t.Errorf("version error for request %v, want %v", e.Request, typ)
				}
			}
		}
		if after := h.metric(dropped(relay.DropVersion)); after-before != float64(sent) {
			t.Errorf("version drops +%v, want +%d", after-before, sent)
		}
		stillServing(t, h, a, b)
	})

	t.Run("unknown and R→N types", func(t *testing.T) {
		before := h.metric(dropped(relay.DropUnknownType))
		var ds [][]byte
		for typ := range 256 {
			if typ >= 1 && typ <= 0x16 {
				continue
			}
			ds = append(ds, append([]byte{wire.Magic, wire.Version, byte(typ)}, make([]byte, 64)...))
		}
		for _, m := range rToN(a, b) {
			ds = append(ds, wire.Marshal(m))
		}
		for _, d := range ds {
			if out := h.handle(d, a.addr); len(out) != 0 {
				t.Errorf("type 0x%02x answered: %s", d[2], describe(out))
			}
		}
		if after := h.metric(dropped(relay.DropUnknownType)); after-before != float64(len(ds)) {
			t.Errorf("unknown_type drops +%v, want +%d", after-before, len(ds))
		}
		stillServing(t, h, a, b)
	})

	t.Run("authentic garbage", func(t *testing.T) {
		// Sealed with a's keys, so it authenticates: random plaintexts,
		// every inner type but Leave.
		rng := rand.New(rand.NewPCG(3, 4))
		for i := range 3000 {
			pt := make([]byte, 1+rng.IntN(300))
			for j := range pt {
				pt[j] = byte(rng.Uint32())
			}
			pt[0] = byte(rng.IntN(int(wire.TypeRoomEvent) + 1))
			if wire.Type(pt[0]) == wire.TypeLeave {
				pt[0] = 0xee
			}
			src := a.addr
			if i%3 == 0 {
				src = stranger
			}
			d := a.rv.Keys.Seal(nil, a.session, pt)
			out := h.handle(d, src)
			if src == stranger {
				if n := bytesTo(out, stranger); n > len(d) {
					t.Fatalf("%d-byte sealed datagram from an unvalidated address: %d bytes back", len(d), n)
				}
			}
		}
		stillServing(t, h, a, b)
	})
}
