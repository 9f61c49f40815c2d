package punch

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/transport/v2/test"
)

// view is the node's side of the contract: one real UDP socket, demuxed
// once; packets whose first byte is outside STUN's 0x00–0x3F from the
// rendezvous stay with the node, everything else goes to punch.
type view struct {
	pc   net.PacketConn
	in   chan viewPacket
	done chan struct{}
	once sync.Once
}

type viewPacket struct {
	b    []byte
	from net.Addr
}

func (v *view) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-v.in:
		return copy(b, p.b), p.from, nil
	case <-v.done:
		return 0, nil, net.ErrClosed
	}
}

func (v *view) WriteTo(b []byte, to net.Addr) (int, error) { return v.pc.WriteTo(b, to) }
func (v *view) LocalAddr() net.Addr                        { return v.pc.LocalAddr() }
func (v *view) SetDeadline(time.Time) error                { return nil }
func (v *view) SetReadDeadline(time.Time) error            { return nil }
func (v *view) SetWriteDeadline(time.Time) error           { return nil }
func (v *view) Close() error {
	v.once.Do(func() { close(v.done) })
	return nil
}

// demux is the node's reader loop; it ends when pc is closed.
func demux(pc net.PacketConn, rendezvous string, v *view, wg *sync.WaitGroup) {
	defer wg.Done()
	buf := make([]byte, 2048)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if from.String() == rendezvous && n > 0 && buf[0] > 0x3f {
			continue // rendezvous protocol: the node's
		}
		select {
		case v.in <- viewPacket{b: append([]byte(nil), buf[:n]...), from: from}:
		default: // punch not keeping up: drop, like a full socket buffer
		}
	}
}

// TestRealNetwork runs two Managers on real loopback sockets with the real
// network stack (Options.Net nil) and real time, through a node-style
// demux view, and checks that every goroutine is gone afterwards.
func TestRealNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("real time")
	}
	checkRoutines := test.CheckRoutines(t)
	var managers []*Manager
	stunConn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	must(t, err)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		serveSTUN(stunConn)
	}()
	rendezvous := stunConn.LocalAddr().String()
	conns := []net.PacketConn{stunConn}
	// On success and on failure alike: close everything, then no goroutine
	// may be left.
	t.Cleanup(func() {
		for _, m := range managers {
			_ = m.Close()
		}
		for _, c := range conns {
			_ = c.Close()
		}
		wg.Wait()
		checkRoutines()
	})

	mk := func(name string) *node {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		must(t, err)
		v := &view{pc: pc, in: make(chan viewPacket, 256), done: make(chan struct{})}
		wg.Add(1)
		go demux(pc, rendezvous, v, &wg)
		conns = append(conns, pc)
		m, err := NewManager(Options{Conn: v, STUNServer: rendezvous, Logger: testLogger(t).With().Str("node", name).Logger()})
		must(t, err)
		managers = append(managers, m)
		return &node{name: name, m: m}
	}
	a, b := mk("a"), mk("b")
	sig := &signalling{rto: 250 * time.Millisecond} // no world: no delay, no loss
	connect(t, a, b, sig, "real")
	t0 := time.Now()
	must(t, a.p.Start())
	must(t, b.p.Start())
	for _, n := range []*node{a, b} {
		ev, ok := waitDirect(t, n, true, 10*time.Second)
		if !ok {
			t.Fatalf("%s: no direct path on loopback", n.name)
		}
		t.Logf("%s: direct to %v after %v", n.name, ev.remote, ev.at.Sub(t0))
	}
	if !exchange(t, a, b, 5*time.Second) || !exchange(t, b, a, 5*time.Second) {
		t.Fatal("no datagram over the direct path")
	}
	must(t, a.m.Close())
	must(t, b.m.Close())
	if err := a.p.Write([]byte("x")); err == nil {
		t.Error("Write after Close succeeded")
	}
}
