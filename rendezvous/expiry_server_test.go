package rendezvous_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"natchat/rendezvous"
	"natchat/wire"
)

// TestExpiryFollowsNodes registers nodes, has them heartbeat, leave and
// register again at random moments, and sweeps now and then: exactly the
// nodes silent for longer than Expiry go at each sweep, the expiry wheel
// holds exactly the nodes online, and the spent cookies and new-name
// quotas are forgotten once of no use.
func TestExpiryFollowsNodes(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.DefaultRoom = "" })
	rng := rand.New(rand.NewPCG(7, 7))
	nodes := make([]*node, 12)
	for i := range nodes {
		nodes[i] = newNode(t, fmt.Sprintf("n%d", i), fmt.Sprintf("198.51.%d.1:1000", 100+i))
	}
	heard := map[string]time.Time{} // the model: online nodes, last heard from
	expired := 0
	check := func(step int) {
		t.Helper()
		var want []string
		for name := range heard {
			want = append(want, name)
		}
		slices.Sort(want)
		if got := h.s.Online(); !slices.Equal(got, want) {
			t.Fatalf("step %d at %v: online %q, want %q", step, h.clock.Now().Sub(t0), got, want)
		}
		if filed, _, _, _, _ := rendezvous.ExpiryState(h.s); filed != len(want) {
			t.Fatalf("step %d: %d filed for expiry, %d online", step, filed, len(want))
		}
	}
	for step := range 400 {
		n := nodes[rng.IntN(len(nodes))]
		_, online := heard[n.name]
		switch r := rng.IntN(10); {
		case r < 3:
			h.register(n) // new, or again while online
			heard[n.name] = h.clock.Now()
		case r < 6 && online:
			h.heartbeat(n)
			heard[n.name] = h.clock.Now()
		case r < 7 && online:
			h.sealed(n, &wire.Leave{}, n.addr)
			delete(heard, n.name)
		default:
			h.sweep()
			for name, at := range heard {
				if h.clock.Now().Sub(at) > testExpiry {
					delete(heard, name)
					expired++
				}
			}
		}
		h.flush()
		check(step)
		h.clock.Step(time.Duration(rng.Int64N(int64(4 * time.Second))))
	}
	if expired < 10 {
		t.Fatalf("%d expired in the run, want 10 or more", expired)
	}
	// Long after: everyone gone, and, once of no use, what was kept
	// against replays and for the name quota forgotten.
	h.clock.Step(2 * time.Hour)
	h.sweep()
	clear(heard)
	check(-1)
	if _, spent, _, _, _ := rendezvous.ExpiryState(h.s); spent == 0 {
		t.Error("the cookies of the nodes that just expired are not kept against replays")
	}
	h.clock.Step(rendezvous.CookieLifetime + 2*time.Second)
	h.sweep()
	if filed, spent, spentQ, quotas, quotasQ := rendezvous.ExpiryState(h.s); filed+spent+spentQ+quotas+quotasQ != 0 {
		t.Errorf("an hour after: %d filed, %d keys with spent cookies (%d queued), %d name quotas (%d queued); want none",
			filed, spent, spentQ, quotas, quotasQ)
	}
	if n, q := rendezvous.CookieIndex(h.s); n+q != 0 {
		t.Errorf("an hour after: %d registrations by cookie (%d queued), want none", n, q)
	}
}

// TestCookieIndexForgotten: a registration is found by its cookie (a
// retransmitted Handshake gets its reply again) while the cookie can be
// valid, and no longer after, when the cookie is refused anyway; the
// node's record keeps the cookie as long (its reply only until it is
// heard from), and its session's end then spends nothing.
func TestCookieIndexForgotten(t *testing.T) {
	h := newHarness(t, nil)
	a := newNode(t, "alice", "198.51.100.1:1000")
	h.register(a)
	if held, reply := rendezvous.Registration(h.s, "alice"); !held || !reply {
		t.Fatalf("just registered: record %v, reply %v; want both", held, reply)
	}
	for range 2 {
		h.clock.Step(rendezvous.CookieLifetime / 2)
		h.heartbeat(a)
		h.sweep()
		if n, _ := rendezvous.CookieIndex(h.s); n != 1 {
			t.Fatalf("%v after registering: %d registrations by cookie, want 1", h.clock.Now().Sub(t0), n)
		}
		if held, reply := rendezvous.Registration(h.s, "alice"); !held || reply {
			t.Fatalf("heard from: record %v, reply %v; want the record alone", held, reply)
		}
	}
	h.clock.Step(11 * time.Second)
	h.heartbeat(a)
	h.sweep()
	if n, q := rendezvous.CookieIndex(h.s); n+q != 0 {
		t.Fatalf("%v after registering: %d registrations by cookie (%d queued), want none", h.clock.Now().Sub(t0), n, q)
	}
	if held, _ := rendezvous.Registration(h.s, "alice"); held {
		t.Fatal("the registration's record is kept with its cookie refused")
	}
	// The old Handshake is refused for its cookie, as before.
	onlyError(t, h.handle(a.hs, a.addr), a.addr, wire.CodeBadCookie, len(a.hs))
	// Its session's end spends nothing, and the Handshake is still refused.
	h.sealed(a, &wire.Leave{}, a.addr)
	if _, keys, _, _, _ := rendezvous.ExpiryState(h.s); keys != 0 || len(h.s.Online()) != 0 {
		t.Fatalf("after leave: %d keys with spent cookies, online %q", keys, h.s.Online())
	}
	onlyError(t, h.handle(a.hs, a.addr), a.addr, wire.CodeBadCookie, len(a.hs))
}
