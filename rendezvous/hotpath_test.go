package rendezvous_test

import (
	"bytes"
	"context"
	"flag"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"natchat/ctrl"
	"natchat/internal/rvtest"
	"natchat/relay"
	"natchat/rendezvous"
	"natchat/wire"
)

// TestSTUNAnswerBytes checks that the answers built into the server's
// reused Message are byte for byte what stun.Build makes, to IPv4 and
// IPv6 sources, with a 420 between successes (the reused buffers must not
// leak one answer into the next) and a SOFTWARE of an odd length (padding).
func TestSTUNAnswerBytes(t *testing.T) {
	const software = "natchat-test-pad" + "x" // 17 bytes: padded to 20
	h := newHarness(t, func(o *rendezvous.Options) { o.SourceRate, o.Software = -1, software })
	srcs := []netip.AddrPort{
		netip.MustParseAddrPort("198.51.100.7:40000"),
		netip.MustParseAddrPort("[2001:db8::1:2]:50000"),
		netip.MustParseAddrPort("203.0.113.200:1"),
	}
	for round := range 2 {
		for _, src := range srcs {
			req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
			out := h.handle(req.Raw, src)
			want := stun.MustBuild(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
				&stun.XORMappedAddress{IP: src.Addr().AsSlice(), Port: int(src.Port())},
				stun.NewSoftware(software), stun.Fingerprint)
			if len(out) != 1 || out[0].to != src || !bytes.Equal(out[0].b, want.Raw) {
				t.Fatalf("round %d, %v: answers %s, want %x to it", round, src, describe(out), want.Raw)
			}

			// A 420 in between, then the next success must be exact too.
			req = stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername("u"), stun.Fingerprint)
			out = h.handle(req.Raw, src)
			if len(out) != 1 {
				t.Fatalf("round %d, %v: %d answers to an unknown attribute, want 1", round, src, len(out))
			}
			m := &stun.Message{Raw: out[0].b}
			if err := m.Decode(); err != nil || m.Type != stun.BindingError || m.TransactionID != req.TransactionID {
				t.Fatalf("round %d, %v: 420 answer %v (%v)", round, src, m, err)
			}
		}
	}
}

// TestHotPathAllocs holds the hot path to no allocation per datagram
// (BenchmarkRelayForward, BenchmarkSTUNAnswer), on Run's batched path too
// (the Batch variants: a read batch under one lock, the replies sent with
// sendmmsg). The race detector allocates on its own, so it is not run
// with -race.
func TestHotPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	// A few thousand datagrams are enough to count allocations: not the
	// default second per benchmark.
	bt := flag.Lookup("test.benchtime")
	old := bt.Value.String()
	bt.Value.Set("5000x")
	defer bt.Value.Set(old)
	for name, bench := range map[string]func(*testing.B){
		"RelayForward":      BenchmarkRelayForward,
		"STUNAnswer":        BenchmarkSTUNAnswer,
		"RelayForwardBatch": BenchmarkRelayForwardBatch,
		"STUNAnswerBatch":   BenchmarkSTUNAnswerBatch,
	} {
		r := testing.Benchmark(bench)
		if r.N == 0 {
			t.Fatalf("%s failed", name)
		}
		// AllocsPerOp rounds down: one allocation in every few
		// datagrams (a control message made per run, say) shows as 0.
		if a := float64(r.MemAllocs) / float64(r.N); a > 0.01 {
			t.Errorf("%s: %.3f allocations per datagram, want 0", name, a)
		}
	}
}

// TestRunSources checks, on real sockets, that Run reads each datagram's
// source right (the batched reader parses the kernel's addresses itself):
// IPv4, IPv6, and IPv4 through a dual-stack socket (an IPv4-mapped source,
// answered as IPv4), several datagrams in one batch.
func TestRunSources(t *testing.T) {
	for _, tc := range []struct{ name, listen, client string }{
		{"ipv4", "127.0.0.1:0", "127.0.0.1"},
		{"ipv6", "[::1]:0", "::1"},
		{"dual-stack", ":0", "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.ListenPacket("udp", tc.listen)
			if err != nil {
				t.Skipf("no %s socket: %v", tc.name, err)
			}
			st, err := rendezvous.OpenStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			key, err := ctrl.NewServerKey()
			if err != nil {
				t.Fatal(err)
			}
			srv, err := rendezvous.New(rendezvous.Options{Conn: conn, Store: st, Key: key, SourceRate: -1})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- srv.Run(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
			}()
			port := conn.LocalAddr().(*net.UDPAddr).Port
			rv := netip.AddrPortFrom(netip.MustParseAddr(tc.client), uint16(port))
			cl, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(tc.client)})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			me := cl.LocalAddr().(*net.UDPAddr).AddrPort()
			const n = 40 // more than a batch
			reqs := make(map[[stun.TransactionIDSize]byte]bool)
			for range n {
				req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
				reqs[req.TransactionID] = true
				if _, err := cl.WriteToUDPAddrPort(req.Raw, rv); err != nil {
					t.Fatal(err)
				}
			}
			buf := make([]byte, 1500)
			for range n {
				cl.SetReadDeadline(time.Now().Add(5 * time.Second))
				k, _, err := cl.ReadFromUDPAddrPort(buf)
				if err != nil {
					t.Fatalf("%d answers missing: %v", len(reqs), err)
				}
				m := &stun.Message{Raw: buf[:k]}
				var xa stun.XORMappedAddress
				if err := m.Decode(); err != nil || !reqs[m.TransactionID] {
					t.Fatalf("not an answer to a request: %v", err)
				}
				delete(reqs, m.TransactionID)
				if err := xa.GetFrom(m); err != nil {
					t.Fatal(err)
				}
				ip, _ := netip.AddrFromSlice(xa.IP)
				if got := netip.AddrPortFrom(ip, uint16(xa.Port)); got != me {
					t.Fatalf("answered %v, want %v", got, me)
				}
			}
		})
	}
}

// runServer runs a Server on conn until the test ends.
func runServer(t *testing.T, conn net.PacketConn, edit func(*rendezvous.Options)) {
	t.Helper()
	st, err := rendezvous.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key, err := ctrl.NewServerKey()
	if err != nil {
		t.Fatal(err)
	}
	o := rendezvous.Options{Conn: conn, Store: st, Key: key, SourceRate: -1}
	if edit != nil {
		edit(&o)
	}
	srv, err := rendezvous.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		st.Close()
	})
}

// TestRunBatchSources checks, on real sockets, that the answers to a read
// batch of STUN requests from several sources, IPv4 and IPv6 through one
// dual-stack socket, sent together (sendmmsg), each go to their source
// and carry its address. The requests wait in the socket before Run
// starts, so that they are read in full batches.
func TestRunBatchSources(t *testing.T) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	port := conn.LocalAddr().(*net.UDPAddr).Port
	const perSource = 9 // sources interleaved in every batch
	type source struct {
		c    *net.UDPConn
		me   netip.AddrPort
		reqs map[[stun.TransactionIDSize]byte]bool
	}
	var srcs []*source
	for _, ip := range []string{"127.0.0.1", "::1", "127.0.0.1", "::1", "127.0.0.1", "127.0.0.1"} {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
		if err != nil {
			t.Logf("no %s socket: %v", ip, err)
			continue
		}
		defer c.Close()
		srcs = append(srcs, &source{c: c, me: c.LocalAddr().(*net.UDPAddr).AddrPort(), reqs: map[[stun.TransactionIDSize]byte]bool{}})
	}
	for range perSource {
		for _, s := range srcs {
			req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
			s.reqs[req.TransactionID] = true
			rv := netip.AddrPortFrom(s.me.Addr(), uint16(port))
			if _, err := s.c.WriteToUDPAddrPort(req.Raw, rv); err != nil {
				t.Fatal(err)
			}
		}
	}
	runServer(t, conn, nil)
	buf := make([]byte, 1500)
	for _, s := range srcs {
		for range perSource {
			s.c.SetReadDeadline(time.Now().Add(5 * time.Second))
			k, from, err := s.c.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("%v: %d answers missing: %v", s.me, len(s.reqs), err)
			}
			if from.Port() != uint16(port) {
				t.Errorf("%v: answer from %v, want port %d", s.me, from, port)
			}
			m := &stun.Message{Raw: buf[:k]}
			var xa stun.XORMappedAddress
			if err := m.Decode(); err != nil || !s.reqs[m.TransactionID] {
				t.Fatalf("%v: not an answer to one of its requests: %v", s.me, err)
			}
			delete(s.reqs, m.TransactionID)
			if err := xa.GetFrom(m); err != nil {
				t.Fatal(err)
			}
			ip, _ := netip.AddrFromSlice(xa.IP)
			if got := netip.AddrPortFrom(ip.Unmap(), uint16(xa.Port)); got != s.me {
				t.Fatalf("%v answered %v", s.me, got)
			}
		}
	}
}

// TestRunRelayBatch checks, on real sockets, that a burst of Relays read
// in batches reaches the peer whole and in order, each Relayed sent in
// its batch's sendmmsg.
func TestRunRelayBatch(t *testing.T) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	rv := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	runServer(t, conn, func(o *rendezvous.Options) {
		o.Relay = relay.Limits{PacketsPerSec: -1, BytesPerSec: -1, SmallPacketsPerSec: -1}
	})
	alice, bob := rvtest.New("alice"), rvtest.New("bob")
	ac, bc := loopRegister(t, rv, alice), loopRegister(t, rv, bob)
	defer ac.Close()
	defer bc.Close()
	const n = 200
	for i := range n {
		payload := append(bytes.Repeat([]byte{byte(i)}, 1000), byte(i>>8))
		if _, err := ac.WriteToUDPAddrPort(alice.Relay(bob.Key, payload), rv); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 2048)
	for i := 0; i < n; {
		bc.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, _, err := bc.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("%d of %d relayed: %v", i, n, err)
		}
		m, err := wire.Parse(buf[:k])
		r, ok := m.(*wire.Relayed)
		if err != nil || !ok {
			continue // presence, and the like
		}
		if want := append(bytes.Repeat([]byte{byte(i)}, 1000), byte(i>>8)); r.Src != alice.Key || !bytes.Equal(r.Payload, want) {
			t.Fatalf("Relayed %d: from %v, payload %x..., want alice's %d", i, r.Src, r.Payload[:4], i)
		}
		i++
	}
}
