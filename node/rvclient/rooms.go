package rvclient

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"natchat/wire"
)

// Rooms (wire/rooms.go). The rendezvous keeps who is in which room; the
// client asks it to join and part rooms, for the rooms we are in and for
// a room's members, a page at a time (ask: retried, bounded to 10 s a
// request), and hands the room events it sends (a member joined or left a
// room of ours) to a RoomObserver. Everything a rendezvous answers is
// bounded here: a page counts at most wire.RoomPageMax entries, a paged
// answer at most maxRoomPages pages, and entries that break the naming
// rules, repeat, or do not sort after the page's cursor are left out.

// RoomObserver is an Observer that also wants room events. RoomEvent is
// called like the other Observer methods: in order, one at a time,
// without the client's lock; it must not block.
type RoomObserver interface {
	// RoomEvent: a member joined or left a room of ours. Only events
	// whose Room passes wire.ValidateRoom and Name wire.ValidateName, with
	// a Key not zero, are handed on. ev is the observer's to keep.
	RoomEvent(ev *wire.RoomEvent)
	// RoomsBehind: a room event was lost (a later one, or a
	// HeartbeatAck, shows a gap in their numbers): ask for our rooms
	// again (Rooms, RoomMembers).
	RoomsBehind()
}

// Room paging bounds.
const (
	// maxRoomPages bounds the pages of one pass of Rooms or RoomMembers
	// (2048 entries at wire.RoomPageMax a page).
	maxRoomPages = 64
	// maxRoomRestarts bounds how often RoomMembers starts again when the
	// room's version changes between pages.
	maxRoomRestarts = 3
)

// RoomView is a room's whole member list at one version.
type RoomView struct {
	Room    string // as the rendezvous writes it
	Version uint64
	Members []wire.RoomMember // sorted by NameKey; members with invalid names or zero keys left out
}

// JoinRoom asks the rendezvous to make us a member of room (joining a room
// we are in is RoomOK too). Refusals are in the reply's Status
// (wire.RoomFull, RoomTooMany with Limit set, RoomBadName, RoomBusy,
// RoomFailed). It fails with ErrLookupTimeout when no answer comes within
// 10 s (a rate-limited request is retried within that time), or with
// wire.ValidateRoom's error for a bad room name (sending nothing).
func (c *Client) JoinRoom(ctx context.Context, room string) (*wire.RoomReply, error) {
	return c.roomRequest(ctx, room, func(tx uint32) wire.Message { return &wire.RoomJoin{TxID: tx, Room: room} })
}

// PartRoom asks the rendezvous to take us out of room: RoomOK, or
// RoomNotMember in the reply's Status when we are not in it. Errors as
// JoinRoom's.
func (c *Client) PartRoom(ctx context.Context, room string) (*wire.RoomReply, error) {
	return c.roomRequest(ctx, room, func(tx uint32) wire.Message { return &wire.RoomPart{TxID: tx, Room: room} })
}

// roomRequest asks a RoomJoin or RoomPart (build) about room. The reply
// must be about room (the same NameKey, the rendezvous writing it as it
// was first written), but for a refusal of the name (RoomBadName), which
// may name the room it is too like.
func (c *Client) roomRequest(ctx context.Context, room string, build func(tx uint32) wire.Message) (*wire.RoomReply, error) {
	if err := validRoom(room); err != nil {
		return nil, err
	}
	r, err := ask(ctx, c, build, func(r *wire.RoomReply) bool {
		return r.Status == wire.RoomBadName || sameRoom(r.Room, room)
	})
	if err != nil {
		return nil, err
	}
	if wire.ValidateRoom(r.Room) != nil {
		r.Room = room // a RoomBadName with a name that is none
	}
	return r, nil
}

// Rooms returns every room we are in (all pages, sorted by NameKey).
// Rooms with names that break the naming rules are left out. It fails
// like JoinRoom, for any page; at most maxRoomPages pages are fetched.
func (c *Client) Rooms(ctx context.Context) ([]wire.RoomInfo, error) {
	var out []wire.RoomInfo
	after := ""
	for range maxRoomPages {
		r, err := ask(ctx, c, func(tx uint32) wire.Message { return &wire.RoomList{TxID: tx, After: after} },
			func(*wire.RoomListReply) bool { return true })
		if err != nil {
			return nil, err
		}
		page := r.Rooms[:min(len(r.Rooms), wire.RoomPageMax)]
		for _, ri := range page {
			if wire.ValidateRoom(ri.Room) == nil && wire.NameKey(after) < wire.NameKey(ri.Room) {
				out = append(out, ri)
			}
		}
		next, ok := nextCursor(after, len(page), r.More || len(r.Rooms) > len(page), func() string { return page[len(page)-1].Room })
		if !ok {
			break
		}
		after = next
	}
	return sortedByName(out, func(ri wire.RoomInfo) string { return ri.Room }), nil
}

// RoomMembers returns every member of room (all pages, online or not). If
// the room's version changes between pages it starts again (at most
// maxRoomRestarts times, then returns the last complete-looking result
// with the oldest version among its pages: so that a change it may lack
// is not taken for one it has). It fails with ErrNotMember when we are not in
// room, or like JoinRoom. At most maxRoomPages pages (2048 members) are
// fetched in a pass: the members after those are left out.
func (c *Client) RoomMembers(ctx context.Context, room string) (*RoomView, error) {
	if err := validRoom(room); err != nil {
		return nil, err
	}
	for pass := 0; ; pass++ {
		v, err := c.roomMembersPass(ctx, room, pass == maxRoomRestarts)
		if v != nil || err != nil {
			return v, err
		}
	}
}

// roomMembersPass fetches room's members from the first page. It returns
// nil (and no error) when the room's version changed between pages,
// unless final: then it goes on, and the view has the oldest version of
// its pages (the events after it are then applied, or reveal a gap).
func (c *Client) roomMembersPass(ctx context.Context, room string, final bool) (*RoomView, error) {
	var v *RoomView
	after := ""
	for range maxRoomPages {
		r, err := ask(ctx, c, func(tx uint32) wire.Message { return &wire.RoomMembers{TxID: tx, Room: room, After: after} },
			func(r *wire.RoomMembersReply) bool { return sameRoom(r.Room, room) })
		if err != nil {
			return nil, err
		}
		switch {
		case v == nil:
			v = &RoomView{Room: r.Room, Version: r.Version}
		case r.Version != v.Version && !final:
			c.log.Debug().Str("room", room).Uint64("was", v.Version).Uint64("now", r.Version).Msg("room changed while paging its members; again")
			return nil, nil
		}
		v.Version = min(v.Version, r.Version)
		page := r.Members[:min(len(r.Members), wire.RoomPageMax)]
		for _, m := range page {
			if wire.ValidateName(m.Name) == nil && !m.Key.IsZero() && wire.NameKey(after) < wire.NameKey(m.Name) {
				v.Members = append(v.Members, m)
			}
		}
		next, ok := nextCursor(after, len(page), r.More || len(r.Members) > len(page), func() string { return page[len(page)-1].Name })
		if !ok {
			break
		}
		after = next
	}
	v.Members = sortedByName(v.Members, func(m wire.RoomMember) string { return m.Name })
	return v, nil
}

// nextCursor returns the After of the page after one of n entries (the
// name of its last one, which last returns), and whether to fetch it:
// only when the rendezvous says more follow and the page moved the cursor
// on (by NameKey: a page that does not would be asked for again and
// again).
func nextCursor(after string, n int, more bool, last func() string) (string, bool) {
	if !more || n == 0 {
		return "", false
	}
	next := last()
	return next, wire.NameKey(after) < wire.NameKey(next)
}

// sortedByName sorts s by the NameKey of name, keeping one entry of each.
func sortedByName[T any](s []T, name func(T) string) []T {
	slices.SortStableFunc(s, func(a, b T) int { return strings.Compare(wire.NameKey(name(a)), wire.NameKey(name(b))) })
	return slices.CompactFunc(s, func(a, b T) bool { return wire.NameKey(name(a)) == wire.NameKey(name(b)) })
}

// sameRoom reports whether got, from the rendezvous, is a room name and
// names the room we asked about.
func sameRoom(got, asked string) bool {
	return wire.ValidateRoom(got) == nil && wire.NameKey(got) == wire.NameKey(asked)
}

func validRoom(room string) error {
	if err := wire.ValidateRoom(room); err != nil {
		return fmt.Errorf("%q: %w", room, err)
	}
	return nil
}

// onRoomEventLocked hands a room event to the RoomObserver, if the
// observer is one and the event names a room and a member properly.
func (c *Client) onRoomEventLocked(m *wire.RoomEvent) {
	ro, ok := c.opts.Observer.(RoomObserver)
	if !ok {
		return
	}
	if wire.ValidateRoom(m.Room) != nil || wire.ValidateName(m.Name) != nil || m.Key.IsZero() {
		c.log.Debug().Msg("rendezvous sent a room event with a bad room, name or key; dropped")
		return
	}
	if m.Seq > c.roomSeq+1 {
		c.roomsBehindLocked()
	}
	c.roomSeq = max(c.roomSeq, m.Seq)
	c.notifyLocked(func(Observer) { ro.RoomEvent(m) })
}

// roomsBehindLocked tells the RoomObserver that a room event was lost.
func (c *Client) roomsBehindLocked() {
	if ro, ok := c.opts.Observer.(RoomObserver); ok {
		c.log.Debug().Uint32("room_seq", c.roomSeq).Msg("a room event was lost; asking for our rooms again")
		c.notifyLocked(func(Observer) { ro.RoomsBehind() })
	}
}
