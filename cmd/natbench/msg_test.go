package main

import (
	"testing"
	"time"

	"natchat/headless"
)

// TestMsgPairAccounting: a delivered message frees its slot in the window
// and, in the window, counts with its latency from the /msg line; a
// stored or refused one frees its slot and counts as failed; events for
// IDs natbench did not send change nothing.
func TestMsgPairAccounting(t *testing.T) {
	p := &msgPair{peer: "bob-x", w: 4, writtenAt: map[string]time.Time{}, textOf: map[string]string{},
		tokens: make(chan struct{}, 4), joined: make(chan struct{}), direct: make(chan struct{})}
	t0 := time.Now()
	for i, text := range []string{"natbench 0", "natbench 1", "natbench 2"} {
		p.tokens <- struct{}{}
		p.writtenAt[text] = t0.Add(time.Duration(i) * time.Millisecond)
		p.onAlice(headless.Event{Type: "sent", ID: "id" + text[len(text)-1:], Text: text}, t0)
	}
	p.onAlice(headless.Event{Type: "peer_joined", Name: "bob-x"}, t0)
	p.onAlice(headless.Event{Type: "path", Peer: "bob-x", Path: "direct"}, t0)
	select {
	case <-p.joined:
	default:
		t.Error("peer_joined of the peer not noticed")
	}
	select {
	case <-p.direct:
	default:
		t.Error("direct path not noticed")
	}
	p.onAlice(headless.Event{Type: "delivered", ID: "id0"}, t0.Add(5*time.Millisecond)) // before the window
	p.measuring.Store(true)
	p.onAlice(headless.Event{Type: "delivered", ID: "id1"}, t0.Add(8*time.Millisecond))
	p.onAlice(headless.Event{Type: "stored", ID: "id2"}, t0.Add(9*time.Millisecond))
	p.onAlice(headless.Event{Type: "delivered", ID: "id2"}, t0.Add(10*time.Millisecond)) // after stored: not again
	p.onAlice(headless.Event{Type: "delivered", ID: "other"}, t0)
	if got := len(p.tokens); got != 0 {
		t.Errorf("%d slots taken, want 0", got)
	}
	if p.count.Load() != 1 || len(p.lat) != 1 || p.lat[0] != 7*time.Millisecond {
		t.Errorf("counted %d, latencies %v; want 1, [7ms]", p.count.Load(), p.lat)
	}
	if p.failed.Load() != 1 {
		t.Errorf("failed %d, want 1", p.failed.Load())
	}
}
