package messenger

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"natchat/node/api"
	"natchat/wire"
)

// Rooms
//
// The rendezvous keeps who is in a room (RoomDirectory); the messages never
// pass through it in the clear. A message to a room is sent as one copy
// per other member, each a message of its own in that member's
// conversation (with its own ID, which the member's receipt names, and the
// room message's ID as its Group): live over the member's session, or
// sealed into its mailbox, exactly as a 1:1 message. So a sender's
// messages reach every member in the order sent, whatever the path, and a
// member offline meanwhile gets them from its mailbox, in order, once.
//
// The sender sees one Sent for the room message; each member's copy has
// its own Stored, Expired or Error (To: the member); the receipts are
// folded into one Delivered {Members: "n/N"}, published once every copy
// has an outcome and again each time a stored copy is taken (group).
//
// A receiver shows a room message only if it is in the room and the
// sender is a member (the member list is asked again once when the sender
// is not in it: it may have just joined). Each member's messages to a
// room are held to RoomRate (twice that when receiving: a member that
// sends faster is not read faster, and QUIC's flow control holds it).

// RoomView is a room's whole member list at one version.
type RoomView struct {
	Room    string // as the rendezvous writes it
	Version uint64
	Members []wire.RoomMember
}

// ErrNotMember: the rendezvous says we are not in that room.
var ErrNotMember = errors.New("not in that room")

// RoomDirectory is the rendezvous's side of rooms: the rendezvous client.
type RoomDirectory interface {
	JoinRoom(ctx context.Context, room string) (*wire.RoomReply, error)
	PartRoom(ctx context.Context, room string) (*wire.RoomReply, error)
	Rooms(ctx context.Context) ([]wire.RoomInfo, error)
	// RoomMembers returns every member of room, or ErrNotMember.
	RoomMembers(ctx context.Context, room string) (*RoomView, error)
}

// roomFresh is how long a room's member list is trusted for sending
// without asking the rendezvous again (events keep it current; this
// bounds the harm of a lost one).
const roomFresh = 30 * time.Second

// refetchGap is the least time between two member-list fetches of a room
// for a message from someone not in it.
const refetchGap = 2 * time.Second

// room is what we know of a room we are in. Guarded by Messenger.rmu.
type room struct {
	name    string
	version uint64
	members map[wire.Key]roomMember
	// fetched is when members was last fetched (zero: never); stale says
	// an event was missed since.
	fetched time.Time
	stale   bool
	count   int                        // members, as the rendezvous last said
	send    *rate.Limiter              // our messages to the room
	recv    map[wire.Key]*rate.Limiter // each member's to us, made on use
	loading chan struct{}              // closed when a fetch under way ends (nil: none)
}

type roomMember struct {
	name   string
	online bool
}

// group is what the sender tracks of one room message until every copy
// has its final outcome. Guarded by Messenger.gmu.
type group struct {
	room      string
	total     int // copies
	settled   int // copies with an outcome: delivered, stored or failed
	delivered int
	final     int // copies with a final outcome: delivered, failed or expired
	announced bool
	sent      bool         // Sent published
	refused   []*api.Error // members it could not go to, said after Sent
}

func (m *Messenger) newRoom(name string) *room {
	return &room{
		name:    name,
		members: make(map[wire.Key]roomMember),
		send:    rate.NewLimiter(rate.Limit(m.opts.RoomRate), m.opts.RoomBurst),
		recv:    make(map[wire.Key]*rate.Limiter),
	}
}

// Registered is told that we registered (again): it learns the rooms we
// are in, and their members, in the background (once Start has run). It
// never blocks.
func (m *Messenger) Registered() {
	if m.opts.Rooms == nil {
		return
	}
	m.mu.Lock()
	ctx, stopped := m.ctx, m.stopped
	if ctx == nil {
		m.loadOnStart = true
	}
	m.mu.Unlock()
	if ctx == nil || stopped {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.loadRooms(ctx)
	}()
}

// RoomsBehind is told that a room event was lost: it asks for our rooms
// again in the background (the rooms whose versions moved are fetched
// again, and the changes found are published as room_joined and
// room_left). It never blocks.
func (m *Messenger) RoomsBehind() {
	m.rmu.Lock()
	busy := m.reloading
	m.reloading = true
	m.rmu.Unlock()
	if busy {
		return
	}
	m.Registered()
}

// loadRooms asks the rendezvous for our rooms and keeps what it says.
//
// A /join or /part answered while the list was on its way makes the list
// old: it is asked for again (three times at most; then it only adds and
// updates rooms, and drops none).
func (m *Messenger) loadRooms(ctx context.Context) []wire.RoomInfo {
	var infos []wire.RoomInfo
	var err error
	prune := false
	for try := 0; try < 3 && !prune; try++ {
		m.rmu.Lock()
		gen := m.roomGen
		m.rmu.Unlock()
		infos, err = m.opts.Rooms.Rooms(ctx)
		if err != nil {
			break
		}
		m.rmu.Lock()
		prune = m.roomGen == gen
		m.rmu.Unlock()
	}
	m.rmu.Lock()
	m.reloading = false
	m.rmu.Unlock()
	if err != nil {
		m.log.Info().Err(err).Msg("rooms: cannot list our rooms now")
		return nil
	}
	m.rmu.Lock()
	keep := make(map[string]*room, len(infos))
	if !prune {
		maps.Copy(keep, m.rooms)
	}
	for _, ri := range infos {
		if wire.ValidateRoom(ri.Room) != nil {
			continue
		}
		nk := wire.NameKey(ri.Room)
		r := m.rooms[nk]
		if r == nil {
			r = m.newRoom(ri.Room)
		}
		if r.version != ri.Version {
			r.stale = true
		}
		r.count = int(ri.Members)
		keep[nk] = r
	}
	m.rooms = keep
	if !m.roomsKnown {
		m.roomsKnown = true
		close(m.roomsReady)
	}
	var stale []string
	for nk, r := range keep {
		// A room too big to post to (#lobby of a big network) is not
		// fetched: we neither send to it nor take messages to it.
		if (r.stale || r.fetched.IsZero()) && r.count <= m.opts.MaxFanout+1 {
			stale = append(stale, nk)
		}
	}
	m.rmu.Unlock()
	for _, nk := range stale {
		m.refreshRoom(ctx, nk)
	}
	return infos
}

// refreshRoom fetches a room's members (one fetch at a time per room: a
// caller that finds one under way waits for it).
func (m *Messenger) refreshRoom(ctx context.Context, nk string) {
	m.rmu.Lock()
	r := m.rooms[nk]
	if r == nil {
		m.rmu.Unlock()
		return
	}
	if ch := r.loading; ch != nil {
		m.rmu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		return
	}
	ch := make(chan struct{})
	r.loading = ch
	name := r.name
	m.rmu.Unlock()
	defer close(ch)

	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := m.opts.Rooms.RoomMembers(ctx, name)
	m.rmu.Lock()
	defer m.rmu.Unlock()
	r.loading = nil
	switch {
	case errors.Is(err, ErrNotMember):
		if m.rooms[nk] == r {
			delete(m.rooms, nk)
		}
		return
	case err != nil:
		m.log.Info().Err(err).Str("room", name).Msg("rooms: cannot fetch the members now")
		return
	}
	r.name = v.Room
	r.version = v.Version
	old, known := r.members, !r.fetched.IsZero()
	r.members = make(map[wire.Key]roomMember, len(v.Members))
	for _, mb := range v.Members {
		r.members[mb.Key] = roomMember{name: mb.Name, online: mb.Online}
	}
	r.count = len(r.members)
	if known {
		// Changes whose events were lost: said now.
		for k, mb := range r.members {
			if _, ok := old[k]; !ok && k != m.opts.Self {
				m.bus.Publish(&api.RoomJoined{Room: r.name, Name: mb.name})
			}
		}
		for k, mb := range old {
			if _, ok := r.members[k]; !ok && k != m.opts.Self {
				m.bus.Publish(&api.RoomLeft{Room: r.name, Name: mb.name, Reason: api.RoomReasonPart})
			}
		}
	}
	for k := range r.recv {
		if _, ok := r.members[k]; !ok {
			delete(r.recv, k)
		}
	}
	r.fetched = m.now()
	r.stale = false
}

// JoinRoom joins room and says so (RoomJoined with our name), or why not.
func (m *Messenger) JoinRoom(ctx context.Context, name string) {
	if !m.roomsOn(name) {
		return
	}
	if err := wire.ValidateRoom(name); err != nil {
		m.bus.Publish(&api.Error{Code: api.CodeBadName, Room: name, Message: err.Error()})
		return
	}
	r, err := m.opts.Rooms.JoinRoom(ctx, name)
	if err != nil {
		m.bus.Publish(&api.Error{Code: api.CodeRendezvousUnreachable, Room: name, Message: "/join " + name + ": " + err.Error()})
		return
	}
	if e := roomRefusal(r, name); e != nil {
		m.bus.Publish(e)
		return
	}
	nk := wire.NameKey(r.Room)
	m.rmu.Lock()
	m.roomGen++
	rm := m.rooms[nk]
	if rm == nil {
		rm = m.newRoom(r.Room)
		m.rooms[nk] = rm
	}
	rm.count = int(r.Members)
	big := rm.count > m.opts.MaxFanout+1
	m.rmu.Unlock()
	if !big {
		m.refreshRoom(ctx, nk)
	}
	m.bus.Publish(&api.RoomJoined{Room: r.Room, Name: m.opts.SelfName, Total: int(r.Members), Online: int(r.Online)})
}

// PartRoom leaves room and says so (RoomLeft with our name), or why not.
func (m *Messenger) PartRoom(ctx context.Context, name string) {
	if !m.roomsOn(name) {
		return
	}
	if err := wire.ValidateRoom(name); err != nil {
		m.bus.Publish(&api.Error{Code: api.CodeBadName, Room: name, Message: err.Error()})
		return
	}
	r, err := m.opts.Rooms.PartRoom(ctx, name)
	if err != nil {
		m.bus.Publish(&api.Error{Code: api.CodeRendezvousUnreachable, Room: name, Message: "/part " + name + ": " + err.Error()})
		return
	}
	if e := roomRefusal(r, name); e != nil {
		m.bus.Publish(e)
		return
	}
	m.rmu.Lock()
	m.roomGen++
	delete(m.rooms, wire.NameKey(name))
	m.rmu.Unlock()
	room := r.Room
	if room == "" {
		room = name
	}
	m.bus.Publish(&api.RoomLeft{Room: room, Name: m.opts.SelfName, Reason: api.RoomReasonPart})
}

// ListRooms publishes the rooms we are in (Rooms).
func (m *Messenger) ListRooms(ctx context.Context) {
	if !m.roomsOn("") {
		return
	}
	infos, err := m.opts.Rooms.Rooms(ctx)
	if err != nil {
		m.bus.Publish(&api.Error{Code: api.CodeRendezvousUnreachable, Message: "/rooms: " + err.Error()})
		return
	}
	e := &api.Rooms{Rooms: make([]api.RoomInfo, 0, len(infos))}
	for _, ri := range infos {
		if wire.ValidateRoom(ri.Room) != nil {
			continue
		}
		e.Rooms = append(e.Rooms, api.RoomInfo{Room: ri.Room, Members: int(ri.Members), Online: int(ri.Online)})
	}
	m.bus.Publish(e)
	// Keep our view in step (a room joined or left elsewhere).
	m.rmu.Lock()
	for _, ri := range infos {
		nk := wire.NameKey(ri.Room)
		if r := m.rooms[nk]; r == nil && wire.ValidateRoom(ri.Room) == nil {
			r = m.newRoom(ri.Room)
			r.stale = true
			m.rooms[nk] = r
		} else if r != nil && r.version != ri.Version {
			r.stale = true
		}
	}
	m.rmu.Unlock()
}

func (m *Messenger) roomsOn(room string) bool {
	if m.opts.Rooms != nil {
		return true
	}
	m.bus.Publish(&api.Error{Code: api.CodeBadCommand, Room: room, Message: "this node has no rooms"})
	return false
}

// roomRefusal returns the error event for a refused join or part, or nil.
func roomRefusal(r *wire.RoomReply, name string) *api.Error {
	switch r.Status {
	case wire.RoomOK:
		return nil
	case wire.RoomFull:
		return &api.Error{Code: api.CodeRoomFull, Room: name, Message: fmt.Sprintf("%s is full: it has %d members, the most the rendezvous allows", name, r.Limit)}
	case wire.RoomTooMany:
		return &api.Error{Code: api.CodeTooManyRooms, Room: name, Message: fmt.Sprintf("you are in %d rooms, the most the rendezvous allows: /part one first", r.Limit)}
	case wire.RoomNotMember:
		return &api.Error{Code: api.CodeNotMember, Room: name, Message: "you are not in " + name}
	case wire.RoomBadName:
		return &api.Error{Code: api.CodeBadName, Room: name, Message: name + " cannot be a room name (it breaks the naming rules or looks like another room's name)"}
	}
	return &api.Error{Code: api.CodeRateLimited, Room: name, Message: "the rendezvous could not do it now (" + r.Status.String() + "); try again"}
}

// RoomEvent takes the rendezvous's news of a room of ours (a member
// joined or left). It never blocks.
func (m *Messenger) RoomEvent(ev *wire.RoomEvent) {
	if m.opts.Rooms == nil {
		return
	}
	nk := wire.NameKey(ev.Room)
	m.rmu.Lock()
	r := m.rooms[nk]
	if r == nil {
		m.rmu.Unlock()
		return // not a room of ours (or not yet known: loading fetches it)
	}
	self := ev.Key == m.opts.Self
	switch {
	case r.fetched.IsZero() || ev.Version <= r.version:
		// Older than what we have (or nothing yet): a fetch tells.
	case ev.Version != r.version+1:
		r.stale = true // we missed one
	default:
		r.version = ev.Version
		if ev.Kind == wire.RoomJoined {
			r.members[ev.Key] = roomMember{name: ev.Name, online: true}
		} else {
			delete(r.members, ev.Key)
			delete(r.recv, ev.Key)
		}
	}
	if self && ev.Kind == wire.RoomLeft {
		delete(m.rooms, nk)
	}
	name := r.name
	stale := r.stale && r.loading == nil // one fetch at a time
	m.rmu.Unlock()
	if stale {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			if ctx := m.context(); ctx != nil {
				m.refreshRoom(ctx, nk)
			}
		}()
	}
	if ev.Kind == wire.RoomJoined {
		m.bus.Publish(&api.RoomJoined{Room: name, Name: ev.Name})
		return
	}
	reason := api.RoomReasonPart
	if ev.Reason == wire.RoomLeftExpired {
		reason = api.RoomReasonExpired
	}
	m.bus.Publish(&api.RoomLeft{Room: name, Name: ev.Name, Reason: reason})
}

func (m *Messenger) context() context.Context {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return nil
	}
	return m.ctx
}

// checkRoomSend refuses a message to a room we are not in, or one over
// our rate for the room, with an error event; it reports whether the
// message may go.
func (m *Messenger) checkRoomSend(name string) bool {
	if !m.roomsOn(name) {
		return false
	}
	if err := wire.ValidateRoom(name); err != nil {
		m.bus.Publish(&api.Error{Code: api.CodeBadName, Room: name, To: name, Message: err.Error()})
		return false
	}
	m.rmu.Lock()
	r := m.rooms[wire.NameKey(name)]
	known := m.roomsKnown
	ok := r != nil && r.send.Allow()
	m.rmu.Unlock()
	switch {
	case r == nil && !known:
		m.bus.Publish(&api.Error{Code: api.CodeNotMember, Room: name, To: name, Message: "your rooms are not known yet (not registered): try again in a moment"})
	case r == nil:
		m.bus.Publish(&api.Error{Code: api.CodeNotMember, Room: name, To: name, Message: "you are not in " + name + ": /join " + name + " first"})
	case !ok:
		m.bus.Publish(&api.Error{Code: api.CodeRateLimited, Room: name, To: name,
			Message: fmt.Sprintf("too many messages to %s: at most %g a second (bursts of %d)", name, m.opts.RoomRate, m.opts.RoomBurst)})
	}
	return ok
}

// fanOut makes the copies of a room message (msg, to the room), one per
// other member as of now, and registers its group. It reports a message
// that cannot go (not a member, the room too big) with an error event, and
// one for a room with no other member as delivered to 0/0; both return
// no copies.
func (m *Messenger) fanOut(ctx context.Context, msg *outMsg) []*outMsg {
	nk := wire.NameKey(msg.to)
	m.rmu.Lock()
	r := m.rooms[nk]
	small := r != nil && r.count <= m.opts.MaxFanout+1
	// A view known to lack a change (or never fetched) is fetched first;
	// one merely old goes as it is (events keep it current) and is
	// fetched again meanwhile, so that no message waits for it.
	now := small && (r.stale || r.fetched.IsZero())
	later := small && !now && m.now().Sub(r.fetched) > roomFresh && r.loading == nil
	m.rmu.Unlock()
	switch {
	case now:
		m.refreshRoom(ctx, nk)
	case later:
		m.wg.Add(1)
		go func() { defer m.wg.Done(); m.refreshRoom(ctx, nk) }()
	}
	type member struct {
		key      wire.Key
		name, nk string
	}
	var members []member
	m.rmu.Lock()
	r = m.rooms[nk]
	var roomName string
	var fetched bool
	var count int
	if r != nil {
		roomName, fetched, count = r.name, !r.fetched.IsZero(), r.count
		for k, mb := range r.members {
			if k != m.opts.Self {
				members = append(members, member{k, mb.name, wire.NameKey(mb.name)})
			}
		}
	}
	m.rmu.Unlock()
	fail := func(code, text string) []*outMsg {
		m.bus.Publish(&api.Error{Code: code, Message: text, ID: msg.id.String(), To: msg.to, Room: msg.to})
		m.addPending(-1)
		return nil
	}
	switch {
	case r == nil:
		return fail(api.CodeNotMember, "you are not in "+msg.to)
	case count > m.opts.MaxFanout+1:
		return fail(api.CodeRoomFull, fmt.Sprintf("%s has %d members; a message goes to at most %d", roomName, count, m.opts.MaxFanout))
	case !fetched:
		return fail(api.CodeRendezvousUnreachable, "cannot learn who is in "+msg.to+" now")
	case len(members) > m.opts.MaxFanout:
		return fail(api.CodeRoomFull, fmt.Sprintf("%s has %d other members; a message goes to at most %d", roomName, len(members), m.opts.MaxFanout))
	}
	slices.SortFunc(members, func(a, b member) int { return strings.Compare(a.nk, b.nk) })
	copies := make([]*outMsg, 0, len(members))
	var refused []*api.Error // said after Sent
	for _, mb := range members {
		if e := m.checkPin(mb.name, mb.key); e != nil {
			e.ID, e.To, e.Room = msg.id.String(), mb.name, roomName
			refused = append(refused, e)
			continue
		}
		c := &outMsg{to: mb.name, room: roomName, group: msg.id, kind: msg.kind, text: msg.text, created: msg.created, deadline: msg.deadline}
		rand.Read(c.id[:])
		copies = append(copies, c)
	}
	for _, c := range copies {
		c.members = uint32(len(copies))
	}
	m.addPending(len(copies) - 1)
	if len(copies) == 0 {
		kind, _ := APIKind(msg.kind)
		m.bus.Publish(&api.Sent{ID: msg.id.String(), To: roomName, Room: roomName, Text: msg.text, Kind: kind})
		for _, e := range refused {
			m.bus.Publish(e)
		}
		m.bus.Publish(&api.Delivered{ID: msg.id.String(), To: roomName, Room: roomName, Members: "0/0"})
		return nil
	}
	m.gmu.Lock()
	m.groups[msg.id] = &group{room: roomName, total: len(copies), refused: refused}
	m.gmu.Unlock()
	return copies
}

// announce says Sent for the room message of copy c once its copies are
// in the outbox (the first of them announces it), then the members it
// could not go to.
func (m *Messenger) announce(c *outMsg) {
	m.gmu.Lock()
	defer m.gmu.Unlock()
	g := m.groups[c.group]
	if g == nil || g.sent {
		return
	}
	g.sent = true
	kind, _ := APIKind(c.kind)
	m.bus.Publish(&api.Sent{ID: c.group.String(), To: g.room, Room: g.room, Text: c.text, Kind: kind})
	for _, e := range g.refused {
		m.bus.Publish(e)
	}
	g.refused = nil
}

// outcome publishes an outcome of msg: ev is a Delivered, Stored, Expired
// or Error about it. For a 1:1 message it goes out as it is; for a room
// copy, Stored, Expired and Error name the member and the room with the
// room message's ID, and Delivered is folded into the group's.
func (m *Messenger) outcome(msg *outMsg, ev api.Event) {
	if msg.group == (wire.MsgID{}) {
		m.bus.Publish(ev)
		return
	}
	gid := msg.group.String()
	m.gmu.Lock()
	defer m.gmu.Unlock() // published under gmu: folded counts go out in order
	g := m.groups[msg.group]
	if g == nil {
		g = &group{room: msg.room, total: int(msg.members)}
		m.groups[msg.group] = g
	}
	first := !msg.counted
	msg.counted = true
	final := true
	switch e := ev.(type) {
	case *api.Delivered:
		g.delivered++
	case *api.Stored:
		e.ID, e.Room = gid, msg.room
		m.bus.Publish(e)
		final = false
	case *api.Expired:
		e.ID, e.Room = gid, msg.room
		m.bus.Publish(e)
	case *api.Error:
		e.ID, e.Room = gid, msg.room
		m.bus.Publish(e)
	}
	if first {
		g.settled++
	}
	if final {
		g.final++
	}
	_, isDelivered := ev.(*api.Delivered)
	if g.settled >= g.total && (!g.announced || isDelivered) {
		g.announced = true
		m.bus.Publish(&api.Delivered{ID: gid, To: g.room, Room: g.room, Members: fmt.Sprintf("%d/%d", g.delivered, g.total)})
	}
	if g.final >= g.total {
		delete(m.groups, msg.group)
	}
}

// resumeGroup counts a room copy found in the outbox at Start into its
// group; the group's first copy announces the room message again (Sent,
// Resumed). Copies no longer in the outbox had their outcome in an
// earlier run: they count as delivered.
func (m *Messenger) resumeGroup(msg *outMsg, resumed map[wire.MsgID]int) {
	resumed[msg.group]++
	if resumed[msg.group] > 1 {
		return
	}
	kind, _ := APIKind(msg.kind)
	m.bus.Publish(&api.Sent{ID: msg.group.String(), To: msg.room, Room: msg.room, Text: msg.text, Kind: kind, Resumed: true})
}

// finishResume sets up the groups of the copies Start found.
func (m *Messenger) finishResume(resumed map[wire.MsgID]int, rooms map[wire.MsgID]*outMsg) {
	m.gmu.Lock()
	defer m.gmu.Unlock()
	for gid, n := range resumed {
		msg := rooms[gid]
		total := max(int(msg.members), n)
		done := total - n
		m.groups[gid] = &group{room: msg.room, total: total, settled: done, delivered: done, final: done}
	}
}

// errRoomsUnknown: our rooms are not known yet (the rendezvous has not
// told us since we started), so a room message can be neither shown nor
// refused now.
var errRoomsUnknown = errors.New("our rooms are not known yet")

// acceptRoom reports whether a message to room from peer may be shown: we
// are in the room and peer is a member (asking the rendezvous once more
// when it is not, at most every refetchGap). It returns the room's name
// as we know it. Until the rendezvous has told us our rooms it waits (at
// most 10 s), then fails with errRoomsUnknown: the caller leaves the
// message to come again.
func (m *Messenger) acceptRoom(ctx context.Context, name string, peer wire.Key) (string, bool, error) {
	if m.opts.Rooms == nil || wire.ValidateRoom(name) != nil {
		return "", false, nil
	}
	t := time.NewTimer(10 * time.Second)
	select {
	case <-m.roomsReady:
		t.Stop()
	case <-t.C:
		return "", false, errRoomsUnknown
	case <-ctx.Done():
		t.Stop()
		return "", false, ctx.Err()
	}
	nk := wire.NameKey(name)
	for try := 0; ; try++ {
		m.rmu.Lock()
		r := m.rooms[nk]
		if r == nil {
			// Perhaps joined a moment ago, or elsewhere: ask our rooms
			// again, at most every refetchGap.
			reload := try == 0 && m.now().Sub(m.listed) >= refetchGap
			if reload {
				m.listed = m.now()
			}
			m.rmu.Unlock()
			if !reload {
				return "", false, nil
			}
			m.loadRooms(ctx)
			continue
		}
		_, ok := r.members[peer]
		rn, recent := r.name, !r.fetched.IsZero() && m.now().Sub(r.fetched) < refetchGap
		m.rmu.Unlock()
		if ok {
			return rn, true, nil
		}
		if try > 0 || recent {
			return "", false, nil
		}
		m.refreshRoom(ctx, nk)
	}
}

// roomHold waits until peer may send us another message to room (twice
// our own sending rate), so that one member cannot flood a room: we stop
// reading its stream meanwhile.
func (m *Messenger) roomHold(ctx context.Context, name string, peer wire.Key) error {
	m.rmu.Lock()
	r := m.rooms[wire.NameKey(name)]
	var l *rate.Limiter
	if r != nil {
		if l = r.recv[peer]; l == nil {
			l = rate.NewLimiter(rate.Limit(2*m.opts.RoomRate), 2*m.opts.RoomBurst)
			r.recv[peer] = l
		}
	}
	m.rmu.Unlock()
	if l == nil {
		return nil
	}
	return l.Wait(ctx)
}

// roomsState is the rooms part of a Messenger.
type roomsState struct {
	rmu        sync.Mutex
	rooms      map[string]*room // by NameKey; guarded by rmu
	roomsKnown bool             // the rendezvous told us our rooms; guarded by rmu
	roomsReady chan struct{}    // closed when roomsKnown is set
	// reloading: RoomsBehind started a load not yet answered. Guarded by
	// rmu.
	reloading bool
	// roomGen counts our joins and parts answered (guarded by rmu): a
	// room list asked for before one is out of date.
	roomGen uint64
	// listed is when a message to a room not ours last made us ask for
	// our rooms (guarded by rmu).
	listed time.Time
	// loadOnStart: we registered before Start; it loads our rooms.
	// Guarded by Messenger.mu.
	loadOnStart bool
	gmu         sync.Mutex
	groups      map[wire.MsgID]*group // guarded by gmu
}
