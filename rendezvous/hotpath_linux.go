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
// recvmmsg(2) from a UDP socket and hands them out one at a time, or nil
// if c is not one. One system call per burst instead of per datagram,
// and nothing allocated per datagram: golang.org/x/net's ReadBatch does
// the first but makes a *net.UDPAddr for each source.
func batchReader(c net.PacketConn) func() ([]byte, netip.AddrPort, error) {
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
	return r.next
}

// mmsgReader is batchReader's state, used by Run's goroutine alone.
type mmsgReader struct {
	rc    syscall.RawConn
	recv  func(fd uintptr) bool
	hdrs  [readBatch]unix.Mmsghdr
	iovs  [readBatch]unix.Iovec
	names [readBatch]unix.RawSockaddrInet6 // large enough for IPv4's too
	bufs  [readBatch][]byte
	n     int   // datagrams received by the last call
	i     int   // the next one to hand out
	err   error // the last call's failure
}

// next returns the next datagram and its source (unmapped; invalid for a
// source that is neither IPv4 nor IPv6, to be skipped). The datagram is
// valid until the next call.
func (r *mmsgReader) next() ([]byte, netip.AddrPort, error) {
	for r.i >= r.n {
		r.i, r.n, r.err = 0, 0, nil
		for i := range r.hdrs {
			r.hdrs[i].Hdr.Namelen = uint32(unsafe.Sizeof(r.names[i]))
		}
		// RawConn.Read waits in the netpoller, as ReadFrom does, and so
		// keeps deadlines and Close working.
		if err := r.rc.Read(r.recv); err != nil {
			return nil, netip.AddrPort{}, err
		}
		if r.err != nil {
			return nil, netip.AddrPort{}, r.err
		}
	}
	h := &r.hdrs[r.i]
	b := r.bufs[r.i][:h.Len]
	src := sockaddrAddrPort(&r.names[r.i], h.Hdr.Namelen)
	r.i++
	return b, src, nil
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
