// Package headless decodes the events of natchat's headless interface
// (`node -headless`): one JSON object per line on stdout. It is the client
// side of the contract in docs/HEADLESS.md, which is authoritative; the
// node encodes the events in package node (events.go). The package does no
// I/O: a caller reads lines and hands each to Parse.
//
// Every event has "type" and "ts" (RFC 3339 with nanoseconds, UTC). The
// other fields by type:
//
//	registered  name, public ("ip:port" as the rendezvous saw us)
//	peer_joined name
//	peer_left   name, reason ("quit" or "timeout")
//	peers       peers: [{name, path, rtt_ms, online}] (the answer to /who)
//	sent        id, to, text
//	delivered   id, to
//	message     id, from, text, path ("direct" or "relay")
//	path        peer, path ("direct", "relay" or "none"), remote, rtt_ms
//	error       code, message, and id, to when about a message
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
)

// Event is one headless event: the union of every event type's fields,
// named as in docs/HEADLESS.md. Fields the type does not use are zero.
// Marshalling an Event leaves out zero fields other than type and ts.
type Event struct {
	Type    string     `json:"type"`
	TS      time.Time  `json:"ts"`
	Name    string     `json:"name,omitempty"`
	Public  string     `json:"public,omitempty"`
	Reason  string     `json:"reason,omitempty"`
	Peers   []PeerInfo `json:"peers,omitempty"`
	ID      string     `json:"id,omitempty"`
	To      string     `json:"to,omitempty"`
	From    string     `json:"from,omitempty"`
	Text    string     `json:"text,omitempty"`
	Path    string     `json:"path,omitempty"`
	Peer    string     `json:"peer,omitempty"`
	Remote  string     `json:"remote,omitempty"`
	RTTMS   float64    `json:"rtt_ms,omitempty"`
	Code    string     `json:"code,omitempty"`
	Message string     `json:"message,omitempty"`
}

// PeerInfo is one row of a peers event.
type PeerInfo struct {
	Name   string  `json:"name"`
	Path   string  `json:"path"`   // PathDirect, PathRelay or PathNone
	RTTMS  float64 `json:"rtt_ms"` // smoothed round trip; 0 when unknown
	Online bool    `json:"online"` // false for peers outside our rooms
}

// Event types.
const (
	TypeRegistered = "registered"
	TypePeerJoined = "peer_joined"
	TypePeerLeft   = "peer_left"
	TypePeers      = "peers"
	TypeSent       = "sent"
	TypeDelivered  = "delivered"
	TypeMessage    = "message"
	TypePath       = "path"
	TypeError      = "error"
)

// Paths, in the path field of path, message and peers events.
const (
	PathDirect = "direct" // hole punched, peer to peer
	PathRelay  = "relay"  // through the rendezvous
	PathNone   = "none"   // no path: the peer left
)

// Reasons, in the reason field of peer_left.
const (
	ReasonQuit    = "quit"    // the peer said goodbye
	ReasonTimeout = "timeout" // the peer went silent past the rendezvous's expiry
)

// Error codes, in the code field of error events. The fatal ones are
// followed by the node exiting with status 1.
const (
	CodeBadCommand            = "bad_command"            // unknown command or wrong arguments
	CodeBadName               = "bad_name"               // a name breaks the naming rules (fatal at registration)
	CodeBadText               = "bad_text"               // message text empty, not UTF-8 or too long
	CodeNoTarget              = "no_target"              // plain text but no one to send it to
	CodeUnknownPeer           = "unknown_peer"           // no one has registered that name
	CodePeerOffline           = "peer_offline"           // the name is registered but not online
	CodeUndelivered           = "undelivered"            // no receipt within the delivery timeout
	CodeRendezvousUnreachable = "rendezvous_unreachable" // no answer from the rendezvous; it keeps trying
	CodeNameTaken             = "name_taken"             // the name is bound to another key (fatal)
	CodeKeyInUse              = "key_in_use"             // the key is bound to another name (fatal)
	CodeBadSignature          = "bad_signature"          // the rendezvous rejected our signature (fatal)
	CodeVersionMismatch       = "version_mismatch"       // the rendezvous speaks another version (fatal)
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
		Event
		Type json.RawMessage `json:"type"` // shadow Event.Type and .TS
		TS   json.RawMessage `json:"ts"`
	}
	var fieldErr error
	if err := json.Unmarshal(line, &w); err != nil {
		var te *json.UnmarshalTypeError
		if !errors.As(err, &te) {
			return Event{}, fmt.Errorf("%w: %w", ErrNotObject, err)
		}
		fieldErr = fmt.Errorf("%w: %w", ErrField, err)
	}
	ev := w.Event
	if json.Unmarshal(w.Type, &ev.Type) != nil || ev.Type == "" {
		return Event{}, ErrNoType
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
