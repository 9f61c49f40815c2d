package vnetlab

import (
	"net"
	"testing"
	"testing/synctest"
	"time"
)

func TestNATString(t *testing.T) {
	for k, want := range map[NAT]string{
		NoNAT: "public", FullCone: "full cone", AddrRestricted: "address-restricted",
		PortRestricted: "port-restricted", Symmetric: "symmetric", NAT(9): "NAT(9)",
	} {
		if got := k.String(); got != want {
			t.Errorf("NAT(%d).String() = %q, want %q", int(k), got, want)
		}
		if (k.NATType() == nil) != (k == NoNAT || k == NAT(9)) {
			t.Errorf("%v.NATType() = %+v", k, k.NATType())
		}
	}
}

// recv reads one datagram from c within d.
func recv(t *testing.T, c net.PacketConn, d time.Duration) (string, *net.UDPAddr, bool) {
	t.Helper()
	buf := make([]byte, 1500)
	if err := c.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	n, from, err := c.ReadFrom(buf)
	if err != nil {
		return "", nil, false
	}
	return string(buf[:n]), from.(*net.UDPAddr), true
}

func send(t *testing.T, c net.PacketConn, msg string, to net.Addr) {
	t.Helper()
	if _, err := c.WriteTo([]byte(msg), to); err != nil {
		t.Fatal(err)
	}
}

// A host behind a port-restricted NAT reaches a public host after the WAN
// delay, from the NAT's address; the reply comes back; a stranger (another
// port) is filtered; a cut drops and counts; healing lets packets through.
func TestWorld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := NewWorld(t, Impairment{Delay: 30 * time.Millisecond}, 1)
		pub := w.PublicHost("1.2.3.4")
		lan := w.LAN(PortRestricted)
		h := lan.Host()
		if lan.PublicIP != "1.2.3.11" || h.IP != "10.0.1.2" {
			t.Fatalf("LAN at %s, host at %s; want 1.2.3.11 and 10.0.1.2", lan.PublicIP, h.IP)
		}
		if p := w.LAN(NoNAT).Host(); p.IP != "1.2.3.102" {
			t.Errorf("first public LAN host at %s, want 1.2.3.102", p.IP)
		}
		w.Start()
		server, stranger, client := pub.Listen(3478), pub.Listen(3479), h.Listen(0)
		defer server.Close()
		defer stranger.Close()
		defer client.Close()

		t0 := time.Now()
		send(t, client, "hello", server.LocalAddr())
		msg, from, ok := recv(t, server, time.Second)
		if !ok || msg != "hello" {
			t.Fatalf("server got %q, %v", msg, ok)
		}
		if took := time.Since(t0); took < 30*time.Millisecond {
			t.Errorf("crossed the WAN in %v, want ≥ 30 ms", took)
		}
		if from.IP.String() != lan.PublicIP {
			t.Errorf("source %v, want the NAT's address %s", from, lan.PublicIP)
		}
		send(t, server, "reply", from)
		if msg, _, ok := recv(t, client, time.Second); !ok || msg != "reply" {
			t.Fatalf("client got %q, %v", msg, ok)
		}
		send(t, stranger, "stranger", from)
		if msg, _, ok := recv(t, client, time.Second); ok {
			t.Errorf("port-restricted NAT let %q in from another port", msg)
		}

		w.Cut(func(src, _ *net.UDPAddr, payload []byte) bool {
			return src.IP.String() == lan.PublicIP && string(payload) == "cut me"
		})
		send(t, client, "cut me", server.LocalAddr())
		if msg, _, ok := recv(t, server, time.Second); ok {
			t.Errorf("cut let %q through", msg)
		}
		if lost, cut := w.Drops(); lost != 0 || cut != 1 {
			t.Errorf("Drops() = %d lost, %d cut; want 0, 1", lost, cut)
		}
		w.Cut(nil)
		send(t, client, "healed", server.LocalAddr())
		if msg, _, ok := recv(t, server, time.Second); !ok || msg != "healed" {
			t.Errorf("after healing, server got %q, %v", msg, ok)
		}
	})
}

// Loss 1 loses every WAN packet and counts it; a LAN is clean.
func TestLoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := NewWorld(t, Impairment{Loss: 1}, 2)
		lan := w.LAN(FullCone)
		a, b := lan.Host(), lan.Host()
		pub := w.PublicHost("1.2.3.5")
		w.Start()
		ca, cb, cp := a.Listen(0), b.Listen(0), pub.Listen(0)
		defer ca.Close()
		defer cb.Close()
		defer cp.Close()
		send(t, ca, "lan", cb.LocalAddr())
		if msg, _, ok := recv(t, cb, time.Second); !ok || msg != "lan" {
			t.Errorf("LAN peer got %q, %v", msg, ok)
		}
		for range 3 {
			send(t, ca, "wan", cp.LocalAddr())
		}
		if msg, _, ok := recv(t, cp, time.Second); ok {
			t.Errorf("lossy WAN delivered %q", msg)
		}
		if lost, cut := w.Drops(); lost != 3 || cut != 0 {
			t.Errorf("Drops() = %d lost, %d cut; want 3, 0", lost, cut)
		}
		if !w.Chance(1) || w.Chance(0) {
			t.Error("Chance(1) must be true, Chance(0) false")
		}
	})
}

// Pairs has every unordered pair of kinds once, and unique names.
func TestPairs(t *testing.T) {
	seen := map[[2]NAT]bool{}
	names := map[string]bool{}
	for _, p := range Pairs() {
		if names[p.String()] {
			t.Errorf("two pairs named %q", p)
		}
		names[p.String()] = true
		if p.SameRouter {
			if p.A != p.B || p.A == NoNAT {
				t.Errorf("same-router pair %+v: want one NAT kind on both sides", p)
			}
			continue
		}
		if p.A > p.B || seen[[2]NAT{p.A, p.B}] {
			t.Errorf("pair %v out of order or repeated", p)
		}
		seen[[2]NAT{p.A, p.B}] = true
	}
	if n := Symmetric + 1; len(seen) != int(n*(n+1)/2) {
		t.Errorf("%d pairs of kinds, want every unordered pair of %d kinds", len(seen), n)
	}
}
