package rendezvous

import (
	"slices"
	"sort"

	"natchat/wire"
)

// joinLocked puts c in room and tells the members who newly share a room
// with c.
func (s *Server) joinLocked(c *client, room string) {
	if slices.Contains(c.rooms, room) {
		return
	}
	members := s.rooms[room]
	if members == nil {
		members = make(map[*client]struct{})
		s.rooms[room] = members
	}
	for o := range members {
		if !s.shareRoomLocked(c, o) {
			s.presenceLocked(o, wire.PresenceJoin, wire.ReasonNone, c)
		}
	}
	members[c] = struct{}{}
	c.rooms = append(c.rooms, room)
}

func (s *Server) shareRoomLocked(a, b *client) bool {
	for _, r := range a.rooms {
		if _, ok := s.rooms[r][b]; ok {
			return true
		}
	}
	return false
}

// coMembersLocked returns everyone who shares a room with c, once each.
func (s *Server) coMembersLocked(c *client) []*client {
	seen := make(map[*client]struct{})
	var out []*client
	for _, r := range c.rooms {
		for o := range s.rooms[r] {
			if _, ok := seen[o]; ok || o == c {
				continue
			}
			seen[o] = struct{}{}
			out = append(out, o)
		}
	}
	return out
}

func (s *Server) presenceLocked(to *client, kind wire.PresenceKind, reason wire.LeaveReason, about *client) {
	to.seq++
	s.send(wire.Marshal(&wire.Presence{Seq: to.seq, Kind: kind, Reason: reason, Key: about.key, Name: about.name}), to.addr)
}

// sendSnapshotLocked sends c everyone who shares a room with it, in parts
// that each fit one datagram.
func (s *Server) sendSnapshotLocked(c *client) {
	peers := s.coMembersLocked(c)
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
		s.send(wire.Marshal(&wire.Peers{Seq: c.seq, Part: uint16(i), Parts: uint16(len(parts)), Peers: p}), c.addr)
	}
}
