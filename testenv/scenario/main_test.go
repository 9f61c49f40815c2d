package scenario

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"natchat/testenv"
)

// bins are the binaries TestMain builds; buildErr is why they are missing.
var (
	bins     testenv.Binaries
	buildErr error
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	flag.Parse()
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		_ = flag.Set("test.parallel", "6")
	}
	base := testenv.GoroutineCount()
	if os.Geteuid() == 0 {
		dir, err := os.MkdirTemp("", "natlab-bins-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "scenario:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		bins, buildErr = testenv.BuildBinaries(ctx, dir)
		cancel()
	}
	stop := testenv.CleanupOnSignal("")
	code := m.Run()
	stop()
	if err := testenv.WaitGoroutines(base, 5*time.Second); code == 0 && err != nil {
		fmt.Fprintln(os.Stderr, "scenario: goroutine leak:", err)
		code = 1
	}
	return code
}

// needBinaries skips without root and fails when the natchat binaries did
// not build.
func needBinaries(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
	if buildErr != nil {
		t.Fatalf("the natchat binaries are needed and did not build:\n%v", buildErr)
	}
	if bins.Node == "" {
		t.Fatal("the natchat binaries were not built")
	}
}
