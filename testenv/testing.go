package testenv

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// RequireRoot skips the test when the process is not root, the one case
// in which lab tests may skip.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: the NAT lab needs root (network namespaces, veth, nftables)")
	}
}

// NewT creates a lab for a test: it skips when not root, fails the test
// when the lab cannot be built, logs the lab's seed, and closes the lab in
// t.Cleanup, failing the test if something could not be removed. Process
// logs go to a directory under t.TempDir() unless opts.Dir is set.
func NewT(t testing.TB, opts Options) *Lab {
	t.Helper()
	RequireRoot(t)
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	l, err := New(opts)
	if err != nil {
		t.Fatalf("new lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close lab %s: %v", l.ID, err)
		}
	})
	t.Logf("lab %s, wire seed %d", l.ID, l.Seed())
	return l
}

// goroutineStacks returns the stacks of all goroutines except the
// caller's and the os/signal loop, which never ends once signal.Notify has
// been called.
func goroutineStacks() []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 || strings.Contains(g, "os/signal.loop") || strings.TrimSpace(g) == "" {
			continue // the first is the calling goroutine
		}
		out = append(out, g)
	}
	return out
}

// GoroutineCount counts the goroutines a leak check cares about: all but
// the caller and the os/signal loop.
func GoroutineCount() int { return len(goroutineStacks()) }

// WaitGoroutines waits up to timeout for GoroutineCount to fall to base
// (taken before the code under test started any) and otherwise returns an
// error listing the goroutines left.
func WaitGoroutines(base int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		gs := goroutineStacks()
		if len(gs) <= base {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d goroutines left, want %d:\n%s", len(gs), base, strings.Join(gs, "\n\n"))
		}
		<-tick.C
	}
}
