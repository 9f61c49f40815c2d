package ctrl

import (
	"testing"

	"natchat/internal/benchnode"
	"natchat/wire"
)

// TestBenchnodeSealsAsKeys: what internal/benchnode seals for a simulated
// node (natbench's heartbeats) opens with Keys keyed as the natbench
// preload keys them (BenchKeys, built with the natbench tag), and the
// rendezvous's answers sealed with those keys open with Down.
func TestBenchnodeSealsAsKeys(t *testing.T) {
	n := benchnode.Derive(42, 7)
	if n == benchnode.Derive(42, 8) || n == benchnode.Derive(43, 7) {
		t.Fatal("two seeds or indexes give the same node")
	}
	if n != benchnode.Derive(42, 7) {
		t.Fatal("Derive is not deterministic")
	}
	srv := &Keys{send: n.Down, recv: n.Up}
	pt := benchnode.Plaintext(&wire.Heartbeat{})
	for _, ctr := range []uint64{0, 1, 5, 300} {
		b := benchnode.Seal(nil, &n, ctr, pt)
		if len(b) != wire.SealedMinLen {
			t.Errorf("sealed heartbeat is %d bytes, want %d", len(b), wire.SealedMinLen)
		}
		got, err := srv.Open(nil, b)
		if err != nil {
			t.Fatalf("counter %d: %v", ctr, err)
		}
		if m, err := wire.ParseInner(got); err != nil {
			t.Fatal(err)
		} else if _, ok := m.(*wire.Heartbeat); !ok {
			t.Fatalf("opened %T", m)
		}
		if _, err := srv.Open(nil, b); err == nil {
			t.Fatal("a replay opened")
		}
	}
	// The other way: the node's keys are the server's, crossed.
	node := &Keys{send: n.Up, recv: n.Down}
	ack := srv.Seal(nil, n.Session, benchnode.Plaintext(&wire.HeartbeatAck{}))
	if _, err := node.Open(nil, ack); err != nil {
		t.Fatalf("the rendezvous's answer: %v", err)
	}
}
