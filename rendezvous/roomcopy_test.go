package rendezvous

import (
	"fmt"
	"net"
	"reflect"
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
	offline := 0
	for k, n := range keys {
		m := s.memberLocked(k)
		if m == nil || len(m.joined()) != n {
			t.Fatalf("%x: record %v, want one in %d rooms", k[:1], m, n)
		}
		if c := s.byKey.get(k); c != nil {
			if m != &c.member {
				t.Errorf("%x: online, but its record is not its client's", k[:1])
			}
			if _, in := s.members[k]; in {
				t.Errorf("%x: online, and in s.members too", k[:1])
			}
		} else {
			offline++
		}
		for _, r := range m.joined() {
			if _, in := r.members[m]; r.members != nil && !in {
				t.Errorf("%x: not in the index of %s", k[:1], r.name)
			}
		}
	}
	if len(s.members) != offline {
		t.Errorf("%d in s.members, want the %d offline", len(s.members), offline)
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

// online puts key online as admitLocked does, as far as the copy is
// concerned, and returns its client.
func online(s *Server, key wire.Key, name string) *client {
	c := s.newClient(key, name)
	s.memberOnlineLocked(c)
	s.byKey.set(c)
	return c
}

// offline takes c offline as removeLocked does, as far as the copy is
// concerned.
func offline(s *Server, c *client) {
	s.byKey.remove(c.key)
	s.memberOfflineLocked(c)
}

// TestRoomCopyOnline: an online node's record in the copy is its
// client's; it moves there from s.members as the node comes online, and
// back as it goes, rooms' indexes included, and joins and parts while it
// is online change it there.
func TestRoomCopyOnline(t *testing.T) {
	s := newCopyServer(t)
	a, b := wire.Key{1}, wire.Key{2}
	lobby := s.newRoomLocked("#lobby", 1)
	dev := s.newRoomLocked("#dev", 1)
	s.addMemberLocked(lobby, a, "alice")
	s.addMemberLocked(dev, a, "alice")
	s.addMemberLocked(lobby, b, "bob")

	ca := online(s, a, "alice")
	checkRoomCopy(t, s, map[string][]wire.Key{"#lobby": {a, b}, "#dev": {a}})
	cb := online(s, b, "bob")
	s.addMemberLocked(dev, b, "bob") // joins while online
	checkRoomCopy(t, s, map[string][]wire.Key{"#lobby": {a, b}, "#dev": {a, b}})
	if got := s.countedRoomsLocked(b); got != 1 {
		t.Errorf("b counts %d rooms, want 1", got)
	}

	offline(s, ca)
	checkRoomCopy(t, s, map[string][]wire.Key{"#lobby": {a, b}, "#dev": {a, b}})
	if m := s.members[a]; m == nil || m.name != "alice" || m.nameKey != "alice" {
		t.Fatalf("a's record offline: %+v", m)
	}
	s.removeMemberLocked(lobby, b) // parts while online
	s.removeMemberLocked(dev, b)
	checkRoomCopy(t, s, map[string][]wire.Key{"#lobby": {a}, "#dev": {a}})
	if s.memberLocked(b) != nil || len(cb.joined()) != 0 {
		t.Error("b in no room, and yet has a record")
	}
	offline(s, cb) // in no room: no record
	checkRoomCopy(t, s, map[string][]wire.Key{"#lobby": {a}, "#dev": {a}})

	ca = online(s, a, "alice") // again: a new client takes the record
	s.removeMemberLocked(dev, a)
	checkRoomCopy(t, s, map[string][]wire.Key{"#lobby": {a}})
	offline(s, ca)
	checkRoomCopy(t, s, map[string][]wire.Key{"#lobby": {a}})
}

// TestRoomCopyMembersCompacted: s.members gives its memory back once
// most of its keys came online.
func TestRoomCopyMembersCompacted(t *testing.T) {
	s := newCopyServer(t)
	lobby := s.newRoomLocked("#lobby", 1)
	const n = 1000
	for i := range n {
		s.addMemberLocked(lobby, wire.Key{byte(i), byte(i >> 8)}, "")
	}
	before := s.members
	for i := range n - 10 {
		online(s, wire.Key{byte(i), byte(i >> 8)}, fmt.Sprint("n", i))
	}
	if len(s.members) != 10 || s.membersGone > 2*len(s.members)+64 {
		t.Errorf("%d in s.members, %d deleted since the last compaction", len(s.members), s.membersGone)
	}
	if reflect.ValueOf(s.members).Pointer() == reflect.ValueOf(before).Pointer() {
		t.Error("s.members never compacted")
	}
	checkRoomCopy(t, s, map[string][]wire.Key{"#lobby": sortedKeys(lobby, s)})
}

// sortedKeys returns r's members' keys, sorted.
func sortedKeys(r *room, s *Server) []wire.Key {
	var ks []wire.Key
	for m := range s.roomMembersLocked(r) {
		ks = append(ks, m.key)
	}
	slices.SortFunc(ks, func(a, b wire.Key) int { return slices.Compare(a[:], b[:]) })
	return ks
}
