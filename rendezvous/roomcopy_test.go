package rendezvous

import (
	"net"
	"slices"
	"testing"

	"natchat/ctrl"
	"natchat/wire"
)

// newCopyServer returns a Server, not running, with the default room
// #lobby, for tests of its in-memory state.
func newCopyServer(t *testing.T) *Server {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	key, err := ctrl.NewServerKey()
	if err != nil {
		t.Fatal(err)
	}
	st := openTestStore(t, t.TempDir(), StoreOptions{})
	s, err := New(Options{Conn: conn, Store: st, Key: key, DefaultRoom: "#lobby"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkRoomCopy checks the copy's rooms and their members against want
// (room name → keys), and that the indexes agree with the members'
// records.
func checkRoomCopy(t *testing.T, s *Server, want map[string][]wire.Key) {
	t.Helper()
	if len(s.byRoom) != len(want) {
		t.Fatalf("%d rooms, want %d", len(s.byRoom), len(want))
	}
	total := 0
	keys := make(map[wire.Key]int) // rooms per key
	for name, ks := range want {
		r := s.byRoom[wire.NameKey(name)]
		if r == nil {
			t.Fatalf("no room %s", name)
		}
		if r.size != len(ks) {
			t.Errorf("%s: size %d, want %d", name, r.size, len(ks))
		}
		if (r.members == nil) != (r.rk == s.defaultRK) {
			t.Errorf("%s: index %v, want one only outside the default room", name, r.members != nil)
		}
		var got []wire.Key
		for m := range s.roomMembersLocked(r) {
			got = append(got, m.key)
		}
		slices.SortFunc(got, func(a, b wire.Key) int { return slices.Compare(a[:], b[:]) })
		if !slices.Equal(got, ks) {
			t.Errorf("%s: members %x, want %x", name, got, ks)
		}
		for _, k := range ks {
			if !s.isMemberLocked(r.rk, k) {
				t.Errorf("%s: %x not a member", name, k[:1])
			}
			keys[k]++
		}
		total += len(ks)
	}
	if s.memberships != total {
		t.Errorf("%d memberships, want %d", s.memberships, total)
	}
	if len(s.members) != len(keys) {
		t.Errorf("%d members, want %d", len(s.members), len(keys))
	}
	for k, n := range keys {
		if m := s.members[k]; m == nil || len(m.rooms) != n {
			t.Errorf("%x: in %d rooms, want %d", k[:1], len(s.members[k].rooms), n)
		}
	}
}

// TestRoomCopyDefaultRoomUnindexed: the default room keeps no index of
// its members, yet lists, counts and tests them as any room does; joins
// and removals keep the members' records, the counts and the other
// rooms' indexes in step.
func TestRoomCopyDefaultRoomUnindexed(t *testing.T) {
	s := newCopyServer(t)
	a, b, c := wire.Key{1}, wire.Key{2}, wire.Key{3}
	lobby := s.newRoomLocked("#lobby", 1)
	dev := s.newRoomLocked("#Dev", 1)
	for _, k := range []wire.Key{a, b, c} {
		s.addMemberLocked(lobby, k, "")
	}
	s.addMemberLocked(dev, a, "alice")
	s.addMemberLocked(dev, b, "")
	s.addMemberLocked(dev, b, "") // again: nothing changes
	checkRoomCopy(t, s, map[string][]wire.Key{"#lobby": {a, b, c}, "#Dev": {a, b}})
	if got := s.members[a].name; got != "alice" {
		t.Errorf("name %q, want alice", got)
	}
	if n := s.countedRoomsLocked(a); n != 1 {
		t.Errorf("a counts %d rooms, want 1 (the default room not counted)", n)
	}
	if s.isMemberLocked(dev.rk, c) || s.isMemberLocked("#nowhere", a) || s.isMemberLocked(lobby.rk, wire.Key{9}) {
		t.Error("a member where there is none")
	}

	s.removeMemberLocked(lobby, a) // a parts the default room, stays in #Dev
	checkRoomCopy(t, s, map[string][]wire.Key{"#lobby": {b, c}, "#Dev": {a, b}})
	if n := s.countedRoomsLocked(a); n != 1 {
		t.Errorf("a counts %d rooms, want 1", n)
	}
	s.removeMemberLocked(lobby, a) // not a member: nothing changes
	s.removeMemberLocked(dev, c)
	checkRoomCopy(t, s, map[string][]wire.Key{"#lobby": {b, c}, "#Dev": {a, b}})

	s.removeMemberLocked(dev, a)
	s.removeMemberLocked(lobby, c)
	checkRoomCopy(t, s, map[string][]wire.Key{"#lobby": {b}, "#Dev": {b}})
	s.removeMemberLocked(lobby, b)
	checkRoomCopy(t, s, map[string][]wire.Key{"#Dev": {b}})
	s.removeMemberLocked(dev, b)
	checkRoomCopy(t, s, map[string][]wire.Key{})

	// The default room comes back, unindexed again.
	lobby = s.newRoomLocked("#lobby", 2)
	s.addMemberLocked(lobby, c, "")
	checkRoomCopy(t, s, map[string][]wire.Key{"#lobby": {c}})
}
