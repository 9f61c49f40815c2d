package rvtest_test

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"natchat/ctrl"
	"natchat/internal/rvtest"
	"natchat/rendezvous"
	"natchat/wire"
)

// sink is a net.PacketConn that keeps what is written to it.
type sink struct {
	mu   sync.Mutex
	sent []sent
}
type sent struct {
	to netip.AddrPort
	b  []byte
}

func (s *sink) ReadFrom([]byte) (int, net.Addr, error) { select {} }
func (s *sink) WriteTo(b []byte, a net.Addr) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = append(s.sent, sent{a.(*net.UDPAddr).AddrPort(), append([]byte(nil), b...)})
	return len(b), nil
}
func (s *sink) take() []sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.sent
	s.sent = nil
	return out
}
func (s *sink) Close() error                     { return nil }
func (s *sink) LocalAddr() net.Addr              { return &net.UDPAddr{} }
func (s *sink) SetDeadline(time.Time) error      { return nil }
func (s *sink) SetReadDeadline(time.Time) error  { return nil }
func (s *sink) SetWriteDeadline(time.Time) error { return nil }

// TestRegisterAndRelay runs the client against a real Server in memory:
// two nodes register, see each other, and one relays to the other.
func TestRegisterAndRelay(t *testing.T) {
	key, err := ctrl.NewServerKey()
	if err != nil {
		t.Fatal(err)
	}
	st, err := rendezvous.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	conn := &sink{}
	srv, err := rendezvous.New(rendezvous.Options{Conn: conn, Store: st, Key: key, DefaultRoom: "#lobby"})
	if err != nil {
		t.Fatal(err)
	}
	register := func(n *rvtest.Node, src netip.AddrPort) {
		t.Helper()
		srv.Handle(n.Hello(1), src)
		out := conn.take()
		if len(out) != 1 {
			t.Fatalf("hello: %d replies", len(out))
		}
		hs, err := n.FromCookie(out[0].b)
		if err != nil {
			t.Fatal(err)
		}
		srv.Handle(hs, src)
		if srv.DrainRegistrations() != 1 {
			t.Fatal("no registration queued")
		}
		out = conn.take()
		if len(out) == 0 || out[0].to != src {
			t.Fatalf("handshake: replies %v", out)
		}
		if _, err := n.Finish(out[0].b); err != nil {
			t.Fatal(err)
		}
		if n.Server != key.Public {
			t.Fatal("learned the wrong server key")
		}
	}
	alice, bob := rvtest.New("alice"), rvtest.New("bob")
	aAddr, bAddr := netip.MustParseAddrPort("192.0.2.1:1000"), netip.MustParseAddrPort("198.51.100.1:2000")
	register(alice, aAddr)
	register(bob, bAddr)
	srv.FlushPresence()
	var joined bool
	for _, p := range conn.take() {
		if p.to != aAddr {
			continue
		}
		m, err := alice.Open(p.b)
		if err != nil {
			t.Fatal(err)
		}
		if pr, ok := m.(*wire.Presence); ok && len(pr.Changes) == 1 && pr.Changes[0].Name == "bob" {
			joined = true
		}
	}
	if !joined {
		t.Fatal("alice did not see bob join")
	}
	srv.Handle(alice.Relay(bob.Key, []byte("hi")), aAddr)
	out := conn.take()
	if len(out) != 1 || out[0].to != bAddr {
		t.Fatalf("relay: %v", out)
	}
	m, err := bob.Open(out[0].b)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := m.(*wire.Relayed); !ok || string(r.Payload) != "hi" || r.Src != alice.Key {
		t.Fatalf("bob got %+v", m)
	}
}

// TestAssembleMail: a blob served as Mail parts, out of order, is put
// together unchanged; a missing or repeated part is an error.
func TestAssembleMail(t *testing.T) {
	n := rvtest.New("alice")
	blob := make([]byte, 3*wire.MailPartLen+5)
	for i := range blob {
		blob[i] = byte(i)
	}
	parts := wire.MailParts(blob)
	if len(parts) != 4 {
		t.Fatalf("%d parts", len(parts))
	}
	var ms []wire.Message
	for _, i := range []int{2, 0, 3, 1} {
		ms = append(ms, &wire.Mail{From: n.Key, ID: wire.MsgID{1}, StoredMS: 5, Count: 1, Part: uint8(i), Parts: 4, Data: parts[i]})
	}
	ms = append(ms, &wire.MailNotice{})
	got, err := rvtest.AssembleMail(ms)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || string(got[0].Blob) != string(blob) || got[0].From != n.Key || got[0].StoredMS != 5 {
		t.Fatalf("assembled %d messages", len(got))
	}
	if _, err := rvtest.AssembleMail(ms[:3]); !errors.Is(err, rvtest.ErrMailParts) {
		t.Errorf("a missing part: %v", err)
	}
	if _, err := rvtest.AssembleMail(append(ms, ms[0])); !errors.Is(err, rvtest.ErrMailParts) {
		t.Errorf("a part twice: %v", err)
	}
}
