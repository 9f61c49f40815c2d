package rendezvous

import (
	"iter"
	"slices"
)

// The online view of the rooms (presence.go): each room's members online
// now.
//
// A room other than the default one has its online members in s.rooms,
// and each of them has the room in its viewRooms. The default room holds
// nearly every node, so it has neither by default: a client says it is
// in the room's online view with c.inDefault (which costs nothing: it
// sits in the record's padding), and s.defOnline counts them. While the
// room is small enough for presence to be broadcast in it, and for a
// while beyond (up to defIndexMax members online), s.defIndex indexes
// them too, so that a small default room costs what any small room does
// to walk; past that it is nil, and a walk of the room goes over s.byKey,
// as the room's member pages (who) do anyway. It is made again, from
// s.byKey, when the room falls back to BigRoom. So a million nodes in the
// default room cost no map entry and no room list each (~40 bytes).

// defIndexMaxLocked is the most members online the default room keeps
// s.defIndex for. Twice BigRoom: a room that hovers about BigRoom
// rebuilds the index (a walk of s.byKey) only after BigRoom leaves.
func (s *Server) defIndexMaxLocked() int {
	return 2 * s.opts.BigRoom
}

// isDefaultRK reports whether rk (a wire.NameKey) is the default room.
func (s *Server) isDefaultRK(rk string) bool {
	return s.opts.DefaultRoom != "" && rk == s.defaultRK
}

// onlineLenLocked returns how many members of room rk are online.
func (s *Server) onlineLenLocked(rk string) int {
	if s.isDefaultRK(rk) {
		return s.defOnline
	}
	return len(s.rooms[rk])
}

// onlineHasLocked reports whether c is in room rk's online view.
func (s *Server) onlineHasLocked(rk string, c *client) bool {
	if s.isDefaultRK(rk) {
		return c.inDefault
	}
	_, ok := s.rooms[rk][c]
	return ok
}

// onlineLocked returns the members of room rk online, in no particular
// order. The view must not change while it is walked.
func (s *Server) onlineLocked(rk string) iter.Seq[*client] {
	if !s.isDefaultRK(rk) {
		members := s.rooms[rk]
		return func(yield func(*client) bool) {
			for c := range members {
				if !yield(c) {
					return
				}
			}
		}
	}
	if s.defIndex != nil {
		idx := s.defIndex
		return func(yield func(*client) bool) {
			for c := range idx {
				if !yield(c) {
					return
				}
			}
		}
	}
	return func(yield func(*client) bool) {
		for c := range s.byKey.all() {
			if c.inDefault && !yield(c) {
				return
			}
		}
	}
}

// viewRooms returns the rooms of c in the online view but the default
// room: read only.
func (c *client) viewRooms() []string {
	if c.x == nil {
		return nil
	}
	return c.x.rooms
}

// viewRoomsLocked returns the rooms (wire.NameKey) of c in the online
// view: the default room first if c is in it, then the others.
func (s *Server) viewRoomsLocked(c *client) iter.Seq[string] {
	return func(yield func(string) bool) {
		if c.inDefault && !yield(s.defaultRK) {
			return
		}
		for _, r := range c.viewRooms() {
			if !yield(r) {
				return
			}
		}
	}
}

// addOnlineLocked puts c in room rk's online view and returns how many
// are in it now; false if c was in it already.
func (s *Server) addOnlineLocked(c *client, rk string) (int, bool) {
	if !s.isDefaultRK(rk) {
		if slices.Contains(c.viewRooms(), rk) {
			return 0, false
		}
		members := s.rooms[rk]
		if members == nil {
			members = make(map[*client]struct{})
			s.rooms[rk] = members
		}
		members[c] = struct{}{}
		x := c.extra()
		x.rooms = append(x.rooms, rk)
		return len(members), true
	}
	if c.inDefault {
		return 0, false
	}
	c.inDefault = true
	s.defOnline++
	if s.defIndex != nil {
		if s.defOnline > s.defIndexMaxLocked() {
			s.defIndex = nil // big for good, or until BigRoom again
		} else {
			s.defIndex[c] = struct{}{}
		}
	}
	return s.defOnline, true
}

// removeOnlineLocked takes c out of room rk's online view and returns how
// many are left in it; false if c was not in it.
func (s *Server) removeOnlineLocked(c *client, rk string) (int, bool) {
	if !s.isDefaultRK(rk) {
		i := slices.Index(c.viewRooms(), rk)
		if i < 0 {
			return 0, false
		}
		if c.x.rooms = slices.Delete(c.x.rooms, i, i+1); len(c.x.rooms) == 0 {
			c.x.rooms = nil
		}
		members := s.rooms[rk]
		delete(members, c)
		if len(members) == 0 {
			delete(s.rooms, rk)
		}
		return len(members), true
	}
	if !c.inDefault {
		return 0, false
	}
	c.inDefault = false
	s.defOnline--
	switch {
	case s.defIndex != nil:
		delete(s.defIndex, c)
	case s.defOnline <= s.opts.BigRoom:
		s.defIndex = make(map[*client]struct{}, s.defOnline)
		for o := range s.byKey.all() {
			if o.inDefault {
				s.defIndex[o] = struct{}{}
			}
		}
	}
	return s.defOnline, true
}
