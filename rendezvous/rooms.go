package rendezvous

import (
	"errors"
	"fmt"
	"iter"
	"maps"
	"slices"
	"strings"
	"time"

	"natchat/relay"
	"natchat/wire"
)

// Rooms (docs/PROTOCOL.md, "Rooms").
//
// The store (Options.Rooms) keeps who is in which room, online or not, and
// each room's version. The server keeps a copy in memory (byRoom,
// members), loaded by New and changed only by the done functions of the
// store's writes, which run one at a time in commit order: so the copy is
// what is durable, and RoomList, RoomMembers and the checks of a join or
// part are answered from it without reading the disk. A join or part is
// checked on the packet path, then written by the store's committer, which
// checks the limits again (two joins may race for a room's last place);
// its done, once the write is durable, applies it to the copy and to the
// online view (presence), answers the node with a RoomReply and tells the
// room's other online members with a RoomEvent. A key's first
// registration puts it in the default room the same way, before its
// HandshakeReply; the expiry (ExpireRooms) takes out members away for
// longer than MailboxAge.

// Room defaults (Options).
const (
	DefaultRoomMembers  = 256
	DefaultRoomsPerNode = 32
)

const (
	// maxRoomOps bounds a session's joins and parts being written.
	maxRoomOps = 4
	// roomExpireBatch bounds the members one expiry write takes out.
	roomExpireBatch = 1000
)

// Why members leave rooms (the room_leaves metric).
const (
	roomLeftPart    = "part"
	roomLeftExpired = "expired"
)

// room is a room with members, as committed.
//
// Which rooms a key is in is its member record's to say (member.list);
// a room keeps only an index of its members, for its member pages, and
// their number. The default room keeps no index: every key is in it, so
// one entry per key would cost more than the rest of the key's record
// (~70 bytes a key), and its member pages walk s.members instead, which
// is the same walk over nearly the same keys.
type room struct {
	name    string // as first written
	rk      string // wire.NameKey(name)
	version uint64
	members map[*member]struct{} // its members; nil in the default room
	size    int                  // its members, counted
	skels   []string             // skeletons(name), held in roomSkel
	// alone is []*room{r}, the member.list of every key in the default
	// room and no other, shared by them all (a one-pointer array each
	// would cost 8 bytes a key, a slice of its own 24 more); nil in other
	// rooms. It is set once, when the room is made: lists point at it.
	alone []*room
}

// member is a key and the rooms it is in: its record in the copy. An
// online node's is part of its client record (client.member), found
// through s.byKey; an offline key's, if it is in a room, stands alone in
// s.members. admitLocked and removeLocked move it from one to the other
// (memberOnlineLocked, memberOfflineLocked), so that a node online does
// not pay for two records and two entries keyed by its key.
type member struct {
	key     wire.Key
	name    string   // its canonical name; "" if no name is bound to it (the expiry takes it out)
	nameKey string   // wire.NameKey(name): the order of member and who pages
	list    roomList // the rooms it is in (RoomsPerNode at most, and the default room), in the order it joined: read with joined
}

// roomList is a list of rooms: a pointer to a slice, nil for none, so
// that it costs the records that hold one (each node's) 8 bytes where
// the slice took 24. A list is never written in place: a room's alone
// list is shared by every key in that room and no other, and two
// records may hold one list (a member record being moved); with and
// without make new lists.
type roomList struct{ p *[]*room }

// all returns the rooms of l: read only.
func (l roomList) all() []*room {
	if l.p == nil {
		return nil
	}
	return *l.p
}

// with returns l and r after it.
func (l roomList) with(r *room) roomList {
	rs := append(slices.Clip(l.all()), r)
	return roomList{&rs}
}

// without returns l but its i-th room.
func (l roomList) without(i int) roomList {
	rs := l.all()
	if len(rs) == 1 {
		return roomList{}
	}
	rs = slices.Delete(slices.Clone(rs), i, i+1)
	return roomList{&rs}
}

// joined returns the rooms m is in, in the order it joined: read only.
func (m *member) joined() []*room { return m.list.all() }

// in reports whether m is a member of r.
func (m *member) in(r *room) bool { return slices.Contains(m.joined(), r) }

// memberLocked returns key's record in the copy, or nil if it is in no
// room.
func (s *Server) memberLocked(key wire.Key) *member {
	if c := s.byKey.get(key); c != nil {
		if len(c.joined()) == 0 {
			return nil
		}
		return &c.member
	}
	return s.members[key]
}

// memberOnlineLocked moves the record of c's key, if it is in a room,
// into c, which is coming online (before it is put in s.byKey).
func (s *Server) memberOnlineLocked(c *client) {
	m := s.members[c.key]
	if m == nil {
		return
	}
	c.list = m.list
	for _, r := range c.joined() {
		if r.members != nil {
			delete(r.members, m)
			r.members[&c.member] = struct{}{}
		}
	}
	s.forgetMemberLocked(c.key)
}

// memberOfflineLocked moves c's record, if it is in a room, out of c,
// which has gone offline (and out of s.byKey), into s.members.
func (s *Server) memberOfflineLocked(c *client) {
	if len(c.joined()) == 0 {
		return
	}
	m := &member{key: c.key, name: c.name, nameKey: c.nameKey, list: c.list}
	for _, r := range m.joined() {
		if r.members != nil {
			delete(r.members, &c.member)
			r.members[m] = struct{}{}
		}
	}
	c.list = roomList{}
	s.members[c.key] = m
}

// forgetMemberLocked deletes key's entry in s.members, and gives the
// map's memory back once most of it has been deleted (a Go map keeps its
// buckets): a restarted server loads every key in a room there, and
// their registrations take them out again.
func (s *Server) forgetMemberLocked(key wire.Key) {
	delete(s.members, key)
	if s.membersGone++; s.membersGone > 64 && s.membersGone > 2*len(s.members) {
		s.members = compact(s.members, s.membersGone)
		s.membersGone = 0
	}
}

// roomMembersLocked returns r's members, in no particular order.
func (s *Server) roomMembersLocked(r *room) iter.Seq[*member] {
	if r.members != nil {
		return maps.Keys(r.members)
	}
	return func(yield func(*member) bool) {
		for _, m := range s.members {
			if m.in(r) && !yield(m) {
				return
			}
		}
		for c := range s.byKey.all() {
			if c.in(r) && !yield(&c.member) {
				return
			}
		}
	}
}

// skelOwner is the room (wire.NameKey) that holds a confusable skeleton,
// and how many hold it: the room itself once it exists, and each join
// creating it while it is being written.
type skelOwner struct {
	rk   string
	refs int
}

// loadRooms fills the in-memory copy from the store. New calls it.
func (s *Server) loadRooms() error {
	states, err := s.opts.Rooms.LoadRooms()
	if err != nil {
		return fmt.Errorf("rendezvous: loading rooms: %w", err)
	}
	for _, st := range states {
		if len(st.Members) == 0 {
			continue
		}
		r := s.newRoomLocked(st.Name, st.Version)
		for _, k := range st.Members {
			s.addMemberLocked(r, k, "")
		}
	}
	for k, m := range s.members {
		if name, ok := s.opts.Store.ByKey(k); ok {
			m.name, m.nameKey = name, wire.NameKey(name)
		}
	}
	return nil
}

// newRoomLocked adds a room with no members yet to the copy.
func (s *Server) newRoomLocked(name string, version uint64) *room {
	r := &room{name: name, rk: wire.NameKey(name), version: version, skels: skeletons(name)}
	if s.opts.DefaultRoom == "" || r.rk != s.defaultRK {
		r.members = make(map[*member]struct{})
	} else {
		r.alone = []*room{r}
	}
	s.byRoom[r.rk] = r
	s.holdSkelsLocked(r.rk, r.skels)
	s.m.rooms.Set(float64(len(s.byRoom)))
	return r
}

// addMemberLocked puts key in r in the copy. name, if not empty, is its
// canonical name (an online node's is its client's already).
func (s *Server) addMemberLocked(r *room, key wire.Key, name string) *member {
	m := s.memberLocked(key)
	if m == nil {
		if c := s.byKey.get(key); c != nil {
			m = &c.member
		} else {
			m = &member{key: key}
			s.members[key] = m
		}
	}
	if name != "" && name != m.name && s.byKey.get(key) == nil {
		m.name, m.nameKey = name, wire.NameKey(name)
	}
	if !m.in(r) {
		if m.list.p == nil && r.alone != nil {
			m.list = roomList{&r.alone}
		} else {
			m.list = m.list.with(r)
		}
		if r.members != nil {
			r.members[m] = struct{}{}
		}
		r.size++
		s.memberships++
		s.m.roomMembers.Set(float64(s.memberships))
	}
	return m
}

// removeMemberLocked takes key out of r in the copy, and deletes r if it
// is empty now.
func (s *Server) removeMemberLocked(r *room, key wire.Key) {
	m := s.memberLocked(key)
	if m == nil {
		return
	}
	i := slices.Index(m.joined(), r)
	if i < 0 {
		return
	}
	if m.list = m.list.without(i); m.list.p == nil {
		if s.byKey.get(key) == nil {
			s.forgetMemberLocked(key)
		}
	}
	delete(r.members, m)
	r.size--
	s.memberships--
	s.m.roomMembers.Set(float64(s.memberships))
	if r.size == 0 {
		delete(s.byRoom, r.rk)
		s.releaseSkelsLocked(r.rk, r.skels)
		s.m.rooms.Set(float64(len(s.byRoom)))
	}
}

// holdSkelsLocked records that the room rk holds skels.
func (s *Server) holdSkelsLocked(rk string, skels []string) {
	for _, sk := range skels {
		o := s.roomSkel[sk]
		if o.refs > 0 && o.rk != rk {
			continue // held by another (only if the skeleton data changed)
		}
		s.roomSkel[sk] = skelOwner{rk: rk, refs: o.refs + 1}
	}
}

// releaseSkelsLocked undoes one holdSkelsLocked.
func (s *Server) releaseSkelsLocked(rk string, skels []string) {
	for _, sk := range skels {
		o, ok := s.roomSkel[sk]
		if !ok || o.rk != rk {
			continue
		}
		if o.refs--; o.refs <= 0 {
			delete(s.roomSkel, sk)
		} else {
			s.roomSkel[sk] = o
		}
	}
}

// confusableRoomLocked reports whether a room with one of skels, other
// than rk, exists or is being created.
func (s *Server) confusableRoomLocked(rk string, skels []string) bool {
	for _, sk := range skels {
		if o, ok := s.roomSkel[sk]; ok && o.rk != rk {
			return true
		}
	}
	return false
}

// roomLimits returns the limits of a join of the room rk.
func (s *Server) roomLimits(rk string) RoomLimits {
	if rk == s.defaultRK {
		return RoomLimits{}
	}
	return RoomLimits{Members: max(s.opts.RoomMembers, 0), Rooms: max(s.opts.RoomsPerNode, 0), Uncounted: s.defaultRK}
}

// countedRoomsLocked returns the rooms key is in, the default room not
// counted.
func (s *Server) countedRoomsLocked(key wire.Key) int {
	m := s.memberLocked(key)
	if m == nil {
		return 0
	}
	n := len(m.joined())
	if s.opts.DefaultRoom != "" && slices.ContainsFunc(m.joined(), func(r *room) bool { return r.rk == s.defaultRK }) {
		n--
	}
	return n
}

// isMemberLocked reports whether key is a member of the room rk.
func (s *Server) isMemberLocked(rk string, key wire.Key) bool {
	r, m := s.byRoom[rk], s.memberLocked(key)
	return r != nil && m != nil && m.in(r)
}

// allowRoomRequestLocked counts a room request against c's lookup rate
// and refuses it over the rate.
func (s *Server) allowRoomRequestLocked(c *client, t wire.Type, tx uint32, now time.Time) bool {
	if s.opts.LookupRate > 0 && !s.lookupLimiter(c).AllowN(now, 1) {
		s.drop(relay.DropQuota)
		s.sendSealedLocked(c, &wire.Error{Code: wire.CodeRateLimited, Request: t, TxID: tx, Message: "too many requests"})
		return false
	}
	return true
}

// handleRoomJoinLocked checks a RoomJoin and hands it to the store; the
// reply follows when it is durable. A join of a room c is in is answered
// at once, as are refusals the copy can tell (unless c has writes queued:
// then the store, which has them in order, decides).
func (s *Server) handleRoomJoinLocked(c *client, tx uint32, name string) {
	if err := wire.ValidateRoom(name); err != nil {
		s.replyRoomLocked(c, tx, wire.RoomBadName, name)
		return
	}
	rk := wire.NameKey(name)
	in := s.isMemberLocked(rk, c.key)
	if in && c.roomOps == 0 {
		s.replyRoomLocked(c, tx, wire.RoomOK, name)
		return
	}
	if c.roomOps >= maxRoomOps {
		s.replyRoomLocked(c, tx, wire.RoomBusy, name)
		return
	}
	var skels []string // held while a join that may create the room is written
	if s.byRoom[rk] == nil {
		skels = skeletons(name)
		if s.confusableRoomLocked(rk, skels) {
			s.replyRoomLocked(c, tx, wire.RoomBadName, name)
			return
		}
	}
	lim := s.roomLimits(rk)
	if !in {
		if r := s.byRoom[rk]; r != nil && lim.Members > 0 && r.size >= lim.Members {
			s.replyRoomLocked(c, tx, wire.RoomFull, name)
			return
		}
		if lim.Rooms > 0 && s.countedRoomsLocked(c.key) >= lim.Rooms {
			s.replyRoomLocked(c, tx, wire.RoomTooMany, name)
			return
		}
	}
	if skels != nil {
		s.holdSkelsLocked(rk, skels)
	}
	res, queued := s.opts.Rooms.JoinRoom(name, c.key, lim, func(res RoomResult) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.roomWrittenLocked(c, tx, name, res, true)
		if skels != nil {
			s.releaseSkelsLocked(rk, skels)
		}
	})
	if !queued {
		if skels != nil {
			s.releaseSkelsLocked(rk, skels)
		}
		s.log.Error().Err(res.Err).Str("peer", c.name).Msg("room join")
		s.replyRoomLocked(c, tx, wire.RoomFailed, name)
		return
	}
	c.roomOps++
	s.roomWrites++
}

// handleRoomPartLocked checks a RoomPart and hands it to the store; the
// reply follows when it is durable.
func (s *Server) handleRoomPartLocked(c *client, tx uint32, name string) {
	if wire.ValidateRoom(name) != nil {
		s.replyRoomLocked(c, tx, wire.RoomNotMember, name) // no one is in a room by that name
		return
	}
	if c.roomOps >= maxRoomOps {
		s.replyRoomLocked(c, tx, wire.RoomBusy, name)
		return
	}
	if c.roomOps == 0 && !s.isMemberLocked(wire.NameKey(name), c.key) {
		s.replyRoomLocked(c, tx, wire.RoomNotMember, name)
		return
	}
	res, queued := s.opts.Rooms.PartRoom(name, c.key, func(res RoomResult) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.roomWrittenLocked(c, tx, name, res, false)
	})
	if !queued {
		s.log.Error().Err(res.Err).Str("peer", c.name).Msg("room part")
		s.replyRoomLocked(c, tx, wire.RoomFailed, name)
		return
	}
	c.roomOps++
	s.roomWrites++
}

// roomWrittenLocked ends c's join (or part) of the room name with res:
// the copy, the online view and the room's members learn of a change,
// and c gets its reply, with the room as the write left it, if its
// registration is current.
func (s *Server) roomWrittenLocked(c *client, tx uint32, name string, res RoomResult, join bool) {
	c.roomOps--
	s.roomWroteLocked()
	st := res.Status
	if res.Err != nil {
		s.log.Error().Err(res.Err).Str("peer", c.name).Str("room", name).Msg("room write")
		st = wire.RoomFailed
	}
	if res.Changed && res.Err == nil {
		if join {
			s.appliedJoinLocked(res, c.name, true)
		} else {
			s.appliedLeaveLocked(res, wire.RoomLeftPart)
		}
	}
	if res.Err != nil {
		s.replyRoomLocked(c, tx, st, name)
		return
	}
	s.sendRoomReplyLocked(c, &wire.RoomReply{TxID: tx, Status: st, Room: res.Room, Version: res.Version,
		Members: clampU32(int64(res.Members)), Online: clampU32(int64(s.onlineLenLocked(wire.NameKey(res.Room))))})
}

// replyRoomLocked answers c's join or part of the room name with st and
// the room as the copy has it now.
func (s *Server) replyRoomLocked(c *client, tx uint32, st wire.RoomStatus, name string) {
	rep := &wire.RoomReply{TxID: tx, Status: st, Room: name}
	if st != wire.RoomBadName {
		if r := s.byRoom[wire.NameKey(name)]; r != nil {
			rep.Room, rep.Version, rep.Members = r.name, r.version, clampU32(int64(r.size))
			rep.Online = clampU32(int64(s.onlineLenLocked(r.rk)))
		}
	}
	s.sendRoomReplyLocked(c, rep)
}

// sendRoomReplyLocked sends rep, with the limit a refusal was over, to c
// if c's registration is current; refusals are counted.
func (s *Server) sendRoomReplyLocked(c *client, rep *wire.RoomReply) {
	st := rep.Status
	if st != wire.RoomOK {
		s.m.roomRefused.WithLabelValues(st.String()).Inc()
	}
	if s.byKey.get(c.key) != c {
		return // it registers again, and asks again
	}
	switch st {
	case wire.RoomFull:
		rep.Limit = clampU32(int64(s.opts.RoomMembers))
	case wire.RoomTooMany:
		rep.Limit = clampU32(int64(s.opts.RoomsPerNode))
	}
	s.sendSealedLocked(c, rep)
}

// appliedJoinLocked applies a durable join (res) to the copy and the
// online view, and tells the room's other online members if announce is
// set. name is the joining key's canonical name.
func (s *Server) appliedJoinLocked(res RoomResult, name string, announce bool) {
	rk := wire.NameKey(res.Room)
	r := s.byRoom[rk]
	if r == nil {
		r = s.newRoomLocked(res.Room, res.Version)
	}
	r.version = res.Version
	m := s.addMemberLocked(r, res.Key, name)
	s.m.roomJoins.Inc()
	if d := s.byKey.get(res.Key); d != nil {
		s.enterRoomLocked(d, rk)
	}
	if !announce {
		return
	}
	s.roomEventLocked(r, r.size, &wire.RoomEvent{Room: r.name, Version: r.version, Kind: wire.RoomJoined,
		Key: res.Key, Name: m.name})
}

// appliedLeaveLocked applies a durable part or removal (res) to the copy
// and the online view, and tells the room's online members (and the key
// itself, if it is online and was removed by the expiry).
func (s *Server) appliedLeaveLocked(res RoomResult, reason wire.RoomLeaveReason) {
	rk := wire.NameKey(res.Room)
	r := s.byRoom[rk]
	if r == nil {
		return
	}
	var name string
	if m := s.memberLocked(res.Key); m != nil {
		name = m.name
	}
	size := r.size // the member included
	d := s.byKey.get(res.Key)
	if d != nil {
		s.exitRoomLocked(d, rk)
	}
	s.removeMemberLocked(r, res.Key)
	r.version = res.Version
	ev := &wire.RoomEvent{Room: r.name, Version: res.Version, Kind: wire.RoomLeft, Reason: reason, Key: res.Key, Name: name}
	s.roomEventLocked(r, size, ev)
	if reason == wire.RoomLeftExpired {
		s.m.roomLeaves.WithLabelValues(roomLeftExpired).Inc()
		if d != nil {
			s.sendSealedLocked(d, ev) // it came back as it was taken out
		}
	} else {
		s.m.roomLeaves.WithLabelValues(roomLeftPart).Inc()
	}
}

// roomEventLocked sends ev to r's online members but the one it is
// about, unless the room (size members, the one it is about included) is
// bigger than BigRoom: then, as with presence, nothing is broadcast.
//
// Each receiver's events are numbered (RoomEvent.Seq, from 1 in each
// registration) and its HeartbeatAcks carry the last number sent, so a
// node learns within a heartbeat that an event was lost (they are sent
// once) and asks for its rooms again.
func (s *Server) roomEventLocked(r *room, size int, ev *wire.RoomEvent) {
	if size > s.roomEventMaxLocked(r) {
		return
	}
	for o := range s.onlineLocked(r.rk) {
		if o.key != ev.Key {
			o.roomSeq++
			e := *ev
			e.Seq = o.roomSeq
			s.sendSealedLocked(o, &e)
		}
	}
}

// roomEventMaxLocked is the size of room above which its changes are not
// announced: BigRoom for the default room (it holds everyone) and for
// rooms with no member limit; for the others, the member limit when that
// is higher, so that every member of a room one may post to hears of its
// changes.
func (s *Server) roomEventMaxLocked(r *room) int {
	if s.opts.RoomMembers > 0 && r.rk != wire.NameKey(s.opts.DefaultRoom) {
		return max(s.opts.BigRoom, s.opts.RoomMembers)
	}
	return s.opts.BigRoom
}

// roomWroteLocked counts a room write answered.
func (s *Server) roomWroteLocked() {
	if s.roomWrites--; s.roomWrites == 0 {
		s.roomIdle.Broadcast()
	}
}

// WaitRooms waits until every room write that requests queued so far has
// been answered. In-memory tests that call Handle call it, as they call
// WaitMail; Run needs nothing of the kind.
func (s *Server) WaitRooms() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.roomWrites > 0 {
		s.roomIdle.Wait()
	}
}

// bind binds name to key (Names.Bind). When the rooms are kept with the
// names (one bbolt Store), a new key is given the default room in the
// same durable write (Store.BindInit), so that its registration costs one
// fsync; the join is applied to the copy before bind returns.
func (s *Server) bind(name string, key wire.Key) (string, error) {
	st, ok := s.opts.Store.(*Store)
	if !ok || s.opts.DefaultRoom == "" || s.opts.Rooms != Rooms(st) {
		return s.opts.Store.Bind(name, key)
	}
	done := make(chan struct{})
	canonical, queued, err := st.BindInit(name, key, s.opts.DefaultRoom, func(res RoomResult) {
		defer close(done)
		s.initApplied(res, name)
	})
	if queued {
		<-done
	}
	return canonical, err
}

// initApplied applies the outcome of giving a key (named name) its first
// rooms. It takes s.mu.
func (s *Server) initApplied(res RoomResult, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if res.Err != nil {
		s.log.Error().Err(res.Err).Str("peer", name).Msg("default room")
		return
	}
	if res.Changed {
		// Not announced: the node is not online yet, and its presence
		// join, which follows, tells the room's members when the room
		// is small.
		s.appliedJoinLocked(res, name, false)
	}
}

// initRooms gives a registering key its first rooms (the default room)
// unless it had them before, and waits until that is durable and applied
// to the copy. A registration worker calls it, before the session exists.
func (s *Server) initRooms(key wire.Key, name string) {
	done := make(chan struct{})
	queued, err := s.opts.Rooms.InitRooms(key, s.opts.DefaultRoom, func(res RoomResult) {
		defer close(done)
		s.initApplied(res, name)
	})
	if err != nil {
		// It registers without; the next registration tries again.
		s.log.Error().Err(err).Str("peer", name).Msg("default room")
		return
	}
	if queued {
		<-done
	}
}

// roomListLocked answers m with the page of c's rooms whose names
// (wire.NameKey) sort after m.After: at most RoomPageMax, and no more
// than fit MaxPeersBody.
func (s *Server) roomListLocked(c *client, m *wire.RoomList) *wire.RoomListReply {
	rep := &wire.RoomListReply{TxID: m.TxID}
	after := wire.NameKey(m.After)
	rs := make([]*room, 0, len(c.joined()))
	for _, r := range c.joined() {
		if m.After == "" || r.rk > after {
			rs = append(rs, r)
		}
	}
	slices.SortFunc(rs, func(a, b *room) int { return strings.Compare(a.rk, b.rk) })
	size := 0
	for _, r := range rs {
		n := 1 + len(r.name) + 8 + 4 + 4
		if len(rep.Rooms) == wire.RoomPageMax || size+n > wire.MaxPeersBody {
			break
		}
		rep.Rooms = append(rep.Rooms, wire.RoomInfo{Room: r.name, Version: r.version,
			Members: clampU32(int64(r.size)), Online: clampU32(int64(s.onlineLenLocked(r.rk)))})
		size += n
	}
	rep.More = len(rep.Rooms) < len(rs)
	return rep
}

// handleRoomMembersLocked answers a RoomMembers from a member with a page
// of the room's members, and anyone else with a not_member Error.
func (s *Server) handleRoomMembersLocked(c *client, m *wire.RoomMembers) {
	r := s.byRoom[wire.NameKey(m.Room)]
	if r == nil || !s.isMemberLocked(r.rk, c.key) {
		s.sendSealedLocked(c, &wire.Error{Code: wire.CodeNotMember, Request: wire.TypeRoomMembers, TxID: m.TxID,
			Message: "you are not in " + m.Room})
		return
	}
	s.sendSealedLocked(c, s.membersPageLocked(r, m))
}

// membersPageLocked returns the members of r whose names sort after
// m.After: the first RoomPageMax that fit MaxPeersBody (with the room's
// name). Like whoPage, it
// costs one pass over the room and no allocation per member. Members
// whose name is no longer bound (the expiry takes them out) count in
// Total but are not listed.
func (s *Server) membersPageLocked(r *room, m *wire.RoomMembers) *wire.RoomMembersReply {
	after := wire.NameKey(m.After)
	page := make([]*member, 0, wire.RoomPageMax+1) // the smallest names after `after`, sorted
	beyond := 0                                    // members after `after`
	for mem := range s.roomMembersLocked(r) {
		if mem.name == "" || (m.After != "" && mem.nameKey <= after) {
			continue
		}
		beyond++
		if len(page) == wire.RoomPageMax && mem.nameKey >= page[len(page)-1].nameKey {
			continue
		}
		i, _ := slices.BinarySearchFunc(page, mem.nameKey, func(p *member, k string) int { return strings.Compare(p.nameKey, k) })
		page = slices.Insert(page, i, mem)
		if len(page) > wire.RoomPageMax {
			page = page[:wire.RoomPageMax]
		}
	}
	rep := &wire.RoomMembersReply{TxID: m.TxID, Room: r.name, Version: r.version, Total: clampU32(int64(r.size))}
	size := len(r.name) // with the room's name: a page's datagram stays within 1280 bytes
	for _, mem := range page {
		n := wire.KeyLen + 1 + 1 + len(mem.name)
		if size+n > wire.MaxPeersBody {
			break
		}
		rep.Members = append(rep.Members, wire.RoomMember{Key: mem.key, Name: mem.name, Online: s.byKey.get(mem.key) != nil})
		size += n
	}
	rep.More = beyond > len(rep.Members)
	return rep
}

// errRoomsClosed: the room store refused a write (it is closed).
var errRoomsClosed = errors.New("room store refused the write")

// ExpireRooms takes out of their rooms the members away for longer than
// MailboxAge as of now: not online, and whose name binding was last used
// (registered) before now−MailboxAge, or is no longer bound; their rooms'
// online members get a RoomEvent (left, expired). Nothing when MailboxAge
// is negative. It returns how many memberships it ended. Run calls it at
// start and then periodically, with ExpireMail; tests call it with a
// stepped clock.
func (s *Server) ExpireRooms(now time.Time) (int, error) {
	if s.opts.MailboxAge <= 0 {
		return 0, nil
	}
	cut := now.Add(-s.opts.MailboxAge)
	n, err := s.removeAway(nil, func(k wire.Key) bool {
		last, ok := s.opts.Store.LastUse(k)
		return !ok || last.Before(cut)
	})
	if n > 0 {
		s.log.Info().Int("memberships", n).Msg("room members expired")
	}
	return n, err
}

// dropReleased takes the keys whose names were just released (not
// online, and no longer bound) out of their rooms: their names may go to
// others now. ReleaseUnused calls it.
func (s *Server) dropReleased(names []string) {
	released := make(map[string]bool, len(names))
	for _, name := range names {
		released[wire.NameKey(name)] = true
	}
	n, err := s.removeAway(func(m *member) bool { return released[m.nameKey] }, func(k wire.Key) bool {
		_, ok := s.opts.Store.ByKey(k)
		return !ok
	})
	if err != nil {
		s.log.Error().Err(err).Msg("taking released names out of their rooms")
	}
	if n > 0 {
		s.log.Info().Int("memberships", n).Msg("room members released")
	}
}

// removeAway takes out of their rooms the members not online that pick
// (nil: all; called with s.mu held) chooses and away (called without it:
// it may read the store) reports, in durable writes of up to
// roomExpireBatch memberships; the rooms' online members get a RoomEvent
// (left, expired). It returns how many memberships it ended. It takes
// s.mu itself and waits for the writes: never on the packet path.
func (s *Server) removeAway(pick func(*member) bool, away func(wire.Key) bool) (int, error) {
	s.mu.Lock()
	var keys []wire.Key
	for k, m := range s.members {
		if s.byKey.get(k) == nil && (pick == nil || pick(m)) {
			keys = append(keys, k)
		}
	}
	s.mu.Unlock()
	keys = slices.DeleteFunc(keys, func(k wire.Key) bool { return !away(k) })
	if len(keys) == 0 {
		return 0, nil
	}
	var refs []RoomRef
	s.mu.Lock()
	for _, k := range keys {
		if m := s.members[k]; m != nil && s.byKey.get(k) == nil {
			for _, r := range m.joined() {
				refs = append(refs, RoomRef{Room: r.name, Key: k})
			}
		}
	}
	s.mu.Unlock()
	n := 0
	for len(refs) > 0 {
		batch := refs[:min(len(refs), roomExpireBatch)]
		refs = refs[len(batch):]
		done := make(chan error, 1)
		queued := s.opts.Rooms.RemoveMembers(batch, func(rs []RoomResult, err error) {
			s.mu.Lock()
			if err == nil {
				gone := make(map[*room]int)
				for _, res := range rs {
					if r := s.byRoom[wire.NameKey(res.Room)]; r != nil {
						gone[r]++
					}
					s.appliedLeaveLocked(res, wire.RoomLeftExpired)
				}
				// Go maps keep their buckets: give back those of a
				// room (or of the members) emptied in bulk.
				for r, k := range gone {
					if r.members != nil {
						r.members = compact(r.members, k)
					}
				}
				s.members = compact(s.members, len(rs))
				n += len(rs)
			}
			s.mu.Unlock()
			done <- err
		})
		if !queued {
			return n, errRoomsClosed
		}
		if err := <-done; err != nil {
			return n, fmt.Errorf("taking members out of rooms: %w", err)
		}
	}
	return n, nil
}
