package ui

import (
	"context"

	"natchat/node/api"
)

// Node is what a front end drives: a natchat node (package node) or a
// test double.
type Node interface {
	// Subscribe returns a new subscription to the node's events.
	Subscribe() *api.Sub
	// Do queues a command; it blocks while the command queue is full and
	// fails once the node has stopped.
	Do(ctx context.Context, c api.Command) error
}
