//go:build natbench

package rendezvous

import (
	"fmt"
	"net/netip"
	"slices"

	"natchat/ctrl"
	"natchat/internal/benchnode"
	"natchat/wire"
)

// Preload puts nodes 0 to n-1 of seed (internal/benchnode) in s as
// registered from their benchnode.Addr (sockets sockets on port), so
// that a benchmark can heartbeat a million nodes it never ran a Noise
// handshake with. It takes the path of the tests' AddRegistered
// (export_test.go), which is the registration worker's once the
// handshake has succeeded and the name is bound: the default room's
// membership applied to the in-memory copy, then admitLocked (indexes,
// expiry, reply, rooms, presence, snapshot). The durable writes (name
// binding, room membership) are skipped. Each node has its own keys
// (ctrl.BenchKeys) and its own copy of a HandshakeReply of the real
// size, as a registered node has. Call it before Run.
//
// Only in binaries built with the natbench tag (cmd/rendezvous's
// -natbench-* flags).
func Preload(s *Server, n int, seed uint64, sockets int, port uint16) error {
	if sockets < 1 || sockets > benchnode.MaxSockets {
		return fmt.Errorf("preload: %d sockets: want 1 to %d", sockets, benchnode.MaxSockets)
	}
	// A HandshakeReply is the Noise IK answer: an ephemeral key, then the
	// sealed HandshakeResult.
	res := wire.AppendHandshakeResult(nil, &wire.HandshakeResult{
		Observed: netip.MustParseAddrPort("127.64.0.1:40000"), HeartbeatMS: 25000, ExpiryMS: 60000})
	reply := wire.Marshal(&wire.HandshakeReply{Noise: make([]byte, 32+len(res)+ctrl.Overhead)})
	for i := range n {
		bn := benchnode.Derive(seed, i)
		name := benchnode.Name(i)
		if s.opts.DefaultRoom != "" {
			s.mu.Lock()
			var v uint64 = 1
			if r := s.byRoom[s.defaultRK]; r != nil {
				v = r.version + 1
			}
			s.mu.Unlock()
			s.initApplied(RoomResult{Status: wire.RoomOK, Room: s.opts.DefaultRoom, Key: bn.Key, Version: v, Changed: true}, name)
		}
		s.mu.Lock()
		if s.byKey[bn.Key] != nil || s.bySession[bn.Session] != nil {
			s.mu.Unlock()
			return fmt.Errorf("preload: node %d's key or session is taken", i)
		}
		c := s.newClient(bn.Key, name)
		c.session, c.addr = bn.Session, benchnode.Addr(i, sockets, port)
		c.keys = *ctrl.BenchKeys(bn.Up, bn.Down)
		s.admitLocked(c, bn.Cookie, slices.Clone(reply), false, s.now())
		s.mu.Unlock()
	}
	return nil
}
