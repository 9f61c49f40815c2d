package rendezvous

import (
	"bytes"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	bolt "go.etcd.io/bbolt"

	"natchat/wire"
)

// joinNow joins and waits for the outcome.
func joinNow(t testing.TB, s *Store, room string, key wire.Key, lim RoomLimits) RoomResult {
	t.Helper()
	ch := make(chan RoomResult, 1)
	res, queued := s.JoinRoom(room, key, lim, func(r RoomResult) { ch <- r })
	if !queued {
		return res
	}
	return <-ch
}

// partNow parts and waits for the outcome.
func partNow(t testing.TB, s *Store, room string, key wire.Key) RoomResult {
	t.Helper()
	ch := make(chan RoomResult, 1)
	res, queued := s.PartRoom(room, key, func(r RoomResult) { ch <- r })
	if !queued {
		return res
	}
	return <-ch
}

func checkRoomResult(t testing.TB, got RoomResult, st wire.RoomStatus, room string, version uint64, members int, changed bool) {
	t.Helper()
	if got.Status != st || got.Room != room || got.Version != version || got.Members != members || got.Changed != changed || got.Err != nil {
		t.Errorf("result %+v, want %v %q v%d members %d changed %v", got, st, room, version, members, changed)
	}
}

// roomsOf returns the LoadRooms of s as room name → sorted member keys,
// with the versions.
func roomsOf(t testing.TB, s *Store) (map[string][]wire.Key, map[string]uint64) {
	t.Helper()
	states, err := s.LoadRooms()
	if err != nil {
		t.Fatal(err)
	}
	members, versions := make(map[string][]wire.Key), make(map[string]uint64)
	for _, st := range states {
		ks := slices.Clone(st.Members)
		slices.SortFunc(ks, func(a, b wire.Key) int { return bytes.Compare(a[:], b[:]) })
		members[st.Name], versions[st.Name] = ks, st.Version
	}
	return members, versions
}

// checkRoomIndexes checks that the room buckets agree: every member is in
// its key's rooms and back, and each room's count is its members'.
func checkRoomIndexes(t testing.TB, s *Store) {
	t.Helper()
	err := s.db.View(func(tx *bolt.Tx) error {
		counts := make(map[string]uint32)
		pairs := 0
		tx.Bucket(bucketRoomMember).ForEach(func(k, _ []byte) error {
			rk, key, ok := splitMemberKey(k)
			if !ok {
				t.Errorf("bad member key %x", k)
				return nil
			}
			counts[string(rk)]++
			pairs++
			if tx.Bucket(bucketKeyRoom).Get(append(key[:len(key):len(key)], rk...)) == nil {
				t.Errorf("%s in %q, not in keyroom", key.Short(), rk)
			}
			return nil
		})
		if n := tx.Bucket(bucketKeyRoom).Stats().KeyN; n != pairs {
			t.Errorf("%d keyroom entries, %d memberships", n, pairs)
		}
		tx.Bucket(bucketRooms).ForEach(func(rk, v []byte) error {
			if _, count, _, _ := roomRecord(tx.Bucket(bucketRooms), string(rk)); count != counts[string(rk)] || count == 0 {
				t.Errorf("room %q counts %d, has %d", rk, count, counts[string(rk)])
			}
			delete(counts, string(rk))
			return nil
		})
		for rk := range counts {
			t.Errorf("members of %q, which has no record", rk)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRoomStore: joins and parts, versions by one per change, limits,
// and what survives reopening: members, versions, the floor of deleted
// rooms' versions.
func TestRoomStore(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, StoreOptions{})
	a, b, c := storeKey(1), storeKey(2), storeKey(3)
	lim := RoomLimits{Members: 2, Rooms: 2, Uncounted: "#lobby"}

	checkRoomResult(t, joinNow(t, s, "#Dev", a, lim), wire.RoomOK, "#Dev", 1, 1, true)
	checkRoomResult(t, joinNow(t, s, "#dev", b, lim), wire.RoomOK, "#Dev", 2, 2, true)
	checkRoomResult(t, joinNow(t, s, "#DEV", b, lim), wire.RoomOK, "#Dev", 2, 2, false)
	checkRoomResult(t, joinNow(t, s, "#dev", c, lim), wire.RoomFull, "#Dev", 2, 2, false)
	checkRoomResult(t, joinNow(t, s, "#lobby", a, RoomLimits{}), wire.RoomOK, "#lobby", 1, 1, true)
	checkRoomResult(t, joinNow(t, s, "#x", a, lim), wire.RoomOK, "#x", 1, 1, true)
	checkRoomResult(t, joinNow(t, s, "#y", a, lim), wire.RoomTooMany, "#y", 0, 0, false)
	checkRoomResult(t, partNow(t, s, "#y", a), wire.RoomNotMember, "#y", 0, 0, false)
	checkRoomResult(t, partNow(t, s, "#dev", c), wire.RoomNotMember, "#Dev", 2, 2, false)
	checkRoomResult(t, partNow(t, s, "#DEV", b), wire.RoomOK, "#Dev", 3, 1, true)
	checkRoomResult(t, partNow(t, s, "#x", a), wire.RoomOK, "#x", 2, 0, true)
	checkRoomIndexes(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTestStore(t, dir, StoreOptions{})
	members, versions := roomsOf(t, s)
	if len(members) != 2 || !slices.Equal(members["#Dev"], []wire.Key{a}) || !slices.Equal(members["#lobby"], []wire.Key{a}) ||
		versions["#Dev"] != 3 || versions["#lobby"] != 1 {
		t.Errorf("after reopening: %v, versions %v", members, versions)
	}
	// #x was deleted at version 2: a room made now starts above it.
	checkRoomResult(t, joinNow(t, s, "#X", c, lim), wire.RoomOK, "#X", 3, 1, true)
	checkRoomResult(t, joinNow(t, s, "#z", c, lim), wire.RoomOK, "#z", 3, 1, true)
	checkRoomIndexes(t, s)

	// A closed store queues nothing.
	s.Close()
	res, queued := s.JoinRoom("#q", a, lim, func(RoomResult) { t.Error("done called") })
	if queued || res.Status != wire.RoomFailed || !errors.Is(res.Err, ErrClosed) {
		t.Errorf("join on a closed store: %+v, queued %v", res, queued)
	}
	if s.RemoveMembers([]RoomRef{{Room: "#z", Key: c}}, func([]RoomResult, error) { t.Error("done called") }) {
		t.Error("removal queued on a closed store")
	}
	if _, err := s.InitRooms(storeKey(9), "#lobby", func(RoomResult) { t.Error("done called") }); err == nil {
		t.Error("InitRooms on a closed store succeeded")
	}
}

// TestRoomStoreLimitsInOneCommit: joins that each fit when queued but not
// together are checked in the transaction, in order.
func TestRoomStoreLimitsInOneCommit(t *testing.T) {
	s := openTestStore(t, t.TempDir(), StoreOptions{})
	inFirst, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.testHookCommit = func(int) { once.Do(func() { close(inFirst); <-release }) }
	lim := RoomLimits{Members: 3, Rooms: 2, Uncounted: "#lobby"}
	results := make([]RoomResult, 8)
	var wg sync.WaitGroup
	add := func(i int, room string, key wire.Key, lim RoomLimits) {
		wg.Add(1)
		if _, queued := s.JoinRoom(room, key, lim, func(r RoomResult) { results[i] = r; wg.Done() }); !queued {
			t.Fatalf("join %d not queued", i)
		}
	}
	add(0, "#r", storeKey(0), lim)
	<-inFirst
	for i := 1; i < 5; i++ {
		add(i, "#r", storeKey(i), lim) // 1, 2 fit; 3, 4 do not
	}
	add(5, "#s", storeKey(1), lim)              // key 1's second room
	add(6, "#t", storeKey(1), lim)              // its third: too many
	add(7, "#lobby", storeKey(1), RoomLimits{}) // not counted
	close(release)
	wg.Wait()
	want := []wire.RoomStatus{wire.RoomOK, wire.RoomOK, wire.RoomOK, wire.RoomFull, wire.RoomFull, wire.RoomOK, wire.RoomTooMany, wire.RoomOK}
	for i, r := range results {
		if r.Status != want[i] {
			t.Errorf("join %d: %+v, want %v", i, r, want[i])
		}
	}
	if results[2].Version != 3 || results[2].Members != 3 {
		t.Errorf("third join: %+v", results[2])
	}
	checkRoomIndexes(t, s)
}

// TestRoomStoreDoneOrder: the done functions of concurrent writes run
// one at a time, in commit order: each room's versions arrive in
// increasing order, and every join and part is seen.
func TestRoomStoreDoneOrder(t *testing.T) {
	s := openTestStore(t, t.TempDir(), StoreOptions{})
	var running atomic.Int32
	var mu sync.Mutex
	seen := make(map[string][]uint64)
	var wg sync.WaitGroup
	done := func(r RoomResult) {
		if running.Add(1) != 1 {
			t.Error("done functions ran concurrently")
		}
		if r.Changed {
			mu.Lock()
			seen[r.Room] = append(seen[r.Room], r.Version)
			mu.Unlock()
		}
		running.Add(-1)
		wg.Done()
	}
	rooms := []string{"#a", "#b", "#c"}
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 30 {
				room, key := rooms[(g+i)%3], storeKey(g)
				wg.Add(2)
				if _, q := s.JoinRoom(room, key, RoomLimits{}, done); !q {
					t.Error("not queued")
				}
				if _, q := s.PartRoom(room, key, done); !q {
					t.Error("not queued")
				}
			}
		}()
	}
	wg.Wait()
	for room, vs := range seen {
		for i, v := range vs {
			// Consecutive while the room lives; a room made again
			// starts above every deleted room's version.
			if i > 0 && v <= vs[i-1] {
				t.Errorf("%s: versions %v out of order", room, vs)
				break
			}
		}
	}
	total := 0
	for _, vs := range seen {
		total += len(vs)
	}
	if len(seen) != 3 || total != 8*30*2 {
		t.Errorf("%d changes seen in %d rooms, want %d in 3", total, len(seen), 8*30*2)
	}
	members, _ := roomsOf(t, s)
	if len(members) != 0 {
		t.Errorf("rooms left: %v", members)
	}
}

// TestRoomStoreInit: a key is given its first rooms once, even when two
// registrations race; with no room, it is only marked.
func TestRoomStoreInit(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, StoreOptions{})
	inFirst, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.testHookCommit = func(int) { once.Do(func() { close(inFirst); <-release }) }
	a := storeKey(1)
	results := make(chan RoomResult, 3)
	if q, err := s.InitRooms(a, "#lobby", func(r RoomResult) { results <- r }); !q || err != nil {
		t.Fatalf("first init: %v, %v", q, err)
	}
	<-inFirst
	// Not committed yet: a second registration queues another.
	if q, err := s.InitRooms(a, "#lobby", func(r RoomResult) { results <- r }); !q || err != nil {
		t.Fatalf("second init: %v, %v", q, err)
	}
	close(release)
	r1, r2 := <-results, <-results
	checkRoomResult(t, r1, wire.RoomOK, "#lobby", 1, 1, true)
	checkRoomResult(t, r2, wire.RoomOK, "#lobby", 0, 0, false)
	// Committed: nothing to do.
	if q, err := s.InitRooms(a, "#lobby", func(r RoomResult) { results <- r }); q || err != nil {
		t.Errorf("init once more: %v, %v", q, err)
	}
	// It parts: an init does not put it back.
	checkRoomResult(t, partNow(t, s, "#lobby", a), wire.RoomOK, "#lobby", 2, 0, true)
	if q, _ := s.InitRooms(a, "#lobby", nil); q {
		t.Error("init after a part was queued")
	}
	// No room: only the mark.
	b := storeKey(2)
	if q, err := s.InitRooms(b, "", func(r RoomResult) { results <- r }); !q || err != nil {
		t.Fatalf("init with no room: %v, %v", q, err)
	}
	if r := <-results; r.Changed || r.Status != wire.RoomOK {
		t.Errorf("init with no room: %+v", r)
	}
	s.Close()
	s = openTestStore(t, dir, StoreOptions{})
	for _, k := range []wire.Key{a, b} {
		if q, err := s.InitRooms(k, "#lobby", nil); q || err != nil {
			t.Errorf("%s: init after reopening: %v, %v", k.Short(), q, err)
		}
	}
	if members, _ := roomsOf(t, s); len(members) != 0 {
		t.Errorf("rooms %v", members)
	}
}

// TestRoomStoreRemove: RemoveMembers takes out those that are members, in
// one write, and reports them.
func TestRoomStoreRemove(t *testing.T) {
	s := openTestStore(t, t.TempDir(), StoreOptions{})
	a, b := storeKey(1), storeKey(2)
	joinNow(t, s, "#x", a, RoomLimits{})
	joinNow(t, s, "#x", b, RoomLimits{})
	joinNow(t, s, "#y", a, RoomLimits{})
	commits := s.commits.Load()
	ch := make(chan []RoomResult, 1)
	refs := []RoomRef{{Room: "#X", Key: a}, {Room: "#y", Key: a}, {Room: "#z", Key: a}, {Room: "#x", Key: a}}
	if !s.RemoveMembers(refs, func(rs []RoomResult, err error) {
		if err != nil {
			t.Error(err)
		}
		ch <- rs
	}) {
		t.Fatal("not queued")
	}
	rs := <-ch
	if len(rs) != 2 {
		t.Fatalf("removed %+v", rs)
	}
	checkRoomResult(t, rs[0], wire.RoomOK, "#x", 3, 1, true)
	checkRoomResult(t, rs[1], wire.RoomOK, "#y", 2, 0, true)
	if n := s.commits.Load() - commits; n != 1 {
		t.Errorf("%d commits", n)
	}
	if members, _ := roomsOf(t, s); len(members) != 1 || !slices.Equal(members["#x"], []wire.Key{b}) {
		t.Errorf("rooms %v", members)
	}
	checkRoomIndexes(t, s)
}

// TestStoreLastUse: LastUse accounts for touches not yet written, and
// knows no unbound key.
func TestStoreLastUse(t *testing.T) {
	clk := &storeClock{now: storeT0}
	s := openTestStore(t, t.TempDir(), StoreOptions{Now: clk.Now})
	if _, ok := s.LastUse(storeKey(1)); ok {
		t.Error("an unbound key has a last use")
	}
	mustBind(t, s, "bob", storeKey(1))
	if lu, ok := s.LastUse(storeKey(1)); !ok || !lu.Equal(storeT0) {
		t.Errorf("last use %v, %v; want %v", lu, ok, storeT0)
	}
	later := storeT0.Add(5 * 60 * 1e9)
	s.Touch(storeKey(1), later) // held back: less than TouchEvery after the bind
	if lu, ok := s.LastUse(storeKey(1)); !ok || !lu.Equal(later) {
		t.Errorf("last use %v, %v; want the touch %v", lu, ok, later)
	}
}

// TestStoreBindInit: a new binding and its key's first rooms in one
// write; a Bind the read settles calls nothing; a key already given its
// rooms is not given them again.
func TestStoreBindInit(t *testing.T) {
	s := openTestStore(t, t.TempDir(), StoreOptions{})
	results := make(chan RoomResult, 1)
	done := func(r RoomResult) { results <- r }
	commits := s.commits.Load()
	c, queued, err := s.BindInit("Bob", storeKey(1), "#lobby", done)
	if c != "Bob" || !queued || err != nil {
		t.Fatalf("BindInit = %q, %v, %v", c, queued, err)
	}
	checkRoomResult(t, <-results, wire.RoomOK, "#lobby", 1, 1, true)
	if n := s.commits.Load() - commits; n != 1 {
		t.Errorf("%d commits", n)
	}
	checkBound(t, s, "bob", storeKey(1), "Bob")
	// Settled by the read: bound already, or refused.
	if c, queued, err := s.BindInit("bob", storeKey(1), "#lobby", done); c != "Bob" || queued || err != nil {
		t.Errorf("again: %q, %v, %v", c, queued, err)
	}
	if _, queued, err := s.BindInit("bob", storeKey(2), "#lobby", done); queued || !errors.Is(err, ErrNameTaken) {
		t.Errorf("taken: %v, %v", queued, err)
	}
	// A key given its rooms before and bound anew (its old name
	// released): not given them again.
	checkRoomResult(t, partNow(t, s, "#lobby", storeKey(1)), wire.RoomOK, "#lobby", 2, 0, true)
	if _, err := s.Release(storeT0.Add(1000 * 24 * 3600 * 1e9)); err != nil {
		t.Fatal(err)
	}
	if _, queued, err := s.BindInit("robert", storeKey(1), "#lobby", done); !queued || err != nil {
		t.Fatalf("rebind: %v, %v", queued, err)
	}
	checkRoomResult(t, <-results, wire.RoomOK, "#lobby", 0, 0, false)
	if members, _ := roomsOf(t, s); len(members) != 0 {
		t.Errorf("rooms %v", members)
	}
	select {
	case r := <-results:
		t.Errorf("done called again: %+v", r)
	default:
	}
}
