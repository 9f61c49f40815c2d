//go:build linux

package rendezvous

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"natchat/internal/udpgso"
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
	w.gso = false                          // one message a datagram: runs are TestWriteQueueRuns's
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

// TestWriteQueueRuns: datagrams to one address, each no longer than the
// run's first, leave as one message with UDP_SEGMENT, and a receiver with
// GRO reads the run as one; a shorter datagram ends a run, another
// address or a longer datagram starts a new message, and the order holds.
// When the device cannot segment (EIO), the run goes datagram by datagram
// and the queue sends no more runs.
func TestWriteQueueRuns(t *testing.T) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var rcvs [2]*net.UDPConn
	for i := range rcvs {
		if rcvs[i], err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			t.Fatal(err)
		}
		defer rcvs[i].Close()
		if !udpgso.EnableGRO(rcvs[i]) {
			t.Fatal("no UDP GRO on this kernel")
		}
	}
	w, ok := newWriteQueue(conn).(*mmsgWriter)
	if !ok || !w.gso {
		t.Fatal("no batched writer with GSO for a UDP socket")
	}
	a, b := rcvs[0].LocalAddr().(*net.UDPAddr).AddrPort(), rcvs[1].LocalAddr().(*net.UDPAddr).AddrPort()
	dgram := func(n, size int) []byte { return append([]byte{byte(n)}, make([]byte, size-1)...) }
	type sent struct {
		to   netip.AddrPort
		size int
	}
	plan := []sent{
		{a, 1200}, {a, 1200}, {a, 1200}, {a, 700}, // a run of 4, closed by the shorter one
		{a, 1200}, {a, 1200}, // a new run
		{b, 1200}, // another address: its own message
		{b, 1300}, // longer than the run's first: its own message
		{a, 100},  // back to a
	}
	var msgs [][2]int // per message: datagrams, segment size
	w.sendmmsg = func(fd uintptr, hdrs []unix.Mmsghdr) (int, syscall.Errno) {
		for i := range hdrs {
			h := &hdrs[i].Hdr
			seg, n := 0, 1
			if h.Controllen > 0 {
				seg = int(*(*uint16)(unsafe.Add(unsafe.Pointer(h.Control), unix.CmsgSpace(0))))
				n = (int(h.Iov.Len) + seg - 1) / seg
			}
			msgs = append(msgs, [2]int{n, seg})
		}
		return sendmmsg(fd, hdrs)
	}
	for i, d := range plan {
		if !w.queue(dgram(i, d.size), d.to) {
			t.Fatalf("datagram %d not queued", i)
		}
	}
	if failed, err := w.flush(); failed != 0 {
		t.Fatalf("%d failed: %v", failed, err)
	}
	if want := [][2]int{{4, 1200}, {2, 1200}, {1, 0}, {1, 0}, {1, 0}}; !slices.Equal(msgs, want) {
		t.Errorf("messages (datagrams, segment size) %v, want %v", msgs, want)
	}
	// What each receiver reads, in order, cut at GRO's segment size.
	read := func(c *net.UDPConn, want []int) {
		t.Helper()
		buf, oob := make([]byte, 64<<10), make([]byte, udpgso.OOBLen)
		var got []int
		for len(got) < len(want) {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, oobn, _, _, err := c.ReadMsgUDPAddrPort(buf, oob)
			if err != nil {
				t.Fatalf("after %v: %v", got, err)
			}
			seg := udpgso.SegmentSize(oob[:oobn])
			if seg == 0 {
				seg = n
			}
			for off := 0; off < n; off += seg {
				got = append(got, int(buf[off]))
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("read %v, want %v", got, want)
		}
	}
	read(rcvs[0], []int{0, 1, 2, 3, 4, 5, 8})
	read(rcvs[1], []int{6, 7})

	// A device that cannot segment.
	msgs = nil
	w.sendmmsg = func(fd uintptr, hdrs []unix.Mmsghdr) (int, syscall.Errno) {
		if hdrs[0].Hdr.Controllen > 0 {
			return 0, unix.EIO
		}
		msgs = append(msgs, [2]int{1, 0})
		return sendmmsg(fd, hdrs[:1])
	}
	for i := range 3 {
		w.queue(dgram(20+i, 1000), a)
	}
	if failed, err := w.flush(); failed != 0 || w.gso {
		t.Fatalf("after EIO: %d failed (%v), gso %v", failed, err, w.gso)
	}
	read(rcvs[0], []int{20, 21, 22})
	for i := range 2 {
		w.queue(dgram(30+i, 1000), a)
	}
	w.flush()
	if len(msgs) != 2 {
		t.Errorf("after GSO was found wanting: %d messages for 2 datagrams", len(msgs))
	}
	read(rcvs[0], []int{30, 31})
}

// TestReaderCutsRuns: a run a node sent with one GSO send is read as one
// message (UDP GRO) and handed out as its datagrams, each with the
// sender's address, between single datagrams from another source.
func TestReaderCutsRuns(t *testing.T) {
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	r, ok := batchReader(srv).(*mmsgReader)
	if !ok || r.oobs == nil {
		t.Fatal("no batched reader with GRO for a UDP socket")
	}
	var cs [2]*net.UDPConn
	for i := range cs {
		if cs[i], err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			t.Fatal(err)
		}
		defer cs[i].Close()
	}
	to := srv.LocalAddr().(*net.UDPAddr).AddrPort()
	cs[1].WriteToUDPAddrPort([]byte{100}, to)
	run := make([]byte, 0, 3*1000+10)
	for i := range 4 {
		run = append(run, byte(i))
		run = append(run, make([]byte, min(999, cap(run)-len(run)-1))...)
	}
	if _, _, err := cs[0].WriteMsgUDPAddrPort(run, udpgso.AppendSegmentSize(nil, 1000), to); err != nil {
		t.Fatal(err)
	}
	cs[1].WriteToUDPAddrPort([]byte{101}, to)
	type got struct {
		first byte
		len   int
		from  netip.AddrPort
	}
	var all []got
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(all) < 6 {
		n, err := r.read()
		if err != nil {
			t.Fatalf("after %v: %v", all, err)
		}
		for i := range n {
			b, from := r.datagram(i)
			all = append(all, got{b[0], len(b), from})
		}
	}
	a0, a1 := cs[0].LocalAddr().(*net.UDPAddr).AddrPort(), cs[1].LocalAddr().(*net.UDPAddr).AddrPort()
	want := []got{{100, 1, a1}, {0, 1000, a0}, {1, 1000, a0}, {2, 1000, a0}, {3, 9, a0}, {101, 1, a1}}
	if !slices.Equal(all, want) {
		t.Errorf("read %v, want %v", all, want)
	}
}

// TestReaderCountsKernelDrops: datagrams the kernel drops on a full
// receive buffer are counted (SO_RXQ_OVFL), and every datagram sent is
// either read or counted.
func TestReaderCountsKernelDrops(t *testing.T) {
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.SetReadBuffer(1); err != nil { // the kernel's least: a datagram or two
		t.Fatal(err)
	}
	r, ok := batchReader(srv).(*mmsgReader)
	if !ok || !r.ovfl {
		t.Fatal("no batched reader with SO_RXQ_OVFL for a UDP socket")
	}
	cl, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	to := srv.LocalAddr().(*net.UDPAddr).AddrPort()
	const sent = 200
	for i := range sent {
		if _, err := cl.WriteToUDPAddrPort(append([]byte{byte(i)}, make([]byte, 999)...), to); err != nil {
			t.Fatal(err)
		}
	}
	// The last word: once it is read, every earlier datagram was either
	// read or dropped, and the drop count comes with it.
	read := 0
	for last := false; !last; {
		srv.SetReadDeadline(time.Now().Add(5 * time.Second))
		if read > 0 {
			cl.WriteToUDPAddrPort([]byte("last"), to)
		}
		n, err := r.read()
		if err != nil {
			t.Fatalf("after %d datagrams: %v", read, err)
		}
		for i := range n {
			if b, _ := r.datagram(i); string(b) == "last" {
				last = true
			} else {
				read++
			}
		}
	}
	d, ok := r.kernelDrops()
	if !ok || d == 0 || int(d)+read != sent {
		t.Fatalf("read %d, kernel drops %d (%v): want them to add up to %d", read, d, ok, sent)
	}
}
