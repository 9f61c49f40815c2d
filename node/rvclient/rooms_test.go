package rvclient_test

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
	"testing/synctest"
	"time"

	"natchat/ctrl"
	"natchat/node/rvclient"
	"natchat/wire"
)

// roomObs is the observer of a room client: a mailObs that also records
// room events.
type roomObs struct {
	*mailObs
	rmu    sync.Mutex
	events []wire.RoomEvent
	behind int // RoomsBehind calls
}

func (o *roomObs) RoomsBehind() {
	o.rmu.Lock()
	o.behind++
	o.rmu.Unlock()
}

func (o *roomObs) behinds() int {
	o.rmu.Lock()
	defer o.rmu.Unlock()
	return o.behind
}

func (o *roomObs) RoomEvent(ev *wire.RoomEvent) {
	o.rmu.Lock()
	o.events = append(o.events, *ev)
	o.rmu.Unlock()
}

func (o *roomObs) roomEvents() []wire.RoomEvent {
	o.rmu.Lock()
	defer o.rmu.Unlock()
	return slices.Clone(o.events)
}

var _ rvclient.RoomObserver = (*roomObs)(nil)

// roomRV is a fake rendezvous (fakeRV) that keeps rooms as the spec says:
// members by NameKey, a version bumped on every change, pages of
// RoomListReply and RoomMembersReply after the request's cursor.
type roomRV struct {
	*fakeRV
	obs *roomObs
	me  wire.RoomMember // the client, as a member

	mu sync.Mutex
	// Guarded by mu:
	rooms    map[string]*fakeRoom // by NameKey
	limit    int                  // members per room
	pageSize int
	refuse   int  // the next room requests refused with rate_limited
	silent   bool // room requests unanswered
	// before, if set, runs before a request is answered (under mu).
	before func(m wire.Message)
}

type fakeRoom struct {
	name    string // as first written
	version uint64
	members []wire.RoomMember // sorted by NameKey
}

// newRoomRV starts a client (bob) registered with a roomRV, as newFakeRV
// does, with a roomObs for its observer.
func newRoomRV(t *testing.T) *roomRV {
	f := &fakeRV{t: t, q: make(chan func(), 4096), sess: wire.SessionID{7, 7}}
	var err error
	if f.key, err = ctrl.NewServerKey(); err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	obs := &roomObs{mailObs: &mailObs{refuse: map[wire.MsgID]bool{}}}
	f.obs = obs.mailObs
	f.c, err = rvclient.New(rvclient.Options{Name: "bob", Identity: priv, Observer: obs, Heartbeat: 10 * time.Second,
		ServerKey: f.key.Public, Send: func(b []byte) {
			b = slices.Clone(b)
			f.q <- func() { f.fromClient(b) }
		}})
	if err != nil {
		t.Fatal(err)
	}
	f.obs.c = f.c
	r := &roomRV{fakeRV: f, obs: obs, me: wire.RoomMember{Key: f.c.Key(), Name: "bob", Online: true},
		rooms: map[string]*fakeRoom{}, limit: 256, pageSize: wire.RoomPageMax}
	f.hook = r.serve
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case fn := <-f.q:
				fn()
			}
		}
	}()
	go func() { defer wg.Done(); f.c.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return r
}

// addRoom makes a room of n members named m000, m001, ..., with bob in
// it when in.
func (r *roomRV) addRoom(name string, n int, in bool) *fakeRoom {
	r.mu.Lock()
	defer r.mu.Unlock()
	fr := &fakeRoom{name: name, version: 100}
	for i := range n {
		fr.members = append(fr.members, wire.RoomMember{Key: wire.Key{byte(i), byte(i >> 8), 1}, Name: fmt.Sprintf("m%03d", i), Online: i%2 == 0})
	}
	if in {
		fr.add(r.me)
	}
	r.rooms[wire.NameKey(name)] = fr
	return fr
}

func (fr *fakeRoom) add(m wire.RoomMember) {
	fr.members = append(fr.members, m)
	slices.SortFunc(fr.members, func(a, b wire.RoomMember) int { return strings.Compare(wire.NameKey(a.Name), wire.NameKey(b.Name)) })
	fr.version++
}

func (fr *fakeRoom) has(k wire.Key) bool {
	return slices.ContainsFunc(fr.members, func(m wire.RoomMember) bool { return m.Key == k })
}

func (fr *fakeRoom) online() (n uint32) {
	for _, m := range fr.members {
		if m.Online {
			n++
		}
	}
	return n
}

func roomTx(m wire.Message) (uint32, bool) {
	switch m := m.(type) {
	case *wire.RoomJoin:
		return m.TxID, true
	case *wire.RoomPart:
		return m.TxID, true
	case *wire.RoomList:
		return m.TxID, true
	case *wire.RoomMembers:
		return m.TxID, true
	}
	return 0, false
}

// serve is the fake's hook: rooms, and the mailbox (empty).
func (r *roomRV) serve(m wire.Message) {
	tx, ok := roomTx(m)
	if !ok {
		r.serveBox(m)
		return
	}
	r.mu.Lock()
	if r.before != nil {
		r.before(m)
	}
	var reply wire.Message
	switch {
	case r.refuse > 0:
		r.refuse--
		reply = &wire.Error{Code: wire.CodeRateLimited, Request: m.Type(), TxID: tx, Message: "too many requests"}
	case r.silent:
	default:
		reply = r.answerLocked(m)
	}
	r.mu.Unlock()
	if reply != nil {
		r.send(reply)
	}
}

func (r *roomRV) answerLocked(m wire.Message) wire.Message {
	reply := func(tx uint32, st wire.RoomStatus, fr *fakeRoom, limit int) *wire.RoomReply {
		return &wire.RoomReply{TxID: tx, Status: st, Room: fr.name, Version: fr.version, Members: uint32(len(fr.members)),
			Online: fr.online(), Limit: uint32(limit)}
	}
	switch m := m.(type) {
	case *wire.RoomJoin:
		fr := r.rooms[wire.NameKey(m.Room)]
		if fr == nil {
			fr = &fakeRoom{name: m.Room}
			r.rooms[wire.NameKey(m.Room)] = fr
		}
		switch {
		case fr.has(r.me.Key):
			return reply(m.TxID, wire.RoomOK, fr, 0)
		case len(fr.members) >= r.limit:
			return reply(m.TxID, wire.RoomFull, fr, r.limit)
		}
		fr.add(r.me)
		return reply(m.TxID, wire.RoomOK, fr, 0)
	case *wire.RoomPart:
		fr := r.rooms[wire.NameKey(m.Room)]
		if fr == nil || !fr.has(r.me.Key) {
			return &wire.RoomReply{TxID: m.TxID, Status: wire.RoomNotMember, Room: m.Room}
		}
		fr.members = slices.DeleteFunc(fr.members, func(x wire.RoomMember) bool { return x.Key == r.me.Key })
		fr.version++
		return reply(m.TxID, wire.RoomOK, fr, 0)
	case *wire.RoomList:
		var mine []*fakeRoom
		for k, fr := range r.rooms {
			if fr.has(r.me.Key) && k > wire.NameKey(m.After) {
				mine = append(mine, fr)
			}
		}
		slices.SortFunc(mine, func(a, b *fakeRoom) int { return strings.Compare(wire.NameKey(a.name), wire.NameKey(b.name)) })
		out := &wire.RoomListReply{TxID: m.TxID, More: len(mine) > r.pageSize}
		for _, fr := range mine[:min(len(mine), r.pageSize)] {
			out.Rooms = append(out.Rooms, wire.RoomInfo{Room: fr.name, Version: fr.version, Members: uint32(len(fr.members)), Online: fr.online()})
		}
		return out
	case *wire.RoomMembers:
		fr := r.rooms[wire.NameKey(m.Room)]
		if fr == nil || !fr.has(r.me.Key) {
			return &wire.Error{Code: wire.CodeNotMember, Request: wire.TypeRoomMembers, TxID: m.TxID, Message: "you are not in " + m.Room}
		}
		var after []wire.RoomMember
		for _, x := range fr.members {
			if wire.NameKey(x.Name) > wire.NameKey(m.After) {
				after = append(after, x)
			}
		}
		return &wire.RoomMembersReply{TxID: m.TxID, Room: fr.name, Version: fr.version, Total: uint32(len(fr.members)),
			More: len(after) > r.pageSize, Members: slices.Clone(after[:min(len(after), r.pageSize)])}
	}
	return nil
}

func (r *roomRV) set(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f()
}

func memberNames(ms []wire.RoomMember) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

func sortedByNameKey(names []string) bool {
	return slices.IsSortedFunc(names, func(a, b string) int { return strings.Compare(wire.NameKey(a), wire.NameKey(b)) })
}

// TestJoinPartRoom: a join creates a room or joins one as written first
// (another case is the same room), a full room refuses with its limit, a
// part of a room we are not in says so, and a bad room name sends
// nothing.
func TestJoinPartRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRoomRV(t)
		ctx := context.Background()
		rep, err := r.c.JoinRoom(ctx, "#dev")
		if err != nil || rep.Status != wire.RoomOK || rep.Room != "#dev" || rep.Members != 1 || rep.Version != 1 {
			t.Fatalf("join #dev: %+v, %v", rep, err)
		}
		r.addRoom("#Café", 3, false)
		rep, err = r.c.JoinRoom(ctx, "#CAFÉ")
		if err != nil || rep.Status != wire.RoomOK || rep.Room != "#Café" || rep.Members != 4 || rep.Version != 101 {
			t.Fatalf("join #CAFÉ: %+v, %v", rep, err)
		}
		r.set(func() { r.limit = 5 })
		r.addRoom("#full", 5, false)
		rep, err = r.c.JoinRoom(ctx, "#full")
		if err != nil || rep.Status != wire.RoomFull || rep.Limit != 5 || rep.Room != "#full" {
			t.Fatalf("join #full: %+v, %v", rep, err)
		}
		rep, err = r.c.PartRoom(ctx, "#nowhere")
		if err != nil || rep.Status != wire.RoomNotMember || rep.Room != "#nowhere" {
			t.Fatalf("part #nowhere: %+v, %v", rep, err)
		}
		rep, err = r.c.PartRoom(ctx, "#dev")
		if err != nil || rep.Status != wire.RoomOK || rep.Members != 0 || rep.Version != 2 {
			t.Fatalf("part #dev: %+v, %v", rep, err)
		}
		joins, parts := received[*wire.RoomJoin](r.fakeRV), received[*wire.RoomPart](r.fakeRV)
		if len(joins) != 3 || len(parts) != 2 || joins[1].Room != "#CAFÉ" || parts[0].Room != "#nowhere" {
			t.Fatalf("sent %d joins, %d parts: %+v %+v", len(joins), len(parts), joins, parts)
		}
		for _, bad := range []string{"dev", "#", "#a b", "#" + strings.Repeat("x", 33), "##x"} {
			if _, err := r.c.JoinRoom(ctx, bad); err == nil {
				t.Errorf("JoinRoom(%q) did not fail", bad)
			}
			if _, err := r.c.PartRoom(ctx, bad); err == nil {
				t.Errorf("PartRoom(%q) did not fail", bad)
			}
			if _, err := r.c.RoomMembers(ctx, bad); err == nil {
				t.Errorf("RoomMembers(%q) did not fail", bad)
			}
		}
		if _, err := r.c.JoinRoom(ctx, "dev"); !errors.Is(err, wire.ErrRoomHash) {
			t.Errorf("JoinRoom(dev): %v", err)
		}
		settle()
		if n := len(received[*wire.RoomJoin](r.fakeRV)) + len(received[*wire.RoomPart](r.fakeRV)) + len(received[*wire.RoomMembers](r.fakeRV)); n != 5 {
			t.Fatalf("bad room names sent %d requests", n-5)
		}
	})
}

// TestRoomsPaged: forty rooms come in two pages, sorted by NameKey.
func TestRoomsPaged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRoomRV(t)
		var want []string
		for i := range 40 {
			name := fmt.Sprintf("#Room%02d", 39-i)
			if i%2 == 0 {
				name = strings.ToLower(name)
			}
			r.addRoom(name, i%3, true)
			want = append(want, name)
		}
		r.addRoom("#notmine", 2, false)
		slices.SortFunc(want, func(a, b string) int { return strings.Compare(wire.NameKey(a), wire.NameKey(b)) })
		got, err := r.c.Rooms(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, ri := range got {
			names = append(names, ri.Room)
		}
		if !slices.Equal(names, want) {
			t.Fatalf("rooms:\n got %v\nwant %v", names, want)
		}
		if got[0].Members != 1 || got[0].Version != 101 || got[1].Members != 3 || got[1].Online != 2 {
			t.Fatalf("counts: %+v %+v", got[0], got[1])
		}
		reqs := received[*wire.RoomList](r.fakeRV)
		if len(reqs) != 2 || reqs[0].After != "" || reqs[1].After != want[wire.RoomPageMax-1] || reqs[0].TxID == reqs[1].TxID {
			t.Fatalf("requests: %+v", reqs)
		}
	})
}

// TestRoomMembersPaged: seventy members (and bob) in three pages, at one
// version, the written room name; members with bad names or zero keys
// are left out.
func TestRoomMembersPaged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRoomRV(t)
		fr := r.addRoom("#Big", 70, true)
		r.set(func() {
			for i := range fr.members {
				switch m := &fr.members[i]; m.Name {
				case "m003":
					m.Name = "bad name"
				case "m005":
					m.Key = wire.Key{}
				case "m006":
					m.Name = "#m006"
				case "m007":
					m.Name = "M008" // a repeat, by NameKey, of m008
				}
			}
			slices.SortStableFunc(fr.members, func(a, b wire.RoomMember) int { return strings.Compare(wire.NameKey(a.Name), wire.NameKey(b.Name)) })
		})
		v, err := r.c.RoomMembers(context.Background(), "#big")
		if err != nil {
			t.Fatal(err)
		}
		names := memberNames(v.Members)
		if v.Room != "#Big" || v.Version != 101 || len(names) != 71-4 || !sortedByNameKey(names) {
			t.Fatalf("view: %s v%d, %d members %v", v.Room, v.Version, len(names), names)
		}
		for _, bad := range []string{"bad name", "#m006", "m005"} {
			if slices.Contains(names, bad) {
				t.Errorf("%q is in the view", bad)
			}
		}
		if slices.Contains(names, "M008") == slices.Contains(names, "m008") {
			t.Errorf("not one of M008 and m008: %v", names)
		}
		if !slices.Contains(names, "bob") || !slices.Contains(names, "m069") {
			t.Errorf("members missing: %v", names)
		}
		if reqs := received[*wire.RoomMembers](r.fakeRV); len(reqs) != 3 || reqs[1].After == "" || reqs[2].After <= reqs[1].After {
			t.Fatalf("requests: %+v", reqs)
		}
	})
}

// TestRoomMembersVersionChange: a member joins between the first and the
// second page: the client starts again, and gets everyone at the new
// version. A room that changes between every two pages is paged four
// times; the last gives the newest version.
func TestRoomMembersVersionChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRoomRV(t)
		fr := r.addRoom("#busy", 40, true)
		bumped := false
		r.set(func() {
			r.before = func(m wire.Message) {
				if q, ok := m.(*wire.RoomMembers); ok && q.After != "" && !bumped {
					bumped = true
					fr.add(wire.RoomMember{Key: wire.Key{0xAA}, Name: "aaron"}) // on the first page, already sent
				}
			}
		})
		v, err := r.c.RoomMembers(context.Background(), "#busy")
		if err != nil {
			t.Fatal(err)
		}
		if v.Version != 102 || len(v.Members) != 42 || v.Members[0].Name != "aaron" {
			t.Fatalf("view: v%d, %d members %v", v.Version, len(v.Members), memberNames(v.Members))
		}
		reqs := received[*wire.RoomMembers](r.fakeRV)
		var afters []string
		for _, q := range reqs {
			afters = append(afters, q.After)
		}
		if len(reqs) != 4 || afters[0] != "" || afters[1] == "" || afters[2] != "" || afters[3] == "" {
			t.Fatalf("cursors: %q", afters)
		}

		// Always changing: four passes of two pages, then the last pass
		// with the version of its first page (it may lack later changes).
		fr = r.addRoom("#churn", 40, true)
		n := 0
		r.set(func() {
			r.before = func(m wire.Message) {
				if q, ok := m.(*wire.RoomMembers); ok && q.Room == "#churn" {
					n++
					fr.add(wire.RoomMember{Key: wire.Key{0xBB, byte(n)}, Name: fmt.Sprintf("zz%02d", n)}) // at the end
				}
			}
		})
		v, err = r.c.RoomMembers(context.Background(), "#churn")
		if err != nil {
			t.Fatal(err)
		}
		reqs = received[*wire.RoomMembers](r.fakeRV)[4:]
		starts := 0
		for _, q := range reqs {
			if q.After == "" {
				starts++
			}
		}
		r.mu.Lock()
		version := fr.version
		r.mu.Unlock()
		if starts != 4 || len(reqs) != 8 || version != 101+8 || v.Version != version-1 {
			t.Fatalf("%d passes, %d requests; view v%d, room v%d", starts, len(reqs), v.Version, version)
		}
		// The last pass: 41 of the first page's time, and those added up
		// to the second page's.
		if names := memberNames(v.Members); len(names) != 41+8 || !sortedByNameKey(names) {
			t.Fatalf("last pass: %d members %v", len(names), names)
		}
	})
}

// TestRoomNotMember: RoomMembers of a room we are not in fails with
// ErrNotMember, at once.
func TestRoomNotMember(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRoomRV(t)
		r.addRoom("#other", 3, false)
		start := time.Now()
		if _, err := r.c.RoomMembers(context.Background(), "#other"); !errors.Is(err, rvclient.ErrNotMember) {
			t.Fatalf("RoomMembers(#other): %v", err)
		}
		if _, err := r.c.RoomMembers(context.Background(), "#none"); !errors.Is(err, rvclient.ErrNotMember) {
			t.Fatalf("RoomMembers(#none): %v", err)
		}
		if d := time.Since(start); d != 0 || len(received[*wire.RoomMembers](r.fakeRV)) != 2 {
			t.Fatalf("after %v, %d requests", d, len(received[*wire.RoomMembers](r.fakeRV)))
		}
	})
}

// TestRoomRateLimited: refused twice with rate_limited, the join is asked
// again after a pause each time (with a fresh TxID), and answered.
func TestRoomRateLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRoomRV(t)
		r.set(func() { r.refuse = 2 })
		if _, err := r.c.WaitRegistered(context.Background()); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		rep, err := r.c.JoinRoom(context.Background(), "#dev")
		if err != nil || rep.Status != wire.RoomOK {
			t.Fatalf("join: %+v, %v", rep, err)
		}
		if d := time.Since(start); d != 750*time.Millisecond {
			t.Errorf("answered after %v, want 0.25 s + 0.5 s of pauses", d)
		}
		joins := received[*wire.RoomJoin](r.fakeRV)
		if len(joins) != 3 || joins[0].TxID == joins[1].TxID || joins[1].TxID == joins[2].TxID {
			t.Fatalf("joins: %+v", joins)
		}
		// The same for a list and a page of members.
		r.set(func() { r.refuse = 1 })
		if rooms, err := r.c.Rooms(context.Background()); err != nil || len(rooms) != 1 {
			t.Fatalf("Rooms: %v, %v", rooms, err)
		}
		r.set(func() { r.refuse = 1 })
		if v, err := r.c.RoomMembers(context.Background(), "#dev"); err != nil || len(v.Members) != 1 {
			t.Fatalf("RoomMembers: %+v, %v", v, err)
		}
	})
}

// TestRoomTimeout: with the rendezvous silent, a request is sent again
// after 0.5 s, 1 s, then every 2 s, and fails after 10 s.
func TestRoomTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRoomRV(t)
		r.set(func() { r.silent = true })
		if _, err := r.c.WaitRegistered(context.Background()); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := r.c.JoinRoom(context.Background(), "#dev"); !errors.Is(err, rvclient.ErrLookupTimeout) || time.Since(start) != 10*time.Second {
			t.Fatalf("join with the rendezvous silent: %v after %v", err, time.Since(start))
		}
		joins := received[*wire.RoomJoin](r.fakeRV)
		if len(joins) != 7 {
			t.Fatalf("%d joins sent in 10 s, want 7 (0, 0.5, 1.5, 3.5, 5.5, 7.5, 9.5 s)", len(joins))
		}
		// Rate-limited all along: the same.
		r.set(func() { r.silent, r.refuse = false, 1000 })
		start = time.Now()
		if _, err := r.c.Rooms(context.Background()); !errors.Is(err, rvclient.ErrLookupTimeout) || time.Since(start) != 10*time.Second {
			t.Fatalf("Rooms rate-limited: %v after %v", err, time.Since(start))
		}
		// A ctx that ends first ends the request.
		r.set(func() { r.silent = true })
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start = time.Now()
		if _, err := r.c.RoomMembers(ctx, "#dev"); !errors.Is(err, rvclient.ErrLookupTimeout) || time.Since(start) != 2*time.Second {
			t.Fatalf("RoomMembers with a 2 s ctx: %v after %v", err, time.Since(start))
		}
	})
}

// TestRoomEvents: room events reach the RoomObserver in order; those with
// a bad room, a bad name or a zero key do not.
func TestRoomEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRoomRV(t)
		if _, err := r.c.WaitRegistered(context.Background()); err != nil {
			t.Fatal(err)
		}
		alice := wire.Key{0xA}
		good := []wire.RoomEvent{
			{Room: "#dev", Version: 7, Kind: wire.RoomJoined, Key: alice, Name: "alice"},
			{Room: "#Café", Version: 9, Kind: wire.RoomLeft, Reason: wire.RoomLeftExpired, Key: alice, Name: "Alice"},
		}
		for _, ev := range []wire.RoomEvent{
			good[0],
			{Room: "dev", Version: 8, Kind: wire.RoomJoined, Key: alice, Name: "alice"},
			{Room: "#", Version: 8, Kind: wire.RoomJoined, Key: alice, Name: "alice"},
			{Room: "#dev", Version: 8, Kind: wire.RoomJoined, Key: alice, Name: ""},
			{Room: "#dev", Version: 8, Kind: wire.RoomJoined, Key: alice, Name: "#alice"},
			{Room: "#dev", Version: 8, Kind: wire.RoomJoined, Key: alice, Name: "al\x1b[2Jice"},
			{Room: "#dev", Version: 8, Kind: wire.RoomLeft, Key: wire.Key{}, Name: "alice"},
			{Room: "#dev\n", Version: 8, Kind: wire.RoomLeft, Key: alice, Name: "alice"},
			good[1],
		} {
			r.sendLater(&ev)
		}
		settle()
		if got := r.obs.roomEvents(); !slices.Equal(got, good) {
			t.Fatalf("room events:\n got %+v\nwant %+v", got, good)
		}
	})
}

// TestRoomsBehind: a gap in the room events' numbers, or a HeartbeatAck
// whose RoomSeq is past the last event seen, says a room event was lost
// (RoomsBehind), once per gap.
func TestRoomsBehind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRoomRV(t)
		if _, err := r.c.WaitRegistered(context.Background()); err != nil {
			t.Fatal(err)
		}
		alice := wire.Key{0xA}
		step := func(m wire.Message, want int) {
			t.Helper()
			r.sendLater(m)
			settle()
			if got := r.obs.behinds(); got != want {
				t.Fatalf("after %#v: %d RoomsBehind, want %d", m, got, want)
			}
		}
		step(&wire.RoomEvent{Seq: 1, Room: "#dev", Version: 1, Kind: wire.RoomJoined, Key: alice, Name: "alice"}, 0)
		step(&wire.RoomEvent{Seq: 2, Room: "#dev", Version: 2, Kind: wire.RoomLeft, Key: alice, Name: "alice"}, 0)
		step(&wire.HeartbeatAck{RoomSeq: 2}, 0)
		step(&wire.RoomEvent{Seq: 4, Room: "#dev", Version: 4, Kind: wire.RoomJoined, Key: alice, Name: "alice"}, 1) // 3 lost
		step(&wire.HeartbeatAck{RoomSeq: 6}, 2)                                                                      // 5 and 6 lost
		step(&wire.HeartbeatAck{RoomSeq: 6}, 2)
		step(&wire.RoomEvent{Seq: 5, Room: "#dev", Version: 5, Kind: wire.RoomLeft, Key: alice, Name: "alice"}, 2) // late, not a gap
	})
}

// TestRoomRepliesChecked: replies with a TxID nobody waits for, about
// another room, of another type, or an error for another request are
// dropped; the request takes only its own answer. A reply before any
// request, or after its request was answered, changes nothing.
func TestRoomRepliesChecked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRoomRV(t)
		if _, err := r.c.WaitRegistered(context.Background()); err != nil {
			t.Fatal(err)
		}
		for tx := range uint32(5) {
			r.sendLater(&wire.RoomReply{TxID: tx, Status: wire.RoomFull, Room: "#dev"})
			r.sendLater(&wire.RoomListReply{TxID: tx, Rooms: []wire.RoomInfo{{Room: "#evil"}}})
			r.sendLater(&wire.RoomMembersReply{TxID: tx, Room: "#dev", Members: []wire.RoomMember{{Key: wire.Key{1}, Name: "evil"}}})
			r.sendLater(&wire.Error{Code: wire.CodeNotMember, Request: wire.TypeRoomMembers, TxID: tx})
		}
		settle()
		r.set(func() {
			r.silent = true
			r.before = func(m wire.Message) {
				j, ok := m.(*wire.RoomJoin)
				if !ok {
					return
				}
				tx := j.TxID
				for _, bogus := range []wire.Message{
					&wire.RoomReply{TxID: tx + 1000, Status: wire.RoomFull, Room: j.Room},
					&wire.RoomReply{TxID: tx, Status: wire.RoomFull, Room: "#other"},
					&wire.RoomReply{TxID: tx, Status: wire.RoomFull, Room: "#dev\x00"},
					&wire.RoomMembersReply{TxID: tx, Room: j.Room},
					&wire.WhoReply{TxID: tx, Room: j.Room},
					&wire.Error{Code: wire.CodeNotMember, Request: wire.TypeRoomPart, TxID: tx},
					&wire.Error{Code: wire.CodeNotMember, Request: wire.TypeRoomJoin, TxID: tx + 1},
					&wire.RoomReply{TxID: tx, Status: wire.RoomTooMany, Room: "#DEV", Limit: 32},
					&wire.RoomReply{TxID: tx, Status: wire.RoomOK, Room: j.Room}, // a repeat: dropped
				} {
					r.sendLater(bogus)
				}
			}
		})
		rep, err := r.c.JoinRoom(context.Background(), "#dev")
		if err != nil || rep.Status != wire.RoomTooMany || rep.Room != "#DEV" || rep.Limit != 32 {
			t.Fatalf("join: %+v, %v", rep, err)
		}
		settle()
		if n := len(received[*wire.RoomJoin](r.fakeRV)); n != 1 {
			t.Fatalf("%d joins sent", n)
		}
		// A refusal of the name may name the room it is too like (or
		// nothing that is a room).
		r.set(func() {
			r.before = func(m wire.Message) {
				if j, ok := m.(*wire.RoomJoin); ok {
					r.sendLater(&wire.RoomReply{TxID: j.TxID, Status: wire.RoomBadName, Room: "bad\x00"})
				}
			}
		})
		if rep, err := r.c.JoinRoom(context.Background(), "#dеv"); err != nil || rep.Status != wire.RoomBadName || rep.Room != "#dеv" {
			t.Fatalf("join of a confusable name: %+v, %v", rep, err)
		}
		// Still a working client: a plain request is answered.
		r.set(func() { r.silent, r.before = false, nil })
		if rep, err := r.c.JoinRoom(context.Background(), "#dev"); err != nil || rep.Status != wire.RoomOK {
			t.Fatalf("join after: %+v, %v", rep, err)
		}
		if got := r.obs.roomEvents(); len(got) != 0 {
			t.Fatalf("room events: %+v", got)
		}
	})
}

// TestRoomPagingHostile: a rendezvous that answers pages too long, out of
// order, or the same page again and again does not keep the client paging
// for ever nor holding more than a page's worth each time.
func TestRoomPagingHostile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRoomRV(t)
		r.addRoom("#dev", 3, true)
		many := make([]wire.RoomMember, 255)
		for i := range many {
			many[i] = wire.RoomMember{Key: wire.Key{byte(i), 2}, Name: fmt.Sprintf("x%03d", i)}
		}
		r.set(func() {
			r.silent = true
			r.before = func(m wire.Message) {
				switch q := m.(type) {
				case *wire.RoomMembers:
					// Always 255 members from x000, more to come.
					r.sendLater(&wire.RoomMembersReply{TxID: q.TxID, Room: q.Room, Version: 5, More: true, Members: many})
				case *wire.RoomList:
					r.sendLater(&wire.RoomListReply{TxID: q.TxID, More: true, Rooms: []wire.RoomInfo{{Room: "#b"}, {Room: "#a"}, {Room: "#b"}}})
				}
			}
		})
		v, err := r.c.RoomMembers(context.Background(), "#dev")
		if err != nil {
			t.Fatal(err)
		}
		// The first page: 32 of them; the second, after x031, has none
		// after it: paging stops.
		if names := memberNames(v.Members); len(names) != wire.RoomPageMax || names[31] != "x031" {
			t.Fatalf("view of %d members: %v", len(names), names)
		}
		if n := len(received[*wire.RoomMembers](r.fakeRV)); n != 2 {
			t.Fatalf("%d pages asked", n)
		}
		rooms, err := r.c.Rooms(context.Background())
		if err != nil || len(rooms) != 2 || rooms[0].Room != "#a" || rooms[1].Room != "#b" {
			t.Fatalf("rooms: %+v, %v", rooms, err)
		}
		if n := len(received[*wire.RoomList](r.fakeRV)); n != 2 {
			t.Fatalf("%d room pages asked", n)
		}
	})
}

// TestWho: Who goes through the same requests: a page (members with bad
// names left out), not a member, rate-limited then answered.
func TestWho(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRoomRV(t)
		refuse := 1
		r.setHook(func(m wire.Message) {
			q, ok := m.(*wire.Who)
			if !ok {
				r.serveBox(m)
				return
			}
			switch {
			case refuse > 0:
				refuse--
				r.send(&wire.Error{Code: wire.CodeRateLimited, Request: wire.TypeWho, TxID: q.TxID})
			case q.Room != "#lobby":
				r.send(&wire.Error{Code: wire.CodeNotMember, Request: wire.TypeWho, TxID: q.TxID})
			default:
				r.send(&wire.WhoReply{TxID: q.TxID, Room: "#other", Total: 1})
				r.send(&wire.WhoReply{TxID: q.TxID, Room: "#Lobby", Total: 3, Members: []wire.Peer{
					{Key: wire.Key{1}, Name: "alice"}, {Key: wire.Key{2}, Name: "bad name"}, {Name: "zero"}}})
			}
		})
		w, err := r.c.Who(context.Background(), "#lobby", "")
		if err != nil || w.Room != "#Lobby" || w.Total != 3 || len(w.Members) != 1 || w.Members[0].Name != "alice" {
			t.Fatalf("who #lobby: %+v, %v", w, err)
		}
		if _, err := r.c.Who(context.Background(), "#dev", ""); !errors.Is(err, rvclient.ErrNotMember) {
			t.Fatalf("who #dev: %v", err)
		}
	})
}
