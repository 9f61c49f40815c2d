package rendezvous_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"natchat/relay"
	"natchat/rendezvous"
	"natchat/wire"
)

// altConn is the fake second STUN socket, on port 3479.
type altConn struct{ *fakeConn }

func (altConn) LocalAddr() net.Addr { return &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 3479} }

// newAltHarness is a harness whose Server has a second STUN socket; it
// returns that socket too.
func newAltHarness(t *testing.T, edit func(*rendezvous.Options)) (*harness, altConn) {
	t.Helper()
	alt := altConn{newFakeConn()}
	h := newHarness(t, func(o *rendezvous.Options) {
		o.AltSTUN = alt
		if edit != nil {
			edit(o)
		}
	})
	return h, alt
}

// handleAlt feeds one datagram to the second STUN socket and returns
// what went out of it; nothing may go out of the main socket.
func (h *harness) handleAlt(alt altConn, b []byte, src netip.AddrPort) []packet {
	h.t.Helper()
	h.conn.take()
	alt.take()
	h.s.HandleAlt(b, src)
	if out := h.conn.take(); len(out) != 0 {
		h.t.Fatalf("a datagram to the second STUN socket was answered from the main one: %s", describe(out))
	}
	return alt.take()
}

func TestAltSTUNBinding(t *testing.T) {
	h, alt := newAltHarness(t, nil)
	for _, src := range []netip.AddrPort{
		netip.MustParseAddrPort("203.0.113.5:40000"),
		netip.MustParseAddrPort("[2001:db8::5]:40001"),
	} {
		req := stunBinding(t, stun.Fingerprint) // what rvclient sends
		out := h.handleAlt(alt, req, src)
		if len(out) != 1 || out[0].to != src {
			t.Fatalf("%v: got %d datagrams, want one to it", src, len(out))
		}
		checkBindingSuccess(t, req, out[0].b, src, "natchat-rendezvous")
		// The very answer the main port gives, to the byte: no larger.
		main := h.handle(req, src)
		if len(main) != 1 || !bytes.Equal(main[0].b, out[0].b) {
			t.Fatalf("%v: main port answered %x, second %x", src, main[0].b, out[0].b)
		}
	}
	if got := h.metric("natchat_rendezvous_stun_responses_total"); got != 4 {
		t.Errorf("stun responses %v, want 4", got)
	}
	// RFC 5780's requests get the same 420 there: it cannot answer from
	// elsewhere either.
	req := stunBinding(t, rawAttr{stun.AttrChangeRequest, []byte{0, 0, 0, 6}})
	src := netip.MustParseAddrPort("203.0.113.5:40000")
	out := h.handleAlt(alt, req, src)
	if len(out) != 1 {
		t.Fatalf("CHANGE-REQUEST: %d answers, want a 420", len(out))
	}
	checkUnknownAttribute(t, req, out[0].b, []stun.AttrType{stun.AttrChangeRequest})
}

func TestAltSTUNDropsTheRest(t *testing.T) {
	h, alt := newAltHarness(t, nil)
	src := netip.MustParseAddrPort("203.0.113.5:40000")
	if got := h.metric(dropped("alt_other")); got != 0 {
		t.Fatalf("alt_other drops %v before any", got)
	}
	// The rendezvous protocol, QUIC, garbage: the socket speaks STUN only.
	n := newNode(t, "alice", src.String())
	h.mustRegister(n)
	for _, b := range [][]byte{
		helloBytes(),
		n.seal(&wire.Heartbeat{}),
		append([]byte{0xc3}, make([]byte, 1199)...),
		{0x01, 0x02},
		nil,
	} {
		if out := h.handleAlt(alt, b, src); len(out) != 0 {
			t.Errorf("%x... answered: %s", b[:min(len(b), 4)], describe(out))
		}
	}
	if got := h.metric(dropped("alt_other")); got != 5 {
		t.Errorf("alt_other drops %v, want 5", got)
	}
	// STUN other than a Binding request, as on the main port.
	for _, typ := range []stun.MessageType{stun.BindingSuccess, stun.NewType(stun.MethodAllocate, stun.ClassRequest)} {
		if out := h.handleAlt(alt, stun.MustBuild(stun.TransactionID, typ).Raw, src); len(out) != 0 {
			t.Errorf("%v answered", typ)
		}
	}
	if got := h.metric(dropped(relay.DropNotSTUN)); got != 2 {
		t.Errorf("stun_other drops %v, want 2", got)
	}
	// Nothing that came there reached the node's session.
	if out := h.flush(); len(out) != 0 {
		t.Errorf("after the drops: %s", describe(out))
	}
}

// TestAltSTUNSourceLimit: the second socket spends the source's one
// budget: it does not double what a spoofed source can reflect.
func TestAltSTUNSourceLimit(t *testing.T) {
	h, alt := newAltHarness(t, nil) // 50/s, burst 100, per /24
	const flood = 1000
	answered := 0
	for i := range flood {
		src := netip.MustParseAddrPort(fmt.Sprintf("203.0.113.5:%d", 1000+i))
		if i%2 == 0 {
			answered += len(h.handleAlt(alt, stunBinding(t), src))
		} else {
			answered += len(h.handle(stunBinding(t), src))
		}
	}
	if answered == 0 || answered > 100 {
		t.Errorf("answered %d of %d requests from one network over both ports, want 1..100", answered, flood)
	}
	if got := h.metric(dropped(relay.DropSourceLimited)); got != float64(flood-answered) {
		t.Errorf("source_limited drops %v, want %d", got, flood-answered)
	}
	// Other networks are answered there meanwhile. Networks share a
	// budget only when their buckets collide, 1 in 4096 with a key drawn
	// per run (sourcelimit.go): of 8 networks, one may; two would be a
	// bug (odds about 2 in a million).
	refused := 0
	for i := range 8 {
		src := netip.MustParseAddrPort(fmt.Sprintf("198.51.%d.6:1000", 100+i))
		if out := h.handleAlt(alt, stunBinding(t), src); len(out) != 1 {
			refused++
		}
	}
	if refused > 1 {
		t.Errorf("%d of 8 other networks were not answered while one network was limited", refused)
	}
}

func TestAltSTUNAnnounced(t *testing.T) {
	for _, tc := range []struct {
		name string
		alt  bool
		want uint16
	}{{"with", true, 3479}, {"without", false, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			var h *harness
			if tc.alt {
				h, _ = newAltHarness(t, nil)
			} else {
				h = newHarness(t, nil)
			}
			n := newNode(t, "alice", "203.0.113.5:40000")
			h.mustRegister(n)
			if ack := h.heartbeat(n); ack.AltSTUN != tc.want || ack.Observed != n.addr {
				t.Fatalf("heartbeat ack %+v, want AltSTUN %d", ack, tc.want)
			}
		})
	}
}

func TestAltSTUNOptions(t *testing.T) {
	h := newHarness(t, nil)
	// On the main socket's port: refused.
	if _, err := rendezvous.New(rendezvous.Options{Conn: newFakeConn(), AltSTUN: newFakeConn(), Store: h.store,
		Key: h.key}); err == nil || !strings.Contains(err.Error(), "AltSTUN") {
		t.Fatalf("AltSTUN on the main port: %v", err)
	}
	// Without AltSTUN, HandleAlt does nothing.
	h.s.HandleAlt(stunBinding(t), netip.MustParseAddrPort("203.0.113.5:40000"))
	if out := h.conn.take(); len(out) != 0 {
		t.Fatalf("HandleAlt without AltSTUN: %s", describe(out))
	}
}

// TestAltSTUNLoopback runs both sockets for real: the second answers
// STUN, drops the rest, and is closed when Run returns.
func TestAltSTUNLoopback(t *testing.T) {
	defer checkGoroutines(t)()
	alt, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, _, _, cancel, done := startLoopback(t, func(o *rendezvous.Options) { o.AltSTUN = alt })
	defer cancel()
	cl := newUDPClient(t, alt.LocalAddr())
	// A datagram that is not STUN, then a Binding request: the answer to
	// the second comes from the second socket, after the first was
	// dropped (one reader, in order).
	cl.write(helloBytes())
	req := stunBinding(t)
	cl.write(req)
	cl.conn.SetReadDeadline(deadline())
	buf := make([]byte, 2048)
	n, from, err := cl.conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	if from != alt.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Errorf("answer from %v, want the second socket %v", from, alt.LocalAddr())
	}
	checkBindingSuccess(t, req, buf[:n], cl.addr(), "natchat-rendezvous")
	text := scrapeServer(t, s)
	if got := metric(t, text, dropped("alt_other")); got != 1 {
		t.Errorf("alt_other drops %v, want 1", got)
	}
	if got := metric(t, text, dropped(relay.DropUnknownType)) + metric(t, text, dropped(relay.DropMalformed)); got != 0 {
		t.Errorf("the main port counted drops: %v", got)
	}
	cancel()
	if err := waitRun(t, done); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if _, err := alt.WriteTo([]byte{1}, net.UDPAddrFromAddrPort(cl.addr())); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second socket after Run: write error %v, want net.ErrClosed", err)
	}
}

// TestAltSTUNSocketFails: when the second socket fails, the server keeps
// serving and stops announcing it.
func TestAltSTUNSocketFails(t *testing.T) {
	defer checkGoroutines(t)()
	alt, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, conn, _, cancel, done := startLoopback(t, func(o *rendezvous.Options) { o.AltSTUN = alt })
	defer cancel()
	cl := newUDPClient(t, conn.LocalAddr())
	n := newNode(t, "alice", cl.addr().String())
	cl.register(n)
	cl.write(n.seal(&wire.Heartbeat{}))
	if ack, ok := cl.open(n).(*wire.HeartbeatAck); !ok || ack.AltSTUN != uint16(alt.LocalAddr().(*net.UDPAddr).Port) {
		t.Fatalf("heartbeat ack %+v, want the second socket's port", ack)
	}
	alt.Close()
	// The read loop notices at once; the acks say so soon after (polling
	// the acks with a deadline: there is no event to wait on).
	for end := deadline(); ; {
		cl.write(n.seal(&wire.Heartbeat{}))
		ack, ok := cl.open(n).(*wire.HeartbeatAck)
		if ok && ack.AltSTUN == 0 {
			break
		}
		if deadlinePassed(end) {
			t.Fatalf("heartbeat ack %+v after the second socket closed, want AltSTUN 0", ack)
		}
	}
	cancel()
	if err := waitRun(t, done); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
}

func scrapeServer(t *testing.T, s *rendezvous.Server) string {
	t.Helper()
	h := &harness{t: t, s: s}
	return h.scrape()
}

// deadline is when a loopback wait gives up.
func deadline() time.Time { return time.Now().Add(5 * time.Second) }

func deadlinePassed(d time.Time) bool { return time.Now().After(d) }
