package session

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"natchat/node/link"
	"natchat/wire"
)

// memNet is an in-memory network addressed by link.Addr, standing in for
// two nodes' links.
type memNet struct {
	mu    sync.Mutex
	conns map[wire.Key]*memConn
}

type memPkt struct {
	from wire.Key
	b    []byte
}

type memConn struct {
	n      *memNet
	local  wire.Key
	in     chan memPkt
	closed chan struct{}
	once   sync.Once

	mu       sync.Mutex
	deadline time.Time
	dlChange chan struct{} // closed and replaced when the deadline changes
}

func (n *memNet) attach(k wire.Key) *memConn {
	c := &memConn{n: n, local: k, in: make(chan memPkt, 1024), closed: make(chan struct{}), dlChange: make(chan struct{})}
	n.mu.Lock()
	n.conns[k] = c
	n.mu.Unlock()
	return c
}

func (c *memConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		dl, change := c.deadline, c.dlChange
		c.mu.Unlock()
		var timeout <-chan time.Time
		if !dl.IsZero() {
			if !time.Now().Before(dl) {
				return 0, nil, os.ErrDeadlineExceeded
			}
			t := time.NewTimer(time.Until(dl))
			defer t.Stop()
			timeout = t.C
		}
		select {
		case p := <-c.in:
			return copy(b, p.b), link.Addr{Key: p.from}, nil
		case <-c.closed:
			return 0, nil, net.ErrClosed
		case <-timeout:
			return 0, nil, os.ErrDeadlineExceeded
		case <-change:
		}
	}
}

func (c *memConn) WriteTo(b []byte, a net.Addr) (int, error) {
	c.n.mu.Lock()
	dst := c.n.conns[a.(link.Addr).Key]
	c.n.mu.Unlock()
	if dst != nil {
		select {
		case dst.in <- memPkt{from: c.local, b: bytes.Clone(b)}:
		case <-dst.closed:
		default:
		}
	}
	return len(b), nil
}

func (c *memConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}
func (c *memConn) LocalAddr() net.Addr           { return link.Addr{Key: c.local} }
func (c *memConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }
func (c *memConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	close(c.dlChange)
	c.dlChange = make(chan struct{})
	c.mu.Unlock()
	return nil
}
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// node is one Manager on the memNet with an echo handler for StreamChat.
type node struct {
	m      *Manager
	key    wire.Key
	priv   ed25519.PrivateKey
	cancel context.CancelFunc
	done   chan struct{}
	conn   *memConn

	mu   sync.Mutex
	ups  map[wire.Key]int // OnPeer up minus down
	ours map[wire.Key]int // OnOurs calls
	bad  []string         // OnOurs out of order
}

func newKey(t *testing.T) ed25519.PrivateKey {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func start(t *testing.T, n *memNet, priv ed25519.PrivateKey, idle time.Duration) *node {
	t.Helper()
	k := wire.Key(priv.Public().(ed25519.PublicKey))
	nd := &node{key: k, priv: priv, done: make(chan struct{}), ups: map[wire.Key]int{}, ours: map[wire.Key]int{}}
	nd.conn = n.attach(k)
	m, err := New(Options{Link: nd.conn, Identity: priv, IdleTimeout: idle,
		OnPeer: func(p wire.Key, up bool) {
			nd.mu.Lock()
			if up {
				nd.ups[p]++
			} else {
				nd.ups[p]--
			}
			nd.mu.Unlock()
		},
		OnOurs: func(p wire.Key) {
			nd.mu.Lock()
			if nd.ups[p] != 1 {
				nd.bad = append(nd.bad, "OnOurs for a peer not up: "+p.Short())
			}
			nd.ours[p]++
			nd.mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	m.Handle(wire.StreamChat, func(ctx context.Context, peer wire.Key, st *Stream) {
		io.Copy(st, st) // echo until the peer closes its side
	})
	nd.m = m
	ctx, cancel := context.WithCancel(context.Background())
	nd.cancel = cancel
	go func() { defer close(nd.done); m.Run(ctx) }()
	t.Cleanup(nd.stop)
	return nd
}

func (nd *node) stop() {
	nd.cancel()
	<-nd.done
	nd.conn.Close()
}

func (nd *node) oursCount(p wire.Key) int {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if len(nd.bad) > 0 {
		return -1 // fails every check; see bad
	}
	return nd.ours[p]
}

func (nd *node) upCount(p wire.Key) int {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.ups[p]
}

// echo opens a chat stream to peer and checks an echo, retrying (as the
// messenger does) when a stream dies with a connection that lost a
// duplicate or belonged to a restarted peer.
func echo(t *testing.T, from *node, to wire.Key, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		st, err := from.m.OpenStream(ctx, to, wire.StreamChat)
		if err != nil {
			last = err
			time.Sleep(100 * time.Millisecond)
			continue
		}
		st.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = st.Write([]byte(msg))
		got := make([]byte, len(msg))
		if err == nil {
			_, err = io.ReadFull(st, got)
		}
		st.Close()
		if err == nil && string(got) == msg {
			return
		}
		last = err
	}
	t.Fatalf("echo %q: %v", msg, last)
}

func TestOpenStreamEcho(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := &memNet{conns: map[wire.Key]*memConn{}}
		a := start(t, n, newKey(t), 0)
		b := start(t, n, newKey(t), 0)
		echo(t, a, b.key, "hello")
		echo(t, b, a.key, "back") // reuses a's connection
		synctest.Wait()
		if a.m.Conns() != 1 || b.m.Conns() != 1 {
			t.Fatalf("connections: a %d b %d, want 1 each", a.m.Conns(), b.m.Conns())
		}
		if a.upCount(b.key) != 1 || b.upCount(a.key) != 1 {
			t.Fatalf("OnPeer: a %d b %d", a.upCount(b.key), b.upCount(a.key))
		}
	})
}

// TestOursOnlyWhenWeTalk: a peer that dialed us is not ours (any registered
// key can dial) until we open a stream to it or Vouch for it; the peer we
// dialed is ours at once. Ours ends with the peer's session.
func TestOursOnlyWhenWeTalk(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := &memNet{conns: map[wire.Key]*memConn{}}
		a := start(t, n, newKey(t), time.Minute)
		b := start(t, n, newKey(t), time.Minute)
		c := start(t, n, newKey(t), time.Minute)
		echo(t, a, b.key, "hello")
		echo(t, c, b.key, "hello")
		synctest.Wait()
		if a.oursCount(b.key) != 1 {
			t.Fatalf("a dialed b: OnOurs %d times, want 1", a.oursCount(b.key))
		}
		if b.upCount(a.key) != 1 || b.oursCount(a.key) != 0 || b.oursCount(c.key) != 0 {
			t.Fatalf("b, dialed by a and c: up %d, ours %d and %d, want up 1, not ours", b.upCount(a.key), b.oursCount(a.key), b.oursCount(c.key))
		}
		echo(t, b, a.key, "back") // b answers on a's connection
		echo(t, a, b.key, "again")
		b.m.Vouch(c.key) // as the messenger accepting c's chat
		b.m.Vouch(c.key)
		synctest.Wait()
		if a.oursCount(b.key) != 1 || b.oursCount(a.key) != 1 || b.oursCount(c.key) != 1 || b.m.Conns() != 2 {
			t.Fatalf("OnOurs a→b %d, b→a %d, b→c %d, want 1 each on the same connections (b has %d)",
				a.oursCount(b.key), b.oursCount(a.key), b.oursCount(c.key), b.m.Conns())
		}
		// After the session ends (idle), a new one from a is not ours.
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if b.upCount(a.key) != 0 {
			t.Fatalf("b: a still up after the idle timeout")
		}
		echo(t, a, b.key, "later")
		synctest.Wait()
		if a.oursCount(b.key) != 2 || b.oursCount(a.key) != 1 {
			t.Fatalf("after a new session dialed by a: OnOurs a→b %d (want 2), b→a %d (want 1)", a.oursCount(b.key), b.oursCount(a.key))
		}
	})
}

func TestSimultaneousDialKeepsOne(t *testing.T) {
	for i := range 10 {
		synctest.Test(t, func(t *testing.T) {
			n := &memNet{conns: map[wire.Key]*memConn{}}
			a := start(t, n, newKey(t), time.Minute)
			b := start(t, n, newKey(t), time.Minute)
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); echo(t, a, b.key, "from a") }()
			go func() { defer wg.Done(); echo(t, b, a.key, "from b") }()
			wg.Wait()
			time.Sleep(time.Second) // losers' closes arrive
			synctest.Wait()
			if a.m.Conns() != 1 || b.m.Conns() != 1 {
				t.Fatalf("round %d: connections a %d b %d, want 1 each", i, a.m.Conns(), b.m.Conns())
			}
			if a.upCount(b.key) != 1 || b.upCount(a.key) != 1 {
				t.Fatalf("round %d: OnPeer balance a %d b %d", i, a.upCount(b.key), b.upCount(a.key))
			}
			// Both sides use the same connection: the one the smaller key dialed.
			ca, cb := a.m.peers[b.key].cur, b.m.peers[a.key].cur
			small := a.key
			if bytes.Compare(b.key[:], a.key[:]) < 0 {
				small = b.key
			}
			if ca.dialer(a.key) != small || cb.dialer(b.key) != small {
				t.Fatalf("round %d: kept connections dialed by %s and %s, want %s", i, ca.dialer(a.key).Short(), cb.dialer(b.key).Short(), small.Short())
			}
		})
	}
}

func TestIdleCloseAndReopen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := &memNet{conns: map[wire.Key]*memConn{}}
		a := start(t, n, newKey(t), 2*time.Minute)
		b := start(t, n, newKey(t), 2*time.Minute)
		echo(t, a, b.key, "one")
		time.Sleep(time.Minute)
		synctest.Wait()
		if a.m.Conns() != 1 {
			t.Fatalf("closed before the idle timeout: %d", a.m.Conns())
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if a.m.Conns() != 0 || b.m.Conns() != 0 || a.upCount(b.key) != 0 || b.upCount(a.key) != 0 {
			t.Fatalf("after idling: conns a %d b %d; up a %d b %d", a.m.Conns(), b.m.Conns(), a.upCount(b.key), b.upCount(a.key))
		}
		if len(a.m.peers) != 0 || len(b.m.peers) != 0 {
			t.Fatalf("per-peer state kept: a %d b %d", len(a.m.peers), len(b.m.peers))
		}
		echo(t, b, a.key, "two")
		if a.m.Conns() != 1 || b.m.Conns() != 1 {
			t.Fatalf("after reopening: a %d b %d", a.m.Conns(), b.m.Conns())
		}
	})
}

func TestPeerRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := &memNet{conns: map[wire.Key]*memConn{}}
		a := start(t, n, newKey(t), 0)
		bKey := newKey(t)
		b := start(t, n, bKey, 0)
		echo(t, a, b.key, "before")
		b.stop()
		b2 := start(t, n, bKey, 0) // same identity, no memory of the connection
		start := time.Now()
		echo(t, a, b2.key, "after")
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("reaching the restarted peer took %v (stateless reset should end the old connection)", d)
		}
		echo(t, b2, a.key, "and back")
		time.Sleep(time.Second)
		synctest.Wait()
		if a.m.Conns() != 1 || b2.m.Conns() != 1 {
			t.Fatalf("connections a %d b2 %d", a.m.Conns(), b2.m.Conns())
		}
	})
}

func TestWrongIdentityRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := &memNet{conns: map[wire.Key]*memConn{}}
		a := start(t, n, newKey(t), 0)
		m := start(t, n, newKey(t), 0)
		// Someone else answers for the key we dial.
		victim := wire.Key{1, 2, 3}
		n.mu.Lock()
		n.conns[victim] = m.conn
		n.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		st, err := a.m.OpenStream(ctx, victim, wire.StreamChat)
		if err == nil {
			st.Close()
			t.Fatal("a stream to an impostor opened")
		}
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			t.Fatalf("dial did not fail by itself: %v", err)
		}
	})
}

// TestCloseEndsDial: a dial to a peer that does not answer ends as soon as
// the peer is closed (it left), not at the dial's timeout.
func TestCloseEndsDial(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := &memNet{conns: map[wire.Key]*memConn{}}
		a := start(t, n, newKey(t), 0)
		gone := wire.Key{9, 9, 9} // no one listens for it: the dial waits
		errc := make(chan error, 1)
		started := time.Now()
		go func() {
			st, err := a.m.OpenStream(context.Background(), gone, wire.StreamChat)
			if st != nil {
				st.Close()
			}
			errc <- err
		}()
		time.Sleep(time.Second) // fake time: the dial is in flight
		synctest.Wait()
		a.m.Close(gone, "peer left")
		err := <-errc
		if err == nil {
			t.Fatal("a stream opened to a peer that never answered")
		}
		if d := time.Since(started); d > 2*time.Second {
			t.Fatalf("the dial ended %v after it started, %v after Close: want at once", d, d-time.Second)
		}
	})
}
