package sim

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"natchat/node/api"
	"natchat/rendezvous"
)

// TestWhoInBigRoom: in a room above BigRoom no one is told of joins, but
// /who #lobby pages through every member, each once, in name order, and
// /who for a room we are not in is refused.
func TestWhoInBigRoom(t *testing.T) {
	rv := StartRendezvous(t, listenLoopback(t), func(o *rendezvous.Options) {
		o.BigRoom = 3
		o.NewNames = -1
	})
	const n = 40 // more than a page (whoPageSize 32)
	// One at a time, so that the room's size when each joins is known:
	// m00..m02 join a room at or below BigRoom, m03 on a room above it.
	var nodes []*Node
	for i := range n {
		nd := StartNode(t, NodeConfig{Name: fmt.Sprintf("m%02d", i), Conn: listenLoopback(t), RV: rv.Addr, NoDirect: true})
		nd.WaitRegistered(30 * time.Second)
		nodes = append(nodes, nd)
	}
	a := nodes[0]
	var got []string
	after, from := "", 0
	for page := 0; ; page++ {
		if page > n {
			t.Fatal("paging does not end")
		}
		a.Do(api.Who{Room: "#lobby", After: after})
		e, next := a.Wait(from, 10*time.Second, "members", func(e api.Event) bool { _, ok := e.(*api.Members); return ok })
		from = next + 1
		m := e.(*api.Members)
		if m.Total != n {
			t.Fatalf("total %d, want %d", m.Total, n)
		}
		for _, mm := range m.Members {
			got = append(got, mm.Name)
		}
		if m.Next == "" {
			break
		}
		after = m.Next
	}
	if len(got) != n {
		t.Fatalf("paged %d members, want %d: %v", len(got), n, got)
	}
	for i, name := range got {
		if want := fmt.Sprintf("m%02d", i); name != want {
			t.Fatalf("member %d is %s, want %s (all: %v)", i, name, want, got)
		}
	}
	// Joins into the room once it is above BigRoom (from the fourth
	// member on) are not broadcast.
	for _, e := range a.Events() {
		if j, ok := e.(*api.PeerJoined); ok && j.Name >= "m03" {
			t.Fatalf("a was told of %s joining a room above BigRoom", j.Name)
		}
	}
	a.Do(api.Who{Room: "#elsewhere"})
	e, _ := a.Wait(from, 10*time.Second, "not_member", func(e api.Event) bool { x, ok := e.(*api.Error); return ok && x.Code == api.CodeNotMember })
	if e == nil {
		t.Fatal("no not_member error")
	}
}

// TestNewNameQuota: past the new names allowed from one network this
// hour, a node is told why it is not online (error quota, not fatal) and
// keeps trying; a name already bound registers as before.
func TestNewNameQuota(t *testing.T) {
	rv := StartRendezvous(t, listenLoopback(t), func(o *rendezvous.Options) { o.NewNames = 1 })
	_, id, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a := StartNode(t, NodeConfig{Name: "first", Identity: id, Conn: listenLoopback(t), RV: rv.Addr, NoDirect: true})
	a.WaitRegistered(30 * time.Second)
	b := StartNode(t, NodeConfig{Name: "second", Conn: listenLoopback(t), RV: rv.Addr, NoDirect: true})
	e, _ := b.Wait(0, 30*time.Second, "quota error", func(e api.Event) bool { x, ok := e.(*api.Error); return ok && x.Code == api.CodeQuota })
	if msg := e.(*api.Error).Message; msg == "" {
		t.Fatal("quota error without a message")
	}
	for _, e := range b.Events() {
		if _, ok := e.(*api.Registered); ok {
			t.Fatal("second registered past the quota")
		}
	}
	// first, restarted, is not a new name.
	a.Stop()
	a2 := StartNode(t, NodeConfig{Name: "first", Identity: id, Conn: listenLoopback(t), RV: rv.Addr, NoDirect: true})
	a2.WaitRegistered(30 * time.Second)
}
