//go:build unix

package rendezvous_test

import (
	"syscall"
	"time"
)

// benchCPUOK: benchCPU measures.
const benchCPUOK = true

// benchCPU returns the CPU time (user and system) the process has used.
func benchCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
