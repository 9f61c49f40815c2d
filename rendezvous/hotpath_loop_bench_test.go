package rendezvous_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"natchat/internal/rvtest"
	"natchat/relay"
	"natchat/rendezvous"
	"natchat/wire"
)

// BenchmarkLoopbackRelay measures Run's whole loop on a real UDP socket
// on loopback: alice sends 1200-byte Relays to the rendezvous, which
// reads them, forwards them and bob reads them, with at most 256 in
// flight (so that the socket buffers, not the loop, never drop). It
// reports wall time and the process's CPU time (user and system: the
// server's loop, the clients' sends and reads, the runtime) per relayed
// packet; on a small, shared VM the CPU figure is the steadier one.
// Three ways of reading the socket: batch (recvmmsg, as Run reads a
// *net.UDPConn on Linux), single (one datagram per system call) and
// readfrom (net.PacketConn's ReadFrom and WriteTo, which allocate).
//
//	go test -run '^$' -bench LoopbackRelay -benchtime 200000x ./rendezvous/
func BenchmarkLoopbackRelay(b *testing.B) {
	b.Run("batch", func(b *testing.B) { loopbackRelay(b, func(c *net.UDPConn) net.PacketConn { return c }) })
	b.Run("single", func(b *testing.B) {
		loopbackRelay(b, func(c *net.UDPConn) net.PacketConn { return singleReadConn{c, c} })
	})
	b.Run("readfrom", func(b *testing.B) {
		loopbackRelay(b, func(c *net.UDPConn) net.PacketConn { return struct{ net.PacketConn }{c} })
	})
}

// singleReadConn is a *net.UDPConn without its SyscallConn, which Run
// needs to read in batches: it reads one datagram per system call.
type singleReadConn struct {
	net.PacketConn
	udp *net.UDPConn
}

func (c singleReadConn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	return c.udp.ReadFromUDPAddrPort(b)
}

func (c singleReadConn) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	return c.udp.WriteToUDPAddrPort(b, to)
}

func loopbackRelay(b *testing.B, wrap func(*net.UDPConn) net.PacketConn) {
	st, err := rendezvous.OpenStore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	rv := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	// As Run sizes a *net.UDPConn's buffers (Options.SocketBuffer), for the
	// wrapped ones too.
	conn.SetReadBuffer(rendezvous.DefaultSocketBuffer)
	conn.SetWriteBuffer(rendezvous.DefaultSocketBuffer)
	srv, err := rendezvous.New(rendezvous.Options{Conn: wrap(conn), Store: st, Key: benchKey(b),
		Relay: relay.Limits{PacketsPerSec: -1, BytesPerSec: -1}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	alice, bob := rvtest.New("alice"), rvtest.New("bob")
	ac, bc := loopRegister(b, rv, alice), loopRegister(b, rv, bob)
	defer ac.Close()
	defer bc.Close()

	const window = 256
	credit := make(chan struct{}, window)
	for range window {
		credit <- struct{}{}
	}
	got := make(chan int, 1)
	go func() { // bob: count the Relayed datagrams, returning a credit for each
		buf := make([]byte, 2048)
		n := 0
		for {
			bc.SetReadDeadline(time.Now().Add(time.Second))
			m, _, err := bc.ReadFromUDPAddrPort(buf)
			if err != nil {
				got <- n
				return
			}
			if m > wire.HeaderLen && wire.Type(buf[2]) == wire.TypeRelayed {
				n++
				credit <- struct{}{}
			}
		}
	}()
	pkt := alice.Relay(bob.Key, make([]byte, 1200))
	lost := 0
	wait := time.NewTimer(time.Hour) // one timer, not one per packet (time.After): the clients allocate nothing either
	b.SetBytes(1200)
	b.ResetTimer()
	t := startBenchTimer()
	for range b.N {
		select {
		case <-credit:
		default:
			wait.Reset(100 * time.Millisecond)
			select {
			case <-credit:
			case <-wait.C: // one lost: carry on
				lost++
			}
		}
		if _, err := ac.WriteToUDPAddrPort(pkt, rv); err != nil {
			b.Fatal(err)
		}
	}
	for range window - lost { // the last ones' credits: all delivered
		select {
		case <-credit:
		case <-time.After(time.Second):
		}
	}
	cost := t.stop()
	b.StopTimer()
	n := <-got
	b.ReportMetric(float64(cost.cpu.Nanoseconds())/float64(b.N), "cpu-ns/pkt")
	b.ReportMetric(float64(b.N-n), "lost")
}

// loopRegister registers n with the rendezvous at rv from a new loopback
// socket and returns the socket.
func loopRegister(b testing.TB, rv netip.AddrPort, n *rvtest.Node) *net.UDPConn {
	b.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	c.SetReadBuffer(4 << 20)
	read := func(t wire.Type) []byte {
		buf := make([]byte, 2048)
		for {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			m, _, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				b.Fatalf("%s: waiting for %v: %v", n.Name, t, err)
			}
			if m >= wire.HeaderLen && wire.Type(buf[2]) == t {
				return buf[:m]
			}
		}
	}
	if _, err := c.WriteToUDPAddrPort(n.Hello(1), rv); err != nil {
		b.Fatal(err)
	}
	hs, err := n.FromCookie(read(wire.TypeCookie))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.WriteToUDPAddrPort(hs, rv); err != nil {
		b.Fatal(err)
	}
	if _, err := n.Finish(read(wire.TypeHandshakeReply)); err != nil {
		b.Fatal(err)
	}
	return c
}
