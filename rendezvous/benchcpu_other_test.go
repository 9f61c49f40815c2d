//go:build !unix

package rendezvous_test

import "time"

// benchCPUOK: benchCPU does not measure here (no getrusage): the
// benchmarks report no CPU figures.
const benchCPUOK = false

func benchCPU() time.Duration { return 0 }
