package link

import "natchat/wire"

// Not built here (testdata). docs/BENCHMARKS.md "Link hot path (issue 7)"
// copies it beside bench_test.go into node/link as of d694b23, before
// issue 7, so the benchmarks compile there: Open is a no-op (peers were
// created by their first WriteTo or SetDirect), and the DeliverBuf rows,
// an API that did not exist, are not run.
func (c *Conn) Open(wire.Key) {}

type Buf struct{ B []byte }

func GetBuf() *Buf { return &Buf{B: make([]byte, 2048)} }

func (c *Conn) DeliverBuf(src wire.Key, b *Buf, direct bool) {
	if direct {
		c.DeliverDirect(src, b.B)
	} else {
		c.Deliver(src, b.B)
	}
}
