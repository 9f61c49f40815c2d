package rendezvous

import (
	"encoding/binary"
	"hash/maphash"
	"math/rand/v2"
	"testing"

	"natchat/wire"
)

// checkTable compares t with want, entry by entry and walked, and checks
// each shard's invariants.
func checkTable[K comparable](t *testing.T, tb *clientTable[K], want map[K]*client) {
	t.Helper()
	if tb.len() != len(want) {
		t.Fatalf("len %d, want %d", tb.len(), len(want))
	}
	for k, c := range want {
		if got := tb.get(k); got != c {
			t.Fatalf("get(%v) = %p, want %p", k, got, c)
		}
	}
	seen := make(map[*client]bool)
	for c := range tb.all() {
		if seen[c] {
			t.Fatalf("walk met %p twice", c)
		}
		seen[c] = true
		if want[tb.keyOf(c)] != c {
			t.Fatalf("walk met %p, not in the table", c)
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("walk met %d, want %d", len(seen), len(want))
	}
	for i := range tb.shards {
		sh := &tb.shards[i]
		n := 0
		for j, c := range sh.slots {
			if (c == nil) != (sh.tags[j] == 0) {
				t.Fatalf("shard %d slot %d: client %p, tag %d", i, j, c, sh.tags[j])
			}
			if c != nil {
				n++
			}
		}
		if n != sh.n || len(sh.slots) != len(sh.tags) || (len(sh.slots) != 0 && (len(sh.slots) < shardMin || len(sh.slots)&(len(sh.slots)-1) != 0)) {
			t.Fatalf("shard %d: %d entries counted %d, %d slots, %d tags", i, n, sh.n, len(sh.slots), len(sh.tags))
		}
		if sh.n > 0 && sh.n*4 > len(sh.slots)*3 {
			t.Fatalf("shard %d: %d entries in %d slots", i, sh.n, len(sh.slots))
		}
	}
}

// TestClientTableRandom drives a table and a Go map with the same random
// sets and removes, growing it past several doublings and emptying it,
// with the real hash and with one of four values in each shard (long
// runs that wrap around: the backward shift at its hardest).
func TestClientTableRandom(t *testing.T) {
	crowded := func(s maphash.Seed, k wire.Key) uint64 {
		// Two shards, one tag, four home slots.
		return uint64(k[0]&1)<<56 | 0x55<<48 | uint64(k[1]&3)
	}
	for _, tc := range []struct {
		name string
		hash func(maphash.Seed, wire.Key) uint64
		n    int
	}{
		{"maphash", nil, 20000},
		{"crowded", crowded, 600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := newKeyTable()
			if tc.hash != nil {
				tb.hash = tc.hash
			}
			want := make(map[wire.Key]*client)
			rng := rand.New(rand.NewPCG(1, 2))
			key := func() wire.Key {
				var k wire.Key
				binary.LittleEndian.PutUint32(k[:], uint32(rng.IntN(tc.n)))
				k[1] = byte(rng.IntN(256)) // crowded's home slot
				return k
			}
			step := func(i int, grow bool) {
				k := key()
				if grow == (rng.IntN(4) != 0) {
					c := &client{member: member{key: k}}
					tb.set(c)
					want[k] = c
				} else {
					tb.remove(k)
					delete(want, k)
				}
				if i%(tc.n/10) == 0 {
					checkTable(t, tb, want)
				}
			}
			for i := range 4 * tc.n {
				step(i, true)
			}
			checkTable(t, tb, want)
			for i := range 8 * tc.n {
				step(i, false)
			}
			checkTable(t, tb, want)
			for k := range want {
				tb.remove(k)
				delete(want, k)
			}
			checkTable(t, tb, want)
			for i := range tb.shards {
				if tb.shards[i].slots != nil {
					t.Fatalf("empty table: shard %d keeps %d slots", i, len(tb.shards[i].slots))
				}
			}
		})
	}
}

// TestClientTableShrinks checks that a table gives back what a crowd
// that left took: a Go map keeps its size.
func TestClientTableShrinks(t *testing.T) {
	tb := newSessionTable()
	cs := make([]*client, 100_000)
	for i := range cs {
		cs[i] = &client{}
		binary.LittleEndian.PutUint64(cs[i].session[:], uint64(i))
		tb.set(cs[i])
	}
	slots := func() (n int) {
		for i := range tb.shards {
			n += len(tb.shards[i].slots)
		}
		return n
	}
	big := slots()
	for _, c := range cs[1000:] {
		tb.remove(c.session)
	}
	if small := slots(); small*16 > big {
		t.Fatalf("%d slots for 100000 entries, %d for the 1000 left", big, small)
	}
	for _, c := range cs[:1000] {
		if tb.get(c.session) != c {
			t.Fatalf("lost %v", c.session)
		}
	}
}

// TestClientTableWalkGuard checks that a change during a walk panics
// rather than letting the walk pass entries over.
func TestClientTableWalkGuard(t *testing.T) {
	tb := newKeyTable()
	for i := range 10 {
		tb.set(&client{member: member{key: wire.Key{byte(i)}}})
	}
	defer func() {
		if recover() == nil {
			t.Fatal("remove during a walk did not panic")
		}
		if tb.walks != 0 {
			t.Fatalf("walks = %d after the walk", tb.walks)
		}
	}()
	for c := range tb.all() {
		tb.remove(c.key)
	}
}

// TestClientTableSetReplaces checks that set files a new client in place
// of the one with the same key.
func TestClientTableSetReplaces(t *testing.T) {
	tb := newKeyTable()
	a, b := &client{member: member{key: wire.Key{1}}}, &client{member: member{key: wire.Key{1}}}
	tb.set(a)
	tb.set(b)
	if tb.len() != 1 || tb.get(wire.Key{1}) != b {
		t.Fatalf("len %d, get %p; want 1, %p", tb.len(), tb.get(wire.Key{1}), b)
	}
}

// BenchmarkClientTableGet is a lookup in a table of 1M sessions, against
// a Go map, each followed by a read of the client's record (as the
// callers do).
func BenchmarkClientTableGet(b *testing.B) {
	const n = 1 << 20
	tb := newSessionTable()
	m := make(map[wire.SessionID]*client)
	ids := make([]wire.SessionID, n)
	for i := range ids {
		c := &client{session: newSession()}
		ids[i] = c.session
		tb.set(c)
		m[c.session] = c
	}
	b.Run("table", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if c := tb.get(ids[i&(n-1)]); c.seq != 0 {
				b.Fatal("seq")
			}
		}
	})
	b.Run("map", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if c := m[ids[i&(n-1)]]; c.seq != 0 {
				b.Fatal("seq")
			}
		}
	})
}
