package link

import (
	"natchat/internal/udpgso"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// ForQUIC returns the link as quic-go's fast path wants a socket: an
// OOBCapablePacketConn with ReadBatch, so that quic-go packs a burst of
// packets into one buffer and hands it over with a UDP_SEGMENT size (GSO),
// and reads up to a batch of packets a call, as it does on a plain UDP
// socket. Behind a net.PacketConn quic-go does neither: it checks for
// received packets after every packet it sends and passes each through
// its send queue alone, which cost a file transfer half its rate
// (docs/BENCHMARKS.md).
//
// The adapter gives quic-go a socket of its own to probe for those
// features (SyscallConn): a UDP socket that is never bound or used, so
// the options quic-go sets (ECN, packet info) never touch the node's real
// socket. A GSO burst goes out on a trusted direct path in one send
// (DirectPath with WriteGSO), or as its datagrams through the relay.
//
// It returns the link itself when no probe socket can be made.
func (c *Conn) ForQUIC() net.PacketConn {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return c
		}
	}
	probe := os.NewFile(uintptr(fd), "natchat-quic-probe")
	rc, err := probe.SyscallConn()
	if err != nil {
		probe.Close()
		return c
	}
	q := &quicConn{Conn: c, probe: probe, raw: rc}
	c.onClose = append(c.onClose, func() { probe.Close() })
	return q
}

// quicConn is the adapter ForQUIC returns.
type quicConn struct {
	*Conn
	probe *os.File
	raw   syscall.RawConn
}

// SyscallConn returns the probe socket's (see ForQUIC).
func (q *quicConn) SyscallConn() (syscall.RawConn, error) { return q.raw, nil }

// ReadMsgUDP reads one packet (quic-go reads with ReadBatch).
func (q *quicConn) ReadMsgUDP(b, _ []byte) (n, oobn, flags int, addr *net.UDPAddr, err error) {
	p, err := q.next()
	if err != nil {
		return 0, 0, 0, nil, err
	}
	n, addr = copy(b, p.B), q.udpAddr(p)
	PutBuf(p)
	return n, 0, 0, addr, nil
}

// ReadBatch fills ms with received packets: it waits for the first as
// ReadFrom does, then takes those already queued.
func (q *quicConn) ReadBatch(ms []ipv4.Message, _ int) (int, error) {
	if len(ms) == 0 {
		return 0, nil
	}
	p, err := q.next()
	if err != nil {
		return 0, err
	}
	i := 0
	for {
		m := &ms[i]
		m.N, m.NN, m.Flags, m.Addr = copy(m.Buffers[0], p.B), 0, 0, q.udpAddr(p)
		PutBuf(p)
		if i++; i == len(ms) {
			return i, nil
		}
		select {
		case p = <-q.in:
		default:
			return i, nil
		}
	}
}

// udpAddr names p's sender as quic-go sees it, without allocating for a
// tracked peer.
func (q *quicConn) udpAddr(p *Buf) *net.UDPAddr {
	if p.peer != nil {
		return p.peer.udp
	}
	return quicAddr(p.from)
}

// WriteMsgUDP sends b to the peer named by addr. With a UDP_SEGMENT
// control message in oob, b is a burst of datagrams of that size (the
// last may be shorter). Other control messages (quic-go's ECN marks) are
// not applied: the link reports no ECN on receipt, so quic-go's ECN
// validation turns marking off.
func (q *quicConn) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (int, int, error) {
	k, ok := KeyOf(addr)
	if !ok {
		return 0, 0, errNotAddr
	}
	seg := segmentSize(oob)
	if seg <= 0 || seg >= len(b) {
		_, err := q.write(k, b)
		return len(b), 0, err
	}
	return len(b), 0, q.writeGSO(k, b, seg)
}

// WriteTo accepts both the link's addresses and the adapter's.
func (q *quicConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	k, ok := KeyOf(addr)
	if !ok {
		return 0, errNotAddr
	}
	return q.write(k, b)
}

// ReadFrom names senders as the adapter does.
func (q *quicConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, _, _, addr, err := q.ReadMsgUDP(b, nil)
	if err != nil {
		return 0, nil, err
	}
	return n, addr, nil
}

// SetReadBuffer: quic-go asks for its buffer on the probe socket's
// behalf; pass it to the node's socket as the link does.
func (q *quicConn) SetReadBuffer(n int) error { return q.Conn.SetReadBuffer(n) }

// segmentSize returns the UDP_SEGMENT size in oob (0: none).
func segmentSize(oob []byte) int {
	if d := udpgso.Cmsg(oob, unix.IPPROTO_UDP, unix.UDP_SEGMENT); len(d) >= 2 {
		return int(*(*uint16)(unsafe.Pointer(&d[0])))
	}
	return 0
}
