package rendezvous

import (
	"crypto/ed25519"
	"crypto/rand"
	"net/netip"
	"testing"
	"unsafe"

	"natchat/ctrl"
	"natchat/wire"
)

// TestHeartbeatOnlyNodeHasNoExtra: a node that registers and heartbeats,
// as most of a large fleet does, makes no clientExtra, and holds no
// HandshakeReply once heard from on its session.
func TestHeartbeatOnlyNodeHasNoExtra(t *testing.T) {
	s := newCopyServer(t)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key := wire.Key(pub)
	var cookie wire.Cookie
	rand.Read(cookie[:])
	ini, err := ctrl.NewInitiator(priv, s.opts.Key.Public, cookie)
	if err != nil {
		t.Fatal(err)
	}
	first, err := ini.First(wire.AppendRegisterPayload(nil, &wire.RegisterPayload{Key: key, Name: "alice"}))
	if err != nil {
		t.Fatal(err)
	}
	resp, _, _, err := ctrl.Respond(s.opts.Key, cookie, first)
	if err != nil {
		t.Fatal(err)
	}
	msg, serverKeys, err := resp.Finish(wire.AppendHandshakeResult(nil, &wire.HandshakeResult{}))
	if err != nil {
		t.Fatal(err)
	}
	_, nodeKeys, err := ini.Finish(msg)
	if err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddrPort("127.0.0.1:9")
	session := AddRegistered(s, key, "alice", src, cookie, []byte("reply"), serverKeys)

	pt := wire.AppendInner(nil, &wire.Heartbeat{})
	for len(pt)+wire.SealedHeaderLen+ctrl.Overhead < wire.SealedMinLen {
		pt = append(pt, 0)
	}
	for range 3 {
		s.Handle(nodeKeys.Seal(nil, session, pt), src)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.byKey.get(key)
	switch {
	case c == nil:
		t.Fatal("not online")
	case c.x != nil:
		t.Errorf("a clientExtra was made: %+v", *c.x)
	case c.reg == nil || c.reg.reply != nil:
		t.Error("the HandshakeReply is still kept")
	case !s.isMemberLocked(s.defaultRK, key) || !c.inDefault || c.viewRooms() != nil:
		t.Errorf("in rooms %q and the default room %v (copy: %d), want the default room alone", c.viewRooms(), c.inDefault, len(c.joined()))
	}
}

// TestClientRecordSize: a node's record, its session keys included (the
// two keys themselves, ctrl.Keys), fits the 256-byte size class; one byte
// more costs 32 a node (the next class is 288), a million nodes 32 MB.
func TestClientRecordSize(t *testing.T) {
	if n := unsafe.Sizeof(client{}); n > 256 {
		t.Errorf("a client record is %d bytes, want at most 256", n)
	}
}
