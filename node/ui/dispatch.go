package ui

import (
	"sync"

	"natchat/node/api"
	"natchat/wire"
)

// Dispatcher turns input lines into commands for the node, keeping the
// current conversation that plain text (and /me) goes to: a peer or a
// room ("#dev"). It is the peer or room of the last /msg or /join, or,
// before any, the first conversation a message came in: its room for a
// room message, else its sender. Parting the current room (/part) ends
// the conversation. Safe for concurrent use (input and output run on
// different goroutines).
type Dispatcher struct {
	mu     sync.Mutex
	target string // guarded by mu
}

// Input parses line. It returns the command for the node, or an event the
// front end shows itself (help, or an error for a bad line); both nil for
// an empty line.
func (d *Dispatcher) Input(line string) (api.Command, api.Event) {
	l, err := Parse(line)
	switch {
	case err != nil:
		return nil, err
	case l.Help:
		return nil, &api.Help{Commands: Help()}
	case l.Clear:
		return nil, nil
	case l.Say != "":
		to := d.Target()
		if to == "" {
			return nil, &api.Error{Code: api.CodeNoTarget, Message: "start a conversation with /msg NAME TEXT or /join #ROOM"}
		}
		return api.Send{To: to, Text: l.Say, Kind: l.Kind}, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch c := l.Cmd.(type) {
	case api.Send:
		d.target = c.To
	case api.Join:
		d.target = c.Room
	case api.Part:
		if c.Room == "" {
			if !wire.IsRoom(d.target) {
				return nil, badCommand("usage: /part #ROOM (you are not talking in a room)")
			}
			c.Room = d.target
		}
		if wire.NameKey(c.Room) == wire.NameKey(d.target) {
			d.target = ""
		}
		return c, nil
	case api.History:
		if c.Conv == "" {
			if d.target == "" {
				return nil, &api.Error{Code: api.CodeNoTarget, Message: "no current conversation: /history N NAME"}
			}
			c.Conv = d.target
		}
		return c, nil
	}
	return l.Cmd, nil
}

// Saw tells the dispatcher about an event the front end showed: the first
// message received becomes the conversation when there is none yet (the
// message's room for a room message).
func (d *Dispatcher) Saw(e api.Event) {
	if m, ok := e.(*api.Message); ok {
		d.mu.Lock()
		if d.target == "" {
			d.target = m.From
			if m.Room != "" {
				d.target = m.Room
			}
		}
		d.mu.Unlock()
	}
}

// Target returns the current conversation: a peer's name, a room ("#dev"),
// or "" before any.
func (d *Dispatcher) Target() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.target
}

// SetTarget makes name (a peer's name, a room, or "" for none) the
// current conversation: a front end that shows one conversation at a time
// sets it to the one on screen.
func (d *Dispatcher) SetTarget(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.target = name
}
