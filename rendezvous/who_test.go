package rendezvous_test

import (
	"fmt"
	"strings"
	"testing"

	"natchat/rendezvous"
	"natchat/wire"
)

// whoAll pages through room as n and returns the members in order and
// the pages.
func (h *harness) whoAll(n *node, room, after string) ([]wire.Peer, []*wire.WhoReply) {
	h.t.Helper()
	var all []wire.Peer
	var pages []*wire.WhoReply
	for tx := uint32(1); ; tx++ {
		if tx > 1000 {
			h.t.Fatal("paging does not end")
		}
		r := onlyTo[*wire.WhoReply](h.t, h.sealed(n, &wire.Who{TxID: tx, Room: room, After: after}, n.addr), n)
		if r.TxID != tx || r.Room != room {
			h.t.Fatalf("page %d: txid %d room %q", tx, r.TxID, r.Room)
		}
		pages = append(pages, r)
		all = append(all, r.Members...)
		if !r.More {
			return all, pages
		}
		if len(r.Members) == 0 {
			h.t.Fatalf("page %d: empty, with more to come", tx)
		}
		after = r.Members[len(r.Members)-1].Name
	}
}

// TestWho pages through a big room: every member exactly once, in
// wire.NameKey order, each page within MaxPeersBody, Total the room's size,
// More false on the last page.
func TestWho(t *testing.T) {
	const members = 300
	h := newHarness(t, func(o *rendezvous.Options) { o.LookupRate = -1; o.BigRoom = 200 })
	byKey := make(map[wire.Key]string)
	var ns []*node
	for i := range members {
		var name string
		switch i % 3 {
		case 0:
			name = fmt.Sprintf("M%03d", i) // sorts by its lower case
		case 1:
			name = fmt.Sprintf("m%03d-%s", i, strings.Repeat("x", 27)) // 32 characters
		default:
			name = fmt.Sprintf("é%03d", i)
		}
		n := newNode(t, name, fmt.Sprintf("10.%d.%d.1:1000", i/200, i%200))
		h.register(n)
		byKey[n.key] = name
		ns = append(ns, n)
	}
	h.flush()
	a := ns[0]

	check := func(all []wire.Peer, pages []*wire.WhoReply, total int, after string) {
		t.Helper()
		seen := make(map[wire.Key]bool)
		prev := wire.NameKey(after)
		for _, p := range all {
			if seen[p.Key] {
				t.Errorf("%s listed twice", p.Name)
			}
			seen[p.Key] = true
			if byKey[p.Key] != p.Name {
				t.Errorf("member %q with the key of %q", p.Name, byKey[p.Key])
			}
			if k := wire.NameKey(p.Name); prev != "" && k <= prev {
				t.Errorf("%q after %q: not in NameKey order", p.Name, prev)
			}
			prev = wire.NameKey(p.Name)
		}
		for i, r := range pages {
			if r.Total != uint32(total) {
				t.Errorf("page %d: total %d, want %d", i, r.Total, total)
			}
			size := 0
			for _, p := range r.Members {
				size += wire.KeyLen + 1 + len(p.Name)
			}
			if size > wire.MaxPeersBody {
				t.Errorf("page %d: %d bytes of members, more than %d", i, size, wire.MaxPeersBody)
			}
			if sealed := wire.SealedHeaderLen + len(wire.AppendInner(nil, r)) + 16; sealed > 1200 {
				t.Errorf("page %d: %d bytes sealed", i, sealed)
			}
			if r.More != (i < len(pages)-1) {
				t.Errorf("page %d of %d: more %v", i, len(pages), r.More)
			}
		}
	}

	all, pages := h.whoAll(a, "#lobby", "")
	if len(all) != members {
		t.Errorf("%d members paged, want %d", len(all), members)
	}
	check(all, pages, members, "")
	if len(pages) < members/32 {
		t.Errorf("%d pages", len(pages))
	}

	// From an arbitrary point: the members after it.
	want := 0
	for _, name := range byKey {
		if wire.NameKey(name) > "n" {
			want++
		}
	}
	all, pages = h.whoAll(a, "#lobby", "n")
	if len(all) != want || want == 0 {
		t.Errorf("%d members after \"n\", want %d", len(all), want)
	}
	check(all, pages, members, "n")

	// A member leaves: it is no longer listed.
	h.sealed(ns[1], &wire.Leave{}, ns[1].addr)
	all, pages = h.whoAll(a, "#lobby", "")
	check(all, pages, members-1, "")
	for _, p := range all {
		if p.Key == ns[1].key {
			t.Errorf("%s listed after it left", p.Name)
		}
	}
	if len(all) != members-1 {
		t.Errorf("%d members, want %d", len(all), members-1)
	}

	// Not a member: refused.
	e := sealedError(t, h.sealed(a, &wire.Who{TxID: 42, Room: "#other"}, a.addr), a, wire.CodeNotMember)
	if e.TxID != 42 || e.Request != wire.TypeWho {
		t.Errorf("refusal %+v, want not_member for who 42", e)
	}
}
