package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestStalledFrontEnd: bob's stdout is not read for three rendezvous
// expiries. Meanwhile alice sends him 300 messages, far more than the pipe
// and bob's queues hold, and alice and carol chat through the relay. The
// stalled front end holds back only bob's receipts: bob stays registered
// (once), online and never reported gone, the relay keeps working for
// others, and when his stdout is read again every message appears once,
// in order, and alice gets a receipt for each; many of them only now,
// since delivered means shown. The messages bob did write before the
// stall ended (those whole in his stdout pipe) were shown: their receipts
// must come during the stall, not wait for the messages after them.
func TestStalledFrontEnd(t *testing.T) {
	t.Parallel()
	for _, mode := range pathModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			const stall = 3 * expiry
			rv := startRendezvous(t, rvOptions{})
			// alice↔bob on the relay (-no-direct) or free to punch;
			// carol is always on the relay.
			o := nodeOptions{delivery: 5 * time.Minute, noDirect: mode.relay}
			st := newStall()
			stallStart := time.Now()
			ob := o
			ob.stalled = st
			bob := startNode(t, "bob", rv.addr, ob)
			alice := startNode(t, "alice", rv.addr, o)
			carol := startNode(t, "carol", rv.addr, nodeOptions{noDirect: true})
			t.Cleanup(func() {
				if t.Failed() {
					saveLogs(t, alice, bob, carol)
				}
			})
			for _, n := range []*node{alice, carol} {
				n.waitRegistered(t)
				n.waitPeerJoined(t, "bob")
			}
			alice.waitPeerJoined(t, "carol")
			carol.waitPeerJoined(t, "alice")

			// ~1.1 KB a message: 300 are about 330 KB of events.
			texts := make([]string, 300)
			for i := range texts {
				texts[i] = fmt.Sprintf("stall #%03d %s", i, strings.Repeat("·", 500))
			}
			b := sendTexts(t, alice, bob, texts)

			tick := time.NewTicker(time.Second) // pacing of the chat, not synchronisation
			defer tick.Stop()
			rounds := 0
			for time.Since(stallStart) < stall {
				chat(t, alice, carol, fmt.Sprintf("relay-%02d", rounds), 3)
				rounds++
				<-tick.C
			}
			for _, n := range []*node{alice, carol} {
				e := n.ask(t, "/who", "peers", isType("peers"))
				online := false
				for _, p := range e.Peers {
					online = online || p.Name == "bob" && p.Online
				}
				if !online {
					t.Errorf("%s: /who after %v of bob's stall: %+v, want bob online", n.label, stall, e.Peers)
				}
			}
			if p := carol.events(0, func(e *event) bool { return e.Type == "path" && e.Path != "relay" }); len(p) > 0 {
				t.Errorf("carol: %v, want only the relay", p[0])
			}
			// What bob wrote before we read anything: the messages whole in
			// the pipe were shown (his front end went on to the next
			// event), so their receipts are due now, stall or not.
			queued := st.queued(t)
			resumed := time.Now()
			early := make(map[string]bool) // delivered before the resume, by ID
			for _, e := range alice.events(0, func(e *event) bool { return e.Type == "delivered" && e.To == "bob" }) {
				early[e.ID] = true
			}
			st.resume()
			b.checkDelivered(t, waitLong)
			for _, n := range []*node{alice, carol} {
				if left := n.events(0, func(e *event) bool { return e.Type == "peer_left" }); len(left) > 0 {
					t.Errorf("%s: %v, want no one leaving", n.label, left[0])
				}
			}
			var shown []string // IDs of the messages whole in the pipe at the resume
			off := 0
			lines, _, _ := bob.out.since(0)
			for _, e := range lines {
				if off += len(e.text) + 1; off > queued {
					break
				}
				if e.ev != nil && e.ev.Type == "message" {
					shown = append(shown, e.ev.ID)
				}
			}
			index := make(map[string]int, len(b.ids))
			for i, id := range b.ids {
				index[id] = i
			}
			var held []int // numbers of the shown messages without a receipt
			for _, id := range shown {
				if !early[id] {
					held = append(held, index[id])
				}
			}
			t.Logf("stall %v (%d chat rounds with carol): %d bytes in bob's stdout pipe, with %d whole messages; "+
				"%d of %d messages delivered before the resume", resumed.Sub(stallStart).Round(time.Millisecond), rounds, queued,
				len(shown), len(early), len(texts))
			if len(early) >= len(texts) {
				t.Errorf("alice: all %d messages delivered while bob's stdout was not read", len(early))
			}
			if len(shown) == 0 {
				t.Errorf("bob: no whole message in the %d bytes of his stdout pipe", queued)
			}
			if len(held) > 0 {
				t.Errorf("alice: %d of the %d messages bob had shown (written whole to stdout) before the resume got no receipt during the %v stall: #%v",
					len(held), len(shown), stall, held)
			}
			if r := bob.events(0, isType("registered")); len(r) != 1 {
				t.Errorf("bob: %d registered events, want 1: %v", len(r), r)
			}
			if d := bob.events(0, isType("events_dropped")); len(d) > 0 {
				t.Logf("bob: %v", d)
			}
			if errs := bob.events(0, isType("error")); len(errs) > 0 {
				t.Errorf("bob: %v", errs)
			}
		})
	}
}
