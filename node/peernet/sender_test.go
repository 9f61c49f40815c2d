package peernet

import (
	"bytes"
	"fmt"
	"natchat/internal/udpgso"
	"net"
	"net/netip"
	"testing"
	"time"
)

func listenLoopback(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadBuffer(4 << 20)
	return c
}

func addrPort(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// packet i for a destination: its number, then filler to size.
func testPacket(i, size int) []byte {
	b := bytes.Repeat([]byte{byte(i)}, size)
	copy(b, fmt.Sprintf("%05d", i))
	return b
}

// receive reads want datagrams from c and checks them against the packets.
func receive(t *testing.T, c *net.UDPConn, want [][]byte) {
	t.Helper()
	buf := make([]byte, 4096)
	for i, w := range want {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d of %d: %v", i, len(want), err)
		}
		if !bytes.Equal(buf[:n], w) {
			t.Fatalf("datagram %d: got %d bytes %.5q, want %d bytes %.5q", i, n, buf[:n], len(w), w)
		}
	}
}

// TestSenderBatches queues a burst before the sender runs, so the batches
// are known: runs to one destination of one size (the last may be
// shorter) leave in one send each, and every datagram arrives whole, in
// order, at its own destination.
func TestSenderBatches(t *testing.T) {
	for _, gso := range []bool{true, false} {
		t.Run(fmt.Sprintf("gso=%v", gso), func(t *testing.T) {
			from, a, b := listenLoopback(t), listenLoopback(t), listenLoopback(t)
			s := newSender(from)
			if gso && !s.gso.Load() {
				t.Skip("the kernel does not take UDP_SEGMENT on this socket")
			}
			s.gso.Store(gso)
			var toA, toB [][]byte
			write := func(dst *net.UDPConn, p []byte) {
				if err := s.Write(p, addrPort(dst)); err != nil {
					t.Fatal(err)
				}
				if dst == a {
					toA = append(toA, p)
				} else {
					toB = append(toB, p)
				}
			}
			// 100 full packets to a, then a short one that ends the last
			// run, then 20 to b of mixed sizes.
			for i := range 100 {
				write(a, testPacket(i, 1200))
			}
			write(a, testPacket(100, 300))
			for i := range 20 {
				write(b, testPacket(i, 1000+i%2*200))
			}
			s.start()
			t.Cleanup(s.Close)
			receive(t, a, toA)
			receive(t, b, toB)
			n := s.syscalls.Load()
			// With GSO, to a: the first batch of 64 is a run of 54 (64
			// KiB) and one of 10, the second a run of 37 (the short one
			// last). To b a larger packet ends a run: 1000, then 1200
			// 1000, 1200 1000, ...: 11 runs.
			if gso && n != 3+11 {
				t.Errorf("%d sends for 121 datagrams with GSO, want 14", n)
			}
			if !gso && n != 121 {
				t.Errorf("%d sends for 121 datagrams without GSO, want 121", n)
			}
		})
	}
}

// TestSenderCloseFlushes: what was queued before Close is sent, and
// Writes after Close fail.
func TestSenderCloseFlushes(t *testing.T) {
	from, a := listenLoopback(t), listenLoopback(t)
	s := newSender(from)
	var want [][]byte
	for i := range 10 {
		p := testPacket(i, 500)
		want = append(want, p)
		if err := s.Write(p, addrPort(a)); err != nil {
			t.Fatal(err)
		}
	}
	s.start()
	s.Close()
	receive(t, a, want)
	if err := s.Write([]byte("late"), addrPort(a)); err == nil {
		t.Fatal("Write after Close did not fail")
	}
}

// TestSenderReportsFailure: a send that fails makes the next Writes to
// that destination fail (the link then sends through the relay too),
// and other destinations are not affected.
func TestSenderReportsFailure(t *testing.T) {
	from, a := listenLoopback(t), listenLoopback(t)
	s := newSender(from)
	s.start()
	t.Cleanup(s.Close)
	bad := netip.MustParseAddrPort("[2001:db8::1]:9") // an IPv4 socket cannot send there
	deadline := time.Now().Add(5 * time.Second)
	for s.Write([]byte("x"), bad) == nil {
		if time.Now().After(deadline) {
			t.Fatal("Writes to a destination the socket cannot reach never failed")
		}
		// The failure is recorded by the sender's goroutine: wait for it.
		time.Sleep(time.Millisecond)
	}
	if err := s.Write([]byte("ok"), addrPort(a)); err != nil {
		t.Fatalf("a good destination failed too: %v", err)
	}
	receive(t, a, [][]byte{[]byte("ok")})
}

// TestGROCoalescesRuns: a receiving socket with UDP GRO reads a run the
// sender sent with GSO in one read, and udpgso.SegmentSize cuts it back into
// the datagrams that were written (the read loop's split).
func TestGROCoalescesRuns(t *testing.T) {
	from, a := listenLoopback(t), listenLoopback(t)
	s := newSender(from)
	if !s.gso.Load() || !udpgso.EnableGRO(a) {
		t.Skip("the kernel does not take UDP_SEGMENT or UDP_GRO on these sockets")
	}
	var want [][]byte
	for i := range 10 {
		p := testPacket(i, 1200)
		if i == 9 {
			p = testPacket(i, 700)
		}
		want = append(want, p)
		if err := s.Write(p, addrPort(a)); err != nil {
			t.Fatal(err)
		}
	}
	s.start()
	t.Cleanup(s.Close)
	buf, oob := make([]byte, 64<<10), make([]byte, udpgso.OOBLen)
	var got [][]byte
	reads := 0
	for len(got) < len(want) {
		_ = a.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, oobn, _, _, err := a.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			t.Fatalf("after %d datagrams: %v", len(got), err)
		}
		reads++
		seg := udpgso.SegmentSize(oob[:oobn])
		if seg <= 0 || seg >= n {
			seg = n
		}
		for off := 0; off < n; off += seg {
			got = append(got, append([]byte(nil), buf[off:min(off+seg, n)]...))
		}
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("datagram %d: got %d bytes %.5q, want %d bytes %.5q", i, len(got[i]), got[i], len(want[i]), want[i])
		}
	}
	if reads != 1 {
		t.Errorf("%d reads for one GSO run, want 1 (coalesced)", reads)
	}
}
