package rendezvous_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"natchat/relay"
	"natchat/rendezvous"
	"natchat/wire"
)

// roomReq sends a RoomJoin or RoomPart of room as n (with its next TxID),
// waits until it is answered, and returns n's RoomReply and everything
// the server wrote meanwhile.
func (h *harness) roomReq(n *node, join bool, room string) (*wire.RoomReply, []packet) {
	h.t.Helper()
	n.tx++
	var m wire.Message = &wire.RoomPart{TxID: n.tx, Room: room}
	if join {
		m = &wire.RoomJoin{TxID: n.tx, Room: room}
	}
	out := h.sealed(n, m, n.addr)
	r := one[*wire.RoomReply](h.t, out, n)
	if r.TxID != n.tx {
		h.t.Fatalf("%s: reply to tx %d, want %d", n.name, r.TxID, n.tx)
	}
	return r, out
}

func (h *harness) join(n *node, room string) (*wire.RoomReply, []packet) {
	h.t.Helper()
	return h.roomReq(n, true, room)
}

func (h *harness) part(n *node, room string) (*wire.RoomReply, []packet) {
	h.t.Helper()
	return h.roomReq(n, false, room)
}

// mustJoin has n join room and fails unless it is answered ok.
func (h *harness) mustJoin(n *node, room string) *wire.RoomReply {
	h.t.Helper()
	r, _ := h.join(n, room)
	if r.Status != wire.RoomOK {
		h.t.Fatalf("%s joining %s: %v", n.name, room, r.Status)
	}
	return r
}

// checkReply checks a RoomReply's fields but its TxID.
func checkReply(t *testing.T, r *wire.RoomReply, st wire.RoomStatus, room string, version uint64, members, online, limit uint32) {
	t.Helper()
	want := wire.RoomReply{TxID: r.TxID, Status: st, Room: room, Version: version, Members: members, Online: online, Limit: limit}
	if *r != want {
		t.Errorf("reply %+v, want %+v", *r, want)
	}
}

// listRooms pages through n's rooms from after and returns them and the
// pages.
func (h *harness) listRooms(n *node, after string) ([]wire.RoomInfo, []*wire.RoomListReply) {
	h.t.Helper()
	var all []wire.RoomInfo
	var pages []*wire.RoomListReply
	for range 1000 {
		n.tx++
		r := onlyTo[*wire.RoomListReply](h.t, h.sealed(n, &wire.RoomList{TxID: n.tx, After: after}, n.addr), n)
		if r.TxID != n.tx {
			h.t.Fatalf("room list: tx %d, want %d", r.TxID, n.tx)
		}
		pages = append(pages, r)
		all = append(all, r.Rooms...)
		if !r.More {
			return all, pages
		}
		if len(r.Rooms) == 0 {
			h.t.Fatal("room list: empty page with more to come")
		}
		after = r.Rooms[len(r.Rooms)-1].Room
	}
	h.t.Fatal("room list paging does not end")
	return nil, nil
}

// roomMembers pages through room's members as n from after and returns
// them and the pages.
func (h *harness) roomMembers(n *node, room, after string) ([]wire.RoomMember, []*wire.RoomMembersReply) {
	h.t.Helper()
	var all []wire.RoomMember
	var pages []*wire.RoomMembersReply
	for range 1000 {
		n.tx++
		r := onlyTo[*wire.RoomMembersReply](h.t, h.sealed(n, &wire.RoomMembers{TxID: n.tx, Room: room, After: after}, n.addr), n)
		if r.TxID != n.tx {
			h.t.Fatalf("room members: tx %d, want %d", r.TxID, n.tx)
		}
		pages = append(pages, r)
		all = append(all, r.Members...)
		if !r.More {
			return all, pages
		}
		if len(r.Members) == 0 {
			h.t.Fatal("room members: empty page with more to come")
		}
		after = r.Members[len(r.Members)-1].Name
	}
	h.t.Fatal("room members paging does not end")
	return nil, nil
}

// memberSet renders members as "name" or "name(off)", in their order.
func memberSet(ms []wire.RoomMember) []string {
	var out []string
	for _, m := range ms {
		s := m.Name
		if !m.Online {
			s += "(off)"
		}
		out = append(out, s)
	}
	return out
}

func roomNames(rs []wire.RoomInfo) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Room)
	}
	return out
}

// checkEvent checks a RoomEvent.
func checkEvent(t *testing.T, ev *wire.RoomEvent, room string, version uint64, kind wire.RoomEventKind, reason wire.RoomLeaveReason, about *node) {
	t.Helper()
	want := wire.RoomEvent{Seq: ev.Seq, Room: room, Version: version, Kind: kind, Reason: reason, Key: about.key, Name: about.name}
	if *ev != want || ev.Seq == 0 {
		t.Errorf("event %+v, want %+v", *ev, want)
	}
}

// noneTo fails unless nothing in out went to any of ns.
func noneTo(t *testing.T, out []packet, ns ...*node) {
	t.Helper()
	for _, n := range ns {
		if ms := n.msgs(t, out); len(ms) != 0 {
			t.Errorf("%s got %d datagrams (%s), want none", n.name, len(ms), describeMsg(ms[0]))
		}
	}
}

// TestRooms: join, part, list and members with three nodes; events go to
// the room's other online members only; the version grows by one per
// change; a non-member may not list a room.
func TestRooms(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	c := newNode(t, "carol", "198.51.100.3:3000")
	h.mustRegister(a, b, c)

	r, out := h.join(a, "#Dev")
	checkReply(t, r, wire.RoomOK, "#Dev", 1, 1, 1, 0)
	if len(out) != 1 {
		t.Errorf("alice's join of an empty room sent %s", describe(out))
	}
	// Identity is the NameKey; the spelling is the first one.
	r, out = h.join(b, "#dev")
	checkReply(t, r, wire.RoomOK, "#Dev", 2, 2, 2, 0)
	checkEvent(t, one[*wire.RoomEvent](t, out, a), "#Dev", 2, wire.RoomJoined, wire.RoomLeftPart, b)
	noneTo(t, out, c)
	if len(out) != 2 {
		t.Errorf("bob's join sent %s", describe(out))
	}
	if out := h.flush(); len(out) != 0 {
		t.Errorf("bob's join caused presence %s: alice and bob already share #lobby", describe(out))
	}
	// Joining a room one is in changes nothing.
	r, out = h.join(a, "#DEV")
	checkReply(t, r, wire.RoomOK, "#Dev", 2, 2, 2, 0)
	if len(out) != 1 {
		t.Errorf("a repeated join sent %s", describe(out))
	}

	rooms, _ := h.listRooms(a, "")
	want := []wire.RoomInfo{{Room: "#Dev", Version: 2, Members: 2, Online: 2}, {Room: "#lobby", Version: 3, Members: 3, Online: 3}}
	if !slices.Equal(rooms, want) {
		t.Errorf("alice's rooms %+v, want %+v", rooms, want)
	}
	if rooms, _ := h.listRooms(a, "#dev"); !slices.Equal(rooms, want[1:]) {
		t.Errorf("alice's rooms after #dev %+v, want %+v", rooms, want[1:])
	}
	ms, pages := h.roomMembers(a, "#dev", "")
	if got := memberSet(ms); !slices.Equal(got, []string{"alice", "bob"}) || pages[0].Version != 2 || pages[0].Total != 2 || pages[0].Room != "#Dev" {
		t.Errorf("members %q, page %+v", got, pages[0])
	}
	if ms[0].Key != a.key || ms[1].Key != b.key {
		t.Errorf("member keys %v", ms)
	}

	// Not a member: refused, for a room that exists or not.
	for _, room := range []string{"#dev", "#nowhere", "not a room"} {
		e := sealedError(t, h.sealed(c, &wire.RoomMembers{TxID: 77, Room: room}, c.addr), c, wire.CodeNotMember)
		if e.TxID != 77 || e.Request != wire.TypeRoomMembers {
			t.Errorf("refusal %+v", e)
		}
	}

	// Bob goes offline: still a member, listed offline.
	h.leave(b)
	if ms, _ := h.roomMembers(a, "#dev", ""); !slices.Equal(memberSet(ms), []string{"alice", "bob(off)"}) {
		t.Errorf("members %q", memberSet(ms))
	}
	if rooms, _ := h.listRooms(a, ""); rooms[0] != (wire.RoomInfo{Room: "#Dev", Version: 2, Members: 2, Online: 1}) {
		t.Errorf("#Dev as listed %+v", rooms[0])
	}

	// Carol joins, Alice parts: Carol hears of it, and stays alone.
	r, out = h.join(c, "#dev")
	checkReply(t, r, wire.RoomOK, "#Dev", 3, 3, 2, 0)
	checkEvent(t, one[*wire.RoomEvent](t, out, a), "#Dev", 3, wire.RoomJoined, wire.RoomLeftPart, c)
	r, out = h.part(a, "#dev")
	checkReply(t, r, wire.RoomOK, "#Dev", 4, 2, 1, 0)
	checkEvent(t, one[*wire.RoomEvent](t, out, c), "#Dev", 4, wire.RoomLeft, wire.RoomLeftPart, a)
	r, _ = h.part(a, "#dev")
	checkReply(t, r, wire.RoomNotMember, "#Dev", 4, 2, 1, 0)
	r, _ = h.part(a, "#nowhere")
	checkReply(t, r, wire.RoomNotMember, "#nowhere", 0, 0, 0, 0)
	sealedError(t, h.sealed(a, &wire.RoomMembers{TxID: 78, Room: "#dev"}, a.addr), a, wire.CodeNotMember)

	// Bob comes back a member, and sees the version he missed.
	h.register(b)
	if rooms, _ := h.listRooms(b, ""); !slices.Equal(rooms, []wire.RoomInfo{{Room: "#Dev", Version: 4, Members: 2, Online: 2},
		{Room: "#lobby", Version: 3, Members: 3, Online: 3}}) {
		t.Errorf("bob's rooms %+v", rooms)
	}

	// Everyone parts: the room is gone; made again, its version goes on.
	h.part(b, "#dev")
	h.part(c, "#dev")
	if rooms, _ := h.listRooms(c, ""); !slices.Equal(roomNames(rooms), []string{"#lobby"}) {
		t.Errorf("carol's rooms %q", roomNames(rooms))
	}
	r, _ = h.join(c, "#DEV")
	checkReply(t, r, wire.RoomOK, "#DEV", 7, 1, 1, 0)

	if got := h.metric("natchat_rendezvous_room_joins_total"); got != 3+4 {
		t.Errorf("joins %v, want 7", got)
	}
	if got := h.metric(`natchat_rendezvous_room_leaves_total{reason="part"}`); got != 3 {
		t.Errorf("parts %v, want 3", got)
	}
	if got := h.metric(`natchat_rendezvous_room_refused_total{reason="not_member"}`); got != 2 {
		t.Errorf("not_member refusals %v, want 2", got)
	}
	if got := h.metric("natchat_rendezvous_rooms"); got != 2 {
		t.Errorf("rooms %v, want 2", got)
	}
	if got := h.metric("natchat_rendezvous_room_members"); got != 4 {
		t.Errorf("memberships %v, want 4", got)
	}
}

// TestRoomPaging: RoomMembers and RoomList page through more than
// RoomPageMax entries, each exactly once, in NameKey order, each page
// within RoomPageMax entries and MaxPeersBody bytes.
func TestRoomPaging(t *testing.T) {
	const n = 75
	h := newHarness(t, func(o *rendezvous.Options) { o.LookupRate = -1; o.RoomsPerNode = -1 })
	var ns []*node
	names := make(map[wire.Key]string)
	for i := range n {
		var name string
		switch i % 3 {
		case 0:
			name = fmt.Sprintf("M%03d", i)
		case 1:
			name = fmt.Sprintf("m%03d-%s", i, strings.Repeat("x", 27)) // 32 characters
		default:
			name = fmt.Sprintf("é%03d", i)
		}
		nd := newNode(t, name, fmt.Sprintf("10.1.%d.1:1000", i))
		h.register(nd)
		h.mustJoin(nd, "#big")
		names[nd.key] = name
		ns = append(ns, nd)
	}
	h.flush()
	for _, nd := range ns[:10] {
		h.leave(nd)
	}
	a := ns[n-1]

	check := func(ms []wire.RoomMember, pages []*wire.RoomMembersReply, after string, want int) {
		t.Helper()
		if len(ms) != want {
			t.Errorf("%d members after %q, want %d", len(ms), after, want)
		}
		prev, seen := wire.NameKey(after), make(map[wire.Key]bool)
		for _, m := range ms {
			if seen[m.Key] || names[m.Key] != m.Name {
				t.Errorf("member %q (%s) repeated or misnamed", m.Name, m.Key.Short())
			}
			seen[m.Key] = true
			if k := wire.NameKey(m.Name); prev != "" && k <= prev {
				t.Errorf("%q after %q: not in NameKey order", m.Name, prev)
			}
			prev = wire.NameKey(m.Name)
			off := slices.ContainsFunc(ns[:10], func(nd *node) bool { return nd.key == m.Key })
			if m.Online == off {
				t.Errorf("%s online %v", m.Name, m.Online)
			}
		}
		for i, p := range pages {
			size := 0
			for _, m := range p.Members {
				size += wire.KeyLen + 2 + len(m.Name)
			}
			if len(p.Members) > wire.RoomPageMax || size > wire.MaxPeersBody {
				t.Errorf("page %d: %d members, %d bytes", i, len(p.Members), size)
			}
			if p.Total != n || p.Version != n || p.Room != "#big" || p.More != (i < len(pages)-1) {
				t.Errorf("page %d of %d: %+v", i, len(pages), p)
			}
		}
	}
	ms, pages := h.roomMembers(a, "#big", "")
	check(ms, pages, "", n)
	if len(pages) < 3 {
		t.Errorf("%d pages", len(pages))
	}
	want := 0
	for _, name := range names {
		if wire.NameKey(name) > "n" {
			want++
		}
	}
	ms, pages = h.roomMembers(a, "#big", "n")
	check(ms, pages, "n", want)

	// One node in many rooms, with long names.
	var rooms []string
	for i := range n {
		room := fmt.Sprintf("#room-%02d-%s", n-i, strings.Repeat("é", 20))
		h.mustJoin(a, room)
		rooms = append(rooms, room)
	}
	rooms = append(rooms, "#big", "#lobby")
	slices.SortFunc(rooms, func(x, y string) int { return strings.Compare(wire.NameKey(x), wire.NameKey(y)) })
	got, lpages := h.listRooms(a, "")
	if !slices.Equal(roomNames(got), rooms) {
		t.Errorf("rooms listed %q, want %q", roomNames(got), rooms)
	}
	for i, p := range lpages {
		size := 0
		for _, r := range p.Rooms {
			size += 1 + len(r.Room) + 16
		}
		if len(p.Rooms) > wire.RoomPageMax || size > wire.MaxPeersBody || p.More != (i < len(lpages)-1) {
			t.Errorf("page %d of %d: %d rooms, %d bytes, more %v", i, len(lpages), len(p.Rooms), size, p.More)
		}
	}
	if len(lpages) < 3 {
		t.Errorf("%d room pages", len(lpages))
	}
	for _, r := range got {
		if r.Room == "#big" && (r.Members != n || r.Online != n-10 || r.Version != n) {
			t.Errorf("#big listed as %+v", r)
		}
	}
}

// TestRoomLimits: a full room, too many rooms, the default room exempt
// from both; bad and look-alike names.
func TestRoomLimits(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.RoomMembers = 2; o.RoomsPerNode = 2; o.LookupRate = -1 })
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	c := newNode(t, "carol", "198.51.100.3:3000")
	h.mustRegister(a, b, c)
	// The default room holds everyone: no members limit.
	if rooms, _ := h.listRooms(c, ""); !slices.Equal(rooms, []wire.RoomInfo{{Room: "#lobby", Version: 3, Members: 3, Online: 3}}) {
		t.Errorf("carol's rooms %+v", rooms)
	}

	h.mustJoin(a, "#x")
	h.mustJoin(b, "#x")
	r, out := h.join(c, "#X")
	checkReply(t, r, wire.RoomFull, "#x", 2, 2, 2, 2)
	noneTo(t, out, a, b)

	// Two rooms, the default one not counted.
	h.mustJoin(a, "#y")
	r, _ = h.join(a, "#z")
	checkReply(t, r, wire.RoomTooMany, "#z", 0, 0, 0, 2)
	if _, out := h.part(a, "#lobby"); len(one[*wire.RoomEvent](t, out, b).Name) == 0 {
		t.Error("no event")
	}
	r, _ = h.join(a, "#lobby") // back in, over neither limit
	checkReply(t, r, wire.RoomOK, "#lobby", 5, 3, 3, 0)
	if got := h.metric(`natchat_rendezvous_room_refused_total{reason="full"}`); got != 1 {
		t.Errorf("full refusals %v", got)
	}
	if got := h.metric(`natchat_rendezvous_room_refused_total{reason="too_many"}`); got != 1 {
		t.Errorf("too_many refusals %v", got)
	}

	// Bad names.
	for _, name := range []string{"dev", "", "#", "#" + strings.Repeat("x", 33), "#a\x01b", "#a b", "#a\u200bb",
		"#/x", "##x", "#\xff", "#" + strings.Repeat("é", 60)} {
		r, _ := h.join(c, name)
		checkReply(t, r, wire.RoomBadName, name, 0, 0, 0, 0)
	}
	r, _ = h.join(c, "#"+strings.Repeat("é", 32)) // the longest name
	checkReply(t, r, wire.RoomOK, "#"+strings.Repeat("é", 32), 1, 1, 1, 0)
	h.part(c, "#"+strings.Repeat("é", 32))

	// Look-alikes of a room that exists are refused; its own name in
	// another case is that room.
	// (A room made after one was deleted starts above that one's last
	// version, 2.)
	h.mustJoin(b, "#dev")
	for _, name := range []string{"#dеv", "#DΕV", "#ⅾev"} { // Cyrillic е, Greek Ε, small roman numeral ⅾ
		r, _ := h.join(c, name)
		checkReply(t, r, wire.RoomBadName, name, 0, 0, 0, 0)
	}
	r, _ = h.join(c, "#DEV")
	checkReply(t, r, wire.RoomOK, "#dev", 4, 2, 2, 0)
	// Once it is gone, the look-alike may be made.
	h.part(b, "#dev")
	h.part(c, "#dev")
	r, _ = h.join(c, "#dеv")
	checkReply(t, r, wire.RoomOK, "#dеv", 7, 1, 1, 0)
}

// TestRoomRace: joins racing for a room's last place, and a look-alike
// created while the first is being written: the store settles them.
func TestRoomRace(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.RoomMembers = 2 })
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	c := newNode(t, "carol", "198.51.100.3:3000")
	h.mustRegister(a, b, c)
	held, release := holdCommits(t, h.store)
	h.conn.take()
	h.s.Handle(a.seal(&wire.RoomJoin{TxID: 1, Room: "#x"}), a.addr)
	waitClosed(t, held, "the first join's commit")
	// While alice's join is being written: two more for the room's one
	// other place, and a look-alike of the room being made.
	h.s.Handle(b.seal(&wire.RoomJoin{TxID: 1, Room: "#x"}), b.addr)
	h.s.Handle(c.seal(&wire.RoomJoin{TxID: 1, Room: "#X"}), c.addr)
	h.s.Handle(c.seal(&wire.RoomJoin{TxID: 2, Room: "#х"}), c.addr) // Cyrillic х
	out := h.conn.take()
	if r := one[*wire.RoomReply](t, out, c); r.TxID != 2 || r.Status != wire.RoomBadName {
		t.Errorf("look-alike of a room being made: %+v", r)
	}
	noneTo(t, out, a, b)
	release()
	h.s.WaitRooms()
	out = h.conn.take()
	checkReply(t, one[*wire.RoomReply](t, out, a), wire.RoomOK, "#x", 1, 1, 1, 0)
	checkReply(t, one[*wire.RoomReply](t, out, b), wire.RoomOK, "#x", 2, 2, 2, 0)
	checkReply(t, one[*wire.RoomReply](t, out, c), wire.RoomFull, "#x", 2, 2, 2, 2)
}

// TestRoomReplyWhenDurable: a join is answered only once its write is
// committed; a session has at most four writes queued, and more are
// answered busy at once.
func TestRoomReplyWhenDurable(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:1000")
	h.mustRegister(a)
	held, release := holdCommits(t, h.store)
	if out := h.raw(a.seal(&wire.RoomJoin{TxID: 1, Room: "#r1"}), a.addr); len(out) != 0 {
		t.Fatalf("join answered before its write: %s", describe(out))
	}
	waitClosed(t, held, "the join's commit")
	for i := 2; i <= 4; i++ {
		if out := h.raw(a.seal(&wire.RoomJoin{TxID: uint32(i), Room: fmt.Sprintf("#r%d", i)}), a.addr); len(out) != 0 {
			t.Fatalf("join %d answered before its write: %s", i, describe(out))
		}
	}
	r := onlyTo[*wire.RoomReply](t, h.raw(a.seal(&wire.RoomJoin{TxID: 5, Room: "#r5"}), a.addr), a)
	if r.TxID != 5 || r.Status != wire.RoomBusy {
		t.Errorf("fifth join: %+v, want busy", r)
	}
	release()
	h.s.WaitRooms()
	rs := of[*wire.RoomReply](t, h.conn.take(), a)
	if len(rs) != 4 {
		t.Fatalf("%d replies, want 4", len(rs))
	}
	for i, r := range rs {
		if r.TxID != uint32(i+1) || r.Status != wire.RoomOK || r.Room != fmt.Sprintf("#r%d", i+1) {
			t.Errorf("reply %d: %+v", i, r)
		}
	}
}

// TestRoomDurability: memberships, offline members included, and
// versions survive a restart of the rendezvous; a node that parted the
// default room stays out; a new key is put in the default room once.
func TestRoomDurability(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	h.mustRegister(a, b)
	h.mustJoin(a, "#Dev")
	h.mustJoin(b, "#dev")
	h.part(a, "#lobby") // lobby v3
	h.leave(b)
	// Registering again changes nothing: the default room is given once.
	h.register(a)
	if rooms, _ := h.listRooms(a, ""); !slices.Equal(rooms, []wire.RoomInfo{{Room: "#Dev", Version: 2, Members: 2, Online: 1}}) {
		t.Errorf("alice's rooms %+v", rooms)
	}

	h2 := h.restart(nil)
	h2.register(a)
	if rooms, _ := h2.listRooms(a, ""); !slices.Equal(rooms, []wire.RoomInfo{{Room: "#Dev", Version: 2, Members: 2, Online: 1}}) {
		t.Errorf("alice's rooms after a restart %+v", rooms)
	}
	if ms, _ := h2.roomMembers(a, "#dev", ""); !slices.Equal(memberSet(ms), []string{"alice", "bob(off)"}) {
		t.Errorf("members after a restart %q", memberSet(ms))
	}
	// The versions go on from where they were.
	r, _ := h2.join(a, "#x")
	checkReply(t, r, wire.RoomOK, "#x", 1, 1, 1, 0)
	h2.part(a, "#x")
	h2.register(b)
	r, out := h2.part(b, "#dev")
	checkReply(t, r, wire.RoomOK, "#Dev", 3, 1, 1, 0)
	checkEvent(t, one[*wire.RoomEvent](t, out, a), "#Dev", 3, wire.RoomLeft, wire.RoomLeftPart, b)
	// bob is still in the default room: lobby v3, alice gone.
	if rooms, _ := h2.listRooms(b, ""); !slices.Equal(rooms, []wire.RoomInfo{{Room: "#lobby", Version: 3, Members: 1, Online: 1}}) {
		t.Errorf("bob's rooms %+v", rooms)
	}

	// A new key: in the default room once, and out of it for good once
	// it parts.
	c := newNode(t, "carol", "198.51.100.3:3000")
	h2.register(c)
	if rooms, _ := h2.listRooms(c, ""); !slices.Equal(rooms, []wire.RoomInfo{{Room: "#lobby", Version: 4, Members: 2, Online: 2}}) {
		t.Errorf("carol's rooms %+v", rooms)
	}
	h2.part(c, "#lobby")
	h2.leave(c)
	h2.register(c)
	if rooms, _ := h2.listRooms(c, ""); len(rooms) != 0 {
		t.Errorf("carol's rooms after parting the default room %+v", rooms)
	}
	// A room that emptied and is made again does not reuse a version,
	// even across a restart.
	h2.mustJoin(c, "#x")
	r, _ = h2.part(c, "#x")
	checkReply(t, r, wire.RoomOK, "#x", 4, 0, 0, 0)

	h3 := h2.restart(nil)
	h3.register(c)
	if rooms, _ := h3.listRooms(c, ""); len(rooms) != 0 {
		t.Errorf("carol's rooms after a restart %+v", rooms)
	}
	r, _ = h3.join(c, "#X")
	checkReply(t, r, wire.RoomOK, "#X", 5, 1, 1, 0)
	h3.register(a)
	if rooms, _ := h3.listRooms(a, ""); !slices.Equal(rooms, []wire.RoomInfo{{Room: "#Dev", Version: 3, Members: 1, Online: 1}}) {
		t.Errorf("alice's rooms after two restarts %+v", rooms)
	}
}

// TestRoomExpiry: a member away for longer than MailboxAge (not online,
// binding last used before) is taken out of its rooms, and the rooms'
// online members are told; one online, or seen recently, stays.
func TestRoomExpiry(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.MailboxAge = time.Hour })
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	c := newNode(t, "carol", "198.51.100.3:3000")
	d := newNode(t, "dave", "198.51.100.4:4000")
	h.mustRegister(a, b, c, d)
	for _, n := range []*node{a, b, c, d} {
		h.mustJoin(n, "#x") // #x v4, #lobby v4
	}
	h.leave(b)
	h.leave(c)
	h.clock.Step(50 * time.Minute)
	h.register(c) // seen recently
	h.leave(c)
	h.clock.Step(20 * time.Minute) // bob: away 70 minutes; carol: 20; alice and dave online all along

	if n, err := h.s.ExpireRooms(h.clock.Now().Add(-11 * time.Minute)); err != nil || n != 0 {
		t.Fatalf("expired %d, %v before bob's hour was up", n, err)
	}
	h.conn.take()
	n, err := h.s.ExpireRooms(h.clock.Now())
	if err != nil || n != 2 {
		t.Fatalf("expired %d, %v; want bob's two memberships", n, err)
	}
	out := h.conn.take()
	for _, o := range []*node{a, d} {
		evs := of[*wire.RoomEvent](t, out, o)
		slices.SortFunc(evs, func(x, y *wire.RoomEvent) int { return strings.Compare(x.Room, y.Room) })
		if len(evs) != 2 {
			t.Fatalf("%s got %d events", o.name, len(evs))
		}
		checkEvent(t, evs[0], "#lobby", 5, wire.RoomLeft, wire.RoomLeftExpired, b)
		checkEvent(t, evs[1], "#x", 5, wire.RoomLeft, wire.RoomLeftExpired, b)
	}
	if ms, _ := h.roomMembers(a, "#x", ""); !slices.Equal(memberSet(ms), []string{"alice", "carol(off)", "dave"}) {
		t.Errorf("members after expiry %q", memberSet(ms))
	}
	if got := h.metric(`natchat_rendezvous_room_leaves_total{reason="expired"}`); got != 2 {
		t.Errorf("expired %v", got)
	}
	// Bob comes back: in no room (his mark stays: not the default room again).
	h.register(b)
	if rooms, _ := h.listRooms(b, ""); len(rooms) != 0 {
		t.Errorf("bob's rooms %+v", rooms)
	}
	// Nothing more to take out; a negative MailboxAge takes out nothing.
	if n, err := h.s.ExpireRooms(h.clock.Now()); err != nil || n != 0 {
		t.Errorf("expired %d, %v again", n, err)
	}
	h.leave(b)
	h2 := h.restart(func(o *rendezvous.Options) { o.MailboxAge = -1 })
	h2.clock.Step(1000 * time.Hour)
	if n, err := h2.s.ExpireRooms(h2.clock.Now()); err != nil || n != 0 {
		t.Errorf("expired %d, %v with no mailbox age", n, err)
	}
}

// TestRoomPresence: with no default room, a node sees the members of its
// small rooms and no one else's; joins and parts start and end that.
func TestRoomPresence(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.DefaultRoom = "" })
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	c := newNode(t, "carol", "198.51.100.3:3000")
	d := newNode(t, "dave", "198.51.100.4:4000")
	h.mustRegister(a, b, c, d)

	h.mustJoin(a, "#a")
	if out := h.flush(); len(out) != 0 {
		t.Errorf("alone in #a: %s", describe(out))
	}
	h.mustJoin(b, "#a")
	out := h.flush()
	checkPresence(t, onlyPresence(t, out, a), 1, wire.PresenceJoin, wire.ReasonNone, b)
	checkPresence(t, onlyPresence(t, out, b), 1, wire.PresenceJoin, wire.ReasonNone, a)
	noneTo(t, out, c, d)
	h.mustJoin(c, "#b")
	h.mustJoin(d, "#b")
	out = h.flush()
	noneTo(t, out, a, b)
	checkPresence(t, onlyPresence(t, out, c), 1, wire.PresenceJoin, wire.ReasonNone, d)

	// alice registers again: her snapshot is #a's members; carol's
	// coming and going is none of her business.
	h.leave(a)
	_, parts, _ := h.register(a)
	samePeers(t, snapshotPeers(parts), b)
	h.flushInto(a, b)
	h.leave(c)
	h.register(c)
	out = h.flush()
	noneTo(t, out, a, b)
	if len(d.msgs(t, out)) != 1 {
		t.Errorf("dave: %s", describe(out))
	}
	samePeers(t, snapshotPeers(h.snapshot(a)), b)

	// alice watches carol (a lookup): carol joining #a is news to carol,
	// not to alice, who sees her already.
	onlyTo[*wire.LookupReply](t, h.sealed(a, &wire.Lookup{TxID: 1, Name: "carol"}, a.addr), a)
	h.flushInto(a)
	_, out = h.join(c, "#a")
	checkEvent(t, one[*wire.RoomEvent](t, out, a), "#a", 3, wire.RoomJoined, wire.RoomLeftPart, c)
	checkEvent(t, one[*wire.RoomEvent](t, out, b), "#a", 3, wire.RoomJoined, wire.RoomLeftPart, c)
	out = h.flush()
	noneTo(t, out, a)
	if p := onlyPresence(t, out, c); len(p.Changes) != 2 {
		t.Errorf("carol's presence %+v, want alice and bob", p.Changes)
	}
	checkPresence(t, onlyPresence(t, out, b), 4, wire.PresenceJoin, wire.ReasonNone, c) // after alice left (2) and came back (3)

	// bob parts #a: he and alice and carol no longer see each other.
	_, out = h.part(b, "#a")
	if len(of[*wire.RoomEvent](t, out, a)) != 1 || len(of[*wire.RoomEvent](t, out, c)) != 1 {
		t.Errorf("bob's part told %s", describe(out))
	}
	out = h.flush()
	for _, n := range []*node{a, c} {
		checkChange(t, onlyPresence(t, out, n).Changes[0], wire.PresenceLeft, wire.ReasonNone, b)
	}
	if p := onlyPresence(t, out, b); len(p.Changes) != 2 || p.Changes[0].Kind != wire.PresenceLeft || p.Changes[1].Kind != wire.PresenceLeft {
		t.Errorf("bob's presence %+v", p.Changes)
	}
	samePeers(t, snapshotPeers(h.snapshot(b)))
	// carol parts #a: alice still watches her; carol no longer sees alice.
	h.part(c, "#a")
	out = h.flush()
	noneTo(t, out, a)
	checkChange(t, onlyPresence(t, out, c).Changes[0], wire.PresenceLeft, wire.ReasonNone, a)
	samePeers(t, snapshotPeers(h.snapshot(a)), c)
	samePeers(t, snapshotPeers(h.snapshot(c)), d)
}

// TestRoomEventSeq: each receiver's room events are numbered from 1, and
// its HeartbeatAck carries the last number sent, so that it notices a
// lost one. Rooms one may post to (up to RoomMembers) announce every
// change even past BigRoom.
func TestRoomEventSeq(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.BigRoom = 1; o.DefaultRoom = ""; o.RoomMembers = 10 })
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	c := newNode(t, "carol", "198.51.100.3:3000")
	h.mustRegister(a, b, c)
	if ack := h.heartbeat(a); ack.RoomSeq != 0 {
		t.Fatalf("before any event: RoomSeq %d", ack.RoomSeq)
	}
	h.mustJoin(a, "#x")
	_, out := h.join(b, "#x")
	if ev := one[*wire.RoomEvent](t, out, a); ev.Seq != 1 {
		t.Errorf("alice's first event: seq %d", ev.Seq)
	}
	_, out = h.join(c, "#x")
	if ev := one[*wire.RoomEvent](t, out, a); ev.Seq != 2 {
		t.Errorf("alice's second event: seq %d", ev.Seq)
	}
	if ev := one[*wire.RoomEvent](t, out, b); ev.Seq != 1 {
		t.Errorf("bob's first event: seq %d", ev.Seq)
	}
	if ack := h.heartbeat(a); ack.RoomSeq != 2 {
		t.Errorf("alice's ack: RoomSeq %d, want 2", ack.RoomSeq)
	}
}

// TestRoomBig: joins and parts in a room bigger than BigRoom are not
// broadcast when the rendezvous has no member limit.
func TestRoomBig(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.BigRoom = 2; o.DefaultRoom = ""; o.RoomMembers = -1 })
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	c := newNode(t, "carol", "198.51.100.3:3000")
	h.mustRegister(a, b, c)
	h.mustJoin(a, "#x")
	if _, out := h.join(b, "#x"); len(of[*wire.RoomEvent](t, out, a)) != 1 {
		t.Errorf("a small room's join: %s", describe(out))
	}
	r, out := h.join(c, "#x")
	checkReply(t, r, wire.RoomOK, "#x", 3, 3, 3, 0)
	noneTo(t, out, a, b)
	_, out = h.part(c, "#x")
	noneTo(t, out, a, b)
	_, out = h.part(b, "#x")
	checkEvent(t, one[*wire.RoomEvent](t, out, a), "#x", 5, wire.RoomLeft, wire.RoomLeftPart, b)
}

// TestRoomRateLimited: room requests count against the lookup rate.
func TestRoomRateLimited(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.LookupRate = 1 })
	a := newNode(t, "alice", "198.51.100.1:1000")
	h.mustRegister(a)
	reqs := []wire.Message{
		&wire.RoomJoin{TxID: 11, Room: "#x"},
		&wire.RoomPart{TxID: 12, Room: "#x"},
		&wire.RoomList{TxID: 13},
		&wire.RoomMembers{TxID: 14, Room: "#lobby"},
	}
	for _, m := range reqs {
		h.clock.Step(10 * time.Second) // a full bucket: 2
		h.sealed(a, m, a.addr)
		h.sealed(a, m, a.addr)
		e := sealedError(t, h.sealed(a, m, a.addr), a, wire.CodeRateLimited)
		var tx uint32
		switch m := m.(type) {
		case *wire.RoomJoin:
			tx = m.TxID
		case *wire.RoomPart:
			tx = m.TxID
		case *wire.RoomList:
			tx = m.TxID
		case *wire.RoomMembers:
			tx = m.TxID
		}
		if e.Request != m.Type() || e.TxID != tx {
			t.Errorf("refusal %+v, want one for %v %d", e, m.Type(), tx)
		}
	}
}

// TestRoomHostile: malformed, truncated and oversized room requests, and
// messages only the rendezvous sends, are refused without harm.
func TestRoomHostile(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.LookupRate = -1 })
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	h.mustRegister(a, b)
	h.mustJoin(a, "#x")

	before := h.metric(dropped(relay.DropMalformed))
	sent := 0
	long := strings.Repeat("\xff", 255)
	for _, m := range []wire.Message{
		&wire.RoomJoin{TxID: 1, Room: "#x"},
		&wire.RoomPart{TxID: 1, Room: "#x"},
		&wire.RoomList{TxID: 1, After: "#x"},
		&wire.RoomMembers{TxID: 1, Room: "#x", After: "alice"},
	} {
		pt := wire.AppendInner(nil, m)
		for n := 1; n < len(pt); n++ {
			if out := h.handle(a.rv.Keys.Seal(nil, a.session, pt[:n]), a.addr); len(out) != 0 {
				t.Errorf("%v truncated to %d bytes answered: %s", m.Type(), n, describe(out))
			}
			sent++
		}
	}
	if after := h.metric(dropped(relay.DropMalformed)); after-before != float64(sent) {
		t.Errorf("malformed drops +%v, want +%d", after-before, sent)
	}

	// Oversized and strange strings are answered, sized as any page.
	r, _ := h.join(a, long)
	checkReply(t, r, wire.RoomBadName, long, 0, 0, 0, 0)
	r, _ = h.part(a, long)
	checkReply(t, r, wire.RoomNotMember, long, 0, 0, 0, 0)
	if rooms, _ := h.listRooms(a, long); len(rooms) != 0 {
		t.Errorf("rooms after %q: %+v", long, rooms)
	}
	if ms, _ := h.roomMembers(a, "#x", long); len(ms) != 0 {
		t.Errorf("members after %q: %+v", long, ms)
	}
	sealedError(t, h.sealed(a, &wire.RoomMembers{TxID: 3, Room: long}, a.addr), a, wire.CodeNotMember)

	// What the rendezvous sends, sealed by a node: dropped.
	before = h.metric(dropped(relay.DropUnknownType))
	r2n := []wire.Message{
		&wire.RoomReply{TxID: 1, Room: "#x"},
		&wire.RoomListReply{TxID: 1},
		&wire.RoomMembersReply{TxID: 1, Room: "#x"},
		&wire.RoomEvent{Room: "#x", Kind: wire.RoomJoined, Key: b.key},
	}
	for _, m := range r2n {
		if out := h.sealed(a, m, a.addr); len(out) != 0 {
			t.Errorf("%v answered: %s", m.Type(), describe(out))
		}
	}
	if after := h.metric(dropped(relay.DropUnknownType)); after-before != float64(len(r2n)) {
		t.Errorf("unknown_type drops +%v, want +%d", after-before, len(r2n))
	}

	// Random bodies of every room request, sealed.
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 2000 {
		pt := make([]byte, 1+rng.IntN(300))
		for j := range pt {
			pt[j] = byte(rng.Uint32())
		}
		pt[0] = byte(wire.TypeRoomJoin) + byte(i%8)
		h.handle(a.rv.Keys.Seal(nil, a.session, pt), a.addr)
	}
	stillServing(t, h, a, b)
	if ms, _ := h.roomMembers(b, "#lobby", ""); len(ms) != 2 {
		t.Errorf("lobby after the noise %q", memberSet(ms))
	}
}

// TestRoomRelease: a key whose name binding is released is taken out of
// its rooms, even with no mailbox age: its name may go to another key.
func TestRoomRelease(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.MailboxAge = -1; o.BindingTTL = 2 * time.Hour })
	a := newNode(t, "alice", "198.51.100.1:1000")
	b := newNode(t, "bob", "198.51.100.2:2000")
	h.mustRegister(a, b)
	h.mustJoin(a, "#x")
	h.mustJoin(b, "#x")
	h.leave(b)
	h.clock.Step(3 * time.Hour)
	h.conn.take()
	names, err := h.s.ReleaseUnused(h.clock.Now())
	if err != nil || !slices.Equal(names, []string{"bob"}) {
		t.Fatalf("released %q, %v", names, err)
	}
	evs := of[*wire.RoomEvent](t, h.conn.take(), a)
	slices.SortFunc(evs, func(x, y *wire.RoomEvent) int { return strings.Compare(x.Room, y.Room) })
	if len(evs) != 2 {
		t.Fatalf("alice got %d events", len(evs))
	}
	checkEvent(t, evs[0], "#lobby", 3, wire.RoomLeft, wire.RoomLeftExpired, b)
	checkEvent(t, evs[1], "#x", 3, wire.RoomLeft, wire.RoomLeftExpired, b)
	if ms, _ := h.roomMembers(a, "#x", ""); !slices.Equal(memberSet(ms), []string{"alice"}) {
		t.Errorf("members %q", memberSet(ms))
	}
	// Another key takes the name: it is a new member of nothing but the
	// default room.
	bob2 := newNode(t, "bob", "198.51.100.9:2000")
	h.register(bob2)
	if rooms, _ := h.listRooms(bob2, ""); !slices.Equal(roomNames(rooms), []string{"#lobby"}) {
		t.Errorf("the new bob's rooms %q", roomNames(rooms))
	}
}

// TestRoomDefaultOneWrite: a new key's binding and its default room are
// one durable write; registering again writes nothing.
func TestRoomDefaultOneWrite(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:1000")
	h.mustRegister(a)
	var commits atomic.Int32
	rendezvous.SetCommitHook(h.store, func(n int) {
		if n > 0 {
			commits.Add(1)
		}
	})
	b := newNode(t, "bob", "198.51.100.2:2000")
	h.register(b)
	if n := commits.Load(); n != 1 {
		t.Errorf("a new node's registration took %d writes, want 1", n)
	}
	if rooms, _ := h.listRooms(b, ""); !slices.Equal(rooms, []wire.RoomInfo{{Room: "#lobby", Version: 2, Members: 2, Online: 2}}) {
		t.Errorf("bob's rooms %+v", rooms)
	}
	h.leave(b)
	commits.Store(0)
	h.register(b)
	if n := commits.Load(); n != 0 {
		t.Errorf("registering again took %d writes, want none", n)
	}
}
