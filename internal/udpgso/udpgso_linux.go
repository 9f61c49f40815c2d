// Package udpgso holds the Linux UDP segmentation offloads that the node
// and the rendezvous share: GSO (UDP_SEGMENT: one send of a run of
// equal-sized datagrams to one address) and GRO (UDP_GRO: such a run read
// as one). Elsewhere they report themselves unsupported. It does no I/O
// but socket options. NATCHAT_DISABLE_GSO=1 turns both off, as
// QUIC_GO_DISABLE_GSO does for quic-go.
package udpgso

import (
	"errors"
	"os"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Supported reports whether the kernel takes UDP_SEGMENT on conn. A
// device that cannot segment is found at the first send (IsGSOError).
func Supported(conn syscall.Conn) bool {
	return option(conn, func(fd int) error {
		_, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		return err
	})
}

// option runs f on conn's socket unless NATCHAT_DISABLE_GSO is set,
// and reports whether it succeeded.
func option(conn syscall.Conn, f func(fd int) error) bool {
	if off, err := strconv.ParseBool(os.Getenv("NATCHAT_DISABLE_GSO")); err == nil && off {
		return false
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return false
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return false
	}
	return ferr == nil
}

// SegmentSpace is the room AppendSegmentSize's control message takes.
var SegmentSpace = unix.CmsgSpace(2)

// AppendSegmentSize appends the control message that asks the kernel to
// cut a send into datagrams of size bytes.
// It allocates only when b has no room for it (SegmentSpace bytes).
func AppendSegmentSize(b []byte, size uint16) []byte {
	const dataLen = 2
	start := len(b)
	if cap(b)-start >= SegmentSpace {
		b = b[:start+SegmentSpace]
		clear(b[start:])
	} else {
		b = append(b, make([]byte, SegmentSpace)...)
	}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[start]))
	h.Level = unix.IPPROTO_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(dataLen))
	*(*uint16)(unsafe.Pointer(&b[start+unix.CmsgSpace(0)])) = size
	return b
}

// IsGSOError reports whether err says the device cannot segment: EIO from
// udp_send_skb without transmit checksum offload (udp(7)).
func IsGSOError(err error) bool {
	var serr *os.SyscallError
	return errors.As(err, &serr) && (serr.Err == unix.EIO || serr.Err == unix.EINVAL)
}

// EnableGRO asks the kernel to hand up runs of datagrams of one flow
// coalesced, as one read with the segment size in a control message
// (UDP_GRO): a peer that sends with GSO is then read in one system call a
// run. NATCHAT_DISABLE_GSO=1 turns it off too.
func EnableGRO(conn syscall.Conn) bool {
	return option(conn, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	})
}

// OOBLen is room for the control messages of one read.
var OOBLen = unix.CmsgSpace(4) * 2

// SegmentSize returns the segment size a read's control messages give
// (0: the read is one datagram).
func SegmentSize(oob []byte) int {
	if d := Cmsg(oob, unix.IPPROTO_UDP, unix.UDP_GRO); len(d) >= 4 {
		return int(*(*int32)(unsafe.Pointer(&d[0])))
	}
	return 0
}

// Cmsg returns the data of the first control message of level and typ in
// oob (as recvmsg(2) fills it, or a sender builds it), or nil. A
// malformed buffer ends the search.
func Cmsg(oob []byte, level, typ int32) []byte {
	for len(oob) >= unix.CmsgSpace(0) {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.CmsgLen(0) || l > len(oob) {
			return nil
		}
		if h.Level == level && h.Type == typ {
			return oob[unix.CmsgLen(0):l]
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	return nil
}
