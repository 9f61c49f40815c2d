package sim

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"natchat/node"
	"natchat/rendezvous"
)

// TestPeerChurnLeavesNothing has 1,000 peers join, write to one node
// ("hub") once and leave, 25 at a time, each a node process of its own. The hub must end holding nothing
// for them (no session, conversation, receiving state, ICE agent or link
// entry), and the process's goroutines and live heap must come back to
// within 10 % of what they were before (measured after a warm-up round, so
// that first-use allocations do not count). The heap is not compared under
// the race detector; `make test` runs this test again without it.
func TestPeerChurnLeavesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: a thousand peers")
	}
	// The rendezvous runs in this process too: its clock is stepped past
	// the cookie lifetime and the name binding TTL at the end, so that what
	// it keeps for departed nodes (spent cookies, against replays, and
	// their names) does not count as the hub's.
	var skew atomic.Int64
	rv := StartRendezvous(t, listenLoopback(t), func(o *rendezvous.Options) {
		o.SourceRate = -1 // every node shares 127.0.0.1
		o.NewNames = -1   // and registers a new name
		o.Expiry = 24 * time.Hour
		o.BindingTTL = time.Hour
		o.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	})
	hub := StartNode(t, NodeConfig{Name: "hub", Conn: listenLoopback(t), RV: rv.Addr, Discard: true})
	StartNode(t, NodeConfig{Name: "watch", Conn: listenLoopback(t), RV: rv.Addr, Discard: true})
	waitStats(t, hub.Name, hub.Node, "registration", func(s node.Stats) bool { return s.Online == 1 })

	settleRV := func() {
		skew.Add(int64(2 * time.Hour))
		now := time.Now().Add(time.Duration(skew.Load()))
		rv.Srv.Sweep(now)
		if _, err := rv.Srv.ReleaseUnused(now); err != nil {
			t.Fatal(err)
		}
	}
	bin := buildNode(t)
	// A warm-up of 300 peers reaches the steady state of the churn: an ICE
	// agent outlives its session by a few seconds, so the hub holds the agents
	// (and goroutines) of the last seconds' peers, and the runtime keeps the
	// descriptors of the most goroutines it ever ran.
	const warm = 300
	churn(t, bin, rv, 0, warm) // warm-up: first-use allocations and the runtime's high-water marks
	waitEmpty(t, hub, rv)
	settleRV()
	g0 := steadyGoroutines()
	h0 := steadyHeap()

	peers := envInt("SIM_CHURN", 1000)
	start := time.Now()
	churn(t, bin, rv, warm, warm+peers)
	waitEmpty(t, hub, rv)
	settleRV()
	// Closed QUIC connections are remembered by their transport for a few
	// seconds (to answer retransmissions), and the hub forgets a departed
	// peer's tombstone after 30 s: memory comes back, not at once. Wait for
	// it, with a deadline.
	var g1 int
	var h1 uint64
	deadline := time.Now().Add(90 * time.Second)
	for {
		g1, h1 = runtime.NumGoroutine(), heapLive()
		if (float64(g1) <= 1.1*float64(g0) && (raceEnabled || float64(h1) <= 1.1*float64(h0))) || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond) // polling a measurement, with a deadline
	}
	t.Logf("%d peers in %v; goroutines %d -> %d; heap %.2f -> %.2f MiB", peers, time.Since(start).Round(time.Millisecond),
		g0, g1, float64(h0)/(1<<20), float64(h1)/(1<<20))
	if float64(g1) > 1.1*float64(g0) {
		var b strings.Builder
		pprof.Lookup("goroutine").WriteTo(&b, 1)
		t.Errorf("goroutines grew from %d to %d:\n%s", g0, g1, b.String())
	}
	switch {
	case raceEnabled:
		// make test runs this test once more without -race for the heap.
		t.Logf("heap not compared under the race detector (it allocates for itself)")
	case float64(h1) > 1.1*float64(h0):
		t.Errorf("heap grew from %.2f to %.2f MiB", float64(h0)/(1<<20), float64(h1)/(1<<20))
	}
}

// churn runs peers first..last-1, each a node process of its own (so
// that only the hub's memory, not the peers', is in this process): it
// registers, sends the hub one message, waits for its receipt (end of
// input) and leaves.
func churn(t *testing.T, bin string, rv *Rendezvous, first, last int) {
	const batch = 25
	dir := t.TempDir()
	for i := first; i < last; i += batch {
		var wg sync.WaitGroup
		errs := make(chan error, batch)
		for j := i; j < min(i+batch, last); j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := churnPeer(bin, rv.Addr, dir, j); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
}

// churnPeer is one short-lived peer: `printf '/msg hub ...' | node`.
func churnPeer(bin, rv, dir string, i int) error {
	name := fmt.Sprintf("c%04d", i)
	peerDir := filepath.Join(dir, name)
	defer os.RemoveAll(peerDir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-name", name, "-rv", rv, "-headless", "-no-direct", "-log-level", "warn",
		"-identity", filepath.Join(peerDir, "key"), "-state", filepath.Join(peerDir, "state"), "-listen", "127.0.0.1:0")
	cmd.Stdin = strings.NewReader(fmt.Sprintf("/msg hub hello from %d\n", i))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", name, err, stderr.String())
	}
	if !strings.Contains(string(out), `"type":"delivered"`) {
		return fmt.Errorf("%s: no receipt: %s", name, out)
	}
	return nil
}

// buildNode builds the node command for churn's peers.
func buildNode(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "node")
	build := exec.Command("go", "build", "-o", bin, "natchat/cmd/node")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build natchat/cmd/node: %v\n%s", err, out)
	}
	return bin
}

// steadyGoroutines returns the goroutine count once it has stopped
// changing (what just ended is gone), waiting at most 30 s.
func steadyGoroutines() int {
	deadline := time.Now().Add(30 * time.Second)
	last, same := runtime.NumGoroutine(), 0
	for same < 5 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond) // polling a measurement, with a deadline
		if g := runtime.NumGoroutine(); g == last {
			same++
		} else {
			last, same = g, 0
		}
	}
	return last
}

// steadyHeap returns the live heap once it has stopped shrinking (closed
// connections' state is kept a few seconds by quic-go), waiting at most
// 30 s.
func steadyHeap() uint64 {
	deadline := time.Now().Add(30 * time.Second)
	h := heapLive()
	for time.Now().Before(deadline) {
		time.Sleep(time.Second) // polling a measurement, with a deadline
		next := heapLive()
		if next >= h*99/100 {
			return min(h, next)
		}
		h = next
	}
	return h
}

// heapLive returns the bytes of live objects, after collecting garbage.
func heapLive() uint64 {
	heapInUse()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// waitEmpty waits until the hub holds nothing for departed peers, and its
// presence view agrees with the rendezvous. A churn peer whose Leave (two
// datagrams) was lost on a loaded loopback is online at the rendezvous
// until it expires, as the protocol says; the hub may know it as online,
// but holds nothing else for it.
func waitEmpty(t *testing.T, hub *Node, rv *Rendezvous) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var online []string
	for {
		online = rv.Srv.Online()
		s := hub.Node.Stats()
		if s.Online == len(online)-1 && s.Sessions == 0 && s.Inboxes == 0 && s.Convs == 0 && s.Directs == 0 && s.LinkPeers == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hub: no per-peer state not reached within 60 s: %+v; online at the rendezvous: %v", s, online)
		}
		time.Sleep(50 * time.Millisecond) // polling internal counters, with a deadline
	}
	if len(online) > 2 {
		t.Logf("online at the rendezvous besides hub and watch (leaves lost, they expire): %v", online)
	}
}

func waitStats(t *testing.T, name string, n *node.Node, what string, ok func(node.Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		s := n.Stats()
		if ok(s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not reached within 60 s: %+v", name, what, s)
		}
		time.Sleep(50 * time.Millisecond) // polling internal counters, with a deadline
	}
}
