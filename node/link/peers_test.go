package link

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"natchat/wire"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *fakeClock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// recorder collects OnPath reports.
type recorder struct {
	mu  sync.Mutex
	got []pathEvent
}

func (r *recorder) onPath(k wire.Key, p Path) {
	r.mu.Lock()
	r.got = append(r.got, pathEvent{k, p})
	r.mu.Unlock()
}

func (r *recorder) kinds() []Kind {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ks []Kind
	for _, e := range r.got {
		ks = append(ks, e.path.Kind)
	}
	return ks
}

func kindsEqual(a []Kind, b ...Kind) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestTrustWindowEdge: the direct path is trusted for exactly TrustWindow
// after it came up or last delivered a packet.
func TestTrustWindowEdge(t *testing.T) {
	var relayed atomic.Int64
	clock := newFakeClock()
	c := New(Options{Local: key(1), Now: clock.Now, SendRelay: func(wire.Key, []byte) error { relayed.Add(1); return nil }})
	defer c.Close()
	d := &fakeDirect{}
	to := Addr{Key: key(2)}
	c.Open(key(2))
	c.SetDirect(key(2), d, "203.0.113.7:4000", 0)
	clock.Advance(TrustWindow - 1)
	c.WriteTo([]byte("a"), to)
	if relayed.Load() != 0 {
		t.Fatal("relayed within the trust window")
	}
	c.DeliverDirect(key(2), []byte("ack")) // renews from now
	clock.Advance(TrustWindow - 1)
	c.WriteTo([]byte("b"), to)
	if relayed.Load() != 0 {
		t.Fatal("relayed within the renewed trust window")
	}
	clock.Advance(1)
	c.WriteTo([]byte("c"), to)
	if relayed.Load() != 1 || len(d.got) != 3 {
		t.Fatalf("at the window's end: relayed %d, direct %d; want 1, 3", relayed.Load(), len(d.got))
	}
	// A packet from the relay renews nothing.
	c.Deliver(key(2), []byte("via relay"))
	c.WriteTo([]byte("d"), to)
	if relayed.Load() != 2 {
		t.Fatalf("relayed %d after a relayed packet, want 2", relayed.Load())
	}
}

// TestForgetThenStrayPacket is the bug of issue 7: after a peer left, a
// stray QUIC packet to it (its CONNECTION_CLOSE) went through the relay but
// brought the peer back, reporting "path relay" after "peer_left".
func TestForgetThenStrayPacket(t *testing.T) {
	var rec recorder
	var relayed atomic.Int64
	c := New(Options{Local: key(1), RelayRemote: "rv:3478", OnPath: rec.onPath,
		SendRelay: func(wire.Key, []byte) error { relayed.Add(1); return nil }})
	defer c.Close()
	to := Addr{Key: key(2)}
	c.Open(key(2))
	c.Open(key(2)) // tracked already: nothing
	c.SetDirect(key(2), &fakeDirect{}, "203.0.113.7:4000", 0)
	c.Forget(key(2))
	c.Forget(key(2)) // untracked: nothing
	if !kindsEqual(rec.kinds(), Relay, Direct, None) {
		t.Fatalf("paths = %v, want relay, direct, none", rec.kinds())
	}
	if c.Peers() != 0 || c.PathOf(key(2)).Kind != None {
		t.Fatalf("after Forget: %d peers, path %v", c.Peers(), c.PathOf(key(2)))
	}
	// The stray close still goes out, through the relay (the direct path
	// went with the peer), and reports nothing.
	if n, err := c.WriteTo([]byte("close"), to); err != nil || n != 5 || relayed.Load() != 1 {
		t.Fatalf("WriteTo after Forget = %d, %v; relayed %d", n, err, relayed.Load())
	}
	// A direct path coming up late does not bring the peer back either.
	if c.SetDirect(key(2), &fakeDirect{}, "203.0.113.7:4000", 0) {
		t.Fatal("SetDirect on a forgotten peer = true")
	}
	// Packets from it are still handed up.
	c.DeliverDirect(key(2), []byte("late"))
	b := make([]byte, 16)
	if n, from, err := c.ReadFrom(b); err != nil || string(b[:n]) != "late" || from.(Addr).Key != key(2) {
		t.Fatalf("ReadFrom = %q, %v, %v", b[:n], from, err)
	}
	if !kindsEqual(rec.kinds(), Relay, Direct, None) || c.Peers() != 0 {
		t.Fatalf("after stray packets: paths %v, %d peers", rec.kinds(), c.Peers())
	}
	// Talking to it again starts over on the relay.
	c.Open(key(2))
	if !kindsEqual(rec.kinds(), Relay, Direct, None, Relay) || c.PathOf(key(2)).Remote != "rv:3478" {
		t.Fatalf("after reopening: paths %v, PathOf %+v", rec.kinds(), c.PathOf(key(2)))
	}
}

func TestSetDirectReportsChangesOnly(t *testing.T) {
	var rec recorder
	c := New(Options{Local: key(1), OnPath: rec.onPath, SendRelay: func(wire.Key, []byte) error { return nil }})
	defer c.Close()
	if c.SetDirect(key(2), nil, "", 0) {
		t.Fatal("SetDirect on a peer never opened = true")
	}
	c.Open(key(2))
	c.SetDirect(key(2), nil, "", 0)                               // relay already
	c.SetDirect(key(2), &fakeDirect{}, "a:1", 0)                  // direct
	c.SetDirect(key(2), &fakeDirect{}, "a:1", 0)                  // same path: renews trust only
	c.SetDirect(key(2), &fakeDirect{}, "a:1", 5*time.Millisecond) // new RTT
	if !kindsEqual(rec.kinds(), Relay, Direct, Direct) {
		t.Fatalf("paths = %v, want relay, direct, direct", rec.kinds())
	}
}

// TestOnPathReentrant: OnPath may call back into the Conn; a change made
// there is reported after the call that made it returns.
func TestOnPathReentrant(t *testing.T) {
	var c *Conn
	var rec recorder
	var inside atomic.Bool
	c = New(Options{Local: key(1), SendRelay: func(wire.Key, []byte) error { return nil },
		OnPath: func(k wire.Key, p Path) {
			if !inside.CompareAndSwap(false, true) {
				t.Error("OnPath called from within OnPath")
			}
			defer inside.Store(false)
			rec.onPath(k, p)
			if got := c.PathOf(k); p.Kind == Relay && got.Kind != Relay {
				t.Errorf("PathOf in OnPath = %v", got)
			}
			if p.Kind == Relay {
				c.SetDirect(k, &fakeDirect{}, "a:1", 0) // as a punch that finds a path at once
			}
		}})
	defer c.Close()
	done := make(chan struct{})
	go func() { c.Open(key(2)); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("OnPath calling the Conn deadlocked")
	}
	if !kindsEqual(rec.kinds(), Relay, Direct) {
		t.Fatalf("paths = %v, want relay, direct", rec.kinds())
	}
}

// TestPathEventsInOrder: with changes from many goroutines, OnPath is never
// called twice at once and each peer's reports follow its changes: the
// last report is the peer's path.
func TestPathEventsInOrder(t *testing.T) {
	const peers, flips = 8, 200
	var running atomic.Int32
	var mu sync.Mutex
	last := make(map[wire.Key]Path)
	seq := make(map[wire.Key][]Kind)
	c := New(Options{Local: key(1), SendRelay: func(wire.Key, []byte) error { return nil },
		OnPath: func(k wire.Key, p Path) {
			if running.Add(1) != 1 {
				t.Error("OnPath calls overlap")
			}
			mu.Lock()
			last[k] = p
			seq[k] = append(seq[k], p.Kind)
			mu.Unlock()
			running.Add(-1)
		}})
	defer c.Close()
	var wg sync.WaitGroup
	for i := range peers {
		k := key(byte(10 + i))
		// One goroutine per peer: its reports alternate.
		wg.Go(func() {
			c.Open(k)
			for j := range flips {
				if j%2 == 0 {
					c.SetDirect(k, &fakeDirect{}, "a:1", 0)
				} else {
					c.SetDirect(k, nil, "", 0)
				}
			}
			c.Forget(k)
		})
		// Two goroutines racing on one peer: the last report wins.
		k2 := key(byte(100 + i))
		c.Open(k2)
		for g := range 2 {
			wg.Go(func() {
				for j := range flips {
					if (j+g)%2 == 0 {
						c.SetDirect(k2, &fakeDirect{}, "a:1", 0)
					} else {
						c.SetDirect(k2, nil, "", 0)
					}
				}
			})
		}
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for i := range peers {
		k := key(byte(10 + i))
		s := seq[k]
		if len(s) != flips+2 || s[0] != Relay || s[len(s)-1] != None {
			t.Fatalf("peer %d: %d reports %v..., want relay, %d alternations, none", i, len(s), s[:min(len(s), 4)], flips)
		}
		for j, kind := range s[1 : len(s)-1] {
			if want := []Kind{Direct, Relay}[j%2]; kind != want {
				t.Fatalf("peer %d: report %d is %v, want %v", i, j+1, kind, want)
			}
		}
		k2 := key(byte(100 + i))
		if last[k2] != c.PathOf(k2) {
			t.Fatalf("racing peer %d: last report %+v, PathOf %+v", i, last[k2], c.PathOf(k2))
		}
	}
	if c.Peers() != peers {
		t.Fatalf("Peers = %d, want %d", c.Peers(), peers)
	}
}

func TestPeersNoLeak(t *testing.T) {
	c := New(Options{Local: key(1), SendRelay: func(wire.Key, []byte) error { return nil }})
	defer c.Close()
	for i := range 1000 {
		k := wire.Key{byte(i), byte(i >> 8)}
		c.Open(k)
		c.WriteTo([]byte("x"), Addr{Key: k})
		c.Forget(k)
		// Stray traffic to and from a forgotten or unknown peer.
		c.WriteTo([]byte("x"), Addr{Key: k})
		c.Deliver(k, []byte("x"))
		c.WriteTo([]byte("x"), Addr{Key: wire.Key{0xff, byte(i), byte(i >> 8)}})
		b := make([]byte, 4)
		c.ReadFrom(b)
	}
	if c.Peers() != 0 {
		t.Fatalf("Peers = %d after every peer was forgotten, want 0", c.Peers())
	}
}

func TestDeliverBuf(t *testing.T) {
	c := New(Options{Local: key(1), SendRelay: func(wire.Key, []byte) error { return nil }, QueueLen: 3})
	defer c.Close()
	c.Open(key(2))
	// A Relayed read whole into a Buf, handed up as its payload in place.
	buf := GetBuf()
	if len(buf.B) != BufSize {
		t.Fatalf("GetBuf: len %d, want BufSize", len(buf.B))
	}
	frame := append(bytes.Repeat([]byte{0xee}, 35), "payload"...)
	buf.B = buf.B[35:copy(buf.B, frame)]
	c.DeliverBuf(key(2), buf, false)
	// B elsewhere than the Buf's storage: copied, so the caller's array
	// may change after.
	foreign := []byte("foreign")
	buf = GetBuf()
	buf.B = foreign
	c.DeliverBuf(key(3), buf, true)
	foreign[0] = 'X'
	// Too long for any Buf: dropped.
	buf = GetBuf()
	buf.B = make([]byte, BufSize+1)
	c.DeliverBuf(key(2), buf, false)
	c.Deliver(key(2), make([]byte, BufSize+1))
	if c.Oversize() != 2 {
		t.Fatalf("Oversize = %d, want 2", c.Oversize())
	}
	// BufSize itself fits.
	c.Deliver(key(2), make([]byte, BufSize))
	c.Deliver(key(2), []byte("queue full"))
	if c.Dropped() != 1 {
		t.Fatalf("Dropped = %d, want 1", c.Dropped())
	}
	b := make([]byte, BufSize)
	for _, want := range []struct {
		from wire.Key
		b    string
	}{{key(2), "payload"}, {key(3), "foreign"}, {key(2), string(make([]byte, BufSize))}} {
		n, from, err := c.ReadFrom(b)
		if err != nil || string(b[:n]) != want.b || from.(Addr).Key != want.from {
			t.Fatalf("ReadFrom = %q, %v, %v; want %q from %v", b[:min(n, 16)], from, err, want.b[:min(len(want.b), 16)], want.from)
		}
	}
	// A short buffer truncates, as a UDP socket's does.
	c.Deliver(key(2), []byte("truncated"))
	if n, _, _ := c.ReadFrom(b[:5]); string(b[:n]) != "trunc" {
		t.Fatalf("short ReadFrom = %q", b[:n])
	}
}

// TestCloseWithQueuedPackets: after Close, reads fail even with packets
// queued, and late deliveries are dropped quietly.
func TestCloseWithQueuedPackets(t *testing.T) {
	c := New(Options{Local: key(1), SendRelay: func(wire.Key, []byte) error { return nil }})
	for range 3 {
		c.Deliver(key(2), []byte("x"))
	}
	c.Close()
	c.Close()
	if _, _, err := c.ReadFrom(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadFrom after Close = %v", err)
	}
	c.Deliver(key(2), []byte("late"))
	c.DeliverBuf(key(2), GetBuf(), true)
	if len(c.in) != 0 {
		t.Fatalf("%d packets queued after Close", len(c.in))
	}
}

// TestDeadlineChangeWakesReader: moving the deadline later while a reader
// waits keeps it waiting for the packet.
func TestDeadlineChangeWakesReader(t *testing.T) {
	c := New(Options{Local: key(1), SendRelay: func(wire.Key, []byte) error { return nil }})
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(time.Hour))
	type res struct {
		n   int
		err error
	}
	got := make(chan res, 1)
	go func() {
		n, _, err := c.ReadFrom(make([]byte, 10))
		got <- res{n, err}
	}()
	c.SetReadDeadline(time.Time{})
	c.Deliver(key(2), []byte("hello"))
	select {
	case r := <-got:
		if r.err != nil || r.n != 5 {
			t.Fatalf("ReadFrom = %d, %v", r.n, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reader did not get the packet")
	}
}
