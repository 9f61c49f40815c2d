package peernet

import (
	"errors"
	"natchat/internal/udpgso"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// sender writes the node's relayed QUIC packets from one goroutine, so that a burst from quic-go
// leaves in few system calls: consecutive packets to one destination, all
// of one size but the last, go out as one sendmsg with UDP generic
// segmentation offload (Linux's UDP_SEGMENT, as quic-go and wireguard-go
// send), which the kernel cuts into datagrams. quic-go cannot do this
// itself for the relay, where every datagram gets the relay's header
// (on a direct path quic-go's own bursts go out whole: writeRun).
//
// Batching needs no timer: quic-go hands packets over faster than a
// system call takes, so while the goroutine is in one, the next burst
// queues up behind it; a lone packet goes out at once, alone.
//
// Write copies the packet and returns before it is sent; a send that
// fails makes later Writes to that destination fail for a while
// (failHold), so the link can tell a dead direct path from a live one.
// Writes block while the queue is full (as a full socket buffer would),
// never past Close.
type sender struct {
	conn   *net.UDPConn
	q      chan *outPkt
	closed chan struct{}
	once   sync.Once
	done   chan struct{}
	gso    atomic.Bool // UDP_SEGMENT works on this socket (cleared when it fails)
	now    func() time.Time

	fail atomic.Pointer[sendFailure]

	syscalls atomic.Uint64 // sends made (a GSO send counts once)
}

// sendFailure is the last failed send.
type sendFailure struct {
	to  netip.AddrPort
	at  time.Time
	err error
}

// failHold is how long a failed send makes Writes to its destination fail.
const failHold = time.Second

// outPkt is one queued datagram.
type outPkt struct {
	to netip.AddrPort
	n  int
	b  [maxOut]byte
}

// maxOut is the largest datagram the sender queues: a QUIC packet
// (link.BufSize bounds them) with the relay's header. Larger ones are
// written at once.
const maxOut = 2048

const (
	sendQueue   = 256   // packets queued for the sender goroutine
	maxSegments = 64    // datagrams in one GSO send (the kernel's UDP_MAX_SEGMENTS on older kernels)
	maxGSOBytes = 65000 // bytes in one GSO send: under the 64 KiB of one UDP datagram with its headers
)

var outPkts = sync.Pool{New: func() any { return new(outPkt) }}

// newSender returns a sender for conn; start runs it (Writes queue until
// then).
func newSender(conn *net.UDPConn) *sender {
	s := &sender{
		conn:   conn,
		q:      make(chan *outPkt, sendQueue),
		closed: make(chan struct{}),
		done:   make(chan struct{}),
		now:    time.Now,
	}
	s.gso.Store(udpgso.Supported(conn))
	return s
}

// start runs the sender's goroutine until Close.
func (s *sender) start() { go s.run() }

var errSenderClosed = errors.New("peernet: sender closed")

// Write queues a copy of b for to.
func (s *sender) Write(b []byte, to netip.AddrPort) error {
	if f := s.fail.Load(); f != nil && f.to == to && s.now().Sub(f.at) < failHold {
		return f.err
	}
	select {
	case <-s.closed:
		return errSenderClosed
	default:
	}
	if len(b) > maxOut {
		_, err := s.conn.WriteToUDPAddrPort(b, to)
		return err
	}
	p := outPkts.Get().(*outPkt)
	p.to, p.n = to, copy(p.b[:], b)
	select {
	case s.q <- p:
		return nil
	case <-s.closed:
		outPkts.Put(p)
		return errSenderClosed
	}
}

// Close stops the sender after it sent what was queued (the socket is
// the caller's); it waits for the goroutine, so call it only after start.
func (s *sender) Close() {
	s.once.Do(func() { close(s.closed) })
	<-s.done
}

func (s *sender) run() {
	defer close(s.done)
	batch := make([]*outPkt, 0, maxSegments)
	buf := make([]byte, 0, maxGSOBytes)
	oob := make([]byte, 0, 64)
	for {
		var p *outPkt
		select {
		case p = <-s.q:
		case <-s.closed:
			// Send what is queued: a QUIC close may be among it.
			for {
				select {
				case p = <-s.q:
					batch = append(batch[:0], p)
					s.flush(batch, buf, oob)
				default:
					return
				}
			}
		}
		batch = append(batch[:0], p)
	more:
		for len(batch) < cap(batch) {
			select {
			case p = <-s.q:
				batch = append(batch, p)
			default:
				break more
			}
		}
		s.flush(batch, buf, oob)
	}
}

// writeRun sends b, datagrams of seg bytes (the last may be shorter), to
// to in one GSO send from the caller's goroutine, or one datagram at a
// time where the device cannot segment.
func (s *sender) writeRun(b []byte, seg int, to netip.AddrPort) error {
	if s.gso.Load() && len(b) <= maxGSOBytes && (len(b)+seg-1)/seg <= maxSegments {
		var oob [64]byte
		s.syscalls.Add(1)
		_, _, err := s.conn.WriteMsgUDPAddrPort(b, udpgso.AppendSegmentSize(oob[:0], uint16(seg)), to)
		if err == nil || !udpgso.IsGSOError(err) {
			return err
		}
		s.gso.Store(false)
	}
	for off := 0; off < len(b); off += seg {
		s.syscalls.Add(1)
		if _, err := s.conn.WriteToUDPAddrPort(b[off:min(off+seg, len(b))], to); err != nil {
			return err
		}
	}
	return nil
}

// flush sends batch, grouping runs to one destination for GSO, and gives
// the packets back to the pool.
func (s *sender) flush(batch []*outPkt, buf, oob []byte) {
	for i := 0; i < len(batch); {
		first := batch[i]
		j, total := i+1, first.n
		if s.gso.Load() {
			// A run: every datagram but the last of the first's size.
			for j < len(batch) && j-i < maxSegments &&
				batch[j].to == first.to && batch[j-1].n == first.n &&
				batch[j].n <= first.n && total+batch[j].n <= maxGSOBytes {
				total += batch[j].n
				j++
			}
		}
		var err error
		s.syscalls.Add(1)
		if j-i == 1 {
			_, err = s.conn.WriteToUDPAddrPort(first.b[:first.n], first.to)
		} else {
			buf = buf[:0]
			for _, p := range batch[i:j] {
				buf = append(buf, p.b[:p.n]...)
			}
			_, _, err = s.conn.WriteMsgUDPAddrPort(buf, udpgso.AppendSegmentSize(oob[:0], uint16(first.n)), first.to)
			if err != nil && udpgso.IsGSOError(err) {
				// The device cannot segment (no checksum offload): send
				// this run and everything after one datagram at a time.
				s.gso.Store(false)
				err = nil
				for _, p := range batch[i:j] {
					if _, e := s.conn.WriteToUDPAddrPort(p.b[:p.n], p.to); e != nil && err == nil {
						err = e
					}
				}
			}
		}
		if err != nil {
			s.fail.Store(&sendFailure{to: first.to, at: s.now(), err: err})
		}
		for _, p := range batch[i:j] {
			outPkts.Put(p)
		}
		i = j
	}
}
