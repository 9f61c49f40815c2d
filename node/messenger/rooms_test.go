package messenger

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"natchat/node/api"
	"natchat/wire"
)

// fakeRooms is the rendezvous's side of rooms for a world: member sets
// with versions, and RoomEvents to the other members' messengers.
type fakeRooms struct {
	w     *world
	mu    sync.Mutex
	rooms map[string]*fakeRoom // by NameKey
	// listed, when set, gets the answer of every Rooms call before it is
	// returned; the call waits for the test to send it back.
	listed chan []wire.RoomInfo
}

type fakeRoom struct {
	name    string
	version uint64
	members map[wire.Key]string
}

// roomClient is one peer's RoomDirectory.
type roomClient struct {
	f    *fakeRooms
	self wire.Key
	name string
}

func (w *world) withRooms() *fakeRooms {
	f := &fakeRooms{w: w, rooms: map[string]*fakeRoom{}}
	prev := w.beforeStart
	w.beforeStart = func(p *peer) {
		if prev != nil {
			prev(p)
		}
		p.m.opts.Rooms = roomClient{f, p.key, p.name}
	}
	return f
}

// join puts p in room (as the rendezvous would) and tells the members.
func (f *fakeRooms) join(p *peer, room string) *wire.RoomReply {
	f.mu.Lock()
	nk := wire.NameKey(room)
	r := f.rooms[nk]
	if r == nil {
		r = &fakeRoom{name: room, members: map[wire.Key]string{}}
		f.rooms[nk] = r
	}
	if _, ok := r.members[p.key]; !ok {
		r.members[p.key] = p.name
		r.version++
		f.tell(r, &wire.RoomEvent{Room: r.name, Version: r.version, Kind: wire.RoomJoined, Key: p.key, Name: p.name}, p.key)
	}
	rep := &wire.RoomReply{Room: r.name, Version: r.version, Members: uint32(len(r.members)), Online: uint32(len(r.members))}
	f.mu.Unlock()
	return rep
}

// tell sends ev to every member of r but not. Called with f.mu held.
func (f *fakeRooms) tell(r *fakeRoom, ev *wire.RoomEvent, not wire.Key) {
	for k := range r.members {
		if k == not {
			continue
		}
		f.w.mu.Lock()
		p := f.w.ms[k]
		f.w.mu.Unlock()
		if p != nil {
			p.m.RoomEvent(ev)
		}
	}
}

func (c roomClient) JoinRoom(ctx context.Context, room string) (*wire.RoomReply, error) {
	c.f.w.mu.Lock()
	p := c.f.w.ms[c.self]
	c.f.w.mu.Unlock()
	return c.f.join(p, room), nil
}

func (c roomClient) PartRoom(ctx context.Context, room string) (*wire.RoomReply, error) {
	f := c.f
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.rooms[wire.NameKey(room)]
	if r == nil {
		return &wire.RoomReply{Status: wire.RoomNotMember, Room: room}, nil
	}
	if _, ok := r.members[c.self]; !ok {
		return &wire.RoomReply{Status: wire.RoomNotMember, Room: r.name}, nil
	}
	delete(r.members, c.self)
	r.version++
	f.tell(r, &wire.RoomEvent{Room: r.name, Version: r.version, Kind: wire.RoomLeft, Key: c.self, Name: c.name}, c.self)
	return &wire.RoomReply{Room: r.name, Version: r.version, Members: uint32(len(r.members))}, nil
}

func (c roomClient) Rooms(ctx context.Context) ([]wire.RoomInfo, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	var out []wire.RoomInfo
	for _, r := range c.f.rooms {
		if _, ok := r.members[c.self]; ok {
			out = append(out, wire.RoomInfo{Room: r.name, Version: r.version, Members: uint32(len(r.members))})
		}
	}
	slices.SortFunc(out, func(a, b wire.RoomInfo) int { return strings.Compare(a.Room, b.Room) })
	if l := c.f.listed; l != nil {
		c.f.mu.Unlock()
		l <- out
		out = <-l
		c.f.mu.Lock()
	}
	return out, nil
}

func (c roomClient) RoomMembers(ctx context.Context, room string) (*RoomView, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	r := c.f.rooms[wire.NameKey(room)]
	if r == nil {
		return nil, ErrNotMember
	}
	if _, ok := r.members[c.self]; !ok {
		return nil, ErrNotMember
	}
	v := &RoomView{Room: r.name, Version: r.version}
	for k, n := range r.members {
		v.Members = append(v.Members, wire.RoomMember{Key: k, Name: n, Online: true})
	}
	return v, nil
}

// inRoom starts the named peers, puts them all in room, and has each
// learn its rooms (as after registering).
func inRoom(t *testing.T, w *world, f *fakeRooms, room string, names ...string) []*peer {
	t.Helper()
	var ps []*peer
	for _, n := range names {
		p := w.start(n, nil, "", Options{})
		f.join(p, room)
		ps = append(ps, p)
	}
	for _, p := range ps {
		p.m.loadRooms(p.ctx)
	}
	return ps
}

// TestRoomFanOut: each member's messages reach every other member, in the
// order sent, with the room and the room message's ID; the sender sees
// one Sent and a folded Delivered per message.
func TestRoomFanOut(t *testing.T) {
	w := newWorld(t)
	f := w.withRooms()
	ps := inRoom(t, w, f, "#dev", "alice", "bob", "carol")
	a, b, c := ps[0], ps[1], ps[2]
	const n = 5
	var ids []string
	for i := range n {
		a.m.Send("#dev", fmt.Sprintf("a%d", i))
	}
	b.m.SendKind("#Dev", wire.MsgEmote, "waves")
	for range n {
		s := a.next(t, "sent", isType(api.TypeSent)).(*api.Sent)
		if s.Room != "#dev" || s.To != "#dev" {
			t.Fatalf("sent %+v", s)
		}
		ids = append(ids, s.ID)
	}
	for _, p := range []*peer{b, c} {
		// Messages from different senders interleave in arrival order;
		// each sender's are in the order sent.
		var fromA []*api.Message
		var fromB *api.Message
		want := n
		if p == c {
			want++
		}
		for len(fromA)+btoi(fromB != nil) < want {
			m := p.next(t, "message", isType(api.TypeMessage)).(*api.Message)
			switch m.From {
			case "alice":
				fromA = append(fromA, m)
			case "bob":
				fromB = m
			}
		}
		for i, m := range fromA {
			if m.Room != "#dev" || m.ID != ids[i] || m.Text != fmt.Sprintf("a%d", i) {
				t.Fatalf("%s: message %d is %+v, want a%d with id %s", p.name, i, m, i, ids[i])
			}
		}
		if p == c && (fromB.Kind != api.KindEmote || fromB.Room != "#dev" || fromB.Text != "waves") {
			t.Fatalf("carol got %+v", fromB)
		}
	}
	got := map[string]string{}
	for range n {
		d := a.next(t, "delivered", isType(api.TypeDelivered)).(*api.Delivered)
		if d.Room != "#dev" || d.To != "#dev" {
			t.Fatalf("delivered %+v", d)
		}
		got[d.ID] = d.Members
	}
	for _, id := range ids {
		if got[id] != "2/2" {
			t.Errorf("delivered for %s: members %q, want 2/2", id, got[id])
		}
	}
}

// TestRoomAlone: a message to a room with no one else is delivered to 0/0.
func TestRoomAlone(t *testing.T) {
	w := newWorld(t)
	f := w.withRooms()
	a := inRoom(t, w, f, "#quiet", "alice")[0]
	a.m.Send("#quiet", "anyone?")
	a.next(t, "sent", isType(api.TypeSent))
	if d := a.next(t, "delivered", isType(api.TypeDelivered)).(*api.Delivered); d.Members != "0/0" {
		t.Fatalf("delivered %+v", d)
	}
}

// TestRoomOfflineMember: a member offline gets its copies from its
// mailbox, in order; the sender's Delivered says 1/2 when the online
// member has it and 2/2 once the offline one took its copy.
func TestRoomOfflineMember(t *testing.T) {
	w := newMailWorld(t)
	f := w.withRooms()
	ps := inRoom(t, w, f, "#dev", "alice", "bob", "carol")
	a, c := ps[0], ps[2]
	w.setOffline("carol", true)
	w.mu.Lock()
	delete(w.ms, c.key) // unreachable live
	w.mu.Unlock()
	a.m.Send("#dev", "one")
	a.m.Send("#dev", "two")
	s1 := a.next(t, "sent", isType(api.TypeSent)).(*api.Sent)
	s2 := a.next(t, "sent", isType(api.TypeSent)).(*api.Sent)
	evs := collect(t, a, 2, api.TypeDelivered)
	stored := ofType[*api.Stored](evs)
	for _, d := range ofType[*api.Delivered](evs) {
		if d.Members != "1/2" {
			t.Fatalf("first delivered %+v, want 1/2", d)
		}
	}
	if len(stored) != 2 || stored[0].To != "carol" || stored[0].Room != "#dev" || stored[0].ID != s1.ID {
		t.Fatalf("stored events %+v", stored)
	}
	w.mu.Lock()
	w.ms[c.key] = c
	w.mu.Unlock()
	w.setOffline("carol", false)
	w.box.drain(t, c)
	for i, want := range []*api.Sent{s1, s2} {
		m := c.next(t, "message", isType(api.TypeMessage)).(*api.Message)
		if m.ID != want.ID || m.Room != "#dev" || m.Via != api.ViaMailbox || m.Text != want.Text {
			t.Fatalf("carol's message %d: %+v", i, m)
		}
	}
	for range 2 {
		d := a.next(t, "delivered 2/2", func(e api.Event) bool {
			d, ok := e.(*api.Delivered)
			return ok && d.Members == "2/2"
		}).(*api.Delivered)
		if d.ID != s1.ID && d.ID != s2.ID {
			t.Fatalf("delivered %+v", d)
		}
	}
}

// TestRoomOutsiders: a node not in a room cannot post to it, and a copy
// forged by a non-member is neither shown nor acknowledged.
func TestRoomOutsiders(t *testing.T) {
	w := newWorld(t)
	f := w.withRooms()
	ps := inRoom(t, w, f, "#dev", "alice", "bob")
	b := ps[1]
	d := w.start("dave", nil, "", Options{})
	d.m.loadRooms(d.ctx)
	d.m.Send("#dev", "let me in")
	if e := d.next(t, "error", isType(api.TypeError)).(*api.Error); e.Code != api.CodeNotMember || e.Room != "#dev" {
		t.Fatalf("dave's error %+v", e)
	}
	st, err := sessions{w, d.key}.OpenChat(context.Background(), b.key)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.Write(wire.AppendMsg(nil, &wire.Msg{ID: wire.MsgID{1}, Seq: 1, SentMS: 1, Room: "#dev", Text: "forged", Group: wire.MsgID{9}}))
	st.Write(wire.AppendMsg(nil, &wire.Msg{ID: wire.MsgID{2}, Seq: 2, SentMS: 1, Text: "just to you"}))
	var acks []wire.MsgID
	readFrames(st, func(k wire.FrameKind, body []byte) error {
		id, _ := wire.ParseAck(body)
		acks = append(acks, id)
		return errors.New("done")
	})
	if len(acks) != 1 || acks[0] != (wire.MsgID{2}) {
		t.Fatalf("acks %v, want only the 1:1 message's", acks)
	}
	if m := b.next(t, "message", isType(api.TypeMessage)).(*api.Message); m.Text != "just to you" || m.Room != "" {
		t.Fatalf("bob showed %+v", m)
	}
}

// TestRoomJoinPart: /join answers with our own room_joined and the counts,
// the members hear of it, and /part likewise.
func TestRoomJoinPart(t *testing.T) {
	w := newWorld(t)
	f := w.withRooms()
	a := inRoom(t, w, f, "#dev", "alice")[0]
	b := w.start("bob", nil, "", Options{})
	b.m.loadRooms(b.ctx)
	b.m.JoinRoom(b.ctx, "#dev")
	j := b.next(t, "room_joined", isType(api.TypeRoomJoined)).(*api.RoomJoined)
	if j.Room != "#dev" || j.Name != "bob" || j.Total != 2 {
		t.Fatalf("bob's join %+v", j)
	}
	if j := a.next(t, "room_joined", isType(api.TypeRoomJoined)).(*api.RoomJoined); j.Name != "bob" || j.Room != "#dev" {
		t.Fatalf("alice heard %+v", j)
	}
	// alice's view has bob now: her message reaches him.
	a.m.Send("#dev", "welcome")
	if m := b.next(t, "message", isType(api.TypeMessage)).(*api.Message); m.Text != "welcome" {
		t.Fatalf("bob got %+v", m)
	}
	b.m.PartRoom(b.ctx, "#dev")
	if l := b.next(t, "room_left", isType(api.TypeRoomLeft)).(*api.RoomLeft); l.Name != "bob" || l.Reason != api.RoomReasonPart {
		t.Fatalf("bob's part %+v", l)
	}
	if l := a.next(t, "room_left", isType(api.TypeRoomLeft)).(*api.RoomLeft); l.Name != "bob" {
		t.Fatalf("alice heard %+v", l)
	}
	b.m.Send("#dev", "still here?")
	if e := b.next(t, "error", isType(api.TypeError)).(*api.Error); e.Code != api.CodeNotMember {
		t.Fatalf("after /part: %+v", e)
	}
	b.m.PartRoom(b.ctx, "#dev")
	if e := b.next(t, "error", isType(api.TypeError)).(*api.Error); e.Code != api.CodeNotMember {
		t.Fatalf("second /part: %+v", e)
	}
	b.m.JoinRoom(b.ctx, "dev")
	if e := b.next(t, "error", isType(api.TypeError)).(*api.Error); e.Code != api.CodeBadName {
		t.Fatalf("/join dev: %+v", e)
	}
}

// TestRoomEventLost: when a room event is lost (RoomsBehind), the
// rooms are asked for again, the change is said (room_joined), and the
// next message goes to the new member too.
func TestRoomEventLost(t *testing.T) {
	w := newWorld(t)
	f := w.withRooms()
	a := inRoom(t, w, f, "#dev", "alice")[0]
	b := w.start("bob", nil, "", Options{})
	f.mu.Lock()
	r := f.rooms["#dev"]
	r.members[b.key] = "bob" // joined, but alice is not told
	r.version++
	f.mu.Unlock()
	b.m.loadRooms(b.ctx)
	a.m.RoomsBehind()
	if j := a.next(t, "room_joined", isType(api.TypeRoomJoined)).(*api.RoomJoined); j.Name != "bob" || j.Room != "#dev" {
		t.Fatalf("alice: %+v", j)
	}
	a.m.Send("#dev", "hi bob")
	if m := b.next(t, "message", isType(api.TypeMessage)).(*api.Message); m.Text != "hi bob" || m.Room != "#dev" {
		t.Fatalf("bob: %+v", m)
	}
	if d := a.next(t, "delivered", isType(api.TypeDelivered)).(*api.Delivered); d.Members != "1/1" {
		t.Fatalf("alice: %+v", d)
	}
}

// TestRoomJoinWhileListing: a /join answered while a list of our rooms
// (asked before it) is on its way is not undone by that list.
func TestRoomJoinWhileListing(t *testing.T) {
	w := newWorld(t)
	f := w.withRooms()
	a := inRoom(t, w, f, "#dev", "alice")[0]
	b := inRoom(t, w, f, "#new", "bob")[0]
	l := make(chan []wire.RoomInfo)
	f.mu.Lock()
	f.listed = l
	f.mu.Unlock()
	done := make(chan struct{})
	go func() { defer close(done); a.m.loadRooms(a.ctx) }()
	old := <-l // the list without #new, held
	f.mu.Lock()
	f.listed = nil // later lists pass
	f.mu.Unlock()
	a.m.JoinRoom(a.ctx, "#new")
	a.next(t, "room_joined", isType(api.TypeRoomJoined))
	l <- old // now the old list arrives
	<-done
	a.m.Send("#new", "hello")
	if m := b.next(t, "message", isType(api.TypeMessage)).(*api.Message); m.Room != "#new" || m.Text != "hello" {
		t.Fatalf("bob: %+v", m)
	}
}

// TestRoomRateLimited: our messages to a room beyond the rate are refused.
func TestRoomRateLimited(t *testing.T) {
	w := newWorld(t)
	f := w.withRooms()
	var a *peer
	for _, n := range []string{"alice", "bob"} {
		p := w.start(n, nil, "", Options{RoomRate: 0.001, RoomBurst: 2})
		f.join(p, "#dev")
		if a == nil {
			a = p
		}
	}
	a.m.loadRooms(a.ctx)
	for i := range 3 {
		a.m.Send("#dev", fmt.Sprint(i))
	}
	e := a.next(t, "error", isType(api.TypeError)).(*api.Error)
	if e.Code != api.CodeRateLimited || e.Room != "#dev" {
		t.Fatalf("third message: %+v", e)
	}
}

// TestRoomResumed: a room message whose copies wait in the outbox when the
// sender restarts is announced once (Sent, Resumed) and folded again.
func TestRoomResumed(t *testing.T) {
	w := newWorld(t)
	f := w.withRooms()
	_, aPriv, _ := ed25519.GenerateKey(rand.Reader)
	aDir := t.TempDir()
	a := w.start("alice", aPriv, aDir, Options{})
	f.join(a, "#dev")
	var others []*peer
	for _, n := range []string{"bob", "carol"} {
		p := w.start(n, nil, "", Options{})
		f.join(p, "#dev")
		others = append(others, p)
	}
	for _, p := range append(others, a) {
		p.m.loadRooms(p.ctx)
	}
	w.mu.Lock()
	w.refuse = true
	w.mu.Unlock()
	a.m.Send("#dev", "later")
	s := a.next(t, "sent", isType(api.TypeSent)).(*api.Sent)
	a.stop()
	w.mu.Lock()
	w.refuse = false
	w.mu.Unlock()
	a2 := w.start("alice", aPriv, aDir, Options{})
	r := a2.next(t, "resumed", isType(api.TypeSent)).(*api.Sent)
	if !r.Resumed || r.ID != s.ID || r.Room != "#dev" {
		t.Fatalf("resumed %+v", r)
	}
	d := a2.next(t, "delivered", isType(api.TypeDelivered)).(*api.Delivered)
	if d.ID != s.ID || d.Members != "2/2" {
		t.Fatalf("delivered %+v", d)
	}
	select {
	case e := <-a2.events:
		if e.EventType() == api.TypeSent {
			t.Fatalf("a second Sent after restart: %+v", e)
		}
	default:
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
