package sim

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/transport/v2"
	"github.com/rs/zerolog"

	"natchat/node"
	"natchat/punch"
	"natchat/rendezvous"
)

// Rendezvous is a rendezvous server running in the test.
type Rendezvous struct {
	Srv  *rendezvous.Server
	Addr string
	stop func()
}

// StartRendezvous serves a rendezvous on conn until the test ends. edit,
// if not nil, adjusts the options.
func StartRendezvous(tb testing.TB, conn net.PacketConn, edit func(*rendezvous.Options)) *Rendezvous {
	tb.Helper()
	store, err := rendezvous.OpenStore(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	o := rendezvous.Options{
		Conn: conn, Store: store, DefaultRoom: rendezvous.DefaultRoom,
		Logger: Logger(tb, "rendezvous"),
	}
	if edit != nil {
		edit(&o)
	}
	srv, err := rendezvous.New(o)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Run(ctx) }()
	r := &Rendezvous{Srv: srv, Addr: conn.LocalAddr().String()}
	r.stop = func() { cancel(); <-done; store.Close() }
	tb.Cleanup(r.stop)
	return r
}

// Node is a node running in the test, with its events recorded.
type Node struct {
	*node.Node
	Name string
	tb   testing.TB

	mu     sync.Mutex
	events []node.Event
	change chan struct{} // closed and replaced on every event
	done   chan error
	cancel context.CancelFunc
}

// NodeConfig configures StartNode.
type NodeConfig struct {
	Name      string
	Conn      net.PacketConn
	RV        string
	Net       transport.Net // nil: real
	Heartbeat time.Duration
	NoDirect  bool
	Punch     punch.Options
}

// StartNode runs a node until the test ends (or Stop).
func StartNode(tb testing.TB, c NodeConfig) *Node {
	tb.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	n := &Node{Name: c.Name, tb: tb, change: make(chan struct{}), done: make(chan error, 1)}
	nn, err := node.New(node.Options{
		Name: c.Name, Rendezvous: c.RV, Conn: c.Conn, Identity: priv, Heartbeat: c.Heartbeat,
		Net: c.Net, NoDirect: c.NoDirect, Punch: c.Punch,
		Logger: Logger(tb, c.Name), OnEvent: n.record, DeliveryTimeout: 2 * time.Minute,
	})
	if err != nil {
		tb.Fatal(err)
	}
	n.Node = nn
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() { n.done <- nn.Run(ctx) }()
	tb.Cleanup(n.Stop)
	return n
}

// Stop ends the node and waits for it.
func (n *Node) Stop() {
	n.cancel()
	if err := <-n.done; err != nil {
		n.tb.Errorf("%s: Run: %v", n.Name, err)
	}
	n.done <- nil // later Stops return at once
}

func (n *Node) record(e node.Event) {
	n.mu.Lock()
	n.events = append(n.events, e)
	close(n.change)
	n.change = make(chan struct{})
	n.mu.Unlock()
}

// Events returns a copy of the events so far.
func (n *Node) Events() []node.Event {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]node.Event(nil), n.events...)
}

// Wait waits until an event at index ≥ from satisfies pred and returns it
// and its index. It fails the test after timeout.
func (n *Node) Wait(from int, timeout time.Duration, what string, pred func(node.Event) bool) (node.Event, int) {
	n.tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		n.mu.Lock()
		for i := from; i < len(n.events); i++ {
			if pred(n.events[i]) {
				e := n.events[i]
				n.mu.Unlock()
				return e, i
			}
		}
		from = len(n.events)
		ch := n.change
		n.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			n.tb.Fatalf("%s: no %s within %v", n.Name, what, timeout)
			return nil, -1
		}
	}
}

// WaitPath waits for a path event to peer with the given path kind.
func (n *Node) WaitPath(from int, peer, path string, timeout time.Duration) (*node.PathChanged, int) {
	n.tb.Helper()
	e, i := n.Wait(from, timeout, fmt.Sprintf("path %s to %s", path, peer), func(e node.Event) bool {
		p, ok := e.(*node.PathChanged)
		return ok && p.Peer == peer && p.Path == path
	})
	return e.(*node.PathChanged), i
}

// WaitRegistered waits for the first registered event.
func (n *Node) WaitRegistered(timeout time.Duration) {
	n.tb.Helper()
	n.Wait(0, timeout, "registration", func(e node.Event) bool { _, ok := e.(*node.Registered); return ok })
}

// Logger returns a logger for component name: silent unless the test runs
// with -v and SIM_LOG names a level.
func Logger(tb testing.TB, name string) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(logLevel)
	if err != nil || logLevel == "" {
		return zerolog.Nop()
	}
	return zerolog.New(zerolog.NewTestWriter(tb)).Level(lvl).With().Timestamp().Str("c", name).Logger()
}
