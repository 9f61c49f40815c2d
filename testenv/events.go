package testenv

import (
	"fmt"
	"strings"
	"time"

	"natchat/headless"
)

// Event is one line a headless node wrote on stdout, as the harness saw
// it: the decoded event (headless.Event, whose package documents the
// contract) plus where and when it was read.
type Event struct {
	headless.Event

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

// ParseEvent decodes one stdout line with headless.Parse. A line that is
// not a valid event gives an event of type EventInvalid with Err set.
func ParseEvent(line string) Event {
	ev, err := headless.Parse([]byte(line))
	if err != nil {
		ev = headless.Event{Type: EventInvalid}
	}
	return Event{Event: ev, Raw: line, Err: err}
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
func Registered() Match { return OfType(headless.TypeRegistered) }

// PeerJoined matches peer_joined for name.
func PeerJoined(name string) Match {
	return Match{Desc: "peer_joined " + name, F: func(e Event) bool { return e.Type == headless.TypePeerJoined && e.Name == name }}
}

// PeerLeft matches peer_left for name with the given reason ("" for any).
func PeerLeft(name, reason string) Match {
	return Match{Desc: fmt.Sprintf("peer_left %s reason %q", name, reason), F: func(e Event) bool {
		return e.Type == headless.TypePeerLeft && e.Name == name && (reason == "" || e.Reason == reason)
	}}
}

// PathIs matches a path event for peer with the given path ("" for any).
func PathIs(peer, path string) Match {
	return Match{Desc: fmt.Sprintf("path to %s = %q", peer, path), F: func(e Event) bool {
		return e.Type == headless.TypePath && e.Peer == peer && (path == "" || e.Path == path)
	}}
}

// MessageFrom matches a message from peer with the given text ("" for any).
func MessageFrom(peer, text string) Match {
	return Match{Desc: fmt.Sprintf("message from %s %q", peer, text), F: func(e Event) bool {
		return e.Type == headless.TypeMessage && e.From == peer && (text == "" || e.Text == text)
	}}
}

// Delivered matches the delivered event of message id.
func Delivered(id string) Match {
	return Match{Desc: fmt.Sprintf("delivered id %s", id), F: func(e Event) bool {
		return e.Type == headless.TypeDelivered && e.ID == id
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
