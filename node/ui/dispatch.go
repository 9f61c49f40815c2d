package ui

import (
	"sync"

	"natchat/node/api"
)

// Dispatcher turns input lines into commands for the node, keeping the
// current conversation that plain text (and /me) goes to: the peer of the last /msg,
// or, before any /msg, the first peer who wrote to us. Safe for concurrent
// use (input and output run on different goroutines).
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
	case l.Say != "":
		d.mu.Lock()
		to := d.target
		d.mu.Unlock()
		if to == "" {
			return nil, &api.Error{Code: api.CodeNoTarget, Message: "start a conversation with /msg NAME TEXT"}
		}
		return api.Send{To: to, Text: l.Say, Kind: l.Kind}, nil
	}
	if s, ok := l.Cmd.(api.Send); ok {
		d.mu.Lock()
		d.target = s.To
		d.mu.Unlock()
	}
	return l.Cmd, nil
}

// Saw tells the dispatcher about an event the front end showed: the first
// message received becomes the conversation when there is none yet.
func (d *Dispatcher) Saw(e api.Event) {
	if m, ok := e.(*api.Message); ok {
		d.mu.Lock()
		if d.target == "" {
			d.target = m.From
		}
		d.mu.Unlock()
	}
}

// Target returns the current conversation ("" before any).
func (d *Dispatcher) Target() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.target
}
