package rendezvous

import (
	"errors"
	"net/netip"

	"natchat/ctrl"
	"natchat/wire"
)

// errSimulatedTaken is admitSimulated's refusal of a key or session
// already online.
var errSimulatedTaken = errors.New("key or session already online")

// admitSimulated puts a node online as the registration worker does once
// the node's handshake has succeeded and its name is bound, without the
// Noise handshake and the durable writes (the name binding, the room
// membership, the Store's last use): the default room's membership
// applied to the in-memory copy (as initRooms applies its durable write),
// then, under the lock, admitLocked (the record, its indexes, rooms,
// presence join and snapshot). It is for what cannot afford a million
// handshakes: the scale benchmarks' AddRegistered (export_test.go) and
// natbench's Preload (preload_natbench.go), which call it before Run or
// between the server's own work, from one goroutine.
func (s *Server) admitSimulated(key wire.Key, name string, session wire.SessionID, src netip.AddrPort,
	cookie wire.Cookie, reply []byte, keys *ctrl.Keys) error {
	s.mu.Lock()
	taken := s.byKey.get(key) != nil || s.bySession.get(session) != nil
	var v uint64 = 1 // the default room's next version
	if r := s.byRoom[s.defaultRK]; r != nil {
		v = r.version + 1
	}
	s.mu.Unlock()
	if taken {
		return errSimulatedTaken
	}
	if s.opts.DefaultRoom != "" {
		s.initApplied(RoomResult{Status: wire.RoomOK, Room: s.opts.DefaultRoom, Key: key, Version: v, Changed: true}, name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.newClient(key, name)
	c.session, c.addr = session, src
	c.keys = *keys
	s.admitLocked(c, cookie, reply, false, s.now())
	return nil
}
