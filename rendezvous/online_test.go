package rendezvous

import (
	"maps"
	"slices"
	"testing"

	"natchat/wire"
)

// TestDefaultRoomOnlineView: the default room's online view keeps no
// list in the clients (viewRooms) nor, once big, a map of its own; its
// count, membership and walk agree with the clients' inDefault flags as
// it grows past defIndexMaxLocked and shrinks back below BigRoom, where
// its index is made again. Another room keeps its map and viewRooms.
func TestDefaultRoomOnlineView(t *testing.T) {
	s := newCopyServer(t)
	s.opts.BigRoom = 4
	s.mu.Lock()
	defer s.mu.Unlock()
	const other = "#dev"
	var cs []*client
	check := func(step string) {
		t.Helper()
		want := make(map[*client]bool)
		for c := range s.byKey.all() {
			if c.inDefault {
				want[c] = true
			}
			if slices.Contains(c.viewRooms(), s.defaultRK) {
				t.Fatalf("%s: %s has the default room in viewRooms", step, c.name)
			}
		}
		got := make(map[*client]bool)
		for c := range s.onlineLocked(s.defaultRK) {
			if got[c] {
				t.Fatalf("%s: %s walked twice", step, c.name)
			}
			got[c] = true
		}
		if !maps.Equal(got, want) || s.onlineLenLocked(s.defaultRK) != len(want) {
			t.Fatalf("%s: walked %d, counted %d, want %d", step, len(got), s.onlineLenLocked(s.defaultRK), len(want))
		}
		for _, c := range cs {
			if s.onlineHasLocked(s.defaultRK, c) != want[c] {
				t.Fatalf("%s: %s in the view: %v, want %v", step, c.name, !want[c], want[c])
			}
		}
		switch n := len(want); {
		case n <= s.opts.BigRoom && s.defIndex == nil:
			t.Fatalf("%s: %d online, small, and no index", step, n)
		case n > s.defIndexMaxLocked() && s.defIndex != nil:
			t.Fatalf("%s: %d online and an index of %d", step, n, len(s.defIndex))
		case s.defIndex != nil && len(s.defIndex) != n:
			t.Fatalf("%s: an index of %d for %d online", step, len(s.defIndex), n)
		}
	}
	for i := range 3 * s.opts.BigRoom {
		c := s.newClient(wire.Key{byte(i + 1)}, "n"+string(rune('a'+i)))
		s.byKey.set(c)
		cs = append(cs, c)
		if n, ok := s.addOnlineLocked(c, s.defaultRK); !ok || n != i+1 {
			t.Fatalf("add %d: %d, %v", i, n, ok)
		}
		if _, ok := s.addOnlineLocked(c, s.defaultRK); ok {
			t.Fatalf("add %d again: added", i)
		}
		if i%2 == 0 {
			s.addOnlineLocked(c, other)
		}
		check("grow")
	}
	if s.defIndex != nil {
		t.Fatal("a big default room kept its index")
	}
	for r := range s.viewRoomsLocked(cs[0]) {
		if r != s.defaultRK && r != other {
			t.Errorf("cs[0] in %q", r)
		}
	}
	if got := slices.Collect(s.viewRoomsLocked(cs[0])); len(got) != 2 || got[0] != s.defaultRK {
		t.Errorf("cs[0]'s rooms %q, want the default room, then %s", got, other)
	}
	if len(s.rooms[other]) != (len(cs)+1)/2 || len(s.rooms) != 1 {
		t.Errorf("%d rooms, %d online in %s", len(s.rooms), len(s.rooms[other]), other)
	}
	for i, c := range cs {
		n, ok := s.removeOnlineLocked(c, s.defaultRK)
		if !ok || n != len(cs)-i-1 {
			t.Fatalf("remove %d: %d, %v", i, n, ok)
		}
		if _, ok := s.removeOnlineLocked(c, s.defaultRK); ok {
			t.Fatalf("remove %d again: removed", i)
		}
		s.removeOnlineLocked(c, other)
		if c.viewRooms() != nil {
			t.Fatalf("remove %d: rooms %q left", i, c.viewRooms())
		}
		check("shrink")
	}
	if len(s.rooms) != 0 {
		t.Errorf("%d rooms online left", len(s.rooms))
	}
}

// TestDefaultRoomAloneShared: the keys in the default room and no other
// share one room list (room.alone); joining another room gives a key a
// list of its own, and leaving either never writes the shared one.
func TestDefaultRoomAloneShared(t *testing.T) {
	s := newCopyServer(t)
	s.mu.Lock()
	defer s.mu.Unlock()
	lobby := s.byRoom[s.defaultRK]
	if lobby == nil {
		lobby = s.newRoomLocked(s.opts.DefaultRoom, 1)
	}
	dev := s.newRoomLocked("#dev", 1)
	var ks []wire.Key
	for i := range 4 {
		k := wire.Key{0xa0, byte(i)}
		ks = append(ks, k)
		if m := s.addMemberLocked(lobby, k, "k"+string(rune('a'+i))); &m.joined()[0] != &lobby.alone[0] {
			t.Fatalf("key %d: a list of its own for the default room alone", i)
		}
	}
	shared := func() {
		t.Helper()
		if len(lobby.alone) != 1 || cap(lobby.alone) != 1 || lobby.alone[0] != lobby {
			t.Fatalf("the shared list is %v (cap %d)", lobby.alone, cap(lobby.alone))
		}
	}
	// ks[0] joins #dev, then parts the default room, then #dev.
	s.addMemberLocked(dev, ks[0], "")
	shared()
	if m := s.memberLocked(ks[0]); len(m.joined()) != 2 || m.joined()[0] != lobby || m.joined()[1] != dev {
		t.Fatalf("ks[0] in %d rooms", len(m.joined()))
	}
	s.removeMemberLocked(lobby, ks[0])
	shared()
	if m := s.memberLocked(ks[0]); len(m.joined()) != 1 || m.joined()[0] != dev {
		t.Fatalf("ks[0] in %v, want #dev", m.joined())
	}
	s.removeMemberLocked(dev, ks[0])
	shared()
	// ks[1] parts the default room: nobody else's list changes.
	s.removeMemberLocked(lobby, ks[1])
	shared()
	if s.memberLocked(ks[1]) != nil {
		t.Error("ks[1] still has a record in no room")
	}
	for _, k := range ks[2:] {
		if m := s.memberLocked(k); m == nil || len(m.joined()) != 1 || m.joined()[0] != lobby {
			t.Fatalf("%x: rooms %v, want the default room", k[:2], m)
		}
	}
}

// TestRoomListNotWrittenInPlace: with and without leave the list they
// start from as it was, since lists are shared (a room's alone list, a
// member record being moved).
func TestRoomListNotWrittenInPlace(t *testing.T) {
	a, b, c := &room{name: "#a"}, &room{name: "#b"}, &room{name: "#c"}
	a.alone = []*room{a}
	shared := roomList{&a.alone}
	ab := shared.with(b)
	abc := ab.with(c)
	ac := abc.without(1)
	switch {
	case !slices.Equal(shared.all(), []*room{a}) || len(a.alone) != 1:
		t.Fatalf("the shared list became %v", shared.all())
	case !slices.Equal(ab.all(), []*room{a, b}):
		t.Fatalf("a, b became %v", ab.all())
	case !slices.Equal(abc.all(), []*room{a, b, c}):
		t.Fatalf("a, b, c became %v", abc.all())
	case !slices.Equal(ac.all(), []*room{a, c}):
		t.Fatalf("a, b, c without b is %v", ac.all())
	case shared.without(0).p != nil || (roomList{}).all() != nil:
		t.Fatal("an empty list is not nil")
	}
}
