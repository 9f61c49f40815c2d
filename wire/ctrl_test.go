package wire_test

// The framing of package wire with the real handshake and seal of package
// ctrl (which imports wire, hence this external test package): what the
// layouts promise about sizes holds for the datagrams ctrl actually makes.

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"natchat/ctrl"
	"natchat/wire"
)

// handshake registers name through real Handshake and HandshakeReply
// datagrams and returns them with the node's and the rendezvous's keys.
func handshake(t *testing.T, name string, res *wire.HandshakeResult) (hs, reply []byte, node, server *ctrl.Keys) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := ctrl.NewServerKey()
	if err != nil {
		t.Fatal(err)
	}
	cookie := wire.Cookie{1, 2, 3}
	ini, err := ctrl.NewInitiator(priv, sk.Public, cookie)
	if err != nil {
		t.Fatal(err)
	}
	reg := &wire.RegisterPayload{Key: wire.Key(pub), Name: name}
	first, err := ini.First(wire.AppendRegisterPayload(nil, reg))
	if err != nil {
		t.Fatal(err)
	}
	hs = wire.Marshal(&wire.Handshake{Cookie: cookie, Noise: first})

	m, err := wire.Parse(hs)
	if err != nil {
		t.Fatal(err)
	}
	h := m.(*wire.Handshake)
	if h.Cookie != cookie || !bytes.Equal(h.Noise, first) {
		t.Fatalf("Handshake parsed as %#v", h)
	}
	r, payload, _, err := ctrl.Respond(sk, h.Cookie, h.Noise)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := wire.ParseRegisterPayload(payload); err != nil || !reflect.DeepEqual(p, reg) {
		t.Fatalf("register payload %#v, %v; want %#v", p, err, reg)
	}
	second, server, err := r.Finish(wire.AppendHandshakeResult(nil, res))
	if err != nil {
		t.Fatal(err)
	}
	reply = wire.Marshal(&wire.HandshakeReply{Noise: second})

	m, err = wire.Parse(reply)
	if err != nil {
		t.Fatal(err)
	}
	got, node, err := ini.Finish(m.(*wire.HandshakeReply).Noise)
	if err != nil {
		t.Fatal(err)
	}
	if gr, err := wire.ParseHandshakeResult(got); err != nil || !reflect.DeepEqual(gr, res) {
		t.Fatalf("handshake result %#v, %v; want %#v", gr, err, res)
	}
	return hs, reply, node, server
}

// TestHandshakeNoAmplification: a registration's answer is never larger
// than the Handshake that asked for it, even for the shortest name and the
// longest (IPv6) observed address.
func TestHandshakeNoAmplification(t *testing.T) {
	res := &wire.HandshakeResult{Session: wire.SessionID{9}, Observed: netip.MustParseAddrPort("[2001:db8::ffff:1]:65535"),
		HeartbeatMS: 25000, ExpiryMS: 90000, PresenceSeq: 1}
	hs, reply, _, _ := handshake(t, "a", res)
	if len(reply) > len(hs) {
		t.Errorf("HandshakeReply is %d bytes, Handshake %d", len(reply), len(hs))
	}
	// A refusal with a one-line reason is no larger either.
	_, reply, _, _ = handshake(t, "a", &wire.HandshakeResult{Code: wire.CodeNameTaken, Message: "the name a is taken"})
	if len(reply) > len(hs) {
		t.Errorf("refusing HandshakeReply is %d bytes, Handshake %d", len(reply), len(hs))
	}
}

// TestSealedFraming seals inner messages as the node and the rendezvous
// do, and reads them back through wire.Parse and wire.ParseInner.
func TestSealedFraming(t *testing.T) {
	sess := wire.SessionID{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4}
	res := &wire.HandshakeResult{Session: sess, Observed: netip.MustParseAddrPort("192.0.2.1:1"), HeartbeatMS: 1, ExpiryMS: 2}
	_, _, node, server := handshake(t, "bob", res)

	// The node pads what it seals up to SealedMinLen (rvclient).
	fromNode := []wire.Message{
		&wire.Heartbeat{},
		&wire.Leave{},
		&wire.PeersRequest{},
		&wire.Lookup{TxID: 1, Name: "alice"},
		&wire.Signal{Dst: wire.Key{1}, Body: []byte{3, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}},
		&wire.PathResponse{Data: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}},
		&wire.Who{TxID: 2, Room: "#lobby", After: "bob"},
		&wire.Lookup{TxID: 3, Name: strings.Repeat("x", 100)}, // longer than the pad
	}
	for i, m := range fromNode {
		pt := wire.AppendInner(nil, m)
		for len(pt)+wire.SealedHeaderLen+ctrl.Overhead < wire.SealedMinLen {
			pt = append(pt, 0)
		}
		d := node.Seal(nil, sess, pt)
		if want := max(wire.SealedMinLen, wire.SealedHeaderLen+len(wire.AppendInner(nil, m))+ctrl.Overhead); len(d) != want {
			t.Errorf("%v sealed is %d bytes, want %d", m.Type(), len(d), want)
		}
		checkSealed(t, d, sess, uint64(i), len(pt), server, m)
	}

	// The rendezvous does not pad; its path challenge, sent to an address
	// that is not validated yet, is no larger than the smallest datagram a
	// node sends.
	ch := &wire.PathChallenge{Data: [8]byte{8, 7, 6, 5, 4, 3, 2, 1}}
	pt := wire.AppendInner(nil, ch)
	d := server.Seal(nil, sess, pt)
	if len(d) > wire.SealedMinLen {
		t.Errorf("sealed path challenge is %d bytes, more than SealedMinLen = %d", len(d), wire.SealedMinLen)
	}
	checkSealed(t, d, sess, 0, len(pt), node, ch)
}

func checkSealed(t *testing.T, d []byte, sess wire.SessionID, ctr uint64, ptLen int, k *ctrl.Keys, want wire.Message) {
	t.Helper()
	if !bytes.Equal(d[:wire.SealedHeaderLen], wire.AppendSealedHeader(nil, sess, ctr)) {
		t.Errorf("%v: header %x is not AppendSealedHeader's", want.Type(), d[:wire.SealedHeaderLen])
	}
	m, err := wire.Parse(d)
	if err != nil {
		t.Fatalf("%v: Parse: %v", want.Type(), err)
	}
	s := m.(*wire.Sealed)
	if s.Session != sess || s.Counter != ctr || len(s.Box) != ptLen+ctrl.Overhead {
		t.Errorf("%v: sealed %x parsed as session %x counter %d box %d bytes", want.Type(), d, s.Session, s.Counter, len(s.Box))
	}
	pt, err := k.Open(nil, d)
	if err != nil {
		t.Fatalf("%v: Open: %v", want.Type(), err)
	}
	got, err := wire.ParseInner(pt)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("opened %v: %#v, %v", want.Type(), got, err)
	}
}
