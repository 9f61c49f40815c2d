package node

import "time"

// Event is something the node tells its user: the headless interface writes
// each as one JSON line (docs/HEADLESS.md); the line UI prints it for people.
// Every event has "type" and "ts".
type Event interface{ header() *Header }

// Header is the part every event has.
type Header struct {
	Type string    `json:"type"`
	TS   time.Time `json:"ts"`
}

func (h *Header) header() *Header { return h }

func hdr(t string) Header { return Header{Type: t, TS: time.Now().UTC()} }

// Registered: the rendezvous accepted us. Public is our address as it saw it.
type Registered struct {
	Header
	Name   string `json:"name"`
	Public string `json:"public"`
}

// PeerJoined: a peer now shares a room with us (or is online again).
type PeerJoined struct {
	Header
	Name string `json:"name"`
}

// PeerLeft: a peer left. Reason is "quit" or "timeout".
type PeerLeft struct {
	Header
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// PeerInfo is one row of Peers.
type PeerInfo struct {
	Name   string  `json:"name"`
	Path   string  `json:"path"` // "direct", "relay" or "none"
	RTTMS  float64 `json:"rtt_ms"`
	Online bool    `json:"online"`
}

// Peers answers /who: everyone online who shares a room with us, and
// everyone we have a link with.
type Peers struct {
	Header
	Peers []PeerInfo `json:"peers"`
}

// Sent: a message was accepted for sending. Exactly one Delivered or Error
// with the same ID follows.
type Sent struct {
	Header
	ID   string `json:"id"`
	To   string `json:"to"`
	Text string `json:"text"`
}

// Delivered: the peer has shown the message (end-to-end receipt).
type Delivered struct {
	Header
	ID string `json:"id"`
	To string `json:"to"`
}

// Message: a message arrived.
type Message struct {
	Header
	ID   string `json:"id"`
	From string `json:"from"`
	Text string `json:"text"`
	Path string `json:"path"`
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
// about a message.
type Error struct {
	Header
	Code    string `json:"code"`
	Message string `json:"message"`
	ID      string `json:"id,omitempty"`
	To      string `json:"to,omitempty"`
}

// Headless error codes (docs/HEADLESS.md). Refusals from the rendezvous
// use the wire.Code names (name_taken, bad_name, ...).
const (
	CodeBadCommand  = "bad_command"  // unknown command or wrong arguments
	CodeBadName     = "bad_name"     // the name breaks the naming rules
	CodeBadText     = "bad_text"     // empty or too long
	CodeUnknownPeer = "unknown_peer" // no node has that name
	CodeOffline     = "peer_offline" // the name exists but is not online
	CodeUndelivered = "undelivered"  // no receipt before the delivery timeout
	CodeNoTarget    = "no_target"    // plain text but no conversation yet
	CodeVersion     = "version_mismatch"
	CodeUnreachable = "rendezvous_unreachable" // no answer from the rendezvous
)

func rttMS(d time.Duration) float64 {
	return float64(d.Microseconds()/100) / 10
}
