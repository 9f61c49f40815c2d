package rendezvous

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"natchat/wire"
)

// Rooms keeps chat rooms durably: who is a member of which room (online
// or not), each room's version, and which keys have been given the default
// room. The bbolt Store implements it; a distributed store will implement
// it too.
//
// A room's identity is wire.NameKey of its name; the store keeps the name
// as first written (the spelling of the join that created the room). Its
// version grows by one with every change of its member set, and is never
// reused: a room that empties is deleted, and a room created later under
// any name starts above every version a deleted room reached.
//
// All methods are safe for concurrent use. The server calls JoinRoom,
// PartRoom and RemoveMembers on its packet loop (or with its lock held),
// so none of them may wait for a disk write: the write is queued and its
// done function is called once the write is durable (or has failed). The
// done functions of every write (JoinRoom, PartRoom, RemoveMembers,
// InitRooms) are called one at a time, in the order the writes were
// committed, on a goroutine of the store's, with no lock of the store
// held: so a server that applies each outcome to its in-memory copy in
// done keeps that copy in step with the store. done may block briefly (it
// takes the server's lock) and must not call back into the store's writes
// and wait for them.
type Rooms interface {
	// LoadRooms returns every room with members: its name, version and
	// members. The server calls it once, in New.
	LoadRooms() ([]RoomState, error)
	// JoinRoom makes key a member of room unless it is one already (then
	// the outcome is wire.RoomOK and nothing changes) or lim refuses it
	// (wire.RoomFull, wire.RoomTooMany). A room no one is in is created,
	// named room. It returns queued false, and never calls done, if the
	// write could not be queued (the store is closed); res then has
	// Status wire.RoomFailed and Err set.
	JoinRoom(room string, key wire.Key, lim RoomLimits, done func(RoomResult)) (res RoomResult, queued bool)
	// PartRoom takes key out of room; the outcome is wire.RoomNotMember
	// if it was not in it. As JoinRoom otherwise.
	PartRoom(room string, key wire.Key, done func(RoomResult)) (res RoomResult, queued bool)
	// RemoveMembers takes each ref's key out of its room, in one durable
	// write, and gives done the outcome of each that was a member (in
	// refs' order). It returns false, and never calls done, if the write
	// could not be queued.
	RemoveMembers(refs []RoomRef, done func([]RoomResult, error)) (queued bool)
	// InitRooms gives key its first rooms, once: unless key has been
	// given them before (a read, no write: it returns false and never
	// calls done), it makes key a member of room (if room is not empty;
	// no limits apply) and marks key as given its rooms, in one durable
	// write, then calls done with the join's outcome (Changed false when
	// room is empty or key was in it already). err is set if the read
	// failed or the write could not be queued.
	InitRooms(key wire.Key, room string, done func(RoomResult)) (queued bool, err error)
}

var _ Rooms = (*Store)(nil)

// RoomState is a room as LoadRooms returns it.
type RoomState struct {
	Name    string // as first written
	Version uint64
	Members []wire.Key
}

// RoomLimits bound a join. A field ≤ 0 is no limit.
type RoomLimits struct {
	// Members bounds the members of the room.
	Members int
	// Rooms bounds the rooms the joining key is in, not counting the
	// room whose NameKey is Uncounted (the default room).
	Rooms     int
	Uncounted string
}

// RoomRef names a member of a room.
type RoomRef struct {
	Room string // the room's name (any spelling)
	Key  wire.Key
}

// RoomResult is the outcome of a room write, and the room as it is after
// it.
type RoomResult struct {
	Status wire.RoomStatus
	// Room is the room's name as first written, or as asked if there is
	// no such room.
	Room string
	Key  wire.Key
	// Version, Members: the room's version and member count after the
	// write (0 if the room has no members).
	Version uint64
	Members int
	// Changed is set when the write changed the room's member set (and
	// so its version).
	Changed bool
	// Err is set when the write failed (Status is then wire.RoomFailed).
	Err error
}

// Room buckets (keys are raw bytes; rk is wire.NameKey of the room's name,
// prefixed with its length as a uvarint where more follows it):
//
//	rooms      rk → version(8) members(4) name        every room with members
//	roommember uvarint(len rk) rk key(32) → 1         the members of each room
//	keyroom    key(32) rk → 1                         the rooms of each key
//	roominit   key(32) → 1                            keys given their first rooms
//	meta       "roomfloor" → version(8)               the highest version of a deleted room
var (
	bucketRooms      = []byte("rooms")
	bucketRoomMember = []byte("roommember")
	bucketKeyRoom    = []byte("keyroom")
	bucketRoomInit   = []byte("roominit")

	metaRoomFloor = []byte("roomfloor")

	// present is the value of an entry that says yes: not empty, since
	// a bbolt Get in the transaction that wrote an empty value finds none.
	present = []byte{1}
)

// roomRecLen is the fixed part of a rooms record: version and members.
const roomRecLen = 8 + 4

// roomKind is the kind of a room write.
type roomKind uint8

const (
	roomJoin roomKind = iota + 1
	roomPart
	roomRemove
	roomInit
)

// roomReq is a room write for the committer. Its results are set before
// fn is called.
type roomReq struct {
	kind roomKind
	room string
	key  wire.Key
	lim  RoomLimits
	refs []RoomRef // roomRemove

	res     RoomResult   // roomJoin, roomPart, roomInit
	removed []RoomResult // roomRemove
	err     error
	fn      func() // called after the commit, with no lock held
}

// fail records err as the outcome of r (its transaction failed).
func (r *roomReq) fail(err error) {
	r.err, r.removed = err, nil
	r.res = RoomResult{Status: wire.RoomFailed, Room: r.room, Key: r.key, Err: err}
}

// LoadRooms returns every room with its members. See Rooms.LoadRooms.
// Cost: one read transaction over the room buckets.
func (s *Store) LoadRooms() ([]RoomState, error) {
	var out []RoomState
	err := s.db.View(func(tx *bolt.Tx) error {
		byRK := make(map[string]int)
		err := tx.Bucket(bucketRooms).ForEach(func(rk, v []byte) error {
			if len(v) < roomRecLen {
				return nil
			}
			byRK[string(rk)] = len(out)
			out = append(out, RoomState{Name: string(v[roomRecLen:]), Version: binary.BigEndian.Uint64(v)})
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketRoomMember).ForEach(func(k, _ []byte) error {
			rk, key, ok := splitMemberKey(k)
			if !ok {
				return nil
			}
			if i, ok := byRK[string(rk)]; ok {
				out[i].Members = append(out[i].Members, key)
			}
			return nil
		})
	})
	if err != nil {
		return nil, s.closedOr(err)
	}
	return out, nil
}

// JoinRoom queues a join. See Rooms.JoinRoom. Cost: a write through the
// committer, which checks lim in the transaction (reading the room's
// record and the key's rooms) and shares its fsync with every write
// queued meanwhile.
func (s *Store) JoinRoom(room string, key wire.Key, lim RoomLimits, done func(RoomResult)) (RoomResult, bool) {
	r := &roomReq{kind: roomJoin, room: room, key: key, lim: lim}
	r.fn = func() { done(r.res) }
	return s.enqueueRoom(r)
}

// PartRoom queues a part. See Rooms.PartRoom.
func (s *Store) PartRoom(room string, key wire.Key, done func(RoomResult)) (RoomResult, bool) {
	r := &roomReq{kind: roomPart, room: room, key: key}
	r.fn = func() { done(r.res) }
	return s.enqueueRoom(r)
}

func (s *Store) enqueueRoom(r *roomReq) (RoomResult, bool) {
	if err := s.enqueue(&request{room: r}); err != nil {
		r.fail(err)
		return r.res, false
	}
	return RoomResult{}, true
}

// RemoveMembers queues the removal of refs. See Rooms.RemoveMembers.
func (s *Store) RemoveMembers(refs []RoomRef, done func([]RoomResult, error)) bool {
	r := &roomReq{kind: roomRemove, refs: refs}
	r.fn = func() { done(r.removed, r.err) }
	return s.enqueue(&request{room: r}) == nil
}

// InitRooms gives key its first rooms, once. See Rooms.InitRooms. Cost: a
// read transaction; for a key not given them yet, a write through the
// committer.
func (s *Store) InitRooms(key wire.Key, room string, done func(RoomResult)) (bool, error) {
	var marked bool
	err := s.db.View(func(tx *bolt.Tx) error {
		marked = tx.Bucket(bucketRoomInit).Get(key[:]) != nil
		return nil
	})
	if err != nil {
		return false, s.closedOr(err)
	}
	if marked {
		return false, nil
	}
	r := &roomReq{kind: roomInit, room: room, key: key}
	r.fn = func() { done(r.res) }
	if err := s.enqueue(&request{room: r}); err != nil {
		return false, err
	}
	return true, nil
}

// applyRoom applies r in tx.
func applyRoom(tx *bolt.Tx, r *roomReq) error {
	r.err, r.removed = nil, nil
	switch r.kind {
	case roomJoin:
		return joinRoom(tx, r.room, r.key, r.lim, &r.res)
	case roomPart:
		return partRoom(tx, r.room, r.key, &r.res)
	case roomRemove:
		for _, ref := range r.refs {
			var res RoomResult
			if err := partRoom(tx, ref.Room, ref.Key, &res); err != nil {
				return err
			}
			if res.Changed {
				r.removed = append(r.removed, res)
			}
		}
		return nil
	case roomInit:
		inits := tx.Bucket(bucketRoomInit)
		r.res = RoomResult{Status: wire.RoomOK, Room: r.room, Key: r.key}
		if inits.Get(r.key[:]) != nil {
			return nil // a second InitRooms queued before the first committed
		}
		if r.room != "" {
			if err := joinRoom(tx, r.room, r.key, RoomLimits{}, &r.res); err != nil {
				return err
			}
		}
		return inits.Put(r.key[:], present)
	}
	return fmt.Errorf("room write of kind %d", r.kind)
}

// joinRoom makes key a member of room in tx unless lim refuses, and sets
// res.
func joinRoom(tx *bolt.Tx, room string, key wire.Key, lim RoomLimits, res *RoomResult) error {
	rk := wire.NameKey(room)
	rooms, members := tx.Bucket(bucketRooms), tx.Bucket(bucketRoomMember)
	version, count, name, exists := roomRecord(rooms, rk)
	if !exists {
		name = room
	}
	*res = RoomResult{Status: wire.RoomOK, Room: name, Key: key, Version: version, Members: int(count)}
	mk := memberKey(rk, key)
	if exists && members.Get(mk) != nil {
		return nil
	}
	if lim.Members > 0 && int(count) >= lim.Members {
		res.Status = wire.RoomFull
		return nil
	}
	if lim.Rooms > 0 && countRooms(tx, key, lim.Uncounted) >= lim.Rooms {
		res.Status = wire.RoomTooMany
		return nil
	}
	if !exists {
		version = roomFloor(tx)
	}
	version++
	count++
	if err := rooms.Put([]byte(rk), roomRecordValue(version, count, name)); err != nil {
		return err
	}
	if err := members.Put(mk, present); err != nil {
		return err
	}
	if err := tx.Bucket(bucketKeyRoom).Put(append(key[:len(key):len(key)], rk...), present); err != nil {
		return err
	}
	res.Version, res.Members, res.Changed = version, int(count), true
	return nil
}

// partRoom takes key out of room in tx, and sets res.
func partRoom(tx *bolt.Tx, room string, key wire.Key, res *RoomResult) error {
	rk := wire.NameKey(room)
	rooms, members := tx.Bucket(bucketRooms), tx.Bucket(bucketRoomMember)
	version, count, name, exists := roomRecord(rooms, rk)
	if !exists {
		name = room
	}
	*res = RoomResult{Status: wire.RoomNotMember, Room: name, Key: key, Version: version, Members: int(count)}
	mk := memberKey(rk, key)
	if !exists || members.Get(mk) == nil {
		return nil
	}
	if err := members.Delete(mk); err != nil {
		return err
	}
	if err := tx.Bucket(bucketKeyRoom).Delete(append(key[:len(key):len(key)], rk...)); err != nil {
		return err
	}
	version++
	if count > 0 {
		count--
	}
	if count == 0 {
		// Deleted; a room created later starts above its version.
		if err := rooms.Delete([]byte(rk)); err != nil {
			return err
		}
		if version > roomFloor(tx) {
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], version)
			if err := tx.Bucket(bucketMeta).Put(metaRoomFloor, b[:]); err != nil {
				return err
			}
		}
	} else if err := rooms.Put([]byte(rk), roomRecordValue(version, count, name)); err != nil {
		return err
	}
	*res = RoomResult{Status: wire.RoomOK, Room: name, Key: key, Version: version, Members: int(count), Changed: true}
	return nil
}

// roomRecord reads the record of the room rk.
func roomRecord(rooms *bolt.Bucket, rk string) (version uint64, count uint32, name string, ok bool) {
	v := rooms.Get([]byte(rk))
	if len(v) < roomRecLen {
		return 0, 0, "", false
	}
	return binary.BigEndian.Uint64(v), binary.BigEndian.Uint32(v[8:]), string(v[roomRecLen:]), true
}

func roomRecordValue(version uint64, count uint32, name string) []byte {
	v := make([]byte, roomRecLen, roomRecLen+len(name))
	binary.BigEndian.PutUint64(v, version)
	binary.BigEndian.PutUint32(v[8:], count)
	return append(v, name...)
}

// roomFloor returns the highest version a deleted room reached.
func roomFloor(tx *bolt.Tx) uint64 {
	if v := tx.Bucket(bucketMeta).Get(metaRoomFloor); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// countRooms counts the rooms key is in, leaving out the room uncounted.
func countRooms(tx *bolt.Tx, key wire.Key, uncounted string) int {
	n := 0
	c := tx.Bucket(bucketKeyRoom).Cursor()
	for k, _ := c.Seek(key[:]); k != nil && bytes.HasPrefix(k, key[:]); k, _ = c.Next() {
		if string(k[len(key):]) != uncounted {
			n++
		}
	}
	return n
}

// memberKey is the roommember key of key in the room rk.
func memberKey(rk string, key wire.Key) []byte {
	k := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(rk)+wire.KeyLen), uint64(len(rk)))
	k = append(k, rk...)
	return append(k, key[:]...)
}

// splitMemberKey reverses memberKey.
func splitMemberKey(k []byte) (rk []byte, key wire.Key, ok bool) {
	n, w := binary.Uvarint(k)
	if w <= 0 || uint64(len(k)-w) != n+wire.KeyLen {
		return nil, key, false
	}
	rk = k[w : w+int(n)]
	copy(key[:], k[w+int(n):])
	return rk, key, true
}
