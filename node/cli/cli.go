// Package cli puts a user interface on a node: the headless JSON-lines
// interface for scripts (docs/HEADLESS.md) or a line-based chat for people.
package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"natchat/node"
)

// Options configure Run.
type Options struct {
	Node     node.Options // OnEvent is set by Run
	Headless bool         // JSON lines instead of the line UI
	In       io.Reader    // commands, one per line
	Out      io.Writer    // events
}

// Run runs a node with the chosen interface until /quit, end of input, ctx
// or a fatal error. At end of input it first waits (up to the delivery
// timeout) for pending messages to be delivered or failed.
func Run(ctx context.Context, o Options) error {
	var mu sync.Mutex
	out := o.Out
	if o.Headless {
		enc := json.NewEncoder(out)
		enc.SetEscapeHTML(false)
		o.Node.OnEvent = func(e node.Event) {
			mu.Lock()
			defer mu.Unlock()
			enc.Encode(e)
		}
	} else {
		o.Node.OnEvent = func(e node.Event) {
			mu.Lock()
			defer mu.Unlock()
			if s := Human(e); s != "" {
				fmt.Fprintln(out, s)
			}
		}
	}
	n, err := node.New(o.Node)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	if !o.Headless {
		fmt.Fprintln(out, "natchat: /msg NAME TEXT to talk, plain text to reply, /who, /quit, /help")
	}
	lines := make(chan string)
	inErr := make(chan error, 1)
	stopped := make(chan struct{})
	defer close(stopped)
	// The reader may stay blocked on stdin after Run returns (a read
	// cannot be cancelled); it never blocks on a send once Run is done.
	go func() {
		sc := bufio.NewScanner(o.In)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-stopped:
				return
			}
		}
		inErr <- sc.Err()
	}()
	for {
		select {
		case err := <-done:
			return err
		case l := <-lines:
			if !o.Headless && strings.TrimSpace(l) == "/help" {
				mu.Lock()
				fmt.Fprint(out, help)
				mu.Unlock()
				continue
			}
			n.Command(l)
		case <-inErr:
			dctx, cancel := context.WithTimeout(ctx, o.Node.DeliveryTimeout+time.Second)
			n.Drain(dctx)
			cancel()
			n.Quit()
			return <-done
		}
	}
}

const help = `commands:
  /msg NAME TEXT   send TEXT to NAME (plain lines then go to NAME too)
  /who             who is online, and the path to each
  /quit            leave
`

// Human renders an event for the line UI; "" hides it.
func Human(e node.Event) string {
	switch e := e.(type) {
	case *node.Registered:
		return fmt.Sprintf("* registered as %s (public address %s)", e.Name, e.Public)
	case *node.PeerJoined:
		return fmt.Sprintf("* %s is online", e.Name)
	case *node.PeerLeft:
		if e.Reason == "quit" {
			return fmt.Sprintf("* %s left", e.Name)
		}
		return fmt.Sprintf("* %s went silent (%s)", e.Name, e.Reason)
	case *node.Peers:
		if len(e.Peers) == 0 {
			return "* nobody else is here"
		}
		var b strings.Builder
		b.WriteString("* peers:")
		for _, p := range e.Peers {
			fmt.Fprintf(&b, "\n    %-20s %-6s", p.Name, p.Path)
			if p.Path != "none" && p.RTTMS > 0 {
				fmt.Fprintf(&b, " %6.1f ms", p.RTTMS)
			}
			if !p.Online {
				b.WriteString("  (not in your rooms)")
			}
		}
		return b.String()
	case *node.Sent:
		return ""
	case *node.Delivered:
		return fmt.Sprintf("  ✓ delivered to %s", e.To)
	case *node.Message:
		return fmt.Sprintf("<%s> %s", e.From, e.Text)
	case *node.PathChanged:
		s := fmt.Sprintf("* path to %s: %s via %s", e.Peer, e.Path, e.Remote)
		if e.RTTMS > 0 {
			s += fmt.Sprintf(" (%.1f ms)", e.RTTMS)
		}
		return s
	case *node.Error:
		if e.To != "" {
			return fmt.Sprintf("! to %s: %s", e.To, e.Message)
		}
		return "! " + e.Message
	}
	return ""
}
