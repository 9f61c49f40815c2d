package rendezvous

import (
	"hash/maphash"
	"iter"

	"natchat/wire"
)

// clientTable indexes the clients online by a key each holds in its
// record (its wire.Key, its session): an open-addressing hash table of
// pointers (linear probing, deletion by backward shift, no tombstones),
// with a byte of each entry's hash beside it so that a probe reads a
// client's record only when that byte matches, split into 256 shards
// that grow and shrink on their own.
//
// It replaces Go maps of *client, which cost a million nodes 96 bytes
// each for byKey and 36 for bySession (a 40- or 16-byte slot, its
// control byte, the load factor, and a doubling's slack). Here a slot
// is 9 bytes, at a load between 3/8 and 3/4 while the table grows (about
// 17 bytes a node). A shard rehashes alone, so an insertion under the
// server's lock moves about 1/256 of the entries at most (a Go map splits
// its tables incrementally too), and a shard halves when it falls under
// 1/16 full, so the memory of a crowd that left is given back, which a
// Go map never does.
//
// The hash is seeded per table (hash/maphash), so keys a stranger picks
// cannot be aimed at one chain. Not safe for concurrent use: the Server
// guards it with mu. The zero value is not ready: use newClientTable.
type clientTable[K comparable] struct {
	seed   maphash.Seed
	keyOf  func(*client) K
	hash   func(maphash.Seed, K) uint64
	n      int
	walks  int // walks in progress: the table must not change meanwhile
	shards [tableShards]tableShard
}

// tableShard is one shard of a clientTable: len(slots) is 0 or a power
// of two ≥ shardMin, and tags[i] is 0 where slots[i] is empty, else
// tagOf of its entry's hash.
type tableShard struct {
	slots []*client
	tags  []uint8
	n     int
}

const (
	tableShards = 256
	shardMin    = 8 // a shard's smallest capacity, once it holds one entry
)

// newClientTable returns an empty table of the clients by keyOf, hashed
// with hash.
func newClientTable[K comparable](keyOf func(*client) K, hash func(maphash.Seed, K) uint64) *clientTable[K] {
	return &clientTable[K]{seed: maphash.MakeSeed(), keyOf: keyOf, hash: hash}
}

// newKeyTable returns a table of clients by their wire.Key.
func newKeyTable() *clientTable[wire.Key] {
	return newClientTable(func(c *client) wire.Key { return c.key },
		func(s maphash.Seed, k wire.Key) uint64 { return maphash.Bytes(s, k[:]) })
}

// newSessionTable returns a table of clients by their session.
func newSessionTable() *clientTable[wire.SessionID] {
	return newClientTable(func(c *client) wire.SessionID { return c.session },
		func(s maphash.Seed, k wire.SessionID) uint64 { return maphash.Bytes(s, k[:]) })
}

// Hash bits: the top byte picks the shard, the next is the tag, the low
// bits the home slot in the shard.
func shardOf(h uint64) int { return int(h >> 56) }
func tagOf(h uint64) uint8 { return uint8(h>>48) | 1 }

// len returns the number of entries.
func (t *clientTable[K]) len() int { return t.n }

// get returns the client with key k, or nil.
func (t *clientTable[K]) get(k K) *client {
	h := t.hash(t.seed, k)
	sh := &t.shards[shardOf(h)]
	if i, ok := t.find(sh, h, k); ok {
		return sh.slots[i]
	}
	return nil
}

// find returns the slot of k (hashed h) in sh and true, or the empty
// slot that ends its probe and false (slot 0 of a shard with no slots).
func (t *clientTable[K]) find(sh *tableShard, h uint64, k K) (int, bool) {
	if len(sh.slots) == 0 {
		return 0, false
	}
	mask := len(sh.slots) - 1
	tag := tagOf(h)
	for i := int(h) & mask; ; i = (i + 1) & mask {
		switch sh.tags[i] {
		case 0:
			return i, false
		case tag:
			if t.keyOf(sh.slots[i]) == k {
				return i, true
			}
		}
	}
}

// set files c under its key, in place of any client filed there.
func (t *clientTable[K]) set(c *client) {
	t.changing()
	k := t.keyOf(c)
	h := t.hash(t.seed, k)
	sh := &t.shards[shardOf(h)]
	i, ok := t.find(sh, h, k)
	if ok {
		sh.slots[i] = c
		return
	}
	if (sh.n+1)*4 > len(sh.slots)*3 {
		t.resize(sh, max(shardMin, 2*len(sh.slots)))
		i, _ = t.find(sh, h, k)
	}
	sh.slots[i], sh.tags[i] = c, tagOf(h)
	sh.n++
	t.n++
}

// remove takes the client with key k out, if there is one.
func (t *clientTable[K]) remove(k K) {
	t.changing()
	h := t.hash(t.seed, k)
	sh := &t.shards[shardOf(h)]
	i, ok := t.find(sh, h, k)
	if !ok {
		return
	}
	// Backward shift: move up each later entry of the run whose home slot
	// is not cyclically in (i, j], so every probe still finds its entry
	// before an empty slot.
	mask := len(sh.slots) - 1
	for j := (i + 1) & mask; sh.tags[j] != 0; j = (j + 1) & mask {
		home := int(t.hash(t.seed, t.keyOf(sh.slots[j]))) & mask
		if (j-home)&mask >= (j-i)&mask {
			sh.slots[i], sh.tags[i] = sh.slots[j], sh.tags[j]
			i = j
		}
	}
	sh.slots[i], sh.tags[i] = nil, 0
	sh.n--
	t.n--
	switch {
	case sh.n == 0:
		sh.slots, sh.tags = nil, nil
	case len(sh.slots) > shardMin && sh.n*16 < len(sh.slots):
		t.resize(sh, len(sh.slots)/2)
	}
}

// resize rehashes sh into size slots.
func (t *clientTable[K]) resize(sh *tableShard, size int) {
	old := sh.slots
	sh.slots, sh.tags = make([]*client, size), make([]uint8, size)
	mask := size - 1
	for _, c := range old {
		if c == nil {
			continue
		}
		h := t.hash(t.seed, t.keyOf(c))
		i := int(h) & mask
		for sh.tags[i] != 0 {
			i = (i + 1) & mask
		}
		sh.slots[i], sh.tags[i] = c, tagOf(h)
	}
}

// changing panics during a walk: an entry moved by a deletion's shift or
// a shard's rehash could be passed over or met twice.
func (t *clientTable[K]) changing() {
	if t.walks > 0 {
		panic("rendezvous: clientTable changed during a walk")
	}
}

// all walks the clients, in no particular order. The table must not
// change during the walk (set and remove panic); see shard for a walk
// that lets go of the lock.
func (t *clientTable[K]) all() iter.Seq[*client] {
	return func(yield func(*client) bool) {
		t.walks++
		defer func() { t.walks-- }()
		for i := range t.shards {
			for _, c := range t.shards[i].slots {
				if c != nil && !yield(c) {
					return
				}
			}
		}
	}
}

// appendShard appends to dst the clients of shard i (0 ≤ i <
// tableShards), for a walk that lets go of the lock between shards (a
// shard holds about 1/256 of the clients).
func (t *clientTable[K]) appendShard(dst []*client, i int) []*client {
	for _, c := range t.shards[i].slots {
		if c != nil {
			dst = append(dst, c)
		}
	}
	return dst
}
