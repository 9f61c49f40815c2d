package e2e

import (
	"fmt"
	"testing"
)

// TestRooms: three nodes in #dev, with the binaries. Each one's messages
// reach the other two, in the order sent, with the room; a member away
// meanwhile gets what it missed from its mailbox, in order, once;
// membership survives a SIGKILL of the rendezvous; /part stops delivery;
// joins and parts are announced; /me works in the room. A node outside
// the room can neither post to it nor see it, and (with no default room)
// learns nothing of its members' presence.
func TestRooms(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{extra: []string{"-default-room", ""}})
	names := []string{"alice", "bob", "carol"}
	nodes := map[string]*node{}
	bobID := newIdentity(t)
	for _, n := range names {
		o := nodeOptions{}
		if n == "bob" {
			o = bobID.options("bob#1")
		}
		nodes[n] = startNode(t, n, rv.addr, o)
	}
	dave := startNode(t, "dave", rv.addr, nodeOptions{})
	for _, n := range append(names, "dave") {
		nd := nodes[n]
		if n == "dave" {
			nd = dave
		}
		nd.waitRegistered(t)
	}
	alice, bob, carol := nodes["alice"], nodes["bob"], nodes["carol"]

	// Joins, each announced to those already in.
	for i, n := range names {
		nd := nodes[n]
		m := nd.mark()
		nd.command(t, "/join #dev")
		j, _ := nd.waitEventFrom(t, m, waitLong, "own room_joined", isType("room_joined"))
		if j.Room != "#dev" || j.Name != n || j.Total != i+1 {
			t.Fatalf("%s joined: %v", n, j)
		}
		for _, earlier := range names[:i] {
			nodes[earlier].waitEvent(t, waitLong, n+" joined", func(e *event) bool {
				return e.Type == "room_joined" && e.Name == n && e.Room == "#dev"
			})
		}
	}

	// Every member talks; every other member gets each one's messages in
	// order, with the room and the sender's ID.
	const k = 3
	marks := map[string]int{}
	for _, n := range names {
		marks[n] = nodes[n].mark()
	}
	for _, n := range names {
		for i := range k {
			nodes[n].command(t, fmt.Sprintf("/msg #dev %s-%d", n, i))
		}
	}
	sent := map[string][]*event{}
	for _, n := range names {
		sent[n] = nodes[n].waitEvents(t, marks[n], k, waitLong, "sent", isType("sent"))
		for i, s := range sent[n] {
			if s.Room != "#dev" || s.To != "#dev" || s.Text != fmt.Sprintf("%s-%d", n, i) {
				t.Fatalf("%s sent %v", n, s)
			}
		}
	}
	for _, n := range names {
		for _, from := range names {
			if from == n {
				continue
			}
			got := nodes[n].waitEvents(t, marks[n], k, waitLong, "messages from "+from, func(e *event) bool {
				return e.Type == "message" && e.From == from
			})
			for i, m := range got {
				if m.Room != "#dev" || m.ID != sent[from][i].ID || m.Text != sent[from][i].Text {
					t.Fatalf("%s's message %d from %s: %v, want %v", n, i, from, m, sent[from][i])
				}
			}
		}
		for _, s := range sent[n] {
			nodes[n].waitEventFrom(t, marks[n], waitLong, "delivered 2/2", func(e *event) bool {
				return e.Type == "delivered" && e.ID == s.ID && e.MembersDelivered == "2/2" && e.Room == "#dev"
			})
		}
	}

	// carol is away: alice's messages wait in her mailbox.
	cm := carol.mark()
	carol.command(t, "/dereg")
	carol.waitEventFrom(t, cm, waitLong, "deregistered", isType("deregistered"))
	am := alice.mark()
	for i := range k {
		alice.command(t, fmt.Sprintf("/msg #dev while away %d", i))
	}
	away := alice.waitEvents(t, am, k, waitLong, "sent", isType("sent"))
	for _, s := range away {
		alice.waitEventFrom(t, am, waitLong, "stored for carol", func(e *event) bool {
			return e.Type == "stored" && e.ID == s.ID && e.To == "carol" && e.Room == "#dev"
		})
		alice.waitEventFrom(t, am, waitLong, "delivered 1/2", func(e *event) bool {
			return e.Type == "delivered" && e.ID == s.ID && e.MembersDelivered == "1/2"
		})
	}
	cm = carol.mark()
	carol.command(t, "/reg")
	got := carol.waitEvents(t, cm, k, waitLong, "missed messages", func(e *event) bool { return e.Type == "message" && e.From == "alice" })
	for i, m := range got {
		if m.ID != away[i].ID || m.Via != "mailbox" || m.Room != "#dev" {
			t.Fatalf("carol's missed message %d: %v, want %v", i, m, away[i])
		}
	}
	for _, s := range away {
		alice.waitEventFrom(t, am, waitLong, "delivered 2/2", func(e *event) bool {
			return e.Type == "delivered" && e.ID == s.ID && e.MembersDelivered == "2/2"
		})
	}

	// The rendezvous is killed and restarted: the room is still there.
	// Each node's mark is taken before the kill: a node may register
	// again while the test still waits for another.
	marks = make(map[string]int, len(names))
	for _, n := range names {
		marks[n] = nodes[n].mark()
	}
	rv.kill(t)
	rv = rv.restart(t)
	for _, n := range names {
		nd := nodes[n]
		m := marks[n]
		nd.waitEventFrom(t, m, waitLong, "registered again", isType("registered"))
		nd.command(t, "/rooms")
		r, _ := nd.waitEventFrom(t, m, waitLong, "rooms", isType("rooms"))
		if len(r.Rooms) != 1 || r.Rooms[0].Room != "#dev" || r.Rooms[0].Members != 3 {
			t.Fatalf("%s's rooms after the restart: %v", n, r)
		}
	}
	// bob is killed and started again: still in the room, and the
	// current conversation is chosen again with /msg.
	bob.kill(t)
	bob = startNode(t, "bob", rv.addr, bobID.options("bob#2"))
	bob.waitRegistered(t)
	bob.command(t, "/rooms")
	if r := bob.waitEvent(t, waitLong, "rooms", isType("rooms")); len(r.Rooms) != 1 || r.Rooms[0].Room != "#dev" {
		t.Fatalf("bob's rooms after his restart: %v", r)
	}
	bob.command(t, "/msg #dev back")
	bob.waitEvent(t, waitLong, "delivered 2/2", func(e *event) bool { return e.Type == "delivered" && e.MembersDelivered == "2/2" })

	// /me in the room, after the restarts.
	bm, am, cm := bob.mark(), alice.mark(), carol.mark()
	bob.command(t, "/me waves") // #dev is bob's conversation
	s, _ := bob.waitEventFrom(t, bm, waitLong, "sent", isType("sent"))
	if s.Kind != "emote" || s.Room != "#dev" {
		t.Fatalf("bob's emote: %v", s)
	}
	for _, nd := range []*node{alice, carol} {
		from := am
		if nd == carol {
			from = cm
		}
		e, _ := nd.waitEventFrom(t, from, waitLong, "the emote", func(e *event) bool { return e.Type == "message" && e.ID == s.ID })
		if e.Kind != "emote" || e.Room != "#dev" || e.From != "bob" {
			t.Fatalf("%s got %v", nd.name, e)
		}
	}

	// carol parts: the others hear it, and messages no longer go to her.
	cm = carol.mark()
	carol.command(t, "/part #dev")
	if l, _ := carol.waitEventFrom(t, cm, waitLong, "own room_left", isType("room_left")); l.Name != "carol" || l.Reason != "part" {
		t.Fatalf("carol's part: %v", l)
	}
	for _, nd := range []*node{alice, bob} {
		nd.waitEvent(t, waitLong, "carol left", func(e *event) bool {
			return e.Type == "room_left" && e.Name == "carol" && e.Room == "#dev"
		})
	}
	am = alice.mark()
	alice.command(t, "/msg #dev carol is gone")
	last, _ := alice.waitEventFrom(t, am, waitLong, "sent", isType("sent"))
	alice.waitEventFrom(t, am, waitLong, "delivered 1/1", func(e *event) bool {
		return e.Type == "delivered" && e.ID == last.ID && e.MembersDelivered == "1/1"
	})

	// dave, outside: refused, shown nothing, told nothing of the members.
	dm := dave.mark()
	dave.command(t, "/msg #dev let me in")
	if e, _ := dave.waitEventFrom(t, dm, waitLong, "error", isType("error")); e.Code != "not_member" {
		t.Fatalf("dave posting: %v", e)
	}
	dm = dave.mark()
	dave.command(t, "/who #dev")
	if e, _ := dave.waitEventFrom(t, dm, waitLong, "error", isType("error")); e.Code != "not_member" {
		t.Fatalf("dave's /who #dev: %v", e)
	}
	for _, e := range dave.events(0, func(e *event) bool {
		return (e.Type == "message" && e.Room != "") || e.Type == "peer_joined" || e.Type == "room_joined"
	}) {
		t.Errorf("dave saw %v", e)
	}
	if m := carol.events(cm, func(e *event) bool { return e.Type == "message" && e.ID == last.ID }); len(m) > 0 {
		t.Errorf("carol got a message after /part: %v", m)
	}
}
