package link

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"natchat/wire"
)

func key(b byte) wire.Key { return wire.Key{b} }

type sent struct {
	dst wire.Key
	b   []byte
}

func TestRelayFirstThenDirect(t *testing.T) {
	var mu sync.Mutex
	var relayed []sent
	var paths []Path
	c := New(Options{
		Local: key(1),
		SendRelay: func(dst wire.Key, b []byte) error {
			mu.Lock()
			defer mu.Unlock()
			relayed = append(relayed, sent{dst, append([]byte(nil), b...)})
			return nil
		},
		RelayRemote: "rv:3478",
		OnPath:      func(_ wire.Key, p Path) { mu.Lock(); paths = append(paths, p); mu.Unlock() },
	})
	defer c.Close()
	peer := Addr{Key: key(2)}
	c.Open(key(2))
	for i := 0; i < 3; i++ {
		if n, err := c.WriteTo([]byte{byte(i)}, peer); err != nil || n != 1 {
			t.Fatalf("WriteTo = %d, %v", n, err)
		}
	}
	if len(relayed) != 3 || relayed[0].dst != key(2) || relayed[2].b[0] != 2 {
		t.Fatalf("relayed = %+v", relayed)
	}
	if len(paths) != 1 || paths[0].Kind != Relay || paths[0].Remote != "rv:3478" {
		t.Fatalf("paths after first writes = %+v, want one relay event", paths)
	}
	d := &fakeDirect{}
	if !c.SetDirect(key(2), d, "203.0.113.7:4000", 12*time.Millisecond) {
		t.Fatal("SetDirect on an open peer = false")
	}
	if p := c.PathOf(key(2)); p.Kind != Direct || p.Remote != "203.0.113.7:4000" || p.RTT != 12*time.Millisecond {
		t.Fatalf("PathOf = %+v", p)
	}
	c.WriteTo([]byte("x"), peer)
	if len(d.got) != 1 || len(relayed) != 3 {
		t.Fatalf("direct got %d, relayed %d: want the direct path used", len(d.got), len(relayed))
	}
	// A failing direct write falls back to the relay for that packet.
	d.fail = true
	if _, err := c.WriteTo([]byte("y"), peer); err != nil {
		t.Fatal(err)
	}
	if len(relayed) != 4 {
		t.Fatalf("relayed = %d after direct failure, want 4", len(relayed))
	}
	c.SetDirect(key(2), nil, "", 0)
	if p := c.PathOf(key(2)); p.Kind != Relay {
		t.Fatalf("after clearing direct: %+v", p)
	}
	if len(paths) != 3 || paths[1].Kind != Direct || paths[2].Kind != Relay {
		t.Fatalf("paths = %+v", paths)
	}
}

type fakeDirect struct {
	fail bool
	got  [][]byte
}

func (f *fakeDirect) Write(b []byte) error {
	if f.fail {
		return errors.New("no selected pair")
	}
	f.got = append(f.got, append([]byte(nil), b...))
	return nil
}

func TestDeliverReadAndQueueBound(t *testing.T) {
	c := New(Options{Local: key(1), SendRelay: func(wire.Key, []byte) error { return nil }, QueueLen: 2})
	buf := []byte("abc")
	c.Deliver(key(3), buf)
	buf[0] = 'X' // Deliver must have copied
	c.Deliver(key(4), []byte("def"))
	c.Deliver(key(5), []byte("dropped"))
	if c.Dropped() != 1 {
		t.Fatalf("Dropped = %d, want 1", c.Dropped())
	}
	b := make([]byte, 100)
	n, from, err := c.ReadFrom(b)
	if err != nil || string(b[:n]) != "abc" || from.(Addr).Key != key(3) {
		t.Fatalf("ReadFrom = %q %v %v", b[:n], from, err)
	}
	n, from, _ = c.ReadFrom(b)
	if string(b[:n]) != "def" || from.(Addr).Key != key(4) {
		t.Fatalf("second ReadFrom = %q %v", b[:n], from)
	}
}

func TestDeadlineAndClose(t *testing.T) {
	c := New(Options{Local: key(1), SendRelay: func(wire.Key, []byte) error { return nil }})
	c.SetReadDeadline(time.Now().Add(-time.Second))
	if _, _, err := c.ReadFrom(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("past deadline: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() { _, _, err := c.ReadFrom(make([]byte, 10)); errc <- err }()
	// A deadline set while ReadFrom blocks must wake it.
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("blocked read: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("deadline did not wake a blocked ReadFrom")
	}
	c.SetReadDeadline(time.Time{})
	go func() { _, _, err := c.ReadFrom(make([]byte, 10)); errc <- err }()
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake a blocked ReadFrom")
	}
	if _, err := c.WriteTo([]byte("x"), Addr{Key: key(2)}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteTo after Close: %v", err)
	}
}

// pair wires two links together in memory: a's relay path delivers to b and
// back, as the rendezvous would, with an optional filter to lose packets.
type pair struct {
	a, b *Conn
	mu   sync.Mutex
	drop func(n int) bool // called per relayed packet
	nRel int
}

func newPair() *pair {
	p := &pair{}
	p.a = New(Options{Local: key(1), SendRelay: func(dst wire.Key, b []byte) error {
		if !p.lose() {
			p.b.Deliver(key(1), b)
		}
		return nil
	}})
	p.b = New(Options{Local: key(2), SendRelay: func(dst wire.Key, b []byte) error {
		if !p.lose() {
			p.a.Deliver(key(2), b)
		}
		return nil
	}})
	p.a.Open(key(2))
	p.b.Open(key(1))
	return p
}

func (p *pair) lose() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nRel++
	return p.drop != nil && p.drop(p.nRel)
}

type directTo struct {
	to   *Conn
	from wire.Key
	n    int
	mu   sync.Mutex
}

func (d *directTo) Write(b []byte) error {
	d.mu.Lock()
	d.n++
	d.mu.Unlock()
	d.to.DeliverDirect(d.from, b)
	return nil
}

func (d *directTo) count() int { d.mu.Lock(); defer d.mu.Unlock(); return d.n }

func testCert(t *testing.T) tls.Certificate {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}
}

// TestQUICAcrossPathSwitch runs a QUIC stream over two links, moves the
// path from relay to direct and back mid-transfer with relay loss, and
// checks the bytes arrive complete and in order: the session above the link
// does not notice the path.
func TestQUICAcrossPathSwitch(t *testing.T) {
	p := newPair()
	p.drop = func(n int) bool { return n%10 == 0 } // 10% loss on the relay
	ta := &quic.Transport{Conn: p.a}
	tb := &quic.Transport{Conn: p.b}
	defer ta.Close()
	defer tb.Close()
	cert := testCert(t)
	ln, err := tb.Listen(&tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"t"}}, &quic.Config{DisablePathMTUDiscovery: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const total = 256 << 10
	payload := make([]byte, total)
	rand.Read(payload)
	got := make(chan []byte, 1)
	go func() {
		qc, err := ln.Accept(ctx)
		if err != nil {
			got <- nil
			return
		}
		st, err := qc.AcceptStream(ctx)
		if err != nil {
			got <- nil
			return
		}
		b, _ := io.ReadAll(st)
		got <- b
	}()
	qc, err := ta.Dial(ctx, Addr{Key: key(2)}, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"t"}}, &quic.Config{DisablePathMTUDiscovery: true})
	if err != nil {
		t.Fatal(err)
	}
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	da := &directTo{to: p.b, from: key(1)}
	db := &directTo{to: p.a, from: key(2)}
	chunk := total / 4
	for i := 0; i < 4; i++ {
		switch i {
		case 1: // upgrade to direct
			p.a.SetDirect(key(2), da, "direct-b", time.Millisecond)
			p.b.SetDirect(key(1), db, "direct-a", time.Millisecond)
		case 3: // the direct path dies: back to the relay
			p.a.SetDirect(key(2), nil, "", 0)
			p.b.SetDirect(key(1), nil, "", 0)
		}
		if _, err := st.Write(payload[i*chunk : (i+1)*chunk]); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	select {
	case b := <-got:
		if !bytes.Equal(b, payload) {
			t.Fatalf("received %d bytes, want the %d sent, intact", len(b), total)
		}
	case <-ctx.Done():
		t.Fatal("transfer did not finish")
	}
	if da.count() == 0 {
		t.Fatal("the direct path carried nothing")
	}
	qc.CloseWithError(0, "")
}

// TestTrustWindow: a direct path that stops delivering is doubled by the
// relay once the trust window passes, and trusted again by a packet
// received on it.
func TestTrustWindow(t *testing.T) {
	var mu sync.Mutex
	relayed := 0
	clock := newFakeClock()
	c := New(Options{Local: key(1), Now: clock.Now, SendRelay: func(wire.Key, []byte) error {
		mu.Lock()
		relayed++
		mu.Unlock()
		return nil
	}})
	defer c.Close()
	d := &fakeDirect{}
	peer := Addr{Key: key(2)}
	c.Open(key(2))
	c.SetDirect(key(2), d, "203.0.113.7:4000", time.Millisecond)
	c.WriteTo([]byte("a"), peer)
	if relayed != 0 || len(d.got) != 1 {
		t.Fatalf("fresh direct path: relayed %d, direct %d; want 0, 1", relayed, len(d.got))
	}
	// TrustWindow passes with nothing received.
	clock.Advance(TrustWindow)
	c.WriteTo([]byte("b"), peer)
	if relayed != 1 || len(d.got) != 2 {
		t.Fatalf("silent direct path: relayed %d, direct %d; want 1, 2 (both paths)", relayed, len(d.got))
	}
	c.DeliverDirect(key(2), []byte("ack"))
	c.WriteTo([]byte("c"), peer)
	if relayed != 1 || len(d.got) != 3 {
		t.Fatalf("after a direct packet: relayed %d, direct %d; want 1, 3", relayed, len(d.got))
	}
}
