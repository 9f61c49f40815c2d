package link

import (
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"natchat/wire"
)

// The per-packet cost of the link, without the sockets: what the node's
// read loop (Deliver*) and quic-go (ReadFrom, WriteTo) pay on every packet.
// docs/BENCHMARKS.md "Link hot path (issue 7)" records the figures.

const (
	benchPacket = 1200 // QUIC's packet size on our paths (node/tls.go)
	benchBatch  = 16   // packets in flight between deliveries and reads
)

// discard is a direct path that sends nowhere.
type discard struct{}

func (discard) Write([]byte) error { return nil }

// benchConn is a Conn whose relay sends nowhere but counts.
func benchConn(b *testing.B, relayed *atomic.Int64) *Conn {
	c := New(Options{Local: key(1), RelayRemote: "rv:3478", SendRelay: func(wire.Key, []byte) error {
		relayed.Add(1)
		return nil
	}})
	b.Cleanup(func() { c.Close() })
	return c
}

// roundTrip hands up b.N packets from peer 2 through deliver and reads
// each back with ReadFrom into a quic-go-sized buffer, benchBatch at a time,
// in one goroutine: producer and consumer interleaved, no scheduler noise.
func roundTrip(b *testing.B, c *Conn, deliver func(src wire.Key, pkt []byte)) {
	pkt := make([]byte, benchPacket)
	out := make([]byte, 1452) // quic-go's read buffer (MaxPacketBufferSize)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += benchBatch {
		n := min(benchBatch, b.N-i)
		for range n {
			deliver(key(2), pkt)
		}
		for range n {
			m, from, err := c.ReadFrom(out)
			if err != nil || m != benchPacket || from.(Addr).Key != key(2) {
				b.Fatalf("ReadFrom = %d, %v, %v", m, from, err)
			}
		}
	}
	b.StopTimer()
	if d := c.Dropped(); d != 0 {
		b.Fatalf("dropped %d", d)
	}
}

// socketRead stands for the node's socket read into a pooled Buf.
func socketRead(pkt []byte) *Buf {
	buf := GetBuf()
	buf.B = buf.B[:copy(buf.B, pkt)]
	return buf
}

func BenchmarkDeliverRelay(b *testing.B) {
	b.Run("Deliver", func(b *testing.B) {
		var relayed atomic.Int64
		c := benchConn(b, &relayed)
		c.Open(key(2))
		roundTrip(b, c, c.Deliver)
	})
	b.Run("DeliverBuf", func(b *testing.B) {
		var relayed atomic.Int64
		c := benchConn(b, &relayed)
		c.Open(key(2))
		roundTrip(b, c, func(src wire.Key, pkt []byte) { c.DeliverBuf(src, socketRead(pkt), false) })
	})
}

func BenchmarkDeliverDirect(b *testing.B) {
	b.Run("DeliverDirect", func(b *testing.B) {
		var relayed atomic.Int64
		c := benchConn(b, &relayed)
		c.Open(key(2))
		c.SetDirect(key(2), discard{}, "203.0.113.7:4000", time.Millisecond)
		roundTrip(b, c, c.DeliverDirect)
	})
	b.Run("DeliverBuf", func(b *testing.B) {
		var relayed atomic.Int64
		c := benchConn(b, &relayed)
		c.Open(key(2))
		c.SetDirect(key(2), discard{}, "203.0.113.7:4000", time.Millisecond)
		roundTrip(b, c, func(src wire.Key, pkt []byte) { c.DeliverBuf(src, socketRead(pkt), true) })
	})
}

func BenchmarkWriteToRelay(b *testing.B) {
	var relayed atomic.Int64
	c := benchConn(b, &relayed)
	c.Open(key(2))
	pkt := make([]byte, benchPacket)
	var to net.Addr = Addr{Key: key(2)}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.WriteTo(pkt, to); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if relayed.Load() != int64(b.N) {
		b.Fatalf("relayed %d of %d", relayed.Load(), b.N)
	}
}

func BenchmarkWriteToDirect(b *testing.B) {
	var relayed atomic.Int64
	c := benchConn(b, &relayed)
	c.Open(key(2))
	pkt := make([]byte, benchPacket)
	var to net.Addr = Addr{Key: key(2)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i%4096 == 0 {
			// Keep the path trusted however long the run (the peer's
			// packets would): past the window the relay doubles each one.
			c.SetDirect(key(2), discard{}, "203.0.113.7:4000", time.Millisecond)
		}
		if _, err := c.WriteTo(pkt, to); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if relayed.Load() != 0 {
		b.Fatalf("relayed %d on a trusted direct path", relayed.Load())
	}
}

// BenchmarkParallelDirect: 64 peers on direct paths, each with its own
// goroutine that sends a packet (WriteTo, as the peer's QUIC connection
// does), receives one (DeliverDirect, as punch's per-peer reader does) and
// reads one (ReadFrom, as quic-go's transport does). A lock shared by all
// peers shows here as time growing with contention.
func BenchmarkParallelDirect(b *testing.B) {
	const peers = 64
	var relayed atomic.Int64
	c := benchConn(b, &relayed)
	for i := range peers {
		k := key(byte(10 + i))
		c.Open(k)
		c.SetDirect(k, discard{}, "203.0.113.7:4000", time.Millisecond)
	}
	var next atomic.Int32
	b.SetParallelism(max(1, peers/runtime.GOMAXPROCS(0)))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		k := key(byte(10 + int(next.Add(1)-1)%peers))
		var to net.Addr = Addr{Key: k}
		pkt := make([]byte, benchPacket)
		out := make([]byte, 1452)
		for pb.Next() {
			if _, err := c.WriteTo(pkt, to); err != nil {
				b.Error(err)
				return
			}
			c.DeliverDirect(k, pkt)
			if _, _, err := c.ReadFrom(out); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if d := c.Dropped(); d != 0 {
		b.Fatalf("dropped %d", d)
	}
}
