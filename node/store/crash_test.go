package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"natchat/wire"
)

// The crash test runs this test binary again as a child (TestMain sees
// crashDirEnv) that works on a store until the parent SIGKILLs it.
const (
	crashDirEnv      = "NATCHAT_STORE_CRASH_DIR"
	crashFirstEnv    = "NATCHAT_STORE_CRASH_FIRST"    // first message number
	crashIntervalEnv = "NATCHAT_STORE_CRASH_INTERVAL" // Options.FlushInterval
	crashLimitEnv    = "NATCHAT_STORE_CRASH_LIMIT"    // Options.journalLimit
	crashLifetime    = 30 * time.Second               // the child's own deadline
)

var crashPeer = key(7)

// crashChild opens the store in dir and, until killed, enqueues a message
// every eighth step and marks one shown every step, printing
// "E <id>" after each Enqueue and "S <id>" after each MarkShown returns.
func crashChild(dir string) {
	env := func(name string) int64 {
		n, _ := strconv.ParseInt(os.Getenv(name), 10, 64)
		return n
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	s, err := Open(dir, self, Options{
		FlushInterval: time.Duration(env(crashIntervalEnv)),
		journalLimit:  env(crashLimitEnv),
	})
	if err != nil {
		fail(err)
	}
	first := uint64(env(crashFirstEnv))
	end := time.Now().Add(crashLifetime)
	for i := first; time.Now().Before(end); i++ {
		id := msgID(i)
		if i%8 == 0 {
			if _, err := s.Enqueue(OutMsg{ID: id, To: "Bob", Text: "hello"}); err != nil {
				fail(err)
			}
			os.Stdout.WriteString("E " + id.String() + "\n") // one write(2)
		}
		if err := s.MarkShown(crashPeer, id); err != nil {
			fail(err)
		}
		os.Stdout.WriteString("S " + id.String() + "\n")
	}
	fail(errors.New("not killed in time"))
}

// runCrashChild runs a child on dir, SIGKILLs it once it has printed
// killAfter shown marks, and returns what it printed.
func runCrashChild(t *testing.T, dir string, first uint64, interval time.Duration, limit int64, killAfter int) (enqueued, shown []wire.MsgID) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		crashDirEnv+"="+dir,
		crashFirstEnv+"="+strconv.FormatUint(first, 10),
		crashIntervalEnv+"="+strconv.FormatInt(int64(interval), 10),
		crashLimitEnv+"="+strconv.FormatInt(limit, 10),
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Whatever happens, the child dies within the test's patience.
	watchdog := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
	defer watchdog.Stop()

	sc := bufio.NewScanner(out)
	killed := false
	for sc.Scan() {
		kind, hexID, ok := strings.Cut(sc.Text(), " ")
		id, err := wire.ParseMsgID(hexID)
		if !ok || err != nil {
			t.Fatalf("child printed %q", sc.Text())
		}
		switch kind {
		case "E":
			enqueued = append(enqueued, id)
		case "S":
			shown = append(shown, id)
		default:
			t.Fatalf("child printed %q", sc.Text())
		}
		if !killed && len(shown) >= killAfter {
			// Keep reading: what the child printed before it died counts.
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !killed || !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child: %v (killed by us: %v)\n%s", err, killed, stderr.String())
	}
	return enqueued, shown
}

// TestCrash kills a child working on a store with SIGKILL, twice on the
// same directory, and checks that every mark it printed is Shown and every
// Enqueue that returned is in the outbox, numbered without gaps.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child processes")
	}
	t.Parallel()
	for _, tc := range []struct {
		name      string
		interval  time.Duration
		limit     int64
		killAfter []int // one child per entry
	}{
		{"marks only in the journal", time.Hour, 0, []int{300, 500}},
		{"default interval", 0, 0, []int{800, 1200}},
		{"rotating journal", time.Millisecond, 8 * recordLen, []int{600, 900}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var enqueued, shown []wire.MsgID
			first := uint64(0)
			for _, n := range tc.killAfter {
				e, s := runCrashChild(t, dir, first, tc.interval, tc.limit, n)
				t.Logf("child from %d: %d enqueued, %d shown before SIGKILL", first, len(e), len(s))
				enqueued, shown = append(enqueued, e...), append(shown, s...)
				first += 1 << 20
			}

			var log syncBuffer
			s, err := Open(dir, self, Options{Logger: zerolog.New(&log)})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for _, id := range shown {
				if !s.Shown(crashPeer, id) {
					t.Fatalf("mark %s printed by the child is not Shown", id)
				}
			}
			box, err := s.Outbox()
			if err != nil {
				t.Fatal(err)
			}
			in := map[wire.MsgID]bool{}
			for i, m := range box {
				in[m.ID] = true
				if m.Seq != uint64(i+1) {
					t.Fatalf("outbox[%d] %s has Seq %d", i, m.ID, m.Seq)
				}
			}
			for _, id := range enqueued {
				if !in[id] {
					t.Fatalf("message %s enqueued by the child is not in the outbox", id)
				}
			}
			if len(box) > len(enqueued)+len(tc.killAfter) {
				t.Errorf("outbox has %d messages, the children enqueued %d", len(box), len(enqueued))
			}
			if log.String() != "" {
				t.Logf("log: %s", log.String())
			}
		})
	}
}
