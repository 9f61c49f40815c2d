//go:build !natbench

package main

import (
	"flag"

	"natchat/rendezvous"
)

// benchPreloadFlags: only binaries built with the natbench tag can put
// simulated nodes online (preload_natbench.go).
func benchPreloadFlags(*flag.FlagSet) func(*rendezvous.Server) error {
	return func(*rendezvous.Server) error { return nil }
}
