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

	"natchat/ctrl"
	"natchat/node"
	"natchat/node/api"
	"natchat/node/store"
	"natchat/punch"
	"natchat/rendezvous"
	"natchat/wire"
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
	key, err := ctrl.NewServerKey()
	if err != nil {
		tb.Fatal(err)
	}
	o := rendezvous.Options{
		Conn: conn, Store: store, DefaultRoom: rendezvous.DefaultRoom, Key: key,
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
	Name  string
	Store *store.Store
	tb    testing.TB

	mu     sync.Mutex
	events []api.Event
	change chan struct{} // closed and replaced on every event
	done   chan error
	cancel context.CancelFunc
	front  chan struct{} // closed when the recording front end ends
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
	// Identity and StateDir: zero values make new ones.
	Identity ed25519.PrivateKey
	StateDir string
	// IdleTimeout: 0 is the node's default.
	IdleTimeout time.Duration
	// Discard: the front end reads events and keeps none (for memory
	// measurements); Wait and Events see nothing.
	Discard bool
	// Downloads and AcceptFrom: node.Options' (files).
	Downloads  string
	AcceptFrom []string
}

// StartNode runs a node until the test ends (or Stop). A front end
// records every event (and so shows every message at once).
func StartNode(tb testing.TB, c NodeConfig) *Node {
	tb.Helper()
	priv := c.Identity
	if priv == nil {
		var err error
		if _, priv, err = ed25519.GenerateKey(rand.Reader); err != nil {
			tb.Fatal(err)
		}
	}
	dir := c.StateDir
	if dir == "" {
		dir = tb.TempDir()
	}
	st, err := store.Open(dir, wire.Key(priv.Public().(ed25519.PublicKey)), store.Options{Logger: Logger(tb, c.Name+"/store")})
	if err != nil {
		tb.Fatal(err)
	}
	n := &Node{Name: c.Name, Store: st, tb: tb, change: make(chan struct{}), done: make(chan error, 1), front: make(chan struct{})}
	nn, err := node.New(node.Options{
		Name: c.Name, Rendezvous: c.RV, Conn: c.Conn, Identity: priv, Store: st, Heartbeat: c.Heartbeat,
		Net: c.Net, NoDirect: c.NoDirect, Punch: c.Punch, IdleTimeout: c.IdleTimeout,
		Logger: Logger(tb, c.Name), DeliveryTimeout: 2 * time.Minute,
		Downloads: c.Downloads, AcceptFrom: c.AcceptFrom,
	})
	if err != nil {
		st.Close()
		tb.Fatal(err)
	}
	n.Node = nn
	sub := nn.Subscribe()
	go func() {
		defer close(n.front)
		for {
			e, err := sub.Next(context.Background())
			if err != nil {
				return
			}
			if !c.Discard {
				n.record(e)
			}
		}
	}()
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
	<-n.front
	n.Store.Close()
	n.done <- nil // later Stops return at once
}

func (n *Node) record(e api.Event) {
	n.mu.Lock()
	n.events = append(n.events, e)
	close(n.change)
	n.change = make(chan struct{})
	n.mu.Unlock()
}

// Events returns a copy of the events so far.
func (n *Node) Events() []api.Event {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]api.Event(nil), n.events...)
}

// Do queues a command, failing the test if the node has stopped.
func (n *Node) Do(c api.Command) {
	n.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Node.Do(ctx, c); err != nil {
		n.tb.Fatalf("%s: Do(%T): %v", n.Name, c, err)
	}
}

// Send sends text to peer and returns the message's ID from its Sent
// event, or "" when it was refused at once (an Error).
func (n *Node) Send(to, text string) string {
	n.tb.Helper()
	n.mu.Lock()
	mark := len(n.events)
	n.mu.Unlock()
	n.Do(api.Send{To: to, Text: text})
	e, _ := n.Wait(mark, 30*time.Second, "sent "+text, func(e api.Event) bool {
		switch e := e.(type) {
		case *api.Sent:
			return e.To == to && e.Text == text && !e.Resumed
		case *api.Error:
			return e.To == to && e.ID == ""
		}
		return false
	})
	if s, ok := e.(*api.Sent); ok {
		return s.ID
	}
	return ""
}

// Wait waits until an event at index ≥ from satisfies pred and returns it
// and its index. It fails the test after timeout.
func (n *Node) Wait(from int, timeout time.Duration, what string, pred func(api.Event) bool) (api.Event, int) {
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
func (n *Node) WaitPath(from int, peer, path string, timeout time.Duration) (*api.PathChanged, int) {
	n.tb.Helper()
	e, i := n.Wait(from, timeout, fmt.Sprintf("path %s to %s", path, peer), func(e api.Event) bool {
		p, ok := e.(*api.PathChanged)
		return ok && p.Peer == peer && p.Path == path
	})
	return e.(*api.PathChanged), i
}

// WaitRegistered waits for the first registered event.
func (n *Node) WaitRegistered(timeout time.Duration) {
	n.tb.Helper()
	n.Wait(0, timeout, "registration", func(e api.Event) bool { _, ok := e.(*api.Registered); return ok })
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
