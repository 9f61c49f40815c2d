package sim

import (
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"natchat/node/api"
	"natchat/rendezvous"
)

// TestRoomPresenceScoping: with no default room, 200 nodes join 20 rooms
// of 10 (#r00..#r19); each learns the presence of its nine room-mates and
// of no one else. Then one more node, probe, joins every room: its join
// is the barrier. The rendezvous queues a member's presence changes in
// the order it decides them and numbers the datagrams that carry them, and
// the node applies them in that order, so once a member has shown probe's
// peer_joined it has shown every presence change the 200 joins caused it
// (their room_joined events went out earlier still, as each join was
// committed).
// Up to that point no node may have been told (peer_joined, peer_left,
// room_joined, room_left) of a node outside its room, and /who must then
// list exactly its room-mates and probe; probe itself sees all 200.
// It takes about 3 s, 6 s under the race detector (2 quiet cores).
func TestRoomPresenceScoping(t *testing.T) {
	const rooms, per = 20, 10
	t0 := time.Now()
	rv := StartRendezvous(t, listenLoopback(t), func(o *rendezvous.Options) {
		o.DefaultRoom = "" // no #lobby: presence comes from the rooms joined
		o.SourceRate = -1  // every node shares 127.0.0.1
		o.NewNames = -1    // and registers a new name
	})
	type member struct {
		*Node
		room  string
		mates map[string]bool // the other members of its room
	}
	var all []*member
	byRoom := make([][]*member, rooms)
	for r := range rooms {
		for i := range per {
			name := fmt.Sprintf("r%02dm%02d", r, i)
			nd := StartNode(t, NodeConfig{Name: name, Conn: listenLoopback(t), RV: rv.Addr, NoDirect: true})
			m := &member{Node: nd, room: fmt.Sprintf("#r%02d", r), mates: map[string]bool{}}
			byRoom[r] = append(byRoom[r], m)
			all = append(all, m)
		}
	}
	probe := StartNode(t, NodeConfig{Name: "probe", Conn: listenLoopback(t), RV: rv.Addr, NoDirect: true})
	for _, group := range byRoom {
		for _, m := range group {
			for _, o := range group {
				if o != m {
					m.mates[o.Name] = true
				}
			}
		}
	}
	// Every node started at once: waiting for each in turn costs the
	// slowest registration, not the sum.
	for _, m := range all {
		m.WaitRegistered(60 * time.Second)
	}
	probe.WaitRegistered(60 * time.Second)
	tRegistered := time.Since(t0)

	// Everyone joins its room at once; each join is answered with our
	// own room_joined once the rendezvous has it on disk.
	for _, m := range all {
		m.Do(api.Join{Room: m.room})
	}
	for _, m := range all {
		waitOwnJoin(t, m.Node, m.room, 60*time.Second)
	}
	tJoined := time.Since(t0)

	// Every join is committed, and with it every presence change it
	// causes is queued. probe's joins come after them all, one room at a
	// time (the rendezvous takes a few joins of one node at once).
	for r := range rooms {
		room := fmt.Sprintf("#r%02d", r)
		probe.Do(api.Join{Room: room})
		waitOwnJoin(t, probe, room, 30*time.Second)
	}
	for _, m := range all {
		want := map[string]bool{"probe": true}
		for n := range m.mates {
			want[n] = true
		}
		waitPeers(t, m.Node, want, 60*time.Second)
	}
	everyone := map[string]bool{}
	for _, m := range all {
		everyone[m.Name] = true
	}
	waitPeers(t, probe, everyone, 60*time.Second)
	tBarrier := time.Since(t0)

	// Nothing so far names an outsider.
	for _, m := range all {
		for i, e := range m.Events() {
			if who, what := outsiderIn(e, m.room, m.Name, m.mates); who != "" {
				t.Errorf("%s (in %s): event %d, %s, about %s", m.Name, m.room, i, what, who)
				break // the first is enough
			}
		}
	}
	// And each one's view of who is online is its room, probe included.
	for _, m := range all {
		mark := len(m.Events())
		m.Do(api.Who{})
		e, _ := m.Wait(mark, 10*time.Second, "/who", func(e api.Event) bool { _, ok := e.(*api.Peers); return ok })
		var got []string
		for _, p := range e.(*api.Peers).Peers {
			got = append(got, p.Name)
			if !p.Online {
				t.Errorf("%s: /who lists %s as not online", m.Name, p.Name)
			}
		}
		want := []string{"probe"}
		for n := range m.mates {
			want = append(want, n)
		}
		sort.Strings(want)
		sort.Strings(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s (in %s): /who lists %v, want %v", m.Name, m.room, got, want)
		}
	}
	t.Logf("%d nodes in %d rooms of %d, and probe: registered after %v, joined after %v, barrier after %v, checked after %v",
		len(all), rooms, per, tRegistered.Round(time.Millisecond), tJoined.Round(time.Millisecond),
		tBarrier.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
}

// waitOwnJoin waits for n's room_joined for its own join of room, and
// fails the test on an error about the room.
func waitOwnJoin(tb testing.TB, n *Node, room string, within time.Duration) {
	tb.Helper()
	e, _ := n.Wait(0, within, "own join of "+room, func(e api.Event) bool {
		switch e := e.(type) {
		case *api.RoomJoined:
			return e.Room == room && e.Name == n.Name
		case *api.Error:
			return e.Room == room
		}
		return false
	})
	if x, ok := e.(*api.Error); ok {
		tb.Fatalf("%s: /join %s: %s: %s", n.Name, room, x.Code, x.Message)
	}
}

// waitPeers waits until n has shown a peer_joined for every name in want.
func waitPeers(t *testing.T, n *Node, want map[string]bool, within time.Duration) {
	t.Helper()
	missing := make(map[string]bool, len(want))
	for k := range want {
		missing[k] = true
	}
	// Wait hands each event to the predicate once, in order.
	n.Wait(0, within, fmt.Sprintf("peer_joined of %d peers", len(want)), func(e api.Event) bool {
		if j, ok := e.(*api.PeerJoined); ok {
			delete(missing, j.Name)
		}
		return len(missing) == 0
	})
}

// outsiderIn returns the name of a node outside room that e tells self
// about (and what e is), or "". Presence and room events may name self,
// its room-mates (mates) and probe; room events only room.
func outsiderIn(e api.Event, room, self string, mates map[string]bool) (who, what string) {
	ok := func(name string) bool { return name == self || name == "probe" || mates[name] }
	switch e := e.(type) {
	case *api.PeerJoined:
		if !ok(e.Name) {
			return e.Name, "peer_joined"
		}
	case *api.PeerLeft:
		return e.Name, "peer_left" // no one left
	case *api.RoomJoined:
		if e.Room != room || !ok(e.Name) {
			return e.Name + " (" + e.Room + ")", "room_joined"
		}
	case *api.RoomLeft:
		return e.Name + " (" + e.Room + ")", "room_left"
	case *api.Peers:
		for _, p := range e.Peers {
			if !ok(p.Name) {
				return p.Name, "peers"
			}
		}
	case *api.EventsDropped:
		return "(unknown)", "events_dropped" // presence events lost: the check is blind
	case *api.Error:
		return "(" + e.Code + ")", "error " + e.Message
	}
	return "", ""
}
