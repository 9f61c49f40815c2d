package rendezvous_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"natchat/ctrl"
	"natchat/rendezvous"
	"natchat/wire"
)

// startLoopback runs a Server on a real 127.0.0.1 socket and returns it,
// its socket, its key, the cancel of its context and the channel Run's
// result arrives on.
func startLoopback(t *testing.T, edit func(*rendezvous.Options)) (*rendezvous.Server, net.PacketConn, ctrl.ServerKey, context.CancelFunc, <-chan error) {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	key, _, err := rendezvous.LoadOrCreateKey(dir)
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	st, err := rendezvous.OpenStore(dir)
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	opts := rendezvous.Options{Conn: conn, Store: st, Key: key, DefaultRoom: rendezvous.DefaultRoom}
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
	return s, conn, key, cancel, done
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

// register runs a whole registration of n over the socket.
func (c *udpClient) register(n *node) {
	c.t.Helper()
	c.write(n.rv.Hello(5))
	hs, err := n.rv.FromCookie(c.read())
	if err != nil {
		c.t.Fatal(err)
	}
	c.write(hs)
	res, err := n.rv.Finish(c.read())
	if err != nil {
		c.t.Fatal(err)
	}
	if res.Observed != c.addr() {
		c.t.Fatalf("observed %v, want %v", res.Observed, c.addr())
	}
	n.session = res.Session
	if _, ok := c.open(n).(*wire.Peers); !ok {
		c.t.Fatal("no snapshot")
	}
}

// open reads the next datagram as n.
func (c *udpClient) open(n *node) wire.Message { return n.open(c.t, c.read()) }

func TestRunLoopback(t *testing.T) {
	defer checkGoroutines(t)()
	s, conn, key, cancel, done := startLoopback(t, func(o *rendezvous.Options) {
		o.Expiry = 2 * time.Second
		o.PresenceDelay = 10 * time.Millisecond
	})
	defer cancel()
	cl := newUDPClient(t, conn.LocalAddr())

	// STUN over the real socket.
	req := stunBinding(t)
	cl.write(req)
	checkBindingSuccess(t, req, cl.read(), cl.addr(), "natchat-rendezvous")

	// The whole registration, on Run's workers.
	a := newNode(t, "alice", cl.addr().String())
	cl.register(a)
	if a.rv.Server != key.Public {
		t.Fatal("learned the wrong key")
	}
	cl.write(a.seal(&wire.Heartbeat{}))
	if ack, ok := cl.open(a).(*wire.HeartbeatAck); !ok || ack.Observed != cl.addr() {
		t.Fatalf("heartbeat ack %+v", ack)
	}

	// A second node: Run's presence loop tells the first.
	cl2 := newUDPClient(t, conn.LocalAddr())
	b := newNode(t, "bob", cl2.addr().String())
	cl2.register(b)
	p, ok := cl.open(a).(*wire.Presence)
	if !ok || len(p.Changes) != 1 || p.Changes[0].Kind != wire.PresenceJoin || p.Changes[0].Key != b.key {
		t.Fatalf("alice got %+v, want bob's join", p)
	}
	// And relays.
	cl2.write(b.rv.Relay(a.key, []byte("hi")))
	if r, ok := cl.readMsg().(*wire.Relayed); !ok || r.Src != b.key || string(r.Payload) != "hi" {
		t.Fatalf("alice got %+v, want bob's relayed packet", r)
	}

	// Run's own sweep expires the silent nodes (polling with a deadline).
	deadline := time.Now().Add(10 * time.Second)
	for len(s.Online()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still online %q after 10 s of silence with a 2 s expiry", s.Online())
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
	_, conn, _, cancel, done := startLoopback(t, nil)
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
	key, err := ctrl.NewServerKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := rendezvous.New(rendezvous.Options{Conn: conn, Store: st, Key: key})
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

func TestNewRequiresConnStoreAndKey(t *testing.T) {
	st, err := rendezvous.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	key, err := ctrl.NewServerKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rendezvous.New(rendezvous.Options{Store: st, Key: key}); err == nil {
		t.Error("New without Conn succeeded")
	}
	if _, err := rendezvous.New(rendezvous.Options{Conn: newFakeConn(), Key: key}); err == nil {
		t.Error("New without Store succeeded")
	}
	if _, err := rendezvous.New(rendezvous.Options{Conn: newFakeConn(), Store: st}); err == nil {
		t.Error("New without Key succeeded")
	}
}
