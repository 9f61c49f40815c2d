package rvclient_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"natchat/node/rvclient"
	"natchat/rendezvous"
	"natchat/wire"
)

// world is an in-memory network of one rendezvous (the real server, driven
// through Handle) and clients, run inside a synctest bubble: time is fake
// and every datagram is delivered by one goroutine, in order.
type world struct {
	t      *testing.T
	rvAddr netip.AddrPort
	dir    string
	q      chan dgram
	ctx    context.Context
	stop   context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	srv     *rendezvous.Server
	store   *rendezvous.Store
	clients map[netip.AddrPort]*client
	drop    func(d dgram) bool
}

type dgram struct {
	from, to netip.AddrPort
	b        []byte
}

// rvConn is the rendezvous's socket: writes go into the world.
type rvConn struct{ w *world }

func (c rvConn) ReadFrom([]byte) (int, net.Addr, error) { select {} }
func (c rvConn) WriteTo(b []byte, a net.Addr) (int, error) {
	c.w.send(dgram{from: c.w.rvAddr, to: a.(*net.UDPAddr).AddrPort(), b: slices.Clone(b)})
	return len(b), nil
}
func (rvConn) Close() error                       { return nil }
func (c rvConn) LocalAddr() net.Addr              { return net.UDPAddrFromAddrPort(c.w.rvAddr) }
func (rvConn) SetDeadline(time.Time) error        { return nil }
func (rvConn) SetReadDeadline(time.Time) error    { return nil }
func (rvConn) SetWriteDeadline(t time.Time) error { return nil }

func newWorld(t *testing.T) *world {
	w := &world{t: t, rvAddr: netip.MustParseAddrPort("192.0.2.1:3478"), dir: t.TempDir(),
		q: make(chan dgram, 4096), clients: map[netip.AddrPort]*client{}}
	w.ctx, w.stop = context.WithCancel(context.Background())
	w.startRendezvous()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			select {
			case <-w.ctx.Done():
				return
			case d := <-w.q:
				w.deliver(d)
			}
		}
	}()
	t.Cleanup(func() {
		w.stop()
		w.wg.Wait()
		w.mu.Lock()
		w.store.Close()
		w.mu.Unlock()
	})
	return w
}

func (w *world) startRendezvous() {
	st, err := rendezvous.OpenStore(w.dir)
	if err != nil {
		w.t.Fatal(err)
	}
	srv, err := rendezvous.New(rendezvous.Options{Conn: rvConn{w}, Store: st, DefaultRoom: rendezvous.DefaultRoom,
		Expiry: 30 * time.Second, Heartbeat: 10 * time.Second})
	if err != nil {
		w.t.Fatal(err)
	}
	w.srv, w.store = srv, st
}

// restartRendezvous replaces the server by a new one on the same store: it
// has forgotten every session.
func (w *world) restartRendezvous() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.store.Close()
	w.startRendezvous()
}

func (w *world) send(d dgram) {
	select {
	case w.q <- d:
	default: // a full queue loses the datagram, like UDP
	}
}

func (w *world) deliver(d dgram) {
	w.mu.Lock()
	drop, srv, c := w.drop, w.srv, w.clients[d.to]
	w.mu.Unlock()
	if drop != nil && drop(d) {
		return
	}
	switch {
	case d.to == w.rvAddr:
		if srv != nil {
			srv.Handle(d.b, d.from)
		}
	case c != nil:
		if wire.IsSTUN(d.b) {
			c.HandleSTUN(d.b)
		} else {
			c.Handle(d.b)
		}
	}
}

func (w *world) setDrop(f func(dgram) bool) {
	w.mu.Lock()
	w.drop = f
	w.mu.Unlock()
}

// client is a Client with its observations.
type client struct {
	*rvclient.Client
	name string
	addr netip.AddrPort
	key  wire.Key
	done chan error

	mu  sync.Mutex
	log []string // "registered", "joined NAME", "left NAME REASON", "refused CODE", "unreachable", "signal NAME BODY"
}

func (c *client) note(s string) {
	c.mu.Lock()
	c.log = append(c.log, s)
	c.mu.Unlock()
}

func (c *client) Registered(public netip.AddrPort)        { c.note("registered " + public.String()) }
func (c *client) Joined(k wire.Key, name string)          { c.note("joined " + name) }
func (c *client) Left(k wire.Key, name, reason string)    { c.note("left " + name + " " + reason) }
func (c *client) Refused(code, message string)            { c.note("refused " + code) }
func (c *client) Unreachable(string)                      { c.note("unreachable") }
func (c *client) Signaled(k wire.Key, n string, b []byte) { c.note("signal " + n + " " + string(b)) }

func (c *client) notes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.log)
}

// count returns how many notes start with prefix.
func (c *client) count(prefix string) int {
	n := 0
	for _, s := range c.notes() {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}

var nextHost = 10

func (w *world) addClient(name string, priv ed25519.PrivateKey) *client {
	w.t.Helper()
	if priv == nil {
		_, priv, _ = ed25519.GenerateKey(rand.Reader)
	}
	nextHost++
	c := &client{name: name, addr: netip.MustParseAddrPort(fmt.Sprintf("198.51.100.%d:4000", nextHost)),
		key: wire.Key(priv.Public().(ed25519.PublicKey)), done: make(chan error, 1)}
	rc, err := rvclient.New(rvclient.Options{Name: name, Identity: priv, Observer: c, Heartbeat: 10 * time.Second,
		Rendezvous: w.rvAddr.String(),
		Send:       func(b []byte) { w.send(dgram{from: c.addr, to: w.rvAddr, b: slices.Clone(b)}) }})
	if err != nil {
		w.t.Fatal(err)
	}
	c.Client = rc
	w.mu.Lock()
	w.clients[c.addr] = c
	w.mu.Unlock()
	ctx, cancel := context.WithCancel(w.ctx)
	w.t.Cleanup(cancel)
	w.wg.Add(1)
	go func() { defer w.wg.Done(); c.done <- rc.Run(ctx) }()
	return c
}

// settle lets the bubble run until every goroutine is blocked.
func settle() { synctest.Wait() }

func TestRegisterAndPresence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		a := w.addClient("alice", nil)
		time.Sleep(time.Second)
		b := w.addClient("bob", nil)
		time.Sleep(time.Second)
		settle()
		if !a.IsRegistered() || !b.IsRegistered() {
			t.Fatalf("registered: alice %v bob %v", a.IsRegistered(), b.IsRegistered())
		}
		if a.count("joined bob") != 1 || b.count("joined alice") != 1 {
			t.Fatalf("presence: alice %v; bob %v", a.notes(), b.notes())
		}
		if got := a.Online(); len(got) != 1 || got[0].Name != "bob" || got[0].Key != b.key {
			t.Fatalf("alice's online view: %+v", got)
		}
		// Ten minutes of heartbeats keep both registered, nothing else happens.
		time.Sleep(10 * time.Minute)
		settle()
		if a.count("registered") != 1 || a.count("left") != 0 || w.srv.Online() == nil || len(w.srv.Online()) != 2 {
			t.Fatalf("after 10 min: alice %v, server online %v", a.notes(), w.srv.Online())
		}
		// Bob leaves: alice sees it once, as a quit.
		b.Leave()
		time.Sleep(time.Second)
		settle()
		if a.count("left bob quit") != 1 || a.IsOnline(b.key) {
			t.Fatalf("after bob's leave: %v", a.notes())
		}
	})
}

func TestRendezvousRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		a := w.addClient("alice", nil)
		b := w.addClient("bob", nil)
		time.Sleep(time.Second)
		w.restartRendezvous()
		start := time.Now()
		for a.count("registered") < 2 || b.count("registered") < 2 {
			time.Sleep(100 * time.Millisecond)
			if time.Since(start) > 15*time.Second {
				t.Fatalf("not re-registered within a heartbeat and a half: alice %v bob %v", a.notes(), b.notes())
			}
		}
		time.Sleep(5 * time.Second)
		settle()
		// Nobody was reported gone: the snapshot after the restart has both.
		if a.count("left") != 0 || !a.IsOnline(b.key) {
			t.Fatalf("alice after the restart: %v", a.notes())
		}
	})
}

func TestLostPresenceEventResynced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		a := w.addClient("alice", nil)
		time.Sleep(time.Second)
		// Lose every Presence to alice: she must learn of bob from a snapshot.
		w.setDrop(func(d dgram) bool {
			return d.to == a.addr && len(d.b) > 2 && wire.IsProtocol(d.b) && wire.Type(d.b[2]) == wire.TypePresence
		})
		b := w.addClient("bob", nil)
		time.Sleep(time.Second)
		settle()
		if a.IsOnline(b.key) {
			t.Fatal("alice saw bob although his join was dropped")
		}
		time.Sleep(15 * time.Second) // one heartbeat reveals the gap
		settle()
		if !a.IsOnline(b.key) || a.count("joined bob") != 1 {
			t.Fatalf("alice never resynced: %v", a.notes())
		}
	})
}

func TestRefusedOnceAndFatal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		w.addClient("alice", nil)
		time.Sleep(time.Second)
		dup := w.addClient("alice", nil) // another key, same name
		var err error
		select {
		case err = <-dup.done:
		case <-time.After(time.Minute):
			t.Fatal("Run did not end after name_taken")
		}
		if err == nil || !strings.Contains(err.Error(), "taken") {
			t.Fatalf("Run: %v", err)
		}
		time.Sleep(10 * time.Second) // retransmitted Registers get more refusals
		settle()
		if n := dup.count("refused name_taken"); n != 1 {
			t.Fatalf("refused reported %d times: %v", n, dup.notes())
		}
	})
}

func TestSpoofedRefusalIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		a := w.addClient("alice", nil)
		time.Sleep(time.Second)
		for _, b := range [][]byte{
			wire.Marshal(&wire.Error{Code: wire.CodeNameTaken, Request: wire.TypeRegister, Message: "spoofed"}),
			wire.Marshal(&wire.Error{Code: wire.CodeVersion, Message: "spoofed"}),
			{wire.Magic, wire.Version + 1, byte(wire.TypeRegistered)},
		} {
			w.send(dgram{from: w.rvAddr, to: a.addr, b: b})
		}
		time.Sleep(time.Second)
		settle()
		if !a.IsRegistered() || a.count("refused") != 0 {
			t.Fatalf("spoofed refusals acted on: %v", a.notes())
		}
		select {
		case err := <-a.done:
			t.Fatalf("Run ended: %v", err)
		default:
		}
	})
}

func TestLookup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		a := w.addClient("alice", nil)
		b := w.addClient("bob", nil)
		time.Sleep(time.Second)
		ctx := context.Background()
		r, err := a.Lookup(ctx, "BOB", wire.Key{})
		if err != nil || r.Status != wire.LookupOnline || r.Key != b.key || r.Name != "bob" {
			t.Fatalf("lookup bob: %+v, %v", r, err)
		}
		if r, err := a.Lookup(ctx, "nobody", wire.Key{}); err != nil || r.Status != wire.LookupUnknown {
			t.Fatalf("lookup nobody: %+v, %v", r, err)
		}
		if n, err := a.NameOf(ctx, b.key); err != nil || n != "bob" {
			t.Fatalf("NameOf(bob) = %q, %v", n, err)
		}
		b.Leave()
		time.Sleep(time.Second)
		if r, err := a.Lookup(ctx, "bob", wire.Key{}); err != nil || r.Status != wire.LookupOffline {
			t.Fatalf("lookup bob after leave: %+v, %v", r, err)
		}
		// A lookup with the rendezvous silent gives up after 10 s.
		w.setDrop(func(dgram) bool { return true })
		start := time.Now()
		if _, err := a.Lookup(ctx, "bob", wire.Key{}); !errors.Is(err, rvclient.ErrLookupTimeout) || time.Since(start) != 10*time.Second {
			t.Fatalf("lookup with the rendezvous silent: %v after %v", err, time.Since(start))
		}
	})
}

func TestUnreachableThenRegisters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		w.setDrop(func(d dgram) bool { return true })
		a := w.addClient("alice", nil)
		time.Sleep(14 * time.Second)
		settle()
		if a.count("unreachable") != 1 || a.IsRegistered() {
			t.Fatalf("after 14 s of silence: %v", a.notes())
		}
		w.setDrop(nil)
		time.Sleep(5 * time.Second)
		settle()
		if !a.IsRegistered() || a.count("unreachable") != 1 {
			t.Fatalf("after the rendezvous came back: %v", a.notes())
		}
	})
}

func TestSignals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		a := w.addClient("alice", nil)
		b := w.addClient("bob", nil)
		time.Sleep(time.Second)
		if !a.Signal(b.key, []byte("offer")) {
			t.Fatal("Signal refused while registered")
		}
		time.Sleep(time.Second)
		settle()
		if b.count("signal alice offer") != 1 {
			t.Fatalf("bob: %v", b.notes())
		}
	})
}
