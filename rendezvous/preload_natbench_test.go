//go:build natbench

package rendezvous_test

import (
	"testing"

	"natchat/ctrl"
	"natchat/internal/benchnode"
	"natchat/rendezvous"
	"natchat/wire"
)

// TestPreloadHeartbeats: nodes Preload put online answer the heartbeats
// natbench seals for them (internal/benchnode), from their addresses:
// the tool and the preload derive the same keys, sessions and addresses.
func TestPreloadHeartbeats(t *testing.T) {
	h := newHarness(t, nil)
	const n, seed, sockets, port = 300, 77, 16, 40000
	if err := rendezvous.Preload(h.s, n, seed, sockets, port); err != nil {
		t.Fatal(err)
	}
	if got := len(h.s.Online()); got != n {
		t.Fatalf("%d online, want %d", got, n)
	}
	pt := benchnode.Plaintext(&wire.Heartbeat{})
	for _, i := range []int{0, 1, 17, n - 1} {
		bn := benchnode.Derive(seed, i)
		src := benchnode.Addr(i, sockets, port)
		out := h.handle(benchnode.Seal(nil, &bn, 5, pt), src)
		node := ctrl.BenchKeys(bn.Down, bn.Up) // the node's side: crossed
		var acks int
		for _, p := range out {
			if p.to != src {
				t.Errorf("node %d: a datagram to %v, want %v", i, p.to, src)
				continue
			}
			b, err := node.Open(nil, p.b)
			if err != nil {
				t.Fatalf("node %d: %v", i, err)
			}
			m, err := wire.ParseInner(b)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := m.(*wire.HeartbeatAck); ok {
				acks++
			}
		}
		if acks != 1 {
			t.Errorf("node %d: %d HeartbeatAcks to a heartbeat (%d datagrams)", i, acks, len(out))
		}
	}
	if err := rendezvous.Preload(h.s, 1, seed, sockets, port); err == nil {
		t.Error("preloading node 0 twice succeeded")
	}
}
