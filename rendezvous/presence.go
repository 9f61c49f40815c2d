package rendezvous

import (
	"context"
	"iter"
	"slices"
	"sort"
	"strings"
	"time"

	"natchat/wire"
)

// Presence: who sees whom.
//
// A node sees the online peers it shares a small room with (BigRoom of
// them online or fewer), and the peers it talks with (it looked them up or
// signalled them: it watches them). Rooms here are the online view of the
// durable rooms (rooms.go): per room (by wire.NameKey), its members online
// now (online.go); a registration puts the
// node in every room it is a member of, a join or part committed while it
// is online puts it in or takes it out of one (enterRoomLocked,
// exitRoomLocked), and its registration's end takes it out of all. Joins
// and leaves go to those who see the node,
// gathered per receiver for PresenceDelay and sent together; in a room
// bigger than BigRoom they are not broadcast, so what a join costs is
// bounded by BigRoom and the node's watchers, not by the room. A room that
// crosses BigRoom one way or the other skips a presence sequence number
// for each member, so each asks for a fresh snapshot at its next heartbeat.

// joinLocked puts c in room (a wire.NameKey) as it registers: its
// snapshot and its announced join follow, so nothing is queued here.
func (s *Server) joinLocked(c *client, room string) {
	if n, ok := s.addOnlineLocked(c, room); ok && n == s.opts.BigRoom+1 {
		s.resyncLocked(room) // it just became big
	}
}

// leaveRoomsLocked takes c out of every room.
func (s *Server) leaveRoomsLocked(c *client) {
	leave := func(r string) {
		if n, ok := s.removeOnlineLocked(c, r); ok && n == s.opts.BigRoom {
			s.resyncLocked(r) // it just became small
		}
	}
	if c.inDefault {
		leave(s.defaultRK)
	}
	for rs := c.viewRooms(); len(rs) > 0; rs = c.viewRooms() {
		leave(rs[len(rs)-1])
	}
}

// enterRoomLocked puts c, online, in room (a wire.NameKey): a join
// committed while it is registered. If the room is small after it, c
// and each member that did not see the other before see it now: each
// gets the other's join queued. A room that becomes big makes its
// members resynchronise instead (joinLocked).
func (s *Server) enterRoomLocked(c *client, room string) {
	if s.onlineHasLocked(room, c) {
		return
	}
	type pair struct {
		o          *client
		cSaw, oSaw bool
	}
	var before []pair
	if s.onlineLenLocked(room)+1 <= s.opts.BigRoom {
		for o := range s.onlineLocked(room) {
			before = append(before, pair{o, s.seesLocked(c, o), s.seesLocked(o, c)})
		}
	}
	s.joinLocked(c, room)
	for _, p := range before {
		if !p.cSaw {
			s.queueChangeLocked(c, wire.PresenceJoin, wire.ReasonNone, p.o)
		}
		if !p.oSaw {
			s.queueChangeLocked(p.o, wire.PresenceJoin, wire.ReasonNone, c)
		}
	}
}

// exitRoomLocked takes c, online, out of room (a wire.NameKey): a part
// or removal committed while it is registered. If the room was small, c
// and each remaining member that no longer see the other (no other small
// room in common, no watch) get the other's leave queued, with reason
// ReasonNone: out of sight, not gone. A room that becomes small makes its
// members resynchronise instead.
func (s *Server) exitRoomLocked(c *client, room string) {
	wasSmall := s.smallLocked(room)
	n, ok := s.removeOnlineLocked(c, room)
	switch {
	case !ok || n == 0:
		return
	case n == s.opts.BigRoom:
		s.resyncLocked(room) // it just became small
		return
	case !wasSmall:
		return
	}
	for o := range s.onlineLocked(room) {
		if !s.seesLocked(c, o) {
			s.queueChangeLocked(c, wire.PresenceLeft, wire.ReasonNone, o)
		}
		if !s.seesLocked(o, c) {
			s.queueChangeLocked(o, wire.PresenceLeft, wire.ReasonNone, c)
		}
	}
}

// seesLocked reports whether a sees b: they share a small room, or a
// watches b.
func (s *Server) seesLocked(a, b *client) bool {
	if _, ok := a.watched()[b.key]; ok {
		return true
	}
	return s.shareSmallRoomLocked(a, b)
}

// queueChangeLocked queues for to a change about peer.
func (s *Server) queueChangeLocked(to *client, kind wire.PresenceKind, reason wire.LeaveReason, peer *client) {
	x := to.extra()
	x.pending = append(x.pending, wire.Change{Kind: kind, Reason: reason, Key: peer.key, Name: peer.name})
	s.dirty[to] = struct{}{}
}

// resyncLocked makes every member of a room that changed size class ask for
// a new snapshot: their presence sequence skips a number, which their next
// HeartbeatAck reveals.
func (s *Server) resyncLocked(room string) {
	for m := range s.onlineLocked(room) {
		m.seq++
	}
}

// smallLocked reports whether room (a wire.NameKey) is small enough to
// broadcast in.
func (s *Server) smallLocked(room string) bool {
	return s.onlineLenLocked(room) <= s.opts.BigRoom
}

// observersLocked returns everyone who sees c, once each, c excluded.
func (s *Server) observersLocked(c *client) map[*client]struct{} {
	out := make(map[*client]struct{})
	for r := range s.viewRoomsLocked(c) {
		if !s.smallLocked(r) {
			continue
		}
		for o := range s.onlineLocked(r) {
			if o != c {
				out[o] = struct{}{}
			}
		}
	}
	for o := range s.watchers[c.key] {
		if o != c {
			out[o] = struct{}{}
		}
	}
	return out
}

// seenByLocked returns everyone c sees now (its snapshot), c excluded.
func (s *Server) seenByLocked(c *client) []*client {
	seen := make(map[*client]struct{})
	for r := range s.viewRoomsLocked(c) {
		if !s.smallLocked(r) {
			continue
		}
		for o := range s.onlineLocked(r) {
			if o != c {
				seen[o] = struct{}{}
			}
		}
	}
	for k := range c.watched() {
		if o := s.byKey.get(k); o != nil && o != c {
			seen[o] = struct{}{}
		}
	}
	out := make([]*client, 0, len(seen))
	for o := range seen {
		out = append(out, o)
	}
	return out
}

// announceLocked queues a join or leave of c for everyone who sees it.
func (s *Server) announceLocked(c *client, kind wire.PresenceKind, reason wire.LeaveReason) {
	for o := range s.observersLocked(c) {
		x := o.extra()
		x.pending = append(x.pending, wire.Change{Kind: kind, Reason: reason, Key: c.key, Name: c.name})
		s.dirty[o] = struct{}{}
	}
}

// watchLocked makes c follow k's presence (it talks with k), within
// maxWatch.
func (s *Server) watchLocked(c *client, k wire.Key) {
	if k == c.key {
		return
	}
	if _, ok := c.watched()[k]; ok {
		return
	}
	if len(c.watched()) >= maxWatch && !s.evictWatchLocked(c) {
		return
	}
	x := c.extra()
	if x.watching == nil {
		x.watching = make(map[wire.Key]*client)
	}
	x.watching[k] = nil
	w := s.watchers[k]
	if w == nil {
		w = make(map[*client]struct{})
		s.watchers[k] = w
	}
	w[c] = struct{}{}
	if o := s.byKey.get(k); o != nil && !s.shareSmallRoomLocked(c, o) {
		// Now seen: say so, as a join.
		x.pending = append(x.pending, wire.Change{Kind: wire.PresenceJoin, Key: o.key, Name: o.name})
		s.dirty[c] = struct{}{}
	}
}

// evictWatchLocked makes room in c's full watch list by dropping a peer
// that is offline now, and reports whether it could.
func (s *Server) evictWatchLocked(c *client) bool {
	for k := range c.watched() {
		if s.byKey.get(k) == nil {
			s.unwatchLocked(c, k)
			return true
		}
	}
	return false
}

func (s *Server) unwatchLocked(c *client, k wire.Key) {
	delete(c.watched(), k)
	if w := s.watchers[k]; w != nil {
		delete(w, c)
		if len(w) == 0 {
			delete(s.watchers, k)
		}
	}
}

// acquaintedLocked reports whether c already talks with the node with key
// k: it follows k, or k follows c (k looked c up or signalled it first).
// Signalling an acquaintance is not an introduction.
func (s *Server) acquaintedLocked(c *client, k wire.Key) bool {
	if _, ok := c.watched()[k]; ok {
		return true
	}
	if d := s.byKey.get(k); d != nil {
		_, ok := d.watched()[c.key]
		return ok
	}
	return false
}

// unwatchAllLocked stops c following anyone (it left).
func (s *Server) unwatchAllLocked(c *client) {
	for k := range c.watched() {
		if w := s.watchers[k]; w != nil {
			delete(w, c)
			if len(w) == 0 {
				delete(s.watchers, k)
			}
		}
	}
	if c.x != nil {
		c.x.watching = nil
	}
}

func (s *Server) shareSmallRoomLocked(a, b *client) bool {
	for r := range s.viewRoomsLocked(a) {
		if s.onlineHasLocked(r, b) && s.smallLocked(r) {
			return true
		}
	}
	return false
}

// presenceLoop sends the gathered presence changes every PresenceDelay.
func (s *Server) presenceLoop(ctx context.Context) {
	t := time.NewTicker(s.opts.PresenceDelay)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.FlushPresence()
		}
	}
}

// FlushPresence sends every gathered presence change now, each receiver's
// in as few datagrams as fit. Run calls it every PresenceDelay; tests call
// it to skip the wait.
func (s *Server) FlushPresence() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.dirty {
		x := c.extra() // made by the changes that made c dirty
		for len(x.pending) > 0 {
			n, size := 0, 5 // seq(4) count(1)
			for n < len(x.pending) && n < wire.MaxChanges {
				size += 2 + wire.KeyLen + 1 + len(x.pending[n].Name)
				if n > 0 && size > wire.MaxPeersBody {
					break
				}
				n++
			}
			c.seq++
			s.sendSealedLocked(c, &wire.Presence{Seq: c.seq, Changes: x.pending[:n]})
			x.pending = x.pending[n:]
		}
		x.pending = nil
		delete(s.dirty, c)
	}
}

// sendSnapshotLocked sends c everyone it sees, in parts that each fit one
// datagram.
func (s *Server) sendSnapshotLocked(c *client) {
	peers := s.seenByLocked(c)
	sort.Slice(peers, func(i, j int) bool { return peers[i].name < peers[j].name })
	var parts [][]wire.Peer
	var cur []wire.Peer
	size := 0
	for _, p := range peers {
		n := wire.KeyLen + 1 + len(p.name)
		if size+n > wire.MaxPeersBody-9 || len(cur) == 255 {
			parts = append(parts, cur)
			cur, size = nil, 0
		}
		cur = append(cur, wire.Peer{Key: p.key, Name: p.name})
		size += n
	}
	parts = append(parts, cur)
	for i, p := range parts {
		s.sendSealedLocked(c, &wire.Peers{Seq: c.seq, Part: uint16(i), Parts: uint16(len(parts)), Peers: p})
	}
}

// whoPageSize is how many members whoPage considers for a page; it keeps
// those that fit one datagram.
const whoPageSize = 32

// whoPage answers m with the members of a room (members) whose names sort
// after m.After: the first that fit one datagram. It costs one pass over
// the room and no allocation per member, so a page of a room of 10,000
// costs tens of microseconds (and Who counts against the lookup rate).
func whoPage(m *wire.Who, members iter.Seq[*client], total int) *wire.WhoReply {
	after := wire.NameKey(m.After)
	page := make([]*client, 0, whoPageSize+1) // the smallest names after `after`, sorted
	beyond := 0                               // members after `after`
	for c := range members {
		if m.After != "" && c.nameKey <= after {
			continue
		}
		beyond++
		if len(page) == whoPageSize && c.nameKey >= page[len(page)-1].nameKey {
			continue
		}
		i, _ := slices.BinarySearchFunc(page, c.nameKey, func(p *client, k string) int { return strings.Compare(p.nameKey, k) })
		page = slices.Insert(page, i, c)
		if len(page) > whoPageSize {
			page = page[:whoPageSize]
		}
	}
	r := &wire.WhoReply{TxID: m.TxID, Room: m.Room, Total: uint32(total)}
	size := 0
	for _, c := range page {
		n := wire.KeyLen + 1 + len(c.name)
		if size+n > wire.MaxPeersBody {
			break
		}
		r.Members = append(r.Members, wire.Peer{Key: c.key, Name: c.name})
		size += n
	}
	r.More = beyond > len(r.Members)
	return r
}
