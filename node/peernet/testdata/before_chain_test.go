// This file is not built with the project: it is the "before" half of the
// socket-to-QUIC benchmark in docs/BENCHMARKS.md, to be copied into
// node/link of the tree at d694b23 (see the command there).

package link

import (
	"testing"

	"natchat/wire"
)

// BenchmarkRelayedToQUIC is the old node's read loop for a Relayed
// datagram (node.handleRV at d694b23): wire.Parse, then Deliver, then
// quic-go's ReadFrom.
func BenchmarkRelayedToQUIC(b *testing.B) {
	c := New(Options{SendRelay: func(wire.Key, []byte) error { return nil }})
	src := wire.Key{0xaa}
	pkt := append(wire.AppendRelayedHeader(nil, src), make([]byte, 1200)...)
	buf := make([]byte, 2048)
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		m, err := wire.Parse(pkt)
		if err != nil {
			b.Fatal(err)
		}
		r := m.(*wire.Relayed)
		c.Deliver(r.Src, r.Payload)
		if _, _, err := c.ReadFrom(buf); err != nil {
			b.Fatal(err)
		}
	}
}
