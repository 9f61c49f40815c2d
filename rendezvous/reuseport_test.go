package rendezvous_test

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"natchat/internal/rvtest"
	"natchat/relay"
	"natchat/rendezvous"
	"natchat/wire"
)

// listenSockets opens n sockets on one loopback port (ListenUDP), or
// skips where that is not supported.
func listenSockets(t *testing.T, n int) []net.PacketConn {
	t.Helper()
	conns, err := rendezvous.ListenUDP(context.Background(), "127.0.0.1:0", n)
	if err != nil {
		if runtime.GOOS != "linux" {
			t.Skipf("%d sockets on one port: %v", n, err)
		}
		t.Fatal(err)
	}
	if len(conns) != n {
		t.Fatalf("%d sockets, want %d", len(conns), n)
	}
	port := conns[0].LocalAddr().(*net.UDPAddr).Port
	for _, c := range conns[1:] {
		if p := c.LocalAddr().(*net.UDPAddr).Port; p != port {
			t.Fatalf("sockets on ports %d and %d, want one port", port, p)
		}
	}
	return conns
}

// stunClients sends perClient Binding requests from each of n loopback
// sockets to rv and returns how many answers came back, checking that
// each carries its socket's address.
func stunClients(t *testing.T, rv netip.AddrPort, n, perClient int) int {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	answered := 0
	for range n {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			me := c.LocalAddr().(*net.UDPAddr).AddrPort()
			for range perClient {
				req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
				if _, err := c.WriteToUDPAddrPort(req.Raw, rv); err != nil {
					t.Error(err)
					return
				}
			}
			buf := make([]byte, 1500)
			for range perClient {
				c.SetReadDeadline(time.Now().Add(time.Second))
				k, _, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return // the rest were not answered
				}
				m := &stun.Message{Raw: buf[:k]}
				var xa stun.XORMappedAddress
				if err := m.Decode(); err != nil || xa.GetFrom(m) != nil {
					t.Errorf("%v: not a Binding answer: %v", me, err)
					return
				}
				if ip, _ := netip.AddrFromSlice(xa.IP); netip.AddrPortFrom(ip.Unmap(), uint16(xa.Port)) != me {
					t.Errorf("%v answered %v:%d", me, xa.IP, xa.Port)
				}
				mu.Lock()
				answered++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return answered
}

// TestRunSockets runs a Server on two sockets sharing a port
// (Options.MoreConns): STUN requests from many sources, spread over both
// by the kernel, are all answered at their own addresses, and relayed
// traffic both ways between two nodes, whose datagrams may arrive on
// different sockets, reaches each whole, while the other loop answers
// STUN. Run it with -race: the loops share the Server's state.
func TestRunSockets(t *testing.T) {
	conns := listenSockets(t, 2)
	rv := conns[0].LocalAddr().(*net.UDPAddr).AddrPort()
	runServer(t, conns[0], func(o *rendezvous.Options) {
		o.MoreConns = conns[1:]
		o.Relay = relay.Limits{PacketsPerSec: -1, BytesPerSec: -1, SmallPacketsPerSec: -1}
	})
	alice, bob := rvtest.New("alice"), rvtest.New("bob")
	ac, bc := loopRegister(t, rv, alice), loopRegister(t, rv, bob)
	defer ac.Close()
	defer bc.Close()

	const relays = 300
	var wg sync.WaitGroup
	relayed := func(from *rvtest.Node, fc *net.UDPConn, to *rvtest.Node, tc *net.UDPConn) {
		defer wg.Done()
		go func() {
			for i := range relays {
				fc.WriteToUDPAddrPort(from.Relay(to.Key, bytes.Repeat([]byte{byte(i)}, 500)), rv)
				if i%50 == 49 {
					time.Sleep(time.Millisecond) // no more than the socket buffers hold
				}
			}
		}()
		buf := make([]byte, 2048)
		for got := 0; got < relays; {
			tc.SetReadDeadline(time.Now().Add(5 * time.Second))
			k, _, err := tc.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Errorf("%s: %d of %d relayed from %s: %v", to.Name, got, relays, from.Name, err)
				return
			}
			if m, err := wire.Parse(buf[:k]); err == nil {
				if r, ok := m.(*wire.Relayed); ok {
					if r.Src != from.Key || !bytes.Equal(r.Payload, bytes.Repeat([]byte{byte(got)}, 500)) {
						t.Errorf("%s: Relayed %d wrong or out of order", to.Name, got)
						return
					}
					got++
				}
			}
		}
	}
	wg.Add(2)
	go relayed(alice, ac, bob, bc)
	go relayed(bob, bc, alice, ac)
	const clients, each = 16, 20
	if n := stunClients(t, rv, clients, each); n != clients*each {
		t.Errorf("%d of %d STUN requests answered", n, clients*each)
	}
	wg.Wait()
}

// TestRunSocketsSourceLimit checks that the per-source budget of
// unauthenticated replies is the source network's, not a socket's: from
// sixteen sources in one /24, spread over two sockets, no more are
// answered than one network's burst.
func TestRunSocketsSourceLimit(t *testing.T) {
	conns := listenSockets(t, 2)
	rv := conns[0].LocalAddr().(*net.UDPAddr).AddrPort()
	const rate = 5 // a burst of 10
	runServer(t, conns[0], func(o *rendezvous.Options) {
		o.MoreConns = conns[1:]
		o.SourceRate = rate
	})
	// The whole burst is over in well under a second: at most one more
	// token comes meanwhile.
	if n := stunClients(t, rv, 16, 4); n < 2*rate || n > 2*rate+rate {
		t.Errorf("%d STUN requests answered from one network, want its burst, %d", n, 2*rate)
	}
}
