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

	"natchat/internal/udpgso"
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

// rawUDP returns c as a syscallUDPConn and its raw connection, or nils
// when c is not a UDP socket.
func rawUDP(c net.PacketConn) (syscallUDPConn, syscall.RawConn) {
	sc, ok := c.(syscallUDPConn)
	if !ok {
		return nil, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, nil
	}
	return sc, rc
}

// batchReader returns a reader that takes up to readBatch datagrams per
// recvmmsg(2) from a UDP socket, or nil if c is not one. One system call
// per burst instead of per datagram, and nothing allocated per datagram:
// golang.org/x/net's ReadBatch does the first but makes a *net.UDPAddr
// for each source.
func batchReader(c net.PacketConn) packetReader {
	sc, rc := rawUDP(c)
	if rc == nil {
		return nil
	}
	r := &mmsgReader{rc: rc}
	r.gro = udpgso.EnableGRO(sc)
	rc.Control(func(fd uintptr) {
		r.ovfl = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1) == nil
	})
	if r.gro || r.ovfl {
		r.oobs = make([]byte, readBatch*udpgso.OOBLen) // room for both control messages
	}
	for i := range r.hdrs {
		r.bufs[i] = make([]byte, 64<<10)
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(len(r.bufs[i]))
		r.hdrs[i].Hdr.Iov = &r.iovs[i]
		r.hdrs[i].Hdr.SetIovlen(1)
		r.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		if r.oobs != nil {
			r.hdrs[i].Hdr.Control = &r.oobs[i*udpgso.OOBLen]
		}
	}
	r.recv = r.recvmmsg // one func value for every call: a method value made per call would be garbage
	return r
}

// mmsgReader is batchReader's state, used by one read loop alone.
//
// With UDP GRO (udpgso.EnableGRO) the kernel may hand up a run of
// datagrams of one flow as one message, the run a node sent with one GSO
// send (a burst of relayed QUIC packets, node/peernet's sender): read
// cuts each message into its datagrams, so that the run costs one slot
// and one system call, and the loop sees datagrams as before.
type mmsgReader struct {
	rc    syscall.RawConn
	recv  func(fd uintptr) bool
	hdrs  [readBatch]unix.Mmsghdr
	iovs  [readBatch]unix.Iovec
	names [readBatch]unix.RawSockaddrInet6 // large enough for IPv4's too
	bufs  [readBatch][]byte
	oobs  []byte // readBatch control buffers of udpgso.OOBLen, with GRO or ovfl; nil without
	gro   bool   // UDP GRO is on: a message may be a run
	ovfl  bool   // SO_RXQ_OVFL is on: messages carry the socket's drop count
	drops uint32 // the last drop count the kernel gave
	segs  []segment
	n     int   // messages received by the last call
	err   error // the last call's failure
}

// segment is one datagram of a read: part of message msg.
type segment struct {
	msg, off, len int32
}

// maxSegments is room for the datagrams of one read without growing: a
// coalesced message is at most 64 datagrams (UDP_MAX_SEGMENTS on older
// kernels, UDP_GRO_CNT_MAX).
const maxSegments = readBatch * 64

// read waits for datagrams and returns how many came, at least one.
func (r *mmsgReader) read() (int, error) {
	for {
		r.n, r.err = 0, nil
		for i := range r.hdrs {
			r.hdrs[i].Hdr.Namelen = uint32(unsafe.Sizeof(r.names[i]))
			if r.oobs != nil {
				r.hdrs[i].Hdr.SetControllen(udpgso.OOBLen)
			}
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
			return r.cut(), nil
		}
	}
}

// cut lists the datagrams of the messages read, cutting coalesced ones at
// their segment size, and returns how many there are.
func (r *mmsgReader) cut() int {
	if r.segs == nil {
		r.segs = make([]segment, 0, maxSegments)
	}
	r.segs = r.segs[:0]
	for i := range r.n {
		h := &r.hdrs[i]
		n, seg := int(h.Len), 0
		if r.oobs != nil {
			oob := r.oobs[i*udpgso.OOBLen : i*udpgso.OOBLen+int(h.Hdr.Controllen)]
			if r.gro {
				seg = udpgso.SegmentSize(oob)
			}
			if d, ok := rxqOverflow(oob); ok {
				r.drops = d
			}
		}
		if seg <= 0 || seg >= n {
			seg = max(n, 1) // one datagram (an empty one too)
		}
		for off := 0; off < n || off == 0; off += seg {
			r.segs = append(r.segs, segment{msg: int32(i), off: int32(off), len: int32(min(seg, n-off))})
		}
	}
	return len(r.segs)
}

func (r *mmsgReader) kernelDrops() (uint32, bool) { return r.drops, r.ovfl }

// rxqOverflow returns the drop count of an SO_RXQ_OVFL control message in
// oob, which the kernel adds once the socket has dropped anything.
func rxqOverflow(oob []byte) (uint32, bool) {
	if d := udpgso.Cmsg(oob, unix.SOL_SOCKET, unix.SO_RXQ_OVFL); len(d) >= 4 {
		return *(*uint32)(unsafe.Pointer(&d[0])), true
	}
	return 0, false
}

// datagram returns the i-th datagram of the last read and its source
// (unmapped; invalid for a source that is neither IPv4 nor IPv6, to be
// skipped), valid until the next read.
func (r *mmsgReader) datagram(i int) ([]byte, netip.AddrPort) {
	sg := r.segs[i]
	h := &r.hdrs[sg.msg]
	return r.bufs[sg.msg][sg.off : sg.off+sg.len], sockaddrAddrPort(&r.names[sg.msg], h.Hdr.Namelen)
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
//
// With UDP GSO a datagram to the address the last one queued went to, no
// longer than that one's first, joins it (a run, sent with UDP_SEGMENT:
// cut by the kernel, read by a receiver with GRO as one): a node's burst
// of relayed QUIC packets, read as one run (mmsgReader), leaves as one.
// A run ends at a shorter datagram, at maxRunSegments or at maxRun bytes.
const (
	writeBatch     = 32
	writeSlot      = 2048
	writeBuf       = 128 << 10 // the queue's bytes: a full run and more
	maxRun         = 65000     // a run's bytes: an IPv4 datagram's limit, less room
	maxRunSegments = 64        // UDP_MAX_SEGMENTS of older kernels
)

// newWriteQueue returns a writeQueue that sends with sendmmsg(2) on a UDP
// socket, or nil if c is not one.
func newWriteQueue(c net.PacketConn) writeQueue {
	sc, rc := rawUDP(c)
	if rc == nil {
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
	w := &mmsgWriter{rc: rc, inet6: domain == unix.AF_INET6, buf: make([]byte, writeBuf), sendmmsg: sendmmsg, sendto: sendto,
		gso: udpgso.Supported(sc)}
	for i := range w.hdrs {
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
	// sendto sends one datagram: a run's, one by one, when the device
	// cannot segment.
	sendto func(fd uintptr, b []byte, name *unix.RawSockaddrInet6, namelen uint32) syscall.Errno
	gso    bool // runs are sent with UDP_SEGMENT
	hdrs   [writeBatch]unix.Mmsghdr
	iovs   [writeBatch]unix.Iovec
	names  [writeBatch]unix.RawSockaddrInet6 // large enough for IPv4's too
	runs   [writeBatch]run
	ctrl   [writeBatch][32]byte // a run's UDP_SEGMENT control message (udpgso.SegmentSpace, 24 bytes)
	buf    []byte               // the queued datagrams, one after another
	used   int                  // bytes of buf queued
	n      int                  // messages queued (a run is one)
	sent   int                  // of those, sent or given up by the send in progress
	failed int                  // datagrams that failed since the last flush
	err    error                // the last failure
}

// run is a queued message: one datagram, or a run of them to one address.
type run struct {
	to     netip.AddrPort
	seg    int  // the first datagram's length: the others' at most
	count  int  // datagrams
	closed bool // the last is shorter than seg: no more
}

var _ writeQueue = (*mmsgWriter)(nil)

func (w *mmsgWriter) queue(b []byte, to netip.AddrPort) bool {
	a := to.Addr()
	if len(b) > writeSlot || !to.IsValid() || a.Zone() != "" || !w.inet6 && !a.Is4() {
		// Rare: a WriteTo of its own, after what is queued.
		w.sendQueued()
		return false
	}
	if w.gso && w.n > 0 && w.join(b, to) {
		return true
	}
	if w.n == len(w.hdrs) || w.used+len(b) > len(w.buf) {
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
	w.iovs[i].Base = &w.buf[w.used]
	w.iovs[i].SetLen(copy(w.buf[w.used:], b))
	w.hdrs[i].Hdr.Control = nil
	w.hdrs[i].Hdr.SetControllen(0)
	w.runs[i] = run{to: to, seg: len(b), count: 1}
	w.used += len(b)
	w.n++
	return true
}

// join adds b to the last message queued, as a run, if it can be: the
// same address, no longer than the run's first datagram, and room.
func (w *mmsgWriter) join(b []byte, to netip.AddrPort) bool {
	i := w.n - 1
	r := &w.runs[i]
	l := int(w.iovs[i].Len)
	if r.to != to || r.closed || len(b) == 0 || len(b) > r.seg || r.count == maxRunSegments ||
		l+len(b) > maxRun || w.used+len(b) > len(w.buf) {
		return false
	}
	copy(w.buf[w.used:], b)
	w.used += len(b)
	w.iovs[i].SetLen(l + len(b))
	r.count++
	r.closed = len(b) < r.seg
	if r.count == 2 {
		c := udpgso.AppendSegmentSize(w.ctrl[i][:0], uint16(r.seg))
		w.hdrs[i].Hdr.Control = &c[0]
		w.hdrs[i].Hdr.SetControllen(len(c))
	}
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
		for _, r := range w.runs[w.sent:w.n] {
			w.failed += r.count
		}
		w.err = err
	}
	w.n, w.used = 0, 0
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
		case w.runs[w.sent].count > 1 && isGSOErrno(errno):
			// The device cannot segment (udp(7): EIO without checksum
			// offload): no more runs; this one goes datagram by datagram.
			w.gso = false
			w.sendRun(fd, w.sent)
			w.sent++
		default:
			// The first datagram left failed (an unreachable
			// destination, say), as its own WriteTo would have: it is
			// counted and skipped, and the rest go.
			w.failed += w.runs[w.sent].count
			w.err = os.NewSyscallError("sendmmsg", errno)
			w.sent++
		}
	}
	return true
}

// sendRun sends message i's datagrams one at a time.
func (w *mmsgWriter) sendRun(fd uintptr, i int) {
	r := &w.runs[i]
	b := unsafe.Slice(w.iovs[i].Base, w.iovs[i].Len)
	for len(b) > 0 {
		d := b[:min(r.seg, len(b))]
		b = b[len(d):]
		if errno := w.sendto(fd, d, &w.names[i], w.hdrs[i].Hdr.Namelen); errno != 0 {
			w.failed++
			w.err = os.NewSyscallError("sendto", errno)
		}
	}
}

// isGSOErrno reports whether a send of a run failed because the device
// cannot segment (udpgso.IsGSOError's errnos).
func isGSOErrno(e syscall.Errno) bool { return e == unix.EIO || e == unix.EINVAL }

// sendto is sendto(2) of one datagram, without waiting; EINTR is retried.
func sendto(fd uintptr, b []byte, name *unix.RawSockaddrInet6, namelen uint32) syscall.Errno {
	for {
		_, _, errno := unix.Syscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
			unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(name)), uintptr(namelen))
		if errno != unix.EINTR {
			return errno
		}
	}
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
