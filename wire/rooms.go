package wire

import (
	"errors"
	"fmt"
	"strings"
)

// Rooms (sealed messages, inside a Sealed datagram).
//
// A room is a named set of members, kept durably by the rendezvous; its
// messages never pass through the rendezvous in the clear: a sender sends
// each member its own copy over that member's session (or seals it into
// the member's mailbox). The rendezvous keeps who is a member, answers
// RoomJoin, RoomPart, RoomList and RoomMembers, and tells the room's
// online members of each change (RoomEvent). Every room has a version,
// bumped on every change of its member set: a RoomEvent carries the new
// version, so a node that sees a gap (a lost event) asks for the members
// again.

// Room limits.
const (
	// MaxRoomLen is the most characters (runes) of a room name after '#'.
	MaxRoomLen = MaxNameLen
	// RoomPageMax bounds the entries of one RoomMembersReply or
	// RoomListReply; the rendezvous packs fewer when they would not fit
	// MaxPeersBody.
	RoomPageMax = 32
)

// Room message types (inside Sealed only).
const (
	TypeRoomJoin         Type = 0x1F // N→R: make me a member
	TypeRoomPart         Type = 0x20 // N→R: I leave the room
	TypeRoomReply        Type = 0x21 // R→N: outcome of a join or part
	TypeRoomList         Type = 0x22 // N→R: the rooms I am in
	TypeRoomListReply    Type = 0x23 // R→N: one page of them
	TypeRoomMembers      Type = 0x24 // N→R: a page of a room's members, online or not
	TypeRoomMembersReply Type = 0x25 // R→N: the page
	TypeRoomEvent        Type = 0x26 // R→N: a member joined or left a room of mine
)

func init() {
	parsers[TypeRoomJoin] = func(b []byte) (Message, error) { m, err := parseRoomReq(b); return (*RoomJoin)(m), err }
	parsers[TypeRoomPart] = func(b []byte) (Message, error) { m, err := parseRoomReq(b); return (*RoomPart)(m), err }
	parsers[TypeRoomReply] = parseRoomReply
	parsers[TypeRoomList] = parseRoomList
	parsers[TypeRoomListReply] = parseRoomListReply
	parsers[TypeRoomMembers] = parseRoomMembers
	parsers[TypeRoomMembersReply] = parseRoomMembersReply
	parsers[TypeRoomEvent] = parseRoomEvent
}

// Room name errors, returned by ValidateRoom. Their text is shown to users.
var (
	// ErrRoomHash: a room name starts with '#'.
	ErrRoomHash = errors.New("a room name starts with '#'")
)

// ValidateRoom reports why room cannot be a room name, or nil. A room is
// '#' and 1–32 characters after it, by the rules of node names
// (ValidateName): "#dev", "#café".
func ValidateRoom(room string) error {
	if !strings.HasPrefix(room, "#") {
		return ErrRoomHash
	}
	if err := ValidateName(room[1:]); err != nil {
		return fmt.Errorf("room %w", err)
	}
	return nil
}

// IsRoom reports whether to names a room (it starts with '#') rather than
// a node.
func IsRoom(to string) bool { return strings.HasPrefix(to, "#") }

// roomReq is the body of RoomJoin and RoomPart: txid(4) room(str).
type roomReq struct {
	TxID uint32
	Room string
}

func parseRoomReq(b []byte) (*roomReq, error) {
	r := reader{b: b}
	m := &roomReq{TxID: r.u32(), Room: r.str()}
	return m, r.err
}

func (m *roomReq) appendBody(b []byte) []byte {
	b = appendU32(b, m.TxID)
	return appendStr(b, m.Room)
}

// RoomJoin makes the node a member of Room, creating the room if no one is
// in it (sealed). Answered with RoomReply. Body: txid(4) room(str).
type RoomJoin roomReq

func (*RoomJoin) Type() Type                   { return TypeRoomJoin }
func (m *RoomJoin) AppendBody(b []byte) []byte { return (*roomReq)(m).appendBody(b) }

// RoomPart takes the node out of Room (sealed). Answered with RoomReply.
// Body: txid(4) room(str).
type RoomPart roomReq

func (*RoomPart) Type() Type                   { return TypeRoomPart }
func (m *RoomPart) AppendBody(b []byte) []byte { return (*roomReq)(m).appendBody(b) }

// RoomStatus is the outcome of a RoomJoin or RoomPart.
type RoomStatus uint8

// Room outcomes.
const (
	RoomOK        RoomStatus = 0 // done (joining a room one is in, too)
	RoomFull      RoomStatus = 1 // the room has as many members as the rendezvous allows (Limit)
	RoomTooMany   RoomStatus = 2 // the node is in as many rooms as the rendezvous allows (Limit)
	RoomNotMember RoomStatus = 3 // a part of a room the node is not in
	RoomBadName   RoomStatus = 4 // not a valid room name, or one too like another's
	RoomBusy      RoomStatus = 5 // too many requests: try again shortly
	RoomFailed    RoomStatus = 6 // the rendezvous could not record it (its store failed)
)

func (s RoomStatus) String() string {
	switch s {
	case RoomOK:
		return "ok"
	case RoomFull:
		return "full"
	case RoomTooMany:
		return "too_many"
	case RoomNotMember:
		return "not_member"
	case RoomBadName:
		return "bad_name"
	case RoomBusy:
		return "busy"
	case RoomFailed:
		return "failed"
	}
	return fmt.Sprintf("room_status(%d)", uint8(s))
}

// RoomReply answers RoomJoin or RoomPart (sealed): the outcome, and the
// room as it is now: its name as first written, its version, how many
// members it has and how many are online. Limit is the limit refused
// against (RoomFull: members per room; RoomTooMany: rooms per node), else
// 0.
// Body: txid(4) status(1) room(str) version(8) members(4) online(4) limit(4).
type RoomReply struct {
	TxID    uint32
	Status  RoomStatus
	Room    string
	Version uint64
	Members uint32
	Online  uint32
	Limit   uint32
}

func (*RoomReply) Type() Type { return TypeRoomReply }
func (m *RoomReply) AppendBody(b []byte) []byte {
	b = appendU32(b, m.TxID)
	b = append(b, byte(m.Status))
	b = appendStr(b, m.Room)
	b = appendU64(b, m.Version)
	b = appendU32(b, m.Members)
	b = appendU32(b, m.Online)
	return appendU32(b, m.Limit)
}
func parseRoomReply(b []byte) (Message, error) {
	r := reader{b: b}
	m := &RoomReply{TxID: r.u32(), Status: RoomStatus(r.u8()), Room: r.str(), Version: r.u64(), Members: r.u32(), Online: r.u32(), Limit: r.u32()}
	return m, r.err
}

// RoomList asks for the rooms the node is in whose name (NameKey) sorts
// after After (sealed). Body: txid(4) after(str).
type RoomList struct {
	TxID  uint32
	After string // "": from the start
}

func (*RoomList) Type() Type { return TypeRoomList }
func (m *RoomList) AppendBody(b []byte) []byte {
	b = appendU32(b, m.TxID)
	return appendStr(b, m.After)
}
func parseRoomList(b []byte) (Message, error) {
	r := reader{b: b}
	m := &RoomList{TxID: r.u32(), After: r.str()}
	return m, r.err
}

// RoomInfo is one room of a RoomListReply.
type RoomInfo struct {
	Room    string
	Version uint64
	Members uint32
	Online  uint32
}

// RoomListReply is one page of the node's rooms, sorted by NameKey (sealed).
// More says that rooms sort after the last one here.
// Body: txid(4) more(1) count(1) {room(str) version(8) members(4) online(4)}*count.
type RoomListReply struct {
	TxID  uint32
	More  bool
	Rooms []RoomInfo
}

func (*RoomListReply) Type() Type { return TypeRoomListReply }
func (m *RoomListReply) AppendBody(b []byte) []byte {
	b = appendU32(b, m.TxID)
	b = appendBool(b, m.More)
	n := min(len(m.Rooms), 255)
	b = append(b, byte(n))
	for _, ri := range m.Rooms[:n] {
		b = appendStr(b, ri.Room)
		b = appendU64(b, ri.Version)
		b = appendU32(b, ri.Members)
		b = appendU32(b, ri.Online)
	}
	return b
}
func parseRoomListReply(b []byte) (Message, error) {
	r := reader{b: b}
	m := &RoomListReply{TxID: r.u32(), More: r.bool()}
	n := int(r.u8())
	for i := 0; i < n && r.err == nil; i++ {
		m.Rooms = append(m.Rooms, RoomInfo{Room: r.str(), Version: r.u64(), Members: r.u32(), Online: r.u32()})
	}
	if r.err != nil {
		return nil, r.err
	}
	return m, nil
}

// RoomMembers asks for a page of a room's members, online or not, whose
// name (NameKey) sorts after After (sealed). Only a member may ask.
// Body: txid(4) room(str) after(str).
type RoomMembers struct {
	TxID  uint32
	Room  string
	After string
}

func (*RoomMembers) Type() Type { return TypeRoomMembers }
func (m *RoomMembers) AppendBody(b []byte) []byte {
	b = appendU32(b, m.TxID)
	b = appendStr(b, m.Room)
	return appendStr(b, m.After)
}
func parseRoomMembers(b []byte) (Message, error) {
	r := reader{b: b}
	m := &RoomMembers{TxID: r.u32(), Room: r.str(), After: r.str()}
	return m, r.err
}

// RoomMember is one member in a RoomMembersReply.
type RoomMember struct {
	Key    Key
	Name   string
	Online bool
}

// RoomMembersReply is one page of a room's members, sorted by NameKey,
// as of the room's Version (sealed). Total counts every member. A
// RoomMembers from a node not in the room is answered with an Error
// (CodeNotMember).
// Body: txid(4) room(str) version(8) total(4) more(1) count(1)
// {key(32) online(1) name(str)}*count.
type RoomMembersReply struct {
	TxID    uint32
	Room    string
	Version uint64
	Total   uint32
	More    bool
	Members []RoomMember
}

func (*RoomMembersReply) Type() Type { return TypeRoomMembersReply }
func (m *RoomMembersReply) AppendBody(b []byte) []byte {
	b = appendU32(b, m.TxID)
	b = appendStr(b, m.Room)
	b = appendU64(b, m.Version)
	b = appendU32(b, m.Total)
	b = appendBool(b, m.More)
	n := min(len(m.Members), 255)
	b = append(b, byte(n))
	for _, p := range m.Members[:n] {
		b = append(b, p.Key[:]...)
		b = appendBool(b, p.Online)
		b = appendStr(b, p.Name)
	}
	return b
}
func parseRoomMembersReply(b []byte) (Message, error) {
	r := reader{b: b}
	m := &RoomMembersReply{TxID: r.u32(), Room: r.str(), Version: r.u64(), Total: r.u32(), More: r.bool()}
	n := int(r.u8())
	for i := 0; i < n && r.err == nil; i++ {
		m.Members = append(m.Members, RoomMember{Key: r.key(), Online: r.bool(), Name: r.str()})
	}
	if r.err != nil {
		return nil, r.err
	}
	return m, nil
}

// RoomEventKind says what a RoomEvent reports.
type RoomEventKind uint8

// Room event kinds.
const (
	RoomJoined RoomEventKind = 1 // Key joined the room
	RoomLeft   RoomEventKind = 2 // Key left the room (Reason)
)

// RoomLeaveReason says why a member left a room.
type RoomLeaveReason uint8

// Why members leave rooms.
const (
	RoomLeftPart    RoomLeaveReason = 0 // it parted
	RoomLeftExpired RoomLeaveReason = 1 // it was away (unregistered) longer than the mailbox keeps messages
)

// RoomEvent tells a room's online members that its member set changed
// (sealed). Version is the room's version after the change: a node that
// knew version Version-1 is up to date, one that knew less missed an
// event and asks for the members again. It is sent once, unacknowledged;
// Seq numbers the RoomEvents sent to this node in its registration (from
// 1), and every HeartbeatAck carries the last one sent (RoomSeq), so a
// node learns within a heartbeat that it missed one, and asks for its
// rooms again.
// Body: seq(4) room(str) version(8) kind(1) reason(1) key(32) name(str).
type RoomEvent struct {
	Seq     uint32
	Room    string
	Version uint64
	Kind    RoomEventKind
	Reason  RoomLeaveReason
	Key     Key
	Name    string
}

func (*RoomEvent) Type() Type { return TypeRoomEvent }
func (m *RoomEvent) AppendBody(b []byte) []byte {
	b = appendU32(b, m.Seq)
	b = appendStr(b, m.Room)
	b = appendU64(b, m.Version)
	b = append(b, byte(m.Kind), byte(m.Reason))
	b = append(b, m.Key[:]...)
	return appendStr(b, m.Name)
}
func parseRoomEvent(b []byte) (Message, error) {
	r := reader{b: b}
	m := &RoomEvent{Seq: r.u32(), Room: r.str(), Version: r.u64(), Kind: RoomEventKind(r.u8()), Reason: RoomLeaveReason(r.u8()), Key: r.key(), Name: r.str()}
	if r.err != nil {
		return nil, r.err
	}
	if m.Kind != RoomJoined && m.Kind != RoomLeft {
		return nil, fmt.Errorf("%w: room event kind %d", ErrMalformed, m.Kind)
	}
	return m, nil
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// bool reads a flag byte: 0 or 1; anything else is malformed.
func (r *reader) bool() bool {
	switch v := r.u8(); v {
	case 0:
		return false
	case 1:
		return true
	default:
		if r.err == nil {
			r.err = fmt.Errorf("%w: flag byte %d", ErrMalformed, v)
		}
		return false
	}
}
