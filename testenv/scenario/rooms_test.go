package scenario

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"natchat/headless"
	"natchat/testenv"
)

// roomJoined matches room_joined for name in room.
func roomJoined(room, name string) testenv.Match {
	return testenv.Match{Desc: fmt.Sprintf("room_joined %s %s", room, name), F: func(e testenv.Event) bool {
		return e.Type == headless.TypeRoomJoined && e.Room == room && e.Name == name
	}}
}

// roomError matches an error event about room.
func roomError(room string) testenv.Match {
	return testenv.Match{Desc: "error about " + room, F: func(e testenv.Event) bool {
		return e.Type == headless.TypeError && e.Room == room
	}}
}

// roomDelivered matches the delivered event of room message id saying
// that members ("n/N") have it.
func roomDelivered(id, members string) testenv.Match {
	return testenv.Match{Desc: fmt.Sprintf("delivered id %s members %s", id, members), F: func(e testenv.Event) bool {
		return e.Type == headless.TypeDelivered && e.ID == id && e.MembersDelivered == members
	}}
}

// messageID matches the message event with the given id.
func messageID(id string) testenv.Match {
	return testenv.Match{Desc: "message id " + id, F: func(e testenv.Event) bool {
		return e.Type == headless.TypeMessage && e.ID == id
	}}
}

// TestRoomBehindNATs: a room whose four members sit behind four different
// NAT types (full-cone, address-restricted, port-restricted, symmetric),
// every internet link (the four routers' WANs and the rendezvous's) losing
// 5 % of frames each way. The four join #lab one after the other; every
// earlier member must be told of each later join (room_joined). Then each
// sends 10 messages to the room. Every other member must show each
// message exactly once (by id), in the sender's order, with room set, and
// every sender must get delivered "3/3" for each. The pairs' paths follow
// the NAT matrix: port-restricted to symmetric stays on the relay
// (asserted: never direct), and at least one pair goes direct (asserted:
// full-cone punches with every type); every pair's path is logged.
func TestRoomBehindNATs(t *testing.T) {
	t.Parallel()
	const (
		room      = "#lab"
		perSender = 10
		tag       = "room"
		// announceWait bounds how long a member may take to hear of a
		// join, a lost announcement included (about two heartbeats).
		announceWait = 2*heartbeat + 5*time.Second
		// budget bounds the whole scenario, lab set-up included.
		budget = 100 * time.Second
	)
	began := time.Now()
	end := began.Add(budget)
	// within bounds a wait by the scenario's whole budget.
	within := func(d time.Duration) time.Duration { return max(0, min(d, time.Until(end))) }
	w := newWorld(t, 0, 0)
	lossy := testenv.Impairment{Loss: 5}
	w.rv.Host.WAN().Set(lossy)

	type member struct {
		nat    testenv.NATType
		router *testenv.Router
		node   *testenv.Node
		mark   int  // events before the first message
		missed bool // missed an announcement of a join
	}
	members := []*member{
		{nat: testenv.FullCone}, {nat: testenv.AddressRestricted},
		{nat: testenv.PortRestricted}, {nat: testenv.Symmetric},
	}
	for i, m := range members {
		name := []string{"alice", "bob", "carol", "dave"}[i]
		s, err := w.lab.AddSite(fmt.Sprintf("r%d", i+1), m.nat, false, name)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Router.Impair(lossy); err != nil {
			t.Fatal(err)
		}
		m.router, m.node = s.Router, w.node(t, s.Hosts[0], 0)
	}
	for _, m := range members {
		if _, err := m.node.Wait(within(waitShort), testenv.Registered()); err != nil {
			t.Fatal(err)
		}
	}

	// Join one at a time (each joiner's own room_joined, the answer to
	// its request, says the room's size), so that every announcement
	// finds the earlier members' views loaded.
	for i, m := range members {
		n := m.node
		mark := n.Mark()
		if err := n.Command("/join " + room); err != nil {
			t.Fatal(err)
		}
		ev, err := n.WaitFrom(mark, within(waitShort), testenv.Any(roomJoined(room, n.Name), roomError(room)))
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == headless.TypeError {
			t.Fatalf("%s: /join %s: %s", n.Name, room, ev.Raw)
		}
		if ev.Total != i+1 {
			t.Errorf("%s joined %s with total %d, want %d", n.Name, room, ev.Total, i+1)
		}
	}
	// Every earlier member must be told of each later join (room_joined
	// with the joiner's name), loss or not: that is also what keeps its
	// view of the room, to which it sends, complete.
	announceBy := time.Now().Add(within(announceWait))
	for i, m := range members {
		for _, o := range members[:i] {
			if _, err := o.node.Wait(time.Until(announceBy), roomJoined(room, m.node.Name)); err != nil {
				t.Errorf("%s was never told that %s joined %s (no room_joined within %v of the joins): "+
					"a lost announcement; its messages to the room skip %s until it refetches the members",
					o.node.Name, m.node.Name, room, announceWait, m.node.Name)
				o.missed = true
			}
		}
	}
	// A member that missed an announcement asks for its rooms: /rooms
	// compares the room's version with its view's and has the next send
	// fetch the members again. This only lets the rest of the scenario
	// check the messages despite the error above.
	for _, m := range members {
		if !m.missed {
			continue
		}
		mark := m.node.Mark()
		if err := m.node.Command("/rooms"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.node.WaitFrom(mark, within(waitShort), testenv.Match{Desc: "rooms with " + room, F: func(e testenv.Event) bool {
			return e.Type == headless.TypeRooms && slices.ContainsFunc(e.Rooms, func(r headless.RoomInfo) bool {
				return r.Room == room && r.Members == len(members)
			})
		}}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("all four in %s %v after the start", room, time.Since(began).Round(time.Millisecond))

	// Each member sends perSender messages, round-robin.
	for _, m := range members {
		m.mark = m.node.Mark()
	}
	sent := map[*member][]testenv.Event{}
	for i := range perSender {
		for _, m := range members {
			ev, err := m.node.Send(room, fmt.Sprintf("%s %s #%02d", tag, m.node.Name, i))
			if err != nil {
				t.Fatal(err)
			}
			if ev.Room != room {
				t.Errorf("%s: sent %s has room %q, want %q", m.node.Name, ev.ID, ev.Room, room)
			}
			sent[m] = append(sent[m], ev)
		}
	}

	// Every sender: delivered 3/3 for every message.
	deadline := time.Now().Add(within(sendWait))
	want := fmt.Sprintf("%d/%d", len(members)-1, len(members)-1)
	var slowest time.Duration
	for _, m := range members {
		for _, s := range sent[m] {
			ev, err := m.node.WaitFrom(m.mark, time.Until(deadline), roomDelivered(s.ID, want))
			if err != nil {
				t.Fatal(err)
			}
			slowest = max(slowest, ev.Recv.Sub(s.Recv))
		}
	}
	t.Logf("every message delivered %s %v after the first was sent (slowest %v)", want,
		time.Since(sent[members[0]][0].Recv).Round(time.Millisecond), slowest.Round(time.Millisecond))

	// Every receiver: each other member's messages once, in order, with
	// room set.
	msgPaths := map[[2]string]map[string]int{} // (from, to) -> message events by path
	for _, r := range members {
		for _, s := range members {
			if s == r {
				continue
			}
			for _, ev := range sent[s] {
				if _, err := r.node.WaitFrom(r.mark, time.Until(deadline), messageID(ev.ID)); err != nil {
					t.Fatal(err)
				}
			}
			var got, wantIDs []string
			paths := map[string]int{}
			for _, ev := range r.node.Events()[r.mark:] {
				if ev.Type != headless.TypeMessage || ev.From != s.node.Name || !strings.HasPrefix(ev.Text, tag+" ") {
					continue
				}
				got = append(got, ev.ID)
				paths[ev.Path]++
				if ev.Room != room {
					t.Errorf("%s: message %s from %s has room %q, want %q", r.node.Name, ev.ID, ev.From, ev.Room, room)
				}
			}
			for _, ev := range sent[s] {
				wantIDs = append(wantIDs, ev.ID)
			}
			if !slices.Equal(got, wantIDs) {
				t.Errorf("%s showed from %s ids %v, want exactly once each, in order: %v", r.node.Name, s.node.Name, got, wantIDs)
			}
			msgPaths[[2]string{s.node.Name, r.node.Name}] = paths
		}
	}

	// Nothing refused or stored on the way (stored copies are legal under
	// loss, since they reach the member from its mailbox: logged).
	for _, m := range members {
		for _, ev := range m.node.Events()[m.mark:] {
			switch {
			case ev.Type == headless.TypeError:
				t.Errorf("%s: %s", m.node.Name, ev.Raw)
			case ev.Type == headless.TypeStored:
				t.Logf("%s: a copy went to a mailbox: %s", m.node.Name, ev.Raw)
			}
		}
	}

	// Paths. Sessions began with the first message; punching may still
	// be under way, so wait (bounded) for at least one pair to be direct
	// both ways. The pairs the matrix says cannot punch must never have
	// reported direct.
	type pair struct{ a, b *member }
	var pairs []pair
	for i := range members {
		for j := i + 1; j < len(members); j++ {
			pairs = append(pairs, pair{members[i], members[j]})
		}
	}
	// Full-cone punches with every NAT type: wait for alice's first direct
	// path and for that peer's direct path back.
	alice := members[0].node
	byName := map[string]*testenv.Node{}
	for _, m := range members {
		byName[m.node.Name] = m.node
	}
	if ev, err := alice.WaitFrom(members[0].mark, within(waitDirect), testenv.Match{Desc: "path direct to anyone", F: func(e testenv.Event) bool {
		return e.Type == headless.TypePath && e.Path == "direct"
	}}); err != nil {
		t.Error(err)
	} else if peer := byName[ev.Peer]; peer == nil {
		t.Errorf("alice: path event for a stranger: %s", ev.Raw)
	} else if _, err := peer.WaitFrom(0, within(waitDirect), testenv.PathIs(alice.Name, "direct")); err != nil {
		t.Error(err)
	}
	// Watch the pairs that cannot punch for a while after their session
	// began (as TestNATMatrix does): checked below, they must never go
	// direct.
	if rest := within(relayWindow - time.Since(sent[members[0]][0].Recv)); rest > 0 {
		for _, p := range pairs {
			if exp, _ := expectedPath(p.a.nat, p.b.nat); exp == "relay" {
				if ev, err := p.a.node.WaitFrom(p.a.mark, rest, testenv.PathIs(p.b.node.Name, "direct")); err == nil {
					t.Logf("%s: %s", p.a.node.Name, ev.Raw) // an error below
				}
				break
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-52s %-8s %-15s %-14s %s\n", "PAIR", "EXPECTED", "OBSERVED (a/b)", "TIME TO DIRECT", "MESSAGE PATHS (a->b | b->a)")
	directPairs, relayPairs := 0, 0
	for _, p := range pairs {
		a, bn := p.a.node, p.b.node
		exp, _ := expectedPath(p.a.nat, p.b.nat)
		obs := lastPath(a, bn.Name) + "/" + lastPath(bn, a.Name)
		td := "-"
		if ev, ok := seen(a, p.a.mark, testenv.PathIs(bn.Name, "direct")); ok {
			td = ev.Recv.Sub(sent[p.a][0].Recv).Round(10 * time.Millisecond).String()
		}
		fmt.Fprintf(&b, "%-52s %-8s %-15s %-14s %v | %v\n", fmt.Sprintf("%s (%v) to %s (%v)", a.Name, p.a.nat, bn.Name, p.b.nat),
			exp, obs, td, msgPaths[[2]string{a.Name, bn.Name}], msgPaths[[2]string{bn.Name, a.Name}])
		switch {
		case obs == "direct/direct":
			directPairs++
		case obs == "relay/relay":
			relayPairs++
		}
		if exp == "relay" {
			for _, q := range [][2]*testenv.Node{{a, bn}, {bn, a}} {
				if ev, ok := seen(q[0], 0, testenv.PathIs(q[1].Name, "direct")); ok {
					t.Errorf("%s reported a direct path to %s (%s), which %v to %v rules out", q[0].Name, q[1].Name, ev.Raw, p.a.nat, p.b.nat)
				}
			}
			if obs != "relay/relay" {
				t.Errorf("%s to %s: paths %s, want relay/relay", a.Name, bn.Name, obs)
			}
		}
	}
	t.Log(b.String())
	if directPairs == 0 {
		t.Errorf("no pair is direct both ways")
	}
	if relayPairs == 0 {
		t.Errorf("no pair stayed on the relay")
	}
	for _, m := range members {
		wan := m.router.WAN()
		t.Logf("%s (%v): WAN lost %d up / %d down frames", m.node.Name, m.nat, wan.Stats(testenv.Up).Lost, wan.Stats(testenv.Down).Lost)
	}
	t.Logf("rendezvous link lost %d up / %d down frames; %d direct and %d relayed pairs; took %v",
		w.rv.Host.WAN().Stats(testenv.Up).Lost, w.rv.Host.WAN().Stats(testenv.Down).Lost, directPairs, relayPairs,
		time.Since(began).Round(time.Millisecond))
}
