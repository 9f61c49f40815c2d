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
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"natchat/ctrl"
	"natchat/node/rvclient"
	"natchat/rendezvous"
	"natchat/wire"
)

// world is an in-memory network of one rendezvous (the real server, driven
// through Handle) and clients, run inside a synctest bubble: time is fake
// and every datagram is delivered by one goroutine, in order.
type world struct {
	t       *testing.T
	rvAddr  netip.AddrPort
	altAddr netip.AddrPort // the rendezvous's second STUN address; invalid: none
	dir     string
	q       chan dgram
	ctx     context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup

	mu      sync.Mutex
	srv     *rendezvous.Server
	store   *rendezvous.Store
	key     ctrl.ServerKey
	stopRV  func()
	clients map[netip.AddrPort]*client
	drop    func(d dgram) bool
}

type dgram struct {
	from, to netip.AddrPort
	b        []byte
	spoofed  bool // sent by the test as if from the rendezvous
}

// rvConn is the rendezvous's socket: writes go into the world; reads (by
// Run, which the test does not feed: it calls Handle) wait for Close.
type rvConn struct {
	w      *world
	addr   netip.AddrPort // its own address: rvAddr, or altAddr
	closed chan struct{}
	once   *sync.Once
}

func (c rvConn) ReadFrom([]byte) (int, net.Addr, error) {
	<-c.closed
	return 0, nil, net.ErrClosed
}
func (c rvConn) WriteTo(b []byte, a net.Addr) (int, error) {
	c.w.send(dgram{from: c.addr, to: a.(*net.UDPAddr).AddrPort(), b: slices.Clone(b)})
	return len(b), nil
}
func (c rvConn) Close() error                     { c.once.Do(func() { close(c.closed) }); return nil }
func (c rvConn) LocalAddr() net.Addr              { return net.UDPAddrFromAddrPort(c.addr) }
func (rvConn) SetDeadline(time.Time) error        { return nil }
func (rvConn) SetReadDeadline(time.Time) error    { return nil }
func (rvConn) SetWriteDeadline(t time.Time) error { return nil }

func newWorld(t *testing.T) *world { return newWorldWith(t, false) }

// newWorldWith makes a world whose rendezvous has a second STUN address,
// 192.0.2.1:3479, when alt is true.
func newWorldWith(t *testing.T, alt bool) *world {
	w := &world{t: t, rvAddr: netip.MustParseAddrPort("192.0.2.1:3478"), dir: t.TempDir(),
		q: make(chan dgram, 4096), clients: map[netip.AddrPort]*client{}}
	if alt {
		w.altAddr = netip.MustParseAddrPort("192.0.2.1:3479")
	}
	w.ctx, w.stop = context.WithCancel(context.Background())
	var err error
	if w.key, err = ctrl.NewServerKey(); err != nil {
		t.Fatal(err)
	}
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
		w.stopRV()
		w.mu.Unlock()
	})
	return w
}

// startRendezvous runs a rendezvous (its registration workers, presence
// and sweeps; datagrams reach it through Handle).
func (w *world) startRendezvous() {
	st, err := rendezvous.OpenStore(w.dir)
	if err != nil {
		w.t.Fatal(err)
	}
	conn := rvConn{w: w, addr: w.rvAddr, closed: make(chan struct{}), once: new(sync.Once)}
	opts := rendezvous.Options{Conn: conn, Store: st, DefaultRoom: rendezvous.DefaultRoom,
		Expiry: 30 * time.Second, Heartbeat: 10 * time.Second, Key: w.key}
	if w.altAddr.IsValid() {
		opts.AltSTUN = rvConn{w: w, addr: w.altAddr, closed: make(chan struct{}), once: new(sync.Once)}
	}
	srv, err := rendezvous.New(opts)
	if err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Run(ctx) }()
	w.srv, w.store = srv, st
	w.stopRV = func() { cancel(); <-done; st.Close() }
}

// restartRendezvous replaces the server by a new one on the same store
// and key: it has forgotten every session.
func (w *world) restartRendezvous() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopRV()
	w.startRendezvous()
}

func (w *world) send(d dgram) {
	select {
	case w.q <- d:
	default: // a full queue loses the datagram, like UDP
	}
}

// spoof sends b to a client as if from the rendezvous's address.
func (w *world) spoof(to netip.AddrPort, b []byte) {
	w.send(dgram{from: w.rvAddr, to: to, b: slices.Clone(b), spoofed: true})
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
	case d.to == w.altAddr:
		if srv != nil {
			srv.HandleAlt(d.b, d.from)
		}
	case c != nil:
		if wire.IsSTUN(d.b) {
			c.stunSeen(c.HandleSTUN(d.b, d.from))
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
	// altSrc, when valid, is where the client's datagrams to another
	// address than the rendezvous's seem to come from: a NAT whose
	// mapping depends on the destination (netcheck_test.go). Guarded by
	// world.mu.
	altSrc netip.AddrPort
	key    wire.Key
	done   chan error
	stun   struct{ mine, others atomic.Int32 } // HandleSTUN's answers

	mu  sync.Mutex
	log []string // "registered", "joined NAME", "left NAME REASON", "refused CODE", "unreachable", "signal NAME BODY"
}

func (c *client) note(s string) {
	c.mu.Lock()
	c.log = append(c.log, s)
	c.mu.Unlock()
}

func (c *client) Registered(public netip.AddrPort)                { c.note("registered " + public.String()) }
func (c *client) Joined(k wire.Key, name string)                  { c.note("joined " + name) }
func (c *client) Left(k wire.Key, name, reason string)            { c.note("left " + name + " " + reason) }
func (c *client) Refused(code, message string)                    { c.note("refused " + code) }
func (c *client) Unreachable(string)                              { c.note("unreachable") }
func (c *client) Signaled(k wire.Key, n string, b []byte)         { c.note("signal " + n + " " + string(b)) }
func (c *client) ServerKeyChanged(pinned, offered ctrl.PublicKey) { c.note("server key changed") }
func (c *client) ServerKeyLearned(k ctrl.PublicKey)               { c.note("server key learned") }

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
	return w.addClientWith(name, priv, ctrl.PublicKey{})
}

// addClientKey adds a client that knows (pinned) serverKey.
func (w *world) addClientKey(name string, serverKey ctrl.PublicKey) *client {
	w.t.Helper()
	return w.addClientWith(name, nil, serverKey)
}

func (w *world) addClientWith(name string, priv ed25519.PrivateKey, serverKey ctrl.PublicKey) *client {
	w.t.Helper()
	if priv == nil {
		_, priv, _ = ed25519.GenerateKey(rand.Reader)
	}
	nextHost++
	c := &client{name: name, addr: netip.MustParseAddrPort(fmt.Sprintf("198.51.100.%d:4000", 1+nextHost%254)), // unique within a world
		key: wire.Key(priv.Public().(ed25519.PublicKey)), done: make(chan error, 1)}
	rc, err := rvclient.New(rvclient.Options{Name: name, Identity: priv, Observer: c, Heartbeat: 10 * time.Second,
		Rendezvous: w.rvAddr.String(), ServerKey: serverKey, Addr: w.rvAddr,
		Send:   func(b []byte) { w.send(dgram{from: w.addrOf(c), to: w.rvAddr, b: slices.Clone(b)}) },
		SendTo: func(b []byte, to netip.AddrPort) { w.send(dgram{from: w.srcFor(c, to), to: to, b: slices.Clone(b)}) }})
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

// addrOf returns c's address now.
func (w *world) addrOf(c *client) netip.AddrPort {
	w.mu.Lock()
	defer w.mu.Unlock()
	return c.addr
}

// rebind gives c another public address, as a NAT that dropped its
// mapping does: datagrams to the old one go nowhere. It returns the old
// and the new address. The test goroutine alone may read c.addr after it.
func (w *world) rebind(c *client) (old, now netip.AddrPort) {
	w.mu.Lock()
	defer w.mu.Unlock()
	old = c.addr
	now = netip.AddrPortFrom(old.Addr(), old.Port()+1)
	delete(w.clients, old)
	c.addr = now
	w.clients[now] = c
	return old, now
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
		// Lose every sealed datagram to alice while bob joins: she must
		// learn of him from a snapshot.
		w.setDrop(func(d dgram) bool {
			return d.to == a.addr && wire.IsProtocol(d.b) && wire.Type(d.b[2]) == wire.TypeSealed
		})
		b := w.addClient("bob", nil)
		time.Sleep(time.Second)
		w.setDrop(nil)
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

// TestSpoofedFromRendezvousIgnored sends a registered client datagrams
// from the rendezvous's address that are not the rendezvous's: every
// message type in the clear, sealed garbage, an old version, a refusal. It
// stays registered, with its presence and names unchanged; an
// unauthenticated "not registered" costs it one heartbeat, answered.
func TestSpoofedFromRendezvousIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		a := w.addClient("alice", nil)
		b := w.addClient("bob", nil)
		time.Sleep(time.Second)
		settle()
		before := a.notes()
		session := a.RelaySession()
		mallory := wire.Key{0x66}
		for _, d := range [][]byte{
			wire.Marshal(&wire.Error{Code: wire.CodeNameTaken, Request: wire.TypeHandshake, Message: "spoofed"}),
			wire.Marshal(&wire.Error{Code: wire.CodeVersion, Message: "spoofed"}),
			wire.Marshal(&wire.Error{Code: wire.CodeNotRegistered, Request: wire.TypeSealed, Message: "spoofed"}),
			{wire.Magic, wire.Version + 1, byte(wire.TypeError), 0, 1, 0, 0, 0, 0, 0, 0},
			wire.Marshal(&wire.HandshakeReply{Noise: make([]byte, 80)}),
			wire.Marshal(&wire.CookieReply{Nonce: 1}),
			wire.Marshal(&wire.Sealed{Session: *session, Counter: 1 << 40, Box: make([]byte, 40)}),
			wire.Marshal(&wire.Sealed{Session: wire.SessionID{1}, Counter: 7, Box: make([]byte, 40)}),
			append([]byte{wire.Magic, wire.Version, byte(wire.TypePresence)}, wire.AppendInner(nil, &wire.Presence{Seq: 1 << 31,
				Changes: []wire.Change{{Kind: wire.PresenceLeft, Key: b.key, Name: "bob"}}})[1:]...),
			append([]byte{wire.Magic, wire.Version, byte(wire.TypeSignaled)}, wire.AppendInner(nil, &wire.Signaled{Src: mallory, Name: "bob"})[1:]...),
		} {
			w.send(dgram{from: w.rvAddr, to: a.addr, b: d})
		}
		time.Sleep(5 * time.Second)
		settle()
		if !a.IsRegistered() || *a.RelaySession() != *session {
			t.Fatalf("the session changed: registered %v", a.IsRegistered())
		}
		if got := a.notes(); len(got) != len(before) {
			t.Fatalf("spoofed datagrams acted on: %v", got[len(before):])
		}
		if !a.IsOnline(b.key) {
			t.Fatal("a spoofed presence took bob offline")
		}
		if n, ok := a.KnownName(mallory); ok {
			t.Fatalf("a spoofed Signaled named mallory's key %q", n)
		}
		select {
		case err := <-a.done:
			t.Fatalf("Run ended: %v", err)
		default:
		}
	})
}

// TestServerKey: a client that knows the rendezvous's key registers; one
// pinned to another key does not (it says so once, and keeps trying); one
// that knew none learns it on its first handshake.
func TestServerKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		fresh := w.addClient("alice", nil)
		known := w.addClientKey("bob", w.key.Public)
		other, _ := ctrl.NewServerKey()
		wrong := w.addClientKey("carol", other.Public)
		time.Sleep(20 * time.Second)
		settle()
		if !fresh.IsRegistered() || fresh.count("server key learned") != 1 {
			t.Fatalf("first contact: %v", fresh.notes())
		}
		if !known.IsRegistered() || known.count("server key") != 0 {
			t.Fatalf("known key: %v", known.notes())
		}
		if wrong.IsRegistered() || wrong.count("server key changed") != 1 {
			t.Fatalf("pinned to another key: registered %v, %v", wrong.IsRegistered(), wrong.notes())
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

// TestSilentAfterRegistering: a rendezvous that stops answering a
// registered client is reported once (unreachable: the front end shows
// it as reconnecting) when three heartbeats went unanswered, and
// Registered follows when it answers again.
func TestSilentAfterRegistering(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		a := w.addClient("alice", nil)
		time.Sleep(time.Second)
		settle()
		if !a.IsRegistered() || a.count("registered") != 1 {
			t.Fatalf("not registered: %v", a.notes())
		}
		w.setDrop(func(d dgram) bool { return true })
		time.Sleep(10 * time.Minute)
		settle()
		if a.count("unreachable") != 1 || a.IsRegistered() {
			t.Fatalf("after minutes of silence: %v", a.notes())
		}
		w.setDrop(nil)
		time.Sleep(time.Minute)
		settle()
		if !a.IsRegistered() || a.count("registered") != 2 || a.count("unreachable") != 1 {
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

// TestRebinding: alice's NAT gives her another public address. Her next
// heartbeat comes from there: the rendezvous challenges the new address
// (sending it nothing larger than what came from it) and answers the
// heartbeat at the old one; alice answers the challenge, and from then on
// everything reaches her at the new address, within one heartbeat, without
// registering again.
func TestRebinding(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		tp := newTap(w)
		a := w.addClient("alice", nil)
		b := w.addClient("bob", nil)
		time.Sleep(time.Second)
		settle()
		session := *a.RelaySession()
		mark := tp.mark()
		_, moved := w.rebind(a)
		start := time.Now()
		for a.count("signal bob hi") == 0 {
			b.Signal(a.key, []byte("hi"))
			time.Sleep(200 * time.Millisecond)
			if time.Since(start) > 12*time.Second {
				t.Fatalf("bob's signal did not reach alice at her new address within a heartbeat: %v", a.notes())
			}
		}
		t.Logf("alice reachable at her new address after %v", time.Since(start))
		if !a.IsRegistered() || *a.RelaySession() != session || a.count("registered") != 1 {
			t.Fatalf("alice registered again: %v", a.notes())
		}
		// Until alice's second datagram from there (her answer to the
		// challenge), the new address got no more bytes than it sent.
		var in, out, from int
		for _, d := range tp.since(mark, func(d dgram) bool { return d.from == moved || d.to == moved }) {
			if d.from == moved {
				if from++; from == 2 {
					break
				}
				in += len(d.b)
			} else {
				out += len(d.b)
			}
		}
		if from < 2 || out > in {
			t.Errorf("before the path was validated: %d bytes to the new address for %d from it (%d datagrams from it)", out, in, from)
		}
		time.Sleep(25 * time.Second)
		settle()
		if !a.IsRegistered() || a.count("registered") != 1 || !a.IsOnline(b.key) {
			t.Errorf("after two more heartbeats: %v", a.notes())
		}
	})
}

// TestBadCookieStartsOver: the rendezvous restarts between alice's Hello
// and her Handshake, so her cookie is no longer good: its bad_cookie
// error, believed when no answer to the handshake follows, sends her back
// to Hello, and she registers within a couple of seconds.
func TestBadCookieStartsOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		tp := newTap(w)
		hold := true
		var mu sync.Mutex
		tp.setDrop(func(d dgram) bool {
			mu.Lock()
			defer mu.Unlock()
			return hold && d.to == w.rvAddr && typeOf(d.b) == wire.TypeHandshake
		})
		a := w.addClient("alice", nil)
		time.Sleep(100 * time.Millisecond)
		settle()
		w.restartRendezvous() // a new cookie secret
		mu.Lock()
		hold = false
		mu.Unlock()
		mark := tp.mark()
		start := time.Now()
		for !a.IsRegistered() && time.Since(start) < 10*time.Second {
			time.Sleep(50 * time.Millisecond)
		}
		if !a.IsRegistered() || time.Since(start) > 3*time.Second {
			t.Fatalf("alice registered %v after %v: %v", a.IsRegistered(), time.Since(start), a.notes())
		}
		errs := tp.since(mark, func(d dgram) bool { return d.to == a.addr && typeOf(d.b) == wire.TypeError })
		if len(errs) == 0 {
			t.Fatal("no bad_cookie came: the test did not test")
		}
	})
}
