package scenario

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"natchat/headless"
	"natchat/testenv"
)

// nodeWith starts a node named after h on h, with the scenarios' default
// heartbeat and extra flags.
func (w *world) nodeWith(t *testing.T, h *testenv.Host, args ...string) *testenv.Node {
	t.Helper()
	n, err := w.lab.StartNode(h, testenv.NodeConfig{Bin: bins.Node, RV: w.rv.Addr, Heartbeat: heartbeat, Args: args})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(n.Dump())
		}
	})
	return n
}

// fileEvent matches an event of type typ about transfer id.
func fileEvent(typ, id string) testenv.Match {
	return testenv.Match{Desc: typ + " id " + id, F: func(e testenv.Event) bool { return e.Type == typ && e.ID == id }}
}

// fileEnd matches the end of transfer id: file_done or file_failed.
func fileEnd(id string) testenv.Match {
	return testenv.Any(fileEvent(headless.TypeFileDone, id), fileEvent(headless.TypeFileFailed, id))
}

// writeRandomFile writes size pseudo-random bytes (seeded) to path and
// returns their SHA-256, hex.
func writeRandomFile(t *testing.T, path string, size int64, seed uint64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	var seedb [32]byte
	seedb[0], seedb[1] = byte(seed), byte(seed>>8)
	src := rand.NewChaCha8(seedb)
	if _, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(src, size)); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// hashFile returns the size and SHA-256 (hex) of the file at path.
func hashFile(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// mib formats a byte count in MiB.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// TestFileTransferBehindNATs: two pairs, each node behind its own router,
// move a random 20 MiB file at 40 ms delay and 5 % loss. The direct pair
// (alice and bob, both port-restricted) punches through; the relayed pair
// (carol, symmetric, and dave, port-restricted) cannot and stays on the
// relay. The impairment is the pair's path, each way: every router's WAN
// delays frames by 20 ms and loses 2.53 % of them, each way, and the
// rendezvous's link is clean, so a packet from one node to the other,
// direct or through the relay, crosses two impaired WANs: 40 ms and 5 %
// loss (and the RTT is 80 ms). Each sender /sends its file to its
// receiver, which saves it in its -downloads directory: bob accepts
// alice's offer at once (-accept-from alice), dave answers /accept ID.
// Both transfers run at the same time. Each must end with file_done on
// both sides carrying the file's SHA-256, the saved file's bytes must hash
// to it, and the pair's path must be the expected one: alice and bob
// direct when the transfer ends and most of its file_progress direct,
// carol and dave never direct and every file_progress on the relay. Logs
// each transfer's time, average rate, the rate_bps the receiver reported,
// the path events and the frames the wires lost.
//
// The transport's congestion control (QUIC, CUBIC) makes loss the limit:
// about 85 KiB/s at this loss and RTT, so a transfer takes about 4
// minutes; the transfers are bounded at 6.
func TestFileTransferBehindNATs(t *testing.T) {
	t.Parallel()
	needBinaries(t)
	const (
		size = 20 << 20
		// pathDelay and pathLoss are the impairment of a path between two
		// nodes, each way; each of the two WANs on it has half the delay
		// and the loss that makes pathLoss over two hops.
		pathDelay = 40 * time.Millisecond
		pathLoss  = 5.0 // percent
		// transferWait bounds both transfers, from /send to file_done
		// on both sides.
		transferWait = 6 * time.Minute
	)
	wanLoss := 100 * (1 - math.Sqrt(1-pathLoss/100))
	impaired := testenv.Impairment{Delay: pathDelay / 2, Loss: wanLoss}
	t.Logf("every router's WAN: %v and %.2f %% loss each way; a path between two nodes: %v and %g %% loss each way",
		impaired.Delay, impaired.Loss, pathDelay, pathLoss)
	// t.TempDir's cleanup, registered here, runs after the lab's
	// (cleanups run last in, first out): the directories outlive the nodes.
	srcDir := t.TempDir()
	w := newWorld(t, 0, 0)

	type pair struct {
		label            string
		want             string // "direct" or "relay"
		sender, recv     *testenv.Node
		sNAT, rNAT       testenv.NATType
		sRouter, rRouter *testenv.Router
		downloads        string
		acceptByCmd      bool // dave answers /accept ID; bob accepts from alice at once
		file, sum        string
		sMark, rMark     int
		id               string
		sent, received   testenv.Event // the sender's file_offer, the receiver's file_done
	}
	pairs := []*pair{
		{label: "direct", want: "direct", sNAT: testenv.PortRestricted, rNAT: testenv.PortRestricted},
		{label: "relayed", want: "relay", sNAT: testenv.Symmetric, rNAT: testenv.PortRestricted, acceptByCmd: true},
	}
	names := [][2]string{{"alice", "bob"}, {"carol", "dave"}}
	for i, p := range pairs {
		sName, rName := names[i][0], names[i][1]
		if want, _ := expectedPath(p.sNAT, p.rNAT); want != p.want {
			t.Fatalf("%s to %s: the matrix expects %s, the scenario %s", p.sNAT, p.rNAT, want, p.want)
		}
		ss, err := w.lab.AddSite(fmt.Sprintf("r%d", 2*i+1), p.sNAT, false, sName)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := w.lab.AddSite(fmt.Sprintf("r%d", 2*i+2), p.rNAT, false, rName)
		if err != nil {
			t.Fatal(err)
		}
		p.sRouter, p.rRouter = ss.Router, rs.Router
		for _, r := range []*testenv.Router{p.sRouter, p.rRouter} {
			if err := r.Impair(impaired); err != nil {
				t.Fatal(err)
			}
		}
		p.downloads = t.TempDir()
		recvArgs := []string{"-downloads", p.downloads}
		if !p.acceptByCmd {
			recvArgs = append(recvArgs, "-accept-from", sName)
		}
		// Every node gets its own -downloads (else it makes one in $HOME).
		p.sender = w.nodeWith(t, ss.Hosts[0], "-downloads", t.TempDir())
		p.recv = w.nodeWith(t, rs.Hosts[0], recvArgs...)
	}
	for _, p := range pairs {
		for _, n := range []*testenv.Node{p.sender, p.recv} {
			if _, err := n.Wait(waitShort, testenv.Registered()); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := p.sender.Wait(waitShort, testenv.PeerJoined(p.recv.Name)); err != nil {
			t.Fatal(err)
		}
	}
	// A message each way opens the pair's session; the direct pair then
	// punches through before the file goes.
	for _, p := range pairs {
		converse(t, p.sender, p.recv, 1, "hello", sendWait)
	}
	for _, p := range pairs {
		if p.want == "direct" {
			waitDirectBoth(t, p.sender, p.recv, nil, waitDirect)
		}
	}

	for i, p := range pairs {
		p.file = filepath.Join(srcDir, fmt.Sprintf("%s-to-%s.bin", p.sender.Name, p.recv.Name))
		p.sum = writeRandomFile(t, p.file, size, uint64(i+1))
	}
	// Both transfers at once.
	for _, p := range pairs {
		p.sMark, p.rMark = p.sender.Mark(), p.recv.Mark()
		if err := p.sender.Command("/send " + p.recv.Name + " " + p.file); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(transferWait)
	for _, p := range pairs {
		ev, err := p.sender.WaitFrom(p.sMark, waitShort, testenv.Any(
			testenv.Match{Desc: "file_offer to " + p.recv.Name, F: func(e testenv.Event) bool {
				return e.Type == headless.TypeFileOffer && e.To == p.recv.Name
			}},
			testenv.OfType(headless.TypeError)))
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == headless.TypeError {
			t.Fatalf("%s: /send %s %s: %s", p.sender.Name, p.recv.Name, p.file, ev.Raw)
		}
		p.id, p.sent = ev.ID, ev
		if ev.Size != size || ev.SHA256 != p.sum || ev.Name != filepath.Base(p.file) {
			t.Errorf("%s: %s, want size %d, sha256 %s, name %s", p.sender.Name, ev.Raw, size, p.sum, filepath.Base(p.file))
		}
		offer, err := p.recv.WaitFrom(p.rMark, waitShort, fileEvent(headless.TypeFileOffer, p.id))
		if err != nil {
			t.Fatal(err)
		}
		if offer.From != p.sender.Name || offer.Size != size || offer.SHA256 != p.sum || offer.Name != filepath.Base(p.file) {
			t.Errorf("%s: %s, want from %s, size %d, sha256 %s, name %s", p.recv.Name, offer.Raw,
				p.sender.Name, size, p.sum, filepath.Base(p.file))
		}
		if p.acceptByCmd {
			if err := p.recv.Command("/accept " + p.id); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Both sides of both pairs: file_done (or a clear failure) by the
	// deadline.
	for _, p := range pairs {
		for _, n := range []*testenv.Node{p.recv, p.sender} {
			mark := p.sMark
			if n == p.recv {
				mark = p.rMark
			}
			ev, err := n.WaitFrom(mark, max(0, time.Until(deadline)), fileEnd(p.id))
			if err != nil {
				progress := "no file_progress"
				if last, ok := n.Last(fileEvent(headless.TypeFileProgress, p.id)); ok {
					progress = fmt.Sprintf("%s of %s through at the last file_progress, %s before the deadline, at %d B/s over %s",
						mib(last.Bytes), mib(size), deadline.Sub(last.Recv).Round(time.Second), last.RateBPS, last.Path)
				}
				t.Fatalf("%s pair, %s to %s: %s did not finish within %v of /send (%s)\n%v",
					p.label, p.sender.Name, p.recv.Name, n.Name, transferWait, progress, err)
			}
			if ev.Type == headless.TypeFileFailed {
				t.Fatalf("%s pair, %s to %s: %s: %s", p.label, p.sender.Name, p.recv.Name, n.Name, ev.Raw)
			}
			if ev.SHA256 != p.sum {
				t.Errorf("%s: %s, want sha256 %s", n.Name, ev.Raw, p.sum)
			}
			if n == p.recv {
				p.received = ev
			} else if ev.Path != p.file {
				t.Errorf("%s: %s, want path %s", n.Name, ev.Raw, p.file)
			}
		}
	}

	// The saved files.
	for _, p := range pairs {
		saved := p.received.Path
		if filepath.Dir(saved) != p.downloads || filepath.Base(saved) != filepath.Base(p.file) {
			t.Errorf("%s saved %s, want %s", p.recv.Name, saved, filepath.Join(p.downloads, filepath.Base(p.file)))
		}
		n, sum, err := hashFile(saved)
		switch {
		case err != nil:
			t.Errorf("%s: the saved file: %v", p.recv.Name, err)
		case n != size || sum != p.sum:
			t.Errorf("%s: the saved file %s has %d bytes with sha256 %s, want %d bytes with sha256 %s", p.recv.Name, saved, n, sum, size, p.sum)
		}
	}

	// Paths, rates, losses.
	for _, p := range pairs {
		took := p.received.Recv.Sub(p.sent.Recv)
		progress := map[string]int{} // the receiver's file_progress events by path
		var rates []int64
		var peak int64
		for _, ev := range p.recv.Events()[p.rMark:] {
			if ev.Type == headless.TypeFileProgress && ev.ID == p.id {
				progress[ev.Path]++
				rates = append(rates, ev.RateBPS)
				peak = max(peak, ev.RateBPS)
			}
		}
		var mean int64
		for _, r := range rates {
			mean += r
		}
		if len(rates) > 0 {
			mean /= int64(len(rates))
		}
		t.Logf("%s pair, %s (%v) to %s (%v): %s in %v, %.0f KiB/s on average; the receiver's rate_bps: mean %.0f KiB/s, peak %.0f KiB/s; file_progress by path %v",
			p.label, p.sender.Name, p.sNAT, p.recv.Name, p.rNAT, mib(size), took.Round(100*time.Millisecond),
			float64(size)/took.Seconds()/1024, float64(mean)/1024, float64(peak)/1024, progress)
		for _, q := range [][2]*testenv.Node{{p.sender, p.recv}, {p.recv, p.sender}} {
			var evs []string
			for _, ev := range q[0].Events() {
				if ev.Type == headless.TypePath && ev.Peer == q[1].Name {
					evs = append(evs, fmt.Sprintf("%s at %+.1fs (%s)", ev.Path, ev.Recv.Sub(p.sent.Recv).Seconds(), ev.Remote))
				}
			}
			t.Logf("  %s's path events for %s (time from /send): %s", q[0].Name, q[1].Name, strings.Join(evs, ", "))
		}
		for _, r := range []*testenv.Router{p.sRouter, p.rRouter} {
			up, down := r.WAN().Stats(testenv.Up), r.WAN().Stats(testenv.Down)
			t.Logf("  router %s: WAN forwarded %d up / %d down frames, lost %d / %d, overflowed %d / %d",
				r.Name, up.Forwarded, down.Forwarded, up.Lost, down.Lost, up.Overflow, down.Overflow)
		}
		// The data's direction: the sender's WAN up, the receiver's down
		// (both carry this pair's traffic only).
		su, rd := p.sRouter.WAN().Stats(testenv.Up), p.rRouter.WAN().Stats(testenv.Down)
		hop := func(s testenv.WireStats) float64 { return float64(s.Lost) / float64(max(1, s.Lost+s.Forwarded)) }
		t.Logf("  loss sender to receiver: %.2f %% (%.2f %% on %s's WAN, %.2f %% on %s's)",
			100*(1-(1-hop(su))*(1-hop(rd))), 100*hop(su), p.sender.Name, 100*hop(rd), p.recv.Name)

		obs := lastPath(p.sender, p.recv.Name) + "/" + lastPath(p.recv, p.sender.Name)
		switch p.want {
		case "direct":
			if obs != "direct/direct" {
				t.Errorf("%s pair: paths %s when the transfer ended, want direct/direct", p.label, obs)
			}
			if progress["direct"] == 0 || progress["relay"] > progress["direct"] {
				t.Errorf("%s pair: the receiver's file_progress by path %v: most should be direct", p.label, progress)
			}
		case "relay":
			for _, q := range [][2]*testenv.Node{{p.sender, p.recv}, {p.recv, p.sender}} {
				if ev, ok := seen(q[0], 0, testenv.PathIs(q[1].Name, "direct")); ok {
					t.Errorf("%s reported a direct path to %s (%s), which %v to %v rules out", q[0].Name, q[1].Name, ev.Raw, p.sNAT, p.rNAT)
				}
			}
			if obs != "relay/relay" {
				t.Errorf("%s pair: paths %s when the transfer ended, want relay/relay", p.label, obs)
			}
			if len(progress) != 1 || progress["relay"] == 0 {
				t.Errorf("%s pair: the receiver's file_progress by path %v, want all relay", p.label, progress)
			}
		}
	}
}
