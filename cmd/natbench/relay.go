package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v2"

	"natchat/internal/rvtest"
	"natchat/wire"
)

// pair is one sender and one receiver of relayed packets, through
// either server. send sends one payload; receive arranges for onPacket
// to be called with the length of every relayed payload received (from
// any goroutine) until close.
type pair struct {
	send    func() error
	receive func(onPacket func(n int))
	close   func()
}

// relayResult is one repetition of a relay row.
type relayResult struct {
	pps, mbps float64
	loss      float64 // share of all packets sent (warm-up and window) never received
	cpuPerOp  time.Duration
	genPerOp  time.Duration // the load generator's CPU per packet received
	allocs    float64       // the server's heap allocations per packet received (NaN: unknown)
	rss       int64
	steal     float64
}

// runRelay drives pairs: each sender keeps at most w packets in flight
// (sent and not yet received by its receiver; when none arrives for
// 50 ms the ones in flight are written off as lost), and the receivers
// count packets and bytes during the window.
func runRelay(pid int, pairs []*pair, w int, warm, window time.Duration) (relayResult, error) {
	p := &phase{base: time.Now()}
	var (
		wg               sync.WaitGroup
		pkts, bytes      atomic.Int64
		sentAll, recvAll atomic.Int64
		errMu            sync.Mutex
		firstErr         error
	)
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
	}
	for _, pr := range pairs {
		var recvd atomic.Int64
		wake := make(chan struct{}, 1)
		pr.receive(func(n int) {
			recvd.Add(1)
			recvAll.Add(1)
			if p.measuring.Load() {
				pkts.Add(1)
				bytes.Add(int64(n))
			}
			select {
			case wake <- struct{}{}:
			default:
			}
		})
		wg.Add(1)
		go func() {
			defer wg.Done()
			var sent, forgiven int64
			t := time.NewTimer(time.Hour)
			defer t.Stop()
			for !p.done.Load() {
				if sent-forgiven-recvd.Load() >= int64(w) {
					t.Reset(50 * time.Millisecond)
					select {
					case <-wake:
					case <-t.C:
						forgiven = sent - recvd.Load()
					}
					continue
				}
				if err := pr.send(); err != nil {
					fail(fmt.Errorf("send: %w", err))
					return
				}
				sent++
				sentAll.Add(1)
			}
		}()
	}
	m, err := measure(p, pid, warm, window)
	p.done.Store(true)
	wg.Wait()
	// Let what is in flight arrive before counting the losses.
	for last, i := recvAll.Load(), 0; i < 20; i++ {
		time.Sleep(20 * time.Millisecond)
		now := recvAll.Load()
		if now == sentAll.Load() || now == last && i > 2 {
			break
		}
		last = now
	}
	for _, pr := range pairs {
		pr.close()
	}
	if err == nil {
		err = firstErr
	}
	if err != nil {
		return relayResult{}, err
	}
	n := pkts.Load()
	r := relayResult{
		pps: float64(n) / m.elapsed.Seconds(), mbps: float64(bytes.Load()) * 8 / 1e6 / m.elapsed.Seconds(),
		rss: m.rss, steal: m.steal, allocs: perOp(m.allocs, n),
	}
	if s := sentAll.Load(); s > 0 {
		r.loss = max(0, float64(s-recvAll.Load())/float64(s))
	}
	if n > 0 {
		r.cpuPerOp = m.cpu / time.Duration(n)
		r.genPerOp = m.self / time.Duration(n)
	}
	return r, nil
}

// registerNode registers a fresh identity with our rendezvous at addr
// over its own UDP socket, speaking the real protocol (internal/rvtest):
// Hello, cookie, Noise IK handshake.
func registerNode(addr *net.UDPAddr, name string) (*rvtest.Node, *net.UDPConn, error) {
	c, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		return nil, nil, err
	}
	n := rvtest.New(name)
	buf := make([]byte, 64<<10)
	// await sends b (again every 300 ms) until a datagram of type typ comes.
	await := func(b []byte, typ wire.Type) ([]byte, error) {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := c.Write(b); err != nil {
				return nil, err
			}
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			for {
				k, err := c.Read(buf)
				if err != nil {
					break
				}
				if wire.IsProtocol(buf[:k]) && buf[2] == byte(typ) {
					c.SetReadDeadline(time.Time{})
					return append([]byte(nil), buf[:k]...), nil
				}
			}
		}
		return nil, fmt.Errorf("no %s from %s", typ, addr)
	}
	cookie, err := await(n.Hello(1), wire.TypeCookie)
	if err == nil {
		var hs []byte
		if hs, err = n.FromCookie(cookie); err == nil {
			var reply []byte
			if reply, err = await(hs, wire.TypeHandshakeReply); err == nil {
				_, err = n.Finish(reply)
			}
		}
	}
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("register %s: %w", name, err)
	}
	return n, c, nil
}

// nodeSeq numbers the nodes registered, so every name is new.
var nodeSeq atomic.Int64

// oursPairs registers 2×count nodes and returns pairs relaying size-byte
// payloads through our rendezvous (wire.Relay in, wire.Relayed out).
func oursPairs(srv *server, count, size int) ([]*pair, error) {
	var pairs []*pair
	closeAll := func() {
		for _, p := range pairs {
			p.close()
		}
	}
	for range count {
		a, ca, err := registerNode(srv.addr, fmt.Sprintf("bench-%d-a", nodeSeq.Add(1)))
		if err != nil {
			closeAll()
			return nil, err
		}
		b, cb, err := registerNode(srv.addr, fmt.Sprintf("bench-%d-b", nodeSeq.Add(1)))
		if err != nil {
			ca.Close()
			closeAll()
			return nil, err
		}
		dgram := a.Relay(b.Key, make([]byte, size))
		hdr := wire.HeaderLen + wire.KeyLen
		var done sync.WaitGroup
		pairs = append(pairs, &pair{
			send: func() error { _, err := ca.Write(dgram); return err },
			receive: func(onPacket func(int)) {
				done.Add(1)
				go func() {
					defer done.Done()
					buf := make([]byte, 2048)
					for {
						k, err := cb.Read(buf)
						if err != nil {
							return // closed
						}
						if k >= hdr && wire.IsProtocol(buf[:k]) && buf[2] == byte(wire.TypeRelayed) {
							onPacket(k - hdr)
						}
					}
				}()
			},
			close: func() { ca.Close(); cb.Close(); done.Wait() },
		})
	}
	return pairs, nil
}

// bindChannels has each side write to the other's relayed address until
// pion has bound a channel both ways (it binds on the first write and
// sends ChannelData once the server has confirmed).
func bindChannels(a, b *turnSide) error {
	ra, rb := a.relayed.LocalAddr(), b.relayed.LocalAddr()
	hello := []byte("natbench")
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if _, err := a.relayed.WriteTo(hello, rb); err != nil {
			return err
		}
		if _, err := b.relayed.WriteTo(hello, ra); err != nil {
			return err
		}
		if a.conn.channel.Load() != 0 && b.conn.channel.Load() != 0 {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("pion did not bind TURN channels within 5 s")
}

// tapConn is the UDP socket under a pion TURN client. It lets the
// benchmark move data the way a lean TURN client would, one system call
// a packet, while pion does the control (allocation, permission, channel
// binding, refreshes): it learns the channel number from the first
// ChannelData pion writes, and hands ChannelData it reads to onData
// instead of to pion.
type tapConn struct {
	net.PacketConn
	channel atomic.Uint32               // 0 until pion has sent ChannelData
	onData  atomic.Pointer[func(n int)] // nil: ChannelData goes to pion
}

// isChannelData: the first two bits of ChannelData are 01 (RFC 8656 §12.4).
func isChannelData(b []byte) bool { return len(b) >= 4 && b[0]&0xC0 == 0x40 }

func (c *tapConn) WriteTo(b []byte, a net.Addr) (int, error) {
	if isChannelData(b) && c.channel.Load() == 0 {
		c.channel.Store(uint32(binary.BigEndian.Uint16(b)))
	}
	return c.PacketConn.WriteTo(b, a)
}

func (c *tapConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, a, err := c.PacketConn.ReadFrom(b)
		if err != nil || !isChannelData(b[:n]) {
			return n, a, err
		}
		f := c.onData.Load()
		if f == nil {
			return n, a, err
		}
		(*f)(int(binary.BigEndian.Uint16(b[2:])))
	}
}

// turnSide is one TURN client with its allocation on coturn.
type turnSide struct {
	conn    *tapConn
	client  *turn.Client
	relayed net.PacketConn
}

func (s *turnSide) close() {
	if s.relayed != nil {
		s.relayed.Close()
	}
	if s.client != nil {
		s.client.Close()
	}
	s.conn.Close()
}

func newTurnSide(srv *server) (*turnSide, error) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &turnSide{conn: &tapConn{PacketConn: c}}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	s.client, err = turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: srv.addr.String(), TURNServerAddr: srv.addr.String(),
		Username: turnUser, Password: turnPass, Realm: turnRealm,
		Conn: s.conn, LoggerFactory: lf,
	})
	if err == nil {
		err = s.client.Listen()
	}
	if err == nil {
		s.relayed, err = s.client.Allocate()
	}
	if err != nil {
		s.close()
		return nil, fmt.Errorf("TURN allocation on coturn: %w", err)
	}
	return s, nil
}

// coturnPairs allocates a relayed address on coturn for each side of each
// pair (long-term credentials), gives each side a permission for the
// other's relayed address, and returns pairs whose sender writes to the
// receiver's relayed address through its own allocation: through pion's
// relayed PacketConn until pion has bound a channel (on the first
// writes), then as ChannelData straight on the socket (tapConn). The
// receiver gets ChannelData from coturn once coturn has bound a channel
// for the sender's relayed address (RFC 8656 §12: a server sends Data
// indications until then, which pion reads).
func coturnPairs(srv *server, count, size int) ([]*pair, error) {
	var pairs []*pair
	closeAll := func() {
		for _, p := range pairs {
			p.close()
		}
	}
	for range count {
		a, err := newTurnSide(srv)
		if err != nil {
			closeAll()
			return nil, err
		}
		b, err := newTurnSide(srv)
		if err != nil {
			a.close()
			closeAll()
			return nil, err
		}
		ra, rb := a.relayed.LocalAddr(), b.relayed.LocalAddr()
		err = errors.Join(a.client.CreatePermission(rb), b.client.CreatePermission(ra))
		if err == nil {
			err = bindChannels(a, b)
		}
		if err != nil {
			a.close()
			b.close()
			closeAll()
			return nil, err
		}
		payload := make([]byte, size)
		var chanData []byte // ChannelData to rb, once pion has bound the channel
		var done sync.WaitGroup
		pairs = append(pairs, &pair{
			send: func() error {
				if chanData == nil {
					if ch := a.conn.channel.Load(); ch != 0 {
						chanData = binary.BigEndian.AppendUint16(nil, uint16(ch))
						chanData = binary.BigEndian.AppendUint16(chanData, uint16(size))
						chanData = append(chanData, payload...)
					}
				}
				if chanData != nil {
					_, err := a.conn.PacketConn.WriteTo(chanData, srv.addr)
					return err
				}
				_, err := a.relayed.WriteTo(payload, rb)
				return err
			},
			receive: func(onPacket func(int)) {
				b.conn.onData.Store(&onPacket)
				// Until coturn binds a channel toward b, data comes as
				// Data indications, which pion hands to the relayed conn.
				done.Add(1)
				go func() {
					defer done.Done()
					buf := make([]byte, 2048)
					for {
						k, _, err := b.relayed.ReadFrom(buf)
						if err != nil {
							return
						}
						onPacket(k)
					}
				}()
			},
			close: func() { a.close(); b.close(); done.Wait() },
		})
	}
	return pairs, nil
}
