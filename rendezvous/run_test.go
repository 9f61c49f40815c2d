package rendezvous_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"natchat/rendezvous"
	"natchat/wire"
)

// startLoopback runs a Server on a real 127.0.0.1 socket and returns it,
// its address, the cancel of its context and the channel Run's result
// arrives on.
func startLoopback(t *testing.T, edit func(*rendezvous.Options)) (*rendezvous.Server, net.PacketConn, context.CancelFunc, <-chan error) {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	st, err := rendezvous.OpenStore(t.TempDir())
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	opts := rendezvous.Options{Conn: conn, Store: st, DefaultRoom: rendezvous.DefaultRoom}
	if edit != nil {
		edit(&opts)
	}
	s, err := rendezvous.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return s, conn, cancel, done
}

func waitRun(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5 s")
		return nil
	}
}

// udpClient is a node's socket on loopback.
type udpClient struct {
	t    *testing.T
	conn *net.UDPConn
	srv  net.Addr
}

func newUDPClient(t *testing.T, srv net.Addr) *udpClient {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpClient{t: t, conn: c, srv: srv}
}

func (c *udpClient) addr() netip.AddrPort { return c.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (c *udpClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.conn.WriteTo(b, c.srv); err != nil {
		c.t.Fatal(err)
	}
}

func (c *udpClient) read() []byte {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := c.conn.ReadFrom(buf)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return buf[:n]
}

func (c *udpClient) readMsg() wire.Message { return parse(c.t, c.read()) }

func TestRunLoopback(t *testing.T) {
	defer checkGoroutines(t)()
	s, conn, cancel, done := startLoopback(t, func(o *rendezvous.Options) { o.Expiry = 400 * time.Millisecond })
	defer cancel()
	cl := newUDPClient(t, conn.LocalAddr())

	// STUN over the real socket.
	req := stunBinding(t)
	cl.write(req)
	checkBindingSuccess(t, req, cl.read(), cl.addr(), "natchat-rendezvous")

	// The whole registration.
	n := newNode(t, "alice", cl.addr().String())
	cl.write(wire.Marshal(&wire.Hello{Nonce: 5}))
	cr, ok := cl.readMsg().(*wire.CookieReply)
	if !ok || cr.Nonce != 5 {
		t.Fatalf("hello answered with %+v", cr)
	}
	cl.write(wire.Marshal(n.signedRegister(cr.Cookie, n.name)))
	reg, ok := cl.readMsg().(*wire.Registered)
	if !ok || reg.Observed != cl.addr() {
		t.Fatalf("registered %+v, want observed %v", reg, cl.addr())
	}
	if _, ok := cl.readMsg().(*wire.Peers); !ok {
		t.Fatal("no snapshot")
	}
	cl.write(wire.Marshal(&wire.Heartbeat{Session: reg.Session}))
	if ack, ok := cl.readMsg().(*wire.HeartbeatAck); !ok || ack.Observed != cl.addr() {
		t.Fatalf("heartbeat ack %+v", ack)
	}

	// Run's own sweep expires the silent node (polling with a deadline).
	deadline := time.Now().Add(5 * time.Second)
	for len(s.Online()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still online %q after 5 s of silence with a 400 ms expiry", s.Online())
		}
		time.Sleep(10 * time.Millisecond)
	}

	cancel()
	if err := waitRun(t, done); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if _, err := conn.WriteTo([]byte{1}, net.UDPAddrFromAddrPort(cl.addr())); !errors.Is(err, net.ErrClosed) {
		t.Errorf("socket after Run: write error %v, want net.ErrClosed", err)
	}
}

func TestRunSocketClosed(t *testing.T) {
	defer checkGoroutines(t)()
	_, conn, cancel, done := startLoopback(t, nil)
	defer cancel()
	// Make sure Run is reading: a STUN round trip.
	cl := newUDPClient(t, conn.LocalAddr())
	cl.write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	cl.read()
	conn.Close()
	if err := waitRun(t, done); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Run after the socket closed: %v, want net.ErrClosed", err)
	}
}

func TestRunCancelledContext(t *testing.T) {
	defer checkGoroutines(t)()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	st, err := rendezvous.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s, err := rendezvous.New(rendezvous.Options{Conn: conn, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatalf("Run with a cancelled context: %v", err)
	}
	if _, err := conn.WriteTo([]byte{1}, conn.LocalAddr()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("socket not closed: %v", err)
	}
}

func TestNewRequiresConnAndStore(t *testing.T) {
	st, err := rendezvous.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := rendezvous.New(rendezvous.Options{Store: st}); err == nil {
		t.Error("New without Conn succeeded")
	}
	if _, err := rendezvous.New(rendezvous.Options{Conn: newFakeConn()}); err == nil {
		t.Error("New without Store succeeded")
	}
}
