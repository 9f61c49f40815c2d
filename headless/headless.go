// Package headless decodes the events of natchat's headless interface
// (`node -headless`): one JSON object per line on stdout. It is the client
// side of the contract in docs/HEADLESS.md, which is authoritative; the
// events are defined once, in package natchat/node/api, and the node's
// headless front end encodes them. The type names and codes below are
// api's; a test checks that Event has exactly the fields the api events
// write. The package does no I/O: a caller reads lines and hands each to
// Parse.
//
// Every event has "type" and "ts" (RFC 3339 with nanoseconds, UTC). The
// other fields by type:
//
//	registered  name, public ("ip:port" as the rendezvous saw us)
//	peer_joined name
//	peer_left   name, reason ("quit", "timeout", or "part": out of sight)
//	peers       peers: [{name, path, rtt_ms, online}] (the answer to /who)
//	sent        id, to, text, kind ("emote" for /me; left out for text),
//	            room (a room message: to is the room too),
//	            resumed (true when resent after a restart)
//	delivered   id, to; room and members ("n/N") for a room message
//	stored      id, to (in the recipient's mailbox; delivered or expired
//	            follows), room (one member's copy of a room message)
//	expired     id, to (a stored message aged out unread), room
//	mailbox     count (messages waiting for us when we registered)
//	deregistered name (after /dereg)
//	message     id, from, text, kind ("emote" for /me; left out for text),
//	            room (a message to a room we are in), path ("direct" or
//	            "relay"), via ("mailbox" for a message that waited in our
//	            mailbox), sent_ts
//	path        peer, path ("direct", "relay" or "none"), remote, rtt_ms
//	error       code, message; id, to when about a message; room when
//	            about a room (or one member's copy of a room message);
//	            peer, fingerprint, new_fingerprint for key_changed
//	fingerprint name, key, fingerprint, self, pinned (the answer to /fingerprint)
//	trusted     name, fingerprint (the answer to /trust)
//	events_dropped count (state events lost while the reader was behind)
//	help        commands: [{usage, summary}] (the answer to /help)
//	members     room, total, members: [{name}], next (the answer to /who ROOM)
//	room_joined room, name; total, online for our own join (the answer to /join)
//	room_left   room, name, reason ("part" or "expired")
//	rooms       rooms: [{room, members, online}] (the answer to /rooms)
//	file_offer  id, name, size, sha256 (hex); from at the receiver (answer
//	            /accept ID or /reject ID), to at the sender (ID is what
//	            /cancel takes)
//	file_progress id, bytes, total, rate_bps (bytes a second), eta_s
//	            (0: unknown), path ("direct" or "relay")
//	file_done   id, path (where the file was saved; at the sender the
//	            path sent), sha256
//	file_failed id, reason ("rejected", "cancelled", "too big", "bad name",
//	            "busy", "disk", "peer offline", "verification failed",
//	            "stream broken" or "file changed", perhaps followed by
//	            ": " and details)
//	history     conv, entries: [{id, from, text, kind, out, state, reason,
//	            via, sent_ts}] (the answer to /history, oldest first)
//	netcheck    public (a list), mapping, detail, peers: [{name, path,
//	            remote, rtt_ms, changed}] (the answer to /netcheck)
//
// Three fields' JSON type depends on the event: "members" is a list in
// members (Event.Members) and a string in delivered
// (Event.MembersDelivered); "public" is a string in registered
// (Event.Public) and a list in netcheck (Event.PublicList); "peers" is a
// list of one shape in peers (Event.Peers) and of another in netcheck
// (Event.NetPeers), told apart by the event's type.
//
// The contract is only ever extended, so Parse ignores fields it does not
// know and accepts event types it does not know.
package headless

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"natchat/node/api"
)

// Event is one headless event: the union of every event type's fields,
// named as in docs/HEADLESS.md. Fields the type does not use are zero.
// Marshalling an Event leaves out zero fields other than type and ts.
//
// The JSON field "members" is Members or MembersDelivered, by its JSON
// type (a list, a string); Event's MarshalJSON writes the one that is
// set.
type Event struct {
	Type           string            `json:"type"`
	TS             time.Time         `json:"ts"`
	Name           string            `json:"name,omitempty"`
	Public         string            `json:"public,omitempty"`
	Reason         string            `json:"reason,omitempty"`
	Peers          []PeerInfo        `json:"peers,omitempty"`
	ID             string            `json:"id,omitempty"`
	To             string            `json:"to,omitempty"`
	From           string            `json:"from,omitempty"`
	Text           string            `json:"text,omitempty"`
	Kind           string            `json:"kind,omitempty"`
	Resumed        bool              `json:"resumed,omitempty"`
	SentTS         time.Time         `json:"sent_ts,omitzero"`
	Path           string            `json:"path,omitempty"`
	Via            string            `json:"via,omitempty"`
	Peer           string            `json:"peer,omitempty"`
	Remote         string            `json:"remote,omitempty"`
	RTTMS          float64           `json:"rtt_ms,omitempty"`
	Code           string            `json:"code,omitempty"`
	Message        string            `json:"message,omitempty"`
	Key            string            `json:"key,omitempty"`
	Fingerprint    string            `json:"fingerprint,omitempty"`
	NewFingerprint string            `json:"new_fingerprint,omitempty"`
	Self           bool              `json:"self,omitempty"`
	Pinned         bool              `json:"pinned,omitempty"`
	Count          int               `json:"count,omitempty"`
	Commands       []api.CommandHelp `json:"commands,omitempty"`
	Room           string            `json:"room,omitempty"`
	Total          int               `json:"total,omitempty"`
	Next           string            `json:"next,omitempty"`
	Online         int               `json:"online,omitempty"`
	Rooms          []RoomInfo        `json:"rooms,omitempty"`
	Size           int64             `json:"size,omitempty"`
	SHA256         string            `json:"sha256,omitempty"`
	Bytes          int64             `json:"bytes,omitempty"`
	RateBPS        int64             `json:"rate_bps,omitempty"`
	ETAS           int64             `json:"eta_s,omitempty"`
	Conv           string            `json:"conv,omitempty"`
	Entries        []HistoryEntry    `json:"entries,omitempty"`
	Mapping        string            `json:"mapping,omitempty"`
	Detail         string            `json:"detail,omitempty"`

	// members, by its JSON type:
	Members          []api.Member `json:"-"` // a list: the page of a members event
	MembersDelivered string       `json:"-"` // a string: "n/N", how many of a room's N other members have a room message (delivered)
	// public, by its JSON type: Public (a string, registered) or:
	PublicList []string `json:"-"` // a list: our public endpoints (netcheck)
	// peers, by the event's type: Peers (peers) or:
	NetPeers []NetPeer `json:"-"` // the rows of a netcheck event
}

// PeerInfo is one row of a peers event.
type PeerInfo = api.PeerInfo

// Member is one row of a members event: {name}.
type Member = api.Member

// RoomInfo is one row of a rooms event: {room, members, online}.
type RoomInfo = api.RoomInfo

// HistoryEntry is one entry of a history event: {id, from, text, kind,
// out, state, reason, via, sent_ts}.
type HistoryEntry = api.HistoryEntry

// NetPeer is one row of a netcheck event: {name, path, remote, rtt_ms,
// changed}.
type NetPeer = api.NetPeer

// eventFields is Event without its methods: the fields encoding/json
// handles itself.
type eventFields Event

// MarshalJSON writes e as the node does: zero fields other than type and
// ts left out, except the fields the node always writes in history
// (conv, entries) and netcheck (public, mapping, peers) events; "members"
// from whichever of Members and MembersDelivered is set (in that order),
// "public" from Public or PublicList, "peers" from Peers or NetPeers.
func (e Event) MarshalJSON() ([]byte, error) {
	var members, public, peers any
	switch {
	case len(e.Members) > 0:
		members = e.Members
	case e.MembersDelivered != "":
		members = e.MembersDelivered
	}
	switch {
	case len(e.PublicList) > 0:
		public = e.PublicList
	case e.Public != "":
		public = e.Public
	}
	switch {
	case len(e.NetPeers) > 0:
		peers = e.NetPeers
	case len(e.Peers) > 0:
		peers = e.Peers
	}
	f := eventFields(e)
	f.Public, f.Peers = "", nil // written below
	switch e.Type {
	case TypeHistory:
		entries := e.Entries
		if entries == nil {
			entries = []HistoryEntry{}
		}
		f.Conv, f.Entries = "", nil
		return json.Marshal(struct {
			eventFields
			Members any            `json:"members,omitempty"`
			Public  any            `json:"public,omitempty"`
			Peers   any            `json:"peers,omitempty"`
			Conv    string         `json:"conv"`
			Entries []HistoryEntry `json:"entries"`
		}{f, members, public, peers, e.Conv, entries})
	case TypeNetCheck:
		if public == nil {
			public = []string{}
		}
		if peers == nil {
			peers = []NetPeer{}
		}
		f.Mapping = ""
		return json.Marshal(struct {
			eventFields
			Members any    `json:"members,omitempty"`
			Public  any    `json:"public"`
			Mapping string `json:"mapping"`
			Peers   any    `json:"peers"`
		}{f, members, public, e.Mapping, peers})
	}
	return json.Marshal(struct {
		eventFields
		Members any `json:"members,omitempty"`
		Public  any `json:"public,omitempty"`
		Peers   any `json:"peers,omitempty"`
	}{f, members, public, peers})
}

// setMembers decodes the JSON value of "members" into the field for its
// JSON type. null, like a missing field, sets nothing.
func (e *Event) setMembers(raw json.RawMessage) error {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	var dst any
	switch raw[0] {
	case '[':
		dst = &e.Members
	default:
		dst = &e.MembersDelivered
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return fmt.Errorf("%w: members: %w", ErrField, err)
	}
	return nil
}

// setPublic decodes "public" into Public (a string) or PublicList (a
// list), by its JSON type.
func (e *Event) setPublic(raw json.RawMessage) error {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	var dst any = &e.Public
	if raw[0] == '[' {
		dst = &e.PublicList
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return fmt.Errorf("%w: public: %w", ErrField, err)
	}
	return nil
}

// setPeers decodes "peers" into NetPeers for a netcheck event, else into
// Peers.
func (e *Event) setPeers(raw json.RawMessage) error {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	var dst any = &e.Peers
	if e.Type == TypeNetCheck {
		dst = &e.NetPeers
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return fmt.Errorf("%w: peers: %w", ErrField, err)
	}
	return nil
}

// Event types.
const (
	TypeRegistered    = api.TypeRegistered
	TypePeerJoined    = api.TypePeerJoined
	TypePeerLeft      = api.TypePeerLeft
	TypePeers         = api.TypePeers
	TypeSent          = api.TypeSent
	TypeDelivered     = api.TypeDelivered
	TypeMessage       = api.TypeMessage
	TypePath          = api.TypePath
	TypeError         = api.TypeError
	TypeFingerprint   = api.TypeFingerprint
	TypeTrusted       = api.TypeTrusted
	TypeEventsDropped = api.TypeEventsDropped
	TypeHelp          = api.TypeHelp
	TypeMembers       = api.TypeMembers
	TypeStored        = api.TypeStored
	TypeExpired       = api.TypeExpired
	TypeMailbox       = api.TypeMailbox
	TypeDeregistered  = api.TypeDeregistered
	TypeRoomJoined    = api.TypeRoomJoined
	TypeRoomLeft      = api.TypeRoomLeft
	TypeRooms         = api.TypeRooms
	TypeFileOffer     = api.TypeFileOffer
	TypeFileProgress  = api.TypeFileProgress
	TypeFileDone      = api.TypeFileDone
	TypeFileFailed    = api.TypeFileFailed
	TypeHistory       = api.TypeHistory
	TypeNetCheck      = api.TypeNetCheck
)

// States of our own messages, in a history entry's state.
const (
	StateSending   = api.StateSending
	StateDelivered = api.StateDelivered
	StateStored    = api.StateStored
	StateFailed    = api.StateFailed
)

// NAT mapping behaviours, in a netcheck event's mapping.
const (
	MappingIndependent = api.MappingIndependent
	MappingDependent   = api.MappingDependent
	MappingUnknown     = api.MappingUnknown
)

// ViaMailbox is a message's via when it waited in our mailbox.
const ViaMailbox = api.ViaMailbox

// Message kinds, in the kind field of message and sent events. Plain text
// leaves kind out (the empty KindText); a kind a script does not know is
// to be ignored or shown as text, as the contract is only ever extended.
const (
	KindText  = api.KindText
	KindEmote = api.KindEmote
)

// Paths, in the path field of path, message and peers events.
const (
	PathDirect = api.PathDirect // hole punched, peer to peer
	PathRelay  = api.PathRelay  // through the rendezvous
	PathNone   = api.PathNone   // no path: the peer left
)

// Reasons, in the reason field of peer_left.
const (
	ReasonQuit    = api.ReasonQuit    // the peer said goodbye
	ReasonTimeout = api.ReasonTimeout // the peer went silent past the rendezvous's expiry
	ReasonPart    = api.ReasonPart    // the peer no longer shares a room with us
)

// Reasons, in the reason field of room_left.
const (
	RoomReasonPart    = api.RoomReasonPart    // the member parted (/part)
	RoomReasonExpired = api.RoomReasonExpired // the member was away longer than the mailbox keeps messages
)

// Error codes, in the code field of error events. The fatal ones are
// followed by the node exiting with status 1.
const (
	CodeBadCommand            = api.CodeBadCommand
	CodeBadName               = api.CodeBadName
	CodeBadText               = api.CodeBadText
	CodeNoTarget              = api.CodeNoTarget
	CodeUnknownPeer           = api.CodeUnknownPeer
	CodePeerOffline           = api.CodePeerOffline
	CodeUndelivered           = api.CodeUndelivered
	CodeRendezvousUnreachable = api.CodeRendezvousUnreachable
	CodeKeyChanged            = api.CodeKeyChanged
	CodeRendezvousKeyChanged  = api.CodeRendezvousKeyChanged
	CodeNameTaken             = api.CodeNameTaken
	CodeKeyInUse              = api.CodeKeyInUse
	CodeBadSignature          = api.CodeBadSignature
	CodeVersionMismatch       = api.CodeVersionMismatch
	CodeState                 = api.CodeState
	CodeNotMember             = api.CodeNotMember
	CodeQuota                 = api.CodeQuota
	CodeMailboxFull           = api.CodeMailboxFull
	CodeTooOld                = api.CodeTooOld
	CodeMalformed             = api.CodeMalformed
	CodeRoomFull              = api.CodeRoomFull
	CodeTooManyRooms          = api.CodeTooManyRooms
	CodeRateLimited           = api.CodeRateLimited
	CodeNoFile                = api.CodeNoFile
	CodeTooBig                = api.CodeTooBig
)

// Reasons, at the start of the reason field of file_failed.
const (
	FileRejected     = api.FileRejected
	FileCancelled    = api.FileCancelled
	FileTooBig       = api.FileTooBig
	FileBadName      = api.FileBadName
	FileBusy         = api.FileBusy
	FileDisk         = api.FileDisk
	FilePeerOffline  = api.FilePeerOffline
	FileVerifyFailed = api.FileVerifyFailed
	FileBroken       = api.FileBroken
	FileChanged      = api.FileChanged
)

var (
	// ErrNotObject means the line is not one JSON object.
	ErrNotObject = errors.New("headless: not a JSON object")
	// ErrNoType means "type" is missing, empty or not a string.
	ErrNoType = errors.New("headless: event has no type")
	// ErrTS means "ts" is missing or not an RFC 3339 time string.
	ErrTS = errors.New("headless: event ts is not an RFC 3339 time")
	// ErrField means a documented field has the wrong JSON type, such as
	// a number where the contract has a string.
	ErrField = errors.New("headless: event field has the wrong type")
)

// Parse decodes one line of headless output (without or with its line
// end). It fails with ErrNotObject, ErrNoType, ErrTS or ErrField (wrapped
// with the details), returning a zero Event. Fields not in the contract
// are ignored.
func Parse(line []byte) (Event, error) {
	if b := bytes.TrimLeft(line, " \t\r\n"); len(b) == 0 || b[0] != '{' {
		return Event{}, ErrNotObject
	}
	var w struct {
		eventFields
		Type    json.RawMessage `json:"type"` // shadow Event.Type and .TS
		TS      json.RawMessage `json:"ts"`
		Members json.RawMessage `json:"members"` // its JSON type says which field
		Public  json.RawMessage `json:"public"`  // its JSON type says which field
		Peers   json.RawMessage `json:"peers"`   // the event's type says which field
	}
	var fieldErr error
	if err := json.Unmarshal(line, &w); err != nil {
		var te *json.UnmarshalTypeError
		if !errors.As(err, &te) {
			return Event{}, fmt.Errorf("%w: %w", ErrNotObject, err)
		}
		fieldErr = fmt.Errorf("%w: %w", ErrField, err)
	}
	ev := Event(w.eventFields)
	if err := ev.setMembers(w.Members); err != nil && fieldErr == nil {
		fieldErr = err
	}
	if json.Unmarshal(w.Type, &ev.Type) != nil || ev.Type == "" {
		return Event{}, ErrNoType
	}
	if err := ev.setPublic(w.Public); err != nil && fieldErr == nil {
		fieldErr = err
	}
	if err := ev.setPeers(w.Peers); err != nil && fieldErr == nil {
		fieldErr = err
	}
	var ts string
	if err := json.Unmarshal(w.TS, &ts); err != nil {
		return Event{}, ErrTS
	}
	var err error
	if ev.TS, err = time.Parse(time.RFC3339Nano, ts); err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrTS, err)
	}
	if fieldErr != nil {
		return Event{}, fieldErr
	}
	return ev, nil
}
