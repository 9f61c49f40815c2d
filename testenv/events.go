package testenv

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Event is one JSON line a headless node writes on stdout. Fields a type
// does not use are zero. The contract:
//
//	registered  {name, public:"ip:port"}
//	peer_joined {name}
//	peer_left   {name, reason:"quit"|"timeout"}
//	peers       {peers:[{name, path:"direct"|"relay"|"none", rtt_ms, online}]}  (answer to /who)
//	sent        {id, to, text}
//	delivered   {id, to}
//	message     {id, from, text, path}
//	path        {peer, path, remote, rtt_ms}  (whenever a peer's path changes)
//	error       {code, message, and id, to when about a message}
//
// Every event has type and ts (RFC 3339 with nanoseconds). docs/HEADLESS.md
// is the authoritative description; unknown fields are ignored.
type Event struct {
	Type    string     `json:"type"`
	TS      time.Time  `json:"-"`
	Name    string     `json:"name,omitempty"`
	Public  string     `json:"public,omitempty"`
	Reason  string     `json:"reason,omitempty"`
	Peers   []PeerInfo `json:"peers,omitempty"`
	ID      Flex       `json:"id,omitempty"`
	To      string     `json:"to,omitempty"`
	From    string     `json:"from,omitempty"`
	Text    string     `json:"text,omitempty"`
	Path    string     `json:"path,omitempty"`
	Peer    string     `json:"peer,omitempty"`
	Remote  string     `json:"remote,omitempty"`
	RTTMs   float64    `json:"rtt_ms,omitempty"`
	Code    Flex       `json:"code,omitempty"`
	Message string     `json:"message,omitempty"`

	// Seq is the event's index in its node's log.
	Seq int `json:"-"`
	// Recv is when the harness read the line.
	Recv time.Time `json:"-"`
	// Raw is the line as written.
	Raw string `json:"-"`
	// Err is set for a line that is not a valid event; Type is then
	// EventInvalid.
	Err error `json:"-"`
}

// EventInvalid is the Type of a stdout line that is not a valid event.
const EventInvalid = "_invalid"

// EventExit is the Type of the synthetic last event of a node whose
// process has exited; Message holds the exit status.
const EventExit = "_exit"

// PeerInfo is one entry of a peers event.
type PeerInfo struct {
	Name   string  `json:"name"`
	Path   string  `json:"path"`
	RTTMs  float64 `json:"rtt_ms"`
	Online bool    `json:"online"`
}

// Flex is a JSON string or number kept as text, for fields such as id
// whose JSON type the contract leaves open.
type Flex string

// UnmarshalJSON accepts a string, a number or null.
func (f *Flex) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = Flex(s)
		return nil
	}
	if string(b) == "null" {
		*f = ""
		return nil
	}
	*f = Flex(b)
	return nil
}

// ParseEvent decodes one stdout line. A line that is not a JSON object
// with a type and an RFC 3339 ts gives an event of type EventInvalid.
func ParseEvent(line string) Event {
	var ev Event
	var aux struct {
		TS string `json:"ts"`
	}
	err := json.Unmarshal([]byte(line), &ev)
	if err == nil {
		err = json.Unmarshal([]byte(line), &aux)
	}
	if err == nil && ev.Type == "" {
		err = fmt.Errorf("no type")
	}
	if err == nil {
		ev.TS, err = time.Parse(time.RFC3339Nano, aux.TS)
		if err != nil {
			err = fmt.Errorf("ts: %w", err)
		}
	}
	if err != nil {
		return Event{Type: EventInvalid, Raw: line, Err: err}
	}
	ev.Raw = line
	return ev
}

func (e Event) String() string {
	if e.Raw != "" {
		return e.Raw
	}
	return fmt.Sprintf("{type:%s message:%q}", e.Type, e.Message)
}

// Match is a predicate over events with a description for error messages.
type Match struct {
	Desc string
	F    func(Event) bool
}

// OfType matches every event of type t.
func OfType(t string) Match {
	return Match{Desc: "type " + t, F: func(e Event) bool { return e.Type == t }}
}

// Registered matches the registered event.
func Registered() Match { return OfType("registered") }

// PeerJoined matches peer_joined for name.
func PeerJoined(name string) Match {
	return Match{Desc: "peer_joined " + name, F: func(e Event) bool { return e.Type == "peer_joined" && e.Name == name }}
}

// PeerLeft matches peer_left for name with the given reason ("" for any).
func PeerLeft(name, reason string) Match {
	return Match{Desc: fmt.Sprintf("peer_left %s reason %q", name, reason), F: func(e Event) bool {
		return e.Type == "peer_left" && e.Name == name && (reason == "" || e.Reason == reason)
	}}
}

// PathIs matches a path event for peer with the given path ("" for any).
func PathIs(peer, path string) Match {
	return Match{Desc: fmt.Sprintf("path to %s = %q", peer, path), F: func(e Event) bool {
		return e.Type == "path" && e.Peer == peer && (path == "" || e.Path == path)
	}}
}

// MessageFrom matches a message from peer with the given text ("" for any).
func MessageFrom(peer, text string) Match {
	return Match{Desc: fmt.Sprintf("message from %s %q", peer, text), F: func(e Event) bool {
		return e.Type == "message" && e.From == peer && (text == "" || e.Text == text)
	}}
}

// Delivered matches the delivered event of message id.
func Delivered(id Flex) Match {
	return Match{Desc: fmt.Sprintf("delivered id %s", id), F: func(e Event) bool {
		return e.Type == "delivered" && e.ID == id
	}}
}

// Any matches when any of ms does.
func Any(ms ...Match) Match {
	var d []string
	for _, m := range ms {
		d = append(d, m.Desc)
	}
	return Match{Desc: strings.Join(d, " or "), F: func(e Event) bool {
		for _, m := range ms {
			if m.F(e) {
				return true
			}
		}
		return false
	}}
}
