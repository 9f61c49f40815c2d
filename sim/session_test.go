package sim

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"natchat/node"
	"natchat/node/api"
	"natchat/rendezvous"
)

// TestOneSessionPerPair has both nodes of a pair write first at the same
// instant, ten times over fresh pairs: each side ends with one QUIC
// connection to the other, and every message is delivered once. Then the
// pair falls idle: the connection closes on both sides, and the next
// message opens one again.
func TestOneSessionPerPair(t *testing.T) {
	rv := StartRendezvous(t, listenLoopback(t), func(o *rendezvous.Options) {
		o.SourceRate = -1
		o.NewNames = -1
		o.DefaultRoom = ""
	})
	for round := range 10 {
		a := StartNode(t, NodeConfig{Name: fmt.Sprintf("a%d", round), Conn: listenLoopback(t), RV: rv.Addr, NoDirect: true, IdleTimeout: time.Second})
		b := StartNode(t, NodeConfig{Name: fmt.Sprintf("b%d", round), Conn: listenLoopback(t), RV: rv.Addr, NoDirect: true, IdleTimeout: time.Second})
		a.WaitRegistered(10 * time.Second)
		b.WaitRegistered(10 * time.Second)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); a.Do(api.Send{To: b.Name, Text: "first from a"}) }()
		go func() { defer wg.Done(); b.Do(api.Send{To: a.Name, Text: "first from b"}) }()
		wg.Wait()
		for _, n := range []*Node{a, b} {
			n.Wait(0, 20*time.Second, "delivered", func(e api.Event) bool { _, ok := e.(*api.Delivered); return ok })
		}
		for _, n := range []*Node{a, b} {
			waitStats(t, n.Name, n.Node, "one connection", func(s node.Stats) bool { return s.Sessions == 1 })
			if msgs := count(n, api.TypeMessage); msgs != 1 {
				t.Fatalf("round %d: %s shows %d messages, want 1", round, n.Name, msgs)
			}
		}
		if round < 9 {
			a.Stop()
			b.Stop()
			continue
		}
		// Idle: both close, then the next message reopens.
		for _, n := range []*Node{a, b} {
			waitStats(t, n.Name, n.Node, "no connection once idle", func(s node.Stats) bool { return s.Sessions == 0 })
		}
		mark := len(a.Events())
		id := a.Send(b.Name, "after idling")
		a.Wait(mark, 20*time.Second, "delivered after idling", func(e api.Event) bool {
			d, ok := e.(*api.Delivered)
			return ok && d.ID == id
		})
		for _, n := range []*Node{a, b} {
			waitStats(t, n.Name, n.Node, "one connection again", func(s node.Stats) bool { return s.Sessions == 1 })
		}
	}
}

func count(n *Node, typ string) int {
	c := 0
	for _, e := range n.Events() {
		if e.EventType() == typ {
			c++
		}
	}
	return c
}
