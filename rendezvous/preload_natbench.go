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
// (admitSimulated: the registration worker's once the handshake has
// succeeded and the name is bound, without the durable writes). Each node has its own keys
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
		err := s.admitSimulated(bn.Key, name, bn.Session, benchnode.Addr(i, sockets, port), bn.Cookie,
			slices.Clone(reply), ctrl.BenchKeys(bn.Up, bn.Down))
		if err != nil {
			return fmt.Errorf("preload: node %d: %w", i, err)
		}
	}
	return nil
}
