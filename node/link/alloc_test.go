//go:build !race

// The race detector's sync.Pool drops items at random: no allocation
// counts under it.

package link

import (
	"net"
	"testing"
	"time"

	"natchat/wire"
)

// TestHotPathAllocs pins the benchmarks' 0 allocs/op (a count, not a
// time): the packet path allocates nothing for a tracked peer.
func TestHotPathAllocs(t *testing.T) {
	c := New(Options{Local: key(1), SendRelay: func(wire.Key, []byte) error { return nil }})
	defer c.Close()
	c.Open(key(2))
	c.Open(key(3))
	c.SetDirect(key(3), discard{}, "203.0.113.7:4000", time.Millisecond)
	pkt := make([]byte, 1200)
	out := make([]byte, 1452)
	var relay, direct net.Addr = Addr{Key: key(2)}, Addr{Key: key(3)}
	for name, f := range map[string]func(){
		"DeliverBuf+ReadFrom": func() {
			b := GetBuf()
			b.B = b.B[:copy(b.B, pkt)]
			c.DeliverBuf(key(2), b, false)
			c.ReadFrom(out)
		},
		"Deliver+ReadFrom":       func() { c.Deliver(key(2), pkt); c.ReadFrom(out) },
		"DeliverDirect+ReadFrom": func() { c.DeliverDirect(key(3), pkt); c.ReadFrom(out) },
		"WriteTo relay":          func() { c.WriteTo(pkt, relay) },
		"WriteTo direct":         func() { c.WriteTo(pkt, direct) },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocs, want 0", name, n)
		}
	}
}
