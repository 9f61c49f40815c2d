//go:build natbench

package main

import (
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"natchat/rendezvous"
)

// benchPreloadFlags adds the -natbench-* flags of a binary built with the
// natbench tag (for cmd/natbench's registered-nodes row) and returns what
// to run on the server before Run.
func benchPreloadFlags(fs *flag.FlagSet) func(*rendezvous.Server) error {
	n := fs.Int("natbench-nodes", 0, "natbench build: put this many simulated nodes online before serving (internal/benchnode)")
	seed := fs.Uint64("natbench-seed", 1, "natbench build: the seed the simulated nodes derive from")
	sockets := fs.Int("natbench-sockets", 1, "natbench build: the simulated nodes' source addresses (127.64.0.1 up)")
	port := fs.Uint("natbench-port", 40000, "natbench build: the simulated nodes' source port")
	return func(srv *rendezvous.Server) error {
		if *n <= 0 {
			return nil
		}
		if *port == 0 || *port > 65535 {
			return fmt.Errorf("-natbench-port %d", *port)
		}
		t0 := time.Now()
		if err := rendezvous.Preload(srv, *n, *seed, *sockets, uint16(*port)); err != nil {
			return err
		}
		took := time.Since(t0)
		debug.FreeOSMemory() // the resident set of the nodes, not of the preload's garbage
		fmt.Fprintf(os.Stderr, "natbench: preloaded %d nodes in %v\n", *n, took.Round(time.Millisecond))
		return nil
	}
}
