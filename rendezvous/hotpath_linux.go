//go:build linux

package rendezvous

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// readBatch is how many datagrams one recvmmsg(2) may return: enough to
// take a burst in a few calls, few enough that the buffers (64 KiB each,
// so that no datagram is cut) stay at 1 MiB.
const readBatch = 16

// syscallUDPConn is a *net.UDPConn, or anything else with its file
// descriptor and its allocation-free reads.
type syscallUDPConn interface {
	addrPortReader
	SyscallConn() (syscall.RawConn, error)
}

// batchReader returns a reader that takes up to readBatch datagrams per
// recvmmsg(2) from a UDP socket, or nil if c is not one. One system call
// per burst instead of per datagram, and nothing allocated per datagram:
// golang.org/x/net's ReadBatch does the first but makes a *net.UDPAddr
// for each source.
func batchReader(c net.PacketConn) packetReader {
	sc, ok := c.(syscallUDPConn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &mmsgReader{rc: rc}
	for i := range r.hdrs {
		r.bufs[i] = make([]byte, 64<<10)
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(len(r.bufs[i]))
		r.hdrs[i].Hdr.Iov = &r.iovs[i]
		r.hdrs[i].Hdr.SetIovlen(1)
		r.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
	}
	r.recv = r.recvmmsg // one func value for every call: a method value made per call would be garbage
	return r
}

// mmsgReader is batchReader's state, used by one read loop alone.
type mmsgReader struct {
	rc    syscall.RawConn
	recv  func(fd uintptr) bool
	hdrs  [readBatch]unix.Mmsghdr
	iovs  [readBatch]unix.Iovec
	names [readBatch]unix.RawSockaddrInet6 // large enough for IPv4's too
	bufs  [readBatch][]byte
	n     int   // datagrams received by the last call
	err   error // the last call's failure
}

// read waits for datagrams and returns how many came, at least one.
func (r *mmsgReader) read() (int, error) {
	for {
		r.n, r.err = 0, nil
		for i := range r.hdrs {
			r.hdrs[i].Hdr.Namelen = uint32(unsafe.Sizeof(r.names[i]))
		}
		// RawConn.Read waits in the netpoller, as ReadFrom does, and so
		// keeps deadlines and Close working.
		if err := r.rc.Read(r.recv); err != nil {
			return 0, err
		}
		if r.err != nil {
			return 0, r.err
		}
		if r.n > 0 {
			return r.n, nil
		}
	}
}

// datagram returns the i-th datagram of the last read and its source
// (unmapped; invalid for a source that is neither IPv4 nor IPv6, to be
// skipped), valid until the next read.
func (r *mmsgReader) datagram(i int) ([]byte, netip.AddrPort) {
	h := &r.hdrs[i]
	return r.bufs[i][:h.Len], sockaddrAddrPort(&r.names[i], h.Hdr.Namelen)
}

// recvmmsg is RawConn.Read's callback: false asks it to wait until the
// socket is readable.
func (r *mmsgReader) recvmmsg(fd uintptr) bool {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)),
			unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			r.n = int(n)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		r.err = os.NewSyscallError("recvmmsg", errno)
		return true
	}
}

// sockaddrAddrPort reads a source address as the kernel wrote it.
func sockaddrAddrPort(sa *unix.RawSockaddrInet6, n uint32) netip.AddrPort {
	port := func(p *uint16) uint16 { return binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(p))[:]) } // network order
	switch {
	case sa.Family == unix.AF_INET && n >= unix.SizeofSockaddrInet4:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port(&sa4.Port))
	case sa.Family == unix.AF_INET6 && n >= unix.SizeofSockaddrInet6:
		a := netip.AddrFrom16(sa.Addr).Unmap()
		if sa.Scope_id != 0 && a.Is6() {
			// A link-local source: the reply needs its interface, named
			// as net does it (rare: this allocates).
			zone := strconv.FormatUint(uint64(sa.Scope_id), 10)
			if ifi, err := net.InterfaceByIndex(int(sa.Scope_id)); err == nil {
				zone = ifi.Name
			}
			a = a.WithZone(zone)
		}
		return netip.AddrPortFrom(a, port(&sa.Port))
	}
	return netip.AddrPort{}
}

// writeBatch is how many datagrams one sendmmsg(2) may send: a read
// batch's answers and relayed packets, with room for the few more a
// datagram can cause (presence to several members). writeSlot is the
// longest datagram queued, past a relayed full-size QUIC packet; a longer
// one is sent on its own.
const (
	writeBatch = 32
	writeSlot  = 2048
)

// newWriteQueue returns a writeQueue that sends with sendmmsg(2) on a UDP
// socket, or nil if c is not one.
func newWriteQueue(c net.PacketConn) writeQueue {
	sc, ok := c.(syscallUDPConn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	domain := -1
	if err := rc.Control(func(fd uintptr) {
		if d, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN); err == nil {
			domain = d
		}
	}); err != nil || domain != unix.AF_INET && domain != unix.AF_INET6 {
		return nil
	}
	w := &mmsgWriter{rc: rc, inet6: domain == unix.AF_INET6, buf: make([]byte, writeBatch*writeSlot), sendmmsg: sendmmsg}
	for i := range w.hdrs {
		w.iovs[i].Base = &w.buf[i*writeSlot]
		w.hdrs[i].Hdr.Iov = &w.iovs[i]
		w.hdrs[i].Hdr.SetIovlen(1)
		w.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&w.names[i]))
	}
	w.send = w.sendFD // one func value for every call, as mmsgReader.recv
	return w
}

// mmsgWriter is newWriteQueue's queue, used by one read loop alone (and
// by the goroutine holding mu while the loop has set it as hotPath.out).
type mmsgWriter struct {
	rc    syscall.RawConn
	inet6 bool // an AF_INET6 socket: IPv4 destinations go as IPv4-mapped
	send  func(fd uintptr) bool
	// sendmmsg is the system call; tests replace it to make it send
	// fewer datagrams than asked, or fail.
	sendmmsg func(fd uintptr, hdrs []unix.Mmsghdr) (int, syscall.Errno)
	hdrs     [writeBatch]unix.Mmsghdr
	iovs     [writeBatch]unix.Iovec
	names    [writeBatch]unix.RawSockaddrInet6 // large enough for IPv4's too
	buf      []byte                            // writeBatch slots of writeSlot bytes
	n        int                               // datagrams queued
	sent     int                               // of those, sent or given up by the send in progress
	failed   int                               // datagrams that failed since the last flush
	err      error                             // the last failure
}

var _ writeQueue = (*mmsgWriter)(nil)

func (w *mmsgWriter) queue(b []byte, to netip.AddrPort) bool {
	a := to.Addr()
	if len(b) > writeSlot || !to.IsValid() || a.Zone() != "" || !w.inet6 && !a.Is4() {
		// Rare: a WriteTo of its own, after what is queued.
		w.sendQueued()
		return false
	}
	if w.n == len(w.hdrs) {
		w.sendQueued()
	}
	i := w.n
	sa := &w.names[i]
	if w.inet6 {
		*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.As16()} // IPv4 as ::ffff:a.b.c.d
		putPort(&sa.Port, to.Port())
		w.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
	} else {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
		putPort(&sa4.Port, to.Port())
		w.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
	}
	w.iovs[i].SetLen(copy(w.buf[i*writeSlot:(i+1)*writeSlot], b))
	w.n++
	return true
}

func (w *mmsgWriter) flush() (failed int, err error) {
	w.sendQueued()
	failed, err = w.failed, w.err
	w.failed, w.err = 0, nil
	return failed, err
}

// sendQueued sends what is queued and empties the queue.
func (w *mmsgWriter) sendQueued() {
	if w.n == 0 {
		return
	}
	w.sent = 0
	// RawConn.Write waits in the netpoller while the socket's buffer is
	// full, as WriteTo does.
	if err := w.rc.Write(w.send); err != nil {
		w.failed += w.n - w.sent
		w.err = err
	}
	w.n = 0
}

// sendFD is RawConn.Write's callback: it sends the queue from w.sent on,
// false asking it to wait until the socket is writable.
func (w *mmsgWriter) sendFD(fd uintptr) bool {
	for w.sent < w.n {
		k, errno := w.sendmmsg(fd, w.hdrs[w.sent:w.n])
		switch {
		case errno == 0 && k > 0:
			w.sent += k // all, or the first k: the rest in the next call
		case errno == unix.EINTR:
		case errno == unix.EAGAIN:
			return false // the send buffer is full: the rest once it drains
		default:
			// The first datagram left failed (an unreachable
			// destination, say), as its own WriteTo would have: it is
			// counted and skipped, and the rest go.
			w.failed++
			w.err = os.NewSyscallError("sendmmsg", errno)
			w.sent++
		}
	}
	return true
}

// sendmmsg is sendmmsg(2), without waiting.
func sendmmsg(fd uintptr, hdrs []unix.Mmsghdr) (int, syscall.Errno) {
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)),
		unix.MSG_DONTWAIT, 0, 0)
	return int(n), errno
}

// putPort writes port into a sockaddr's port field, in network order.
func putPort(p *uint16, port uint16) {
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(p))[:], port)
}
