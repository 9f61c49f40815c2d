// Package api is the one interface between a natchat node and its front
// ends (the headless JSON-lines interface, the line UI, the full-screen UI)
// and tests: the events a node reports, the commands it takes, and the bus
// that carries events to subscribers.
//
// Events are defined here once. The headless interface writes each as one
// JSON object per line (docs/HEADLESS.md is the contract); package headless
// decodes them; the line UI renders them for people.
//
// A node publishes events on a Bus; each front end Subscribes and reads
// them with Sub.Next. Publishing never blocks the network: events that only
// describe state (presence, paths) are dropped for a subscriber that has
// fallen far behind, and an EventsDropped event takes their place. Messages
// are never dropped: a message is shown by a front end before its sender is
// told it was delivered (see Bus.PublishMessage), so a stalled front end
// delays receipts, never heartbeats or the relay.
package api

import "time"

// Event is something the node tells its user. Every event has a Header;
// the concrete types below are the only events.
type Event interface {
	// EventType is the event's "type" in the headless interface.
	EventType() string
	header() *Header
}

// Header is the part every event has.
type Header struct {
	Type string    `json:"type"`
	TS   time.Time `json:"ts"`
}

func (h *Header) header() *Header { return h }

// Stamp sets e's Type from its EventType and, when TS is zero, its time to
// now (in UTC). It returns e.
func Stamp(e Event, now time.Time) Event {
	h := e.header()
	h.Type = e.EventType()
	if h.TS.IsZero() {
		h.TS = now.UTC()
	}
	return e
}

// HeaderOf returns e's header.
func HeaderOf(e Event) Header { return *e.header() }

// Event types, the "type" field of each event.
const (
	TypeRegistered    = "registered"
	TypePeerJoined    = "peer_joined"
	TypePeerLeft      = "peer_left"
	TypePeers         = "peers"
	TypeSent          = "sent"
	TypeDelivered     = "delivered"
	TypeMessage       = "message"
	TypePath          = "path"
	TypeError         = "error"
	TypeFingerprint   = "fingerprint"
	TypeTrusted       = "trusted"
	TypeEventsDropped = "events_dropped"
	TypeHelp          = "help"
	TypeMembers       = "members"
	TypeStored        = "stored"
	TypeExpired       = "expired"
	TypeMailbox       = "mailbox"
	TypeDeregistered  = "deregistered"
	TypeRoomJoined    = "room_joined"
	TypeRoomLeft      = "room_left"
	TypeRooms         = "rooms"
	TypeFileOffer     = "file_offer"
	TypeFileProgress  = "file_progress"
	TypeFileDone      = "file_done"
	TypeFileFailed    = "file_failed"
)

// ViaMailbox is Message.Via for a message that came from our mailbox on
// the rendezvous (sent while we were offline).
const ViaMailbox = "mailbox"

// Message kinds, in the kind field of message and sent events (and
// Send.Kind). Plain text is the empty kind, which the headless interface
// leaves out.
const (
	KindText  = ""      // plain text
	KindEmote = "emote" // an action (/me waves), shown as "* NAME waves"
)

// Paths, in the path field of path, message and peers events.
const (
	PathDirect = "direct" // hole punched, peer to peer
	PathRelay  = "relay"  // through the rendezvous
	PathNone   = "none"   // no path: no traffic yet, or the peer left
)

// Reasons, in the reason field of peer_left.
const (
	ReasonQuit    = "quit"    // the peer said goodbye
	ReasonTimeout = "timeout" // the peer went silent past the rendezvous's expiry
	ReasonPart    = "part"    // the peer is online but no longer shares a room with us (one of us parted)
)

// Error codes, in the code field of error events. The fatal ones are
// followed by the node exiting with status 1.
const (
	CodeBadCommand            = "bad_command"            // unknown command or wrong arguments
	CodeBadName               = "bad_name"               // a name breaks the naming rules (fatal at registration)
	CodeBadText               = "bad_text"               // message text empty, blank, not UTF-8 or too long
	CodeNoTarget              = "no_target"              // plain text but no one to send it to
	CodeUnknownPeer           = "unknown_peer"           // no one has registered that name
	CodePeerOffline           = "peer_offline"           // the name is registered but not online
	CodeUndelivered           = "undelivered"            // no receipt within the delivery timeout
	CodeRendezvousUnreachable = "rendezvous_unreachable" // no answer from the rendezvous; it keeps trying
	CodeKeyChanged            = "key_changed"            // a peer's key differs from the one pinned for its name
	CodeRendezvousKeyChanged  = "rendezvous_key_changed" // the rendezvous offers another key than the one pinned; not registering
	CodeNameTaken             = "name_taken"             // the name is bound to another key (fatal)
	CodeKeyInUse              = "key_in_use"             // the key is bound to another name (fatal)
	CodeBadSignature          = "bad_signature"          // the rendezvous rejected our signature (fatal)
	CodeVersionMismatch       = "version_mismatch"       // the rendezvous speaks another version (fatal)
	CodeState                 = "state"                  // the node's state store failed
	CodeNotMember             = "not_member"             // /who ROOM for a room we are not in
	CodeQuota                 = "quota"                  // the rendezvous takes no more new names from our network this hour; the node asks every minute
	CodeMailboxFull           = "mailbox_full"           // the recipient's mailbox (or our share of it) is full, or our quota of messages waiting in all mailboxes is used up
	CodeTooOld                = "too_old"                // a message older than the mailbox's age limit cannot be deposited
	CodeMalformed             = "malformed"              // the rendezvous could not parse our registration (fatal)
	CodeRoomFull              = "room_full"              // the room has as many members as the rendezvous allows (or more than a message may go to)
	CodeTooManyRooms          = "too_many_rooms"         // we are in as many rooms as the rendezvous allows
	CodeRateLimited           = "rate_limited"           // too many messages to a room in a short time (or too many requests): wait a moment
	CodeNoFile                = "no_file"                // /send of a path that is missing, not a regular file or unreadable
	CodeTooBig                = "too_big"                // /send of a file larger than the node sends
)

// Reasons, at the start of the reason field of file_failed; details may
// follow after a colon ("disk: write ...: no space left on device"). Text
// after the colon may come from the peer: escape it before display.
const (
	FileRejected     = "rejected"            // the receiver said no (/reject), or did not answer in time
	FileCancelled    = "cancelled"           // /cancel on this side, or "cancelled by the peer"
	FileTooBig       = "too big"             // larger than the receiver takes
	FileBadName      = "bad name"            // a name the receiver will not save under
	FileBusy         = "busy"                // the receiver has too many transfers from us at once
	FileDisk         = "disk"                // the receiver cannot store it (disk full, ...): its .part stays
	FilePeerOffline  = "peer offline"        // no stream to the peer when the offer was made
	FileVerifyFailed = "verification failed" // blocks kept failing their hashes, or the whole file its SHA-256
	FileBroken       = "stream broken"       // the stream broke and no retry got through for too long
	FileChanged      = "file changed"        // the file being sent changed or vanished
	FileVersion      = "unsupported version" // the receiver's natchat verifies files another way: one of the two must be updated
)

// Reasons, in the reason field of room_left.
const (
	RoomReasonPart    = "part"    // the member parted (/part)
	RoomReasonExpired = "expired" // the member was away (unregistered) longer than the mailbox keeps messages
)

// Registered: the rendezvous accepted us. Public is our address as it saw
// it ("ip:port").
type Registered struct {
	Header
	Name   string `json:"name"`
	Public string `json:"public"`
}

// PeerJoined: a peer shares a room with us now (or is online again).
type PeerJoined struct {
	Header
	Name string `json:"name"`
}

// PeerLeft: a peer left; Reason is ReasonQuit or ReasonTimeout, or
// ReasonPart when it is only out of our sight.
type PeerLeft struct {
	Header
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// PeerInfo is one row of Peers.
type PeerInfo struct {
	Name   string  `json:"name"`
	Path   string  `json:"path"`   // PathDirect, PathRelay or PathNone
	RTTMS  float64 `json:"rtt_ms"` // smoothed round trip; 0 when unknown
	Online bool    `json:"online"` // false for peers outside our rooms
}

// Peers answers /who: everyone online who shares a room with us, and
// everyone we have a session with.
type Peers struct {
	Header
	Peers []PeerInfo `json:"peers"`
}

// Member is one row of Members.
type Member struct {
	Name string `json:"name"`
}

// Members answers /who ROOM: one page of the room's members online (we
// included), sorted by name, and Total, how many are online in the room.
// Next, when not empty, asks for the next page: /who ROOM NEXT.
type Members struct {
	Header
	Room    string   `json:"room"`
	Total   int      `json:"total"`
	Members []Member `json:"members"`
	Next    string   `json:"next,omitempty"`
}

// RoomJoined: Name joined Room. For our own join (Name is ours: the answer
// to /join), Total and Online say how many members the room has now and
// how many of them are online.
type RoomJoined struct {
	Header
	Room   string `json:"room"`
	Name   string `json:"name"`
	Total  int    `json:"total,omitempty"`
	Online int    `json:"online,omitempty"`
}

// RoomLeft: Name left Room; Reason is RoomReasonPart or RoomReasonExpired.
type RoomLeft struct {
	Header
	Room   string `json:"room"`
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// RoomInfo is one row of Rooms.
type RoomInfo struct {
	Room    string `json:"room"`
	Members int    `json:"members"`
	Online  int    `json:"online"`
}

// Rooms answers /rooms: the rooms we are in, sorted by name, with how many
// members each has and how many are online.
type Rooms struct {
	Header
	Rooms []RoomInfo `json:"rooms"`
}

// Sent: a message was accepted for sending and is stored in the outbox.
// Exactly one Delivered, Stored or Error with the same ID and To follows
// in the same run of the node; after Stored, Delivered or Expired follows,
// in this run or a later one. Resumed marks a message accepted by an
// earlier run that had no outcome when that run ended: it is being sent
// again (or, if it was stored, waits for its receipt: Stored follows at
// once).
type Sent struct {
	Header
	ID      string `json:"id"`
	To      string `json:"to"`
	Text    string `json:"text"`
	Kind    string `json:"kind,omitempty"` // KindText (left out) or KindEmote
	Room    string `json:"room,omitempty"` // for a room message: the room (To is the room too)
	Resumed bool   `json:"resumed,omitempty"`
}

// Delivered: the peer has shown the message (end-to-end receipt; for a
// stored message, the rendezvous's receipt that the peer took it). For a
// room message (Room set, To the room) the members' receipts are folded:
// Members is "n/N", n of the N other members have it; the first Delivered
// comes once every member's copy has an outcome (delivered, stored in its
// mailbox, or failed), another each time a stored copy is taken later.
type Delivered struct {
	Header
	ID      string `json:"id"`
	To      string `json:"to"`
	Room    string `json:"room,omitempty"`
	Members string `json:"members,omitempty"`
}

// Stored: the peer was offline (or unreachable), and the message is
// durably in its mailbox on the rendezvous. Delivered follows when the
// peer took it, or Expired.
//
// For a room message, Stored, Expired and Error name one member's copy:
// To is the member, Room the room, ID the room message's.
type Stored struct {
	Header
	ID   string `json:"id"`
	To   string `json:"to"`
	Room string `json:"room,omitempty"`
}

// Expired: a stored message waited past the mailbox's age limit and was
// deleted unread.
type Expired struct {
	Header
	ID   string `json:"id"`
	To   string `json:"to"`
	Room string `json:"room,omitempty"`
}

// Mailbox: after registering, Count messages wait in our mailbox (only
// when there are any); they follow as Message events with Via
// ViaMailbox, oldest first.
type Mailbox struct {
	Header
	Count int `json:"count"`
}

// Deregistered: we left the rendezvous (/dereg); messages to us go to our
// mailbox until /reg (then Registered).
type Deregistered struct {
	Header
	Name string `json:"name"`
}

// Message: a message arrived. SentTS is the sender's clock when it was
// sent. Path is how it came: PathDirect or PathRelay. Via is ViaMailbox
// for a message that waited in our mailbox, empty for one delivered live.
// Kind is KindText (empty) or KindEmote. Room is set for a message to a
// room we are in (ID is then the room message's, the same at every
// member).
type Message struct {
	Header
	ID     string    `json:"id"`
	From   string    `json:"from"`
	Text   string    `json:"text"`
	Kind   string    `json:"kind,omitempty"`
	Room   string    `json:"room,omitempty"`
	Path   string    `json:"path"`
	Via    string    `json:"via,omitempty"`
	SentTS time.Time `json:"sent_ts"`
}

// PathChanged: a peer's path changed.
type PathChanged struct {
	Header
	Peer   string  `json:"peer"`
	Path   string  `json:"path"`
	Remote string  `json:"remote"`
	RTTMS  float64 `json:"rtt_ms"`
}

// Error: something was refused or failed. ID and To are set when it is
// about a message; Peer, Fingerprint and NewFingerprint for key_changed (the
// pinned key's fingerprint and the one now offered for that name).
type Error struct {
	Header
	Code           string `json:"code"`
	Message        string `json:"message"`
	ID             string `json:"id,omitempty"`
	To             string `json:"to,omitempty"`
	Room           string `json:"room,omitempty"`
	Peer           string `json:"peer,omitempty"`
	Fingerprint    string `json:"fingerprint,omitempty"`
	NewFingerprint string `json:"new_fingerprint,omitempty"`
}

// Fingerprint answers /fingerprint: a key's human-comparable fingerprint.
// Self marks this node's own key; Pinned is whether Key is the key pinned
// for Name (false: the rendezvous offers it, but we have not met Name yet).
type Fingerprint struct {
	Header
	Name        string `json:"name"`
	Key         string `json:"key"`
	Fingerprint string `json:"fingerprint"`
	Self        bool   `json:"self,omitempty"`
	Pinned      bool   `json:"pinned,omitempty"`
}

// Trusted answers /trust: Name is now pinned to the key with this
// fingerprint.
type Trusted struct {
	Header
	Name        string `json:"name"`
	Fingerprint string `json:"fingerprint"`
}

// FileOffer: a file is offered. At the receiver From is the sender: the
// offer waits for /accept ID or /reject ID (a sender on the accept list
// is accepted at once; an offer not answered in time is rejected). At the
// sender To is the recipient: the offer is going out, and ID is what
// /cancel takes. Name is the file's base name (the receiver saves under a
// numbered form of it if it is taken), Size its bytes, SHA256 its SHA-256
// in hex. file_progress events follow, then file_done or file_failed. A
// transfer resumed by a restarted receiver has no new file_offer there.
type FileOffer struct {
	Header
	ID     string `json:"id"`
	From   string `json:"from,omitempty"`
	To     string `json:"to,omitempty"`
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// FileProgress: Bytes of Total have been sent (at the sender) or received
// (at the receiver), at RateBPS bytes a second, with ETAS seconds to go (0
// when unknown). Path is the peer's path (PathDirect or PathRelay, empty
// when unknown). At most four a second per transfer; Bytes may go back
// after a stream broke and the transfer resumed from the last verified
// block.
type FileProgress struct {
	Header
	ID      string `json:"id"`
	Bytes   int64  `json:"bytes"`
	Total   int64  `json:"total"`
	RateBPS int64  `json:"rate_bps"`
	ETAS    int64  `json:"eta_s"`
	Path    string `json:"path"`
}

// FileDone: the transfer is complete and verified. At the receiver Path is
// where the file was saved; at the sender the local path that was sent
// (after the receiver confirmed it). SHA256 is the file's, in hex.
type FileDone struct {
	Header
	ID     string `json:"id"`
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
}

// FileFailed: the transfer ended without the file. Reason starts with one
// of the File* reasons (FileRejected, FileCancelled, ...).
type FileFailed struct {
	Header
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// EventsDropped: the front end fell behind and Count state events
// (peer_joined, peer_left, path, file_progress) were dropped in its place;
// /who tells the current state. Messages and outcomes are never dropped.
type EventsDropped struct {
	Header
	Count int `json:"count"`
}

// CommandHelp is one row of Help.
type CommandHelp struct {
	Usage   string `json:"usage"`
	Summary string `json:"summary"`
}

// Help answers /help: the commands, from the one command grammar.
type Help struct {
	Header
	Commands []CommandHelp `json:"commands"`
}

// EventType implementations.

func (*Registered) EventType() string    { return TypeRegistered }
func (*PeerJoined) EventType() string    { return TypePeerJoined }
func (*PeerLeft) EventType() string      { return TypePeerLeft }
func (*Peers) EventType() string         { return TypePeers }
func (*Sent) EventType() string          { return TypeSent }
func (*Delivered) EventType() string     { return TypeDelivered }
func (*Message) EventType() string       { return TypeMessage }
func (*PathChanged) EventType() string   { return TypePath }
func (*Error) EventType() string         { return TypeError }
func (*Fingerprint) EventType() string   { return TypeFingerprint }
func (*Trusted) EventType() string       { return TypeTrusted }
func (*EventsDropped) EventType() string { return TypeEventsDropped }
func (*Help) EventType() string          { return TypeHelp }
func (*Members) EventType() string       { return TypeMembers }
func (*Stored) EventType() string        { return TypeStored }
func (*Expired) EventType() string       { return TypeExpired }
func (*Mailbox) EventType() string       { return TypeMailbox }
func (*Deregistered) EventType() string  { return TypeDeregistered }
func (*RoomJoined) EventType() string    { return TypeRoomJoined }
func (*RoomLeft) EventType() string      { return TypeRoomLeft }
func (*Rooms) EventType() string         { return TypeRooms }
func (*FileOffer) EventType() string     { return TypeFileOffer }
func (*FileProgress) EventType() string  { return TypeFileProgress }
func (*FileDone) EventType() string      { return TypeFileDone }
func (*FileFailed) EventType() string    { return TypeFileFailed }

// droppable reports whether e only describes state that /who can tell
// again, so that a subscriber far behind may lose it.
func droppable(e Event) bool {
	switch e.(type) {
	case *PeerJoined, *PeerLeft, *PathChanged, *FileProgress:
		return true
	}
	return false
}

// RTTMS rounds d to tenths of a millisecond, as events carry round trips.
func RTTMS(d time.Duration) float64 { return float64(d.Microseconds()/100) / 10 }
