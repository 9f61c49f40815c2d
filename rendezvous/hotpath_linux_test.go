//go:build linux

package rendezvous

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWriteQueuePartial checks that a batched write sends everything
// queued, in order, when sendmmsg sends fewer datagrams than asked, says
// EAGAIN (the send buffer full) or EINTR, or fails for one datagram (an
// unreachable destination): that one alone is counted as failed and
// skipped, as its own WriteTo would have failed. More datagrams than a
// batch are queued, so that the queue also sends when full.
func TestWriteQueuePartial(t *testing.T) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rcv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	w, ok := newWriteQueue(conn).(*mmsgWriter)
	if !ok {
		t.Fatal("no batched writer for a UDP socket")
	}
	const total, bad = 2*writeBatch + 5, 7 // the datagram that fails
	calls := 0
	w.sendmmsg = func(fd uintptr, hdrs []unix.Mmsghdr) (int, syscall.Errno) {
		calls++
		switch {
		case calls%5 == 1 && calls > 1:
			// After datagrams really went, whose buffers freed make
			// the socket writable again: a real EAGAIN ends so too.
			return 0, unix.EAGAIN
		case calls%5 == 2:
			return 0, unix.EINTR
		}
		// The datagram each header points at begins with its number.
		first := *hdrs[0].Hdr.Iov.Base
		if first == bad {
			return 0, unix.EPERM
		}
		n := min(len(hdrs), 3)
		for i := range n {
			if *hdrs[i].Hdr.Iov.Base == bad {
				n = i // the kernel stops before a datagram that fails
				break
			}
		}
		return sendmmsg(fd, hdrs[:n])
	}
	// A real EAGAIN waits for the socket to drain: here, for the write
	// space the datagrams really sent free. Not forever, if that broke.
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	to := rcv.LocalAddr().(*net.UDPAddr).AddrPort()
	for i := range total {
		if !w.queue([]byte{byte(i), 'x', 'y'}, to) {
			t.Fatalf("datagram %d not queued", i)
		}
	}
	failed, err := w.flush()
	if failed != 1 || err == nil {
		t.Errorf("flush: %d failed (%v), want 1", failed, err)
	}
	if failed, _ := w.flush(); failed != 0 {
		t.Errorf("a second flush: %d failed, want 0 (counts start again)", failed)
	}
	buf := make([]byte, 64)
	for i := range total {
		if i == bad {
			continue
		}
		rcv.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := rcv.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if want := []byte{byte(i), 'x', 'y'}; !bytes.Equal(buf[:n], want) {
			t.Fatalf("got %x, want %x (datagram %d, in order)", buf[:n], want, i)
		}
	}
}

// TestWriteQueueAddresses checks what a batched write does with each kind
// of destination: on a dual-stack socket, IPv4 (sent IPv4-mapped) and
// IPv6 in one batch, each where it belongs; on an IPv4 socket, an IPv6
// destination refused (it is written on its own, and fails there as
// before); a zoned address and a datagram too long for a slot refused,
// after what was queued has gone, so that the order holds.
func TestWriteQueueAddresses(t *testing.T) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{}) // dual-stack
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w, ok := newWriteQueue(conn).(*mmsgWriter)
	if !ok || !w.inet6 {
		t.Fatalf("%T, want a batched writer on an AF_INET6 socket", w)
	}
	var rcvs []*net.UDPConn
	for _, ip := range []string{"127.0.0.1", "::1", "127.0.0.1", "::1"} {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
		if err != nil {
			t.Skipf("no %s socket: %v", ip, err)
		}
		defer c.Close()
		rcvs = append(rcvs, c)
	}
	for round := range 3 {
		for i, c := range rcvs {
			if !w.queue(fmt.Appendf(nil, "%d.%d", round, i), c.LocalAddr().(*net.UDPAddr).AddrPort()) {
				t.Fatalf("to %v: not queued", c.LocalAddr())
			}
		}
	}
	// Queued, then refused: the queue goes first.
	if w.queue(make([]byte, writeSlot+1), rcvs[0].LocalAddr().(*net.UDPAddr).AddrPort()) {
		t.Error("a datagram longer than a slot was queued")
	}
	if w.n != 0 {
		t.Errorf("%d datagrams still queued after a refusal, want 0", w.n)
	}
	if w.queue([]byte("z"), netip.MustParseAddrPort("[fe80::1%lo]:9")) {
		t.Error("a zoned destination was queued")
	}
	if failed, err := w.flush(); failed != 0 {
		t.Errorf("%d failed: %v", failed, err)
	}
	buf := make([]byte, 64)
	for round := range 3 {
		for i, c := range rcvs {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("%v: %v", c.LocalAddr(), err)
			}
			if want := fmt.Sprintf("%d.%d", round, i); string(buf[:n]) != want {
				t.Errorf("%v got %q, want %q", c.LocalAddr(), buf[:n], want)
			}
			if from.Port() != conn.LocalAddr().(*net.UDPAddr).AddrPort().Port() {
				t.Errorf("%v: from %v, want the sending socket's port", c.LocalAddr(), from)
			}
		}
	}

	v4, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer v4.Close()
	w4, ok := newWriteQueue(v4).(*mmsgWriter)
	if !ok || w4.inet6 {
		t.Fatal("want a batched writer on an AF_INET socket")
	}
	if w4.queue([]byte("x"), netip.MustParseAddrPort("[::1]:9")) {
		t.Error("an IPv6 destination was queued on an IPv4 socket")
	}
}
