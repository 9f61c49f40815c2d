package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestFiles: with the binaries, alice sends bob a random 50 MiB file; bob
// accepts it, and it is saved in his downloads folder, verified, bit for
// bit. Sent again, it is saved under a numbered name. A rejected offer and
// an offer cancelled by its sender end in file_failed. A file whose name
// breaks a rule the receiver enforces is not offered: every such name a
// Linux file can have (a drive prefix, a backslash, a leading or trailing
// dot or space, a device name, control and bidi characters). The others
// cannot leave a node at all, since /send offers a file's base name: over
// 255 bytes, ".", "..", "/x"; the receiver's own refusal of every rule,
// from a hostile sender writing the offer on a raw stream, is tested in
// node/transfer (TestHostileNames).
func TestFiles(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{})
	dl := t.TempDir()
	alice := startNode(t, "alice", rv.addr, nodeOptions{})
	bob := startNode(t, "bob", rv.addr, nodeOptions{extra: []string{"-downloads", dl}})
	alice.waitRegistered(t)
	bob.waitRegistered(t)

	src := t.TempDir()
	path := filepath.Join(src, "big file.bin")
	sum := randomFile(t, path, 50<<20)

	send := func(path string) (offer, sent *event) {
		t.Helper()
		am, bm := alice.mark(), bob.mark()
		alice.command(t, "/send bob "+path)
		sent, _ = alice.waitEventFrom(t, am, waitLong, "file_offer sent", func(e *event) bool { return e.Type == "file_offer" || e.Type == "file_failed" })
		if sent.Type != "file_offer" || sent.To != "bob" {
			t.Fatalf("alice's /send: %v", sent)
		}
		offer, _ = bob.waitEventFrom(t, bm, waitLong, "file_offer", func(e *event) bool { return e.Type == "file_offer" && e.ID == sent.ID })
		return offer, sent
	}

	// Offered, accepted, saved, verified.
	offer, sent := send(path)
	if offer.From != "alice" || offer.Name != "big file.bin" || offer.Size != 50<<20 || offer.SHA256 != sum {
		t.Fatalf("bob's offer: %v (want sha256 %s)", offer, sum)
	}
	am, bm := alice.mark(), bob.mark()
	bob.command(t, "/accept "+offer.ID)
	done, _ := bob.waitEventFrom(t, bm, waitLong, "file_done", func(e *event) bool {
		return (e.Type == "file_done" || e.Type == "file_failed") && e.ID == offer.ID
	})
	if done.Type != "file_done" || done.SHA256 != sum || done.Path != filepath.Join(dl, "big file.bin") {
		t.Fatalf("bob: %v", done)
	}
	if got := fileSum(t, done.Path); got != sum {
		t.Fatalf("saved file's sha256 %s, want %s", got, sum)
	}
	alice.waitEventFrom(t, am, waitLong, "alice's file_done", func(e *event) bool { return e.Type == "file_done" && e.ID == sent.ID })
	if p := bob.events(bm, func(e *event) bool { return e.Type == "file_progress" && e.ID == offer.ID }); len(p) == 0 {
		t.Errorf("bob: no file_progress")
	}

	// Again: a numbered name, the first untouched.
	offer, _ = send(path)
	bm = bob.mark()
	bob.command(t, "/accept "+offer.ID)
	done, _ = bob.waitEventFrom(t, bm, waitLong, "file_done", func(e *event) bool {
		return (e.Type == "file_done" || e.Type == "file_failed") && e.ID == offer.ID
	})
	if done.Type != "file_done" || done.Path != filepath.Join(dl, "big file (1).bin") || fileSum(t, done.Path) != sum {
		t.Fatalf("second copy: %v", done)
	}

	// Rejected.
	small := filepath.Join(src, "note.txt")
	randomFile(t, small, 1000)
	offer, sent = send(small)
	am = alice.mark()
	bob.command(t, "/reject "+offer.ID)
	alice.waitEventFrom(t, am, waitLong, "file_failed", func(e *event) bool { return e.Type == "file_failed" && e.ID == sent.ID })

	// Cancelled by its sender before bob answered.
	offer, sent = send(small)
	bm = bob.mark()
	alice.command(t, "/cancel "+sent.ID)
	bob.waitEventFrom(t, bm, waitLong, "file_failed", func(e *event) bool { return e.Type == "file_failed" && e.ID == offer.ID })

	// Hostile names never reach bob's screen.
	for _, name := range []string{
		"CON.txt", "lpt1", "a\x1b[2Jb.txt", "bell\a.txt", "cr\rlf.txt",
		"evil\u202Etxt.exe", "zero\u200bwidth.txt", // bidi override, zero-width space
		"C:evil.txt", `a\b.txt`, ".hidden", "trailing.", " lead.txt",
	} {
		p := filepath.Join(src, name)
		randomFile(t, p, 10)
		am, bm := alice.mark(), bob.mark()
		alice.command(t, "/send bob "+p)
		// The sender checks the name as the receiver would, and offers
		// nothing.
		f, _ := alice.waitEventFrom(t, am, waitLong, "error", isType("error"))
		if f.Code != "bad_name" {
			t.Errorf("%q: %v", name, f)
		}
		if o := bob.events(bm, isType("file_offer")); len(o) > 0 {
			t.Errorf("%q was shown to bob: %v", name, o)
		}
	}
	entries, _ := os.ReadDir(dl)
	if len(entries) != 2 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("downloads hold %q, want the two copies only", names)
	}
}

// randomFile writes n random bytes to path and returns their SHA-256, hex.
func randomFile(t *testing.T, path string, n int64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, n); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// fileSum returns the SHA-256 of the file at path, hex.
func fileSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestFileResumesAfterReceiverKill: bob is killed (SIGKILL) 40 % into a
// 200 MiB transfer and started again with the same identity, state and
// downloads folder: the transfer resumes from at least 35 % without a new
// offer or /accept, and the saved file verifies.
func TestFileResumesAfterReceiverKill(t *testing.T) {
	t.Parallel()
	const size = 200 << 20
	rv := startRendezvous(t, rvOptions{})
	dl := t.TempDir()
	bobID := newIdentity(t)
	bobOpts := func(label string) nodeOptions {
		o := bobID.options(label)
		o.extra = []string{"-downloads", dl, "-accept-from", "alice"}
		return o
	}
	alice := startNode(t, "alice", rv.addr, nodeOptions{})
	bob := startNode(t, "bob", rv.addr, bobOpts("bob#1"))
	alice.waitRegistered(t)
	bob.waitRegistered(t)
	path := filepath.Join(t.TempDir(), "video.bin")
	sum := randomFile(t, path, size)

	alice.command(t, "/send bob "+path)
	offer := bob.waitEvent(t, waitLong, "file_offer", isType("file_offer"))
	p := bob.waitEvent(t, waitLong, "40 %", func(e *event) bool {
		return e.Type == "file_progress" && e.ID == offer.ID && e.Bytes >= size*40/100
	})
	bob.kill(t)
	t.Logf("bob killed at %d%%", p.Bytes*100/size)

	bob = startNode(t, "bob", rv.addr, bobOpts("bob#2"))
	first := bob.waitEvent(t, 2*waitLong, "progress after the restart", func(e *event) bool {
		return e.Type == "file_progress" && e.ID == offer.ID
	})
	// The first report after the resume counts from the verified offset
	// the transfer resumed at, plus what arrived since (at most one
	// report's worth: they come 4 a second).
	t.Logf("resumed: first report at %d%%", first.Bytes*100/size)
	if first.Bytes < size*35/100 {
		t.Errorf("resumed at %d of %d bytes (%d%%), want ≥ 35%%", first.Bytes, size, first.Bytes*100/size)
	}
	done := bob.waitEvent(t, 2*waitLong, "file_done", func(e *event) bool {
		return (e.Type == "file_done" || e.Type == "file_failed") && e.ID == offer.ID
	})
	if done.Type != "file_done" || done.SHA256 != sum || fileSum(t, done.Path) != sum {
		t.Fatalf("after the restart: %v", done)
	}
	if o := bob.events(0, isType("file_offer")); len(o) > 0 {
		t.Errorf("bob was offered the file again: %v", o)
	}
	alice.waitEvent(t, waitLong, "alice's file_done", func(e *event) bool { return e.Type == "file_done" && e.ID == offer.ID })
}

// TestFileResumesAfterSenderKill: alice is killed (SIGKILL) 40 % into a
// 200 MiB transfer and started again with the same identity and state:
// she offers the same file again (the same ID), bob resumes from what he
// verified, and the saved file verifies.
func TestFileResumesAfterSenderKill(t *testing.T) {
	t.Parallel()
	const size = 200 << 20
	rv := startRendezvous(t, rvOptions{})
	dl := t.TempDir()
	aliceID := newIdentity(t)
	alice := startNode(t, "alice", rv.addr, aliceID.options("alice#1"))
	bob := startNode(t, "bob", rv.addr, nodeOptions{extra: []string{"-downloads", dl, "-accept-from", "alice"}})
	alice.waitRegistered(t)
	bob.waitRegistered(t)
	path := filepath.Join(t.TempDir(), "backup.tar")
	sum := randomFile(t, path, size)

	alice.command(t, "/send bob "+path)
	offer := bob.waitEvent(t, waitLong, "file_offer", isType("file_offer"))
	bob.waitEvent(t, waitLong, "40 %", func(e *event) bool {
		return e.Type == "file_progress" && e.ID == offer.ID && e.Bytes >= size*40/100
	})
	alice.kill(t)
	bm := bob.mark()
	alice = startNode(t, "alice", rv.addr, aliceID.options("alice#2"))
	again := alice.waitEvent(t, 2*waitLong, "the offer again", isType("file_offer"))
	if again.ID != offer.ID || again.To != "bob" {
		t.Fatalf("the restarted alice offered %v, want %s again", again, offer.ID)
	}
	first, _ := bob.waitEventFrom(t, bm, 2*waitLong, "progress after the restart", func(e *event) bool {
		return e.Type == "file_progress" && e.ID == offer.ID
	})
	t.Logf("resumed: first report at %d%%", first.Bytes*100/size)
	if first.Bytes < size*35/100 {
		t.Errorf("resumed at %d of %d bytes, want ≥ 35%%", first.Bytes, size)
	}
	done, _ := bob.waitEventFrom(t, bm, 2*waitLong, "file_done", func(e *event) bool {
		return (e.Type == "file_done" || e.Type == "file_failed") && e.ID == offer.ID
	})
	if done.Type != "file_done" || fileSum(t, done.Path) != sum {
		t.Fatalf("after alice's restart: %v", done)
	}
	alice.waitEvent(t, waitLong, "alice's file_done", func(e *event) bool { return e.Type == "file_done" && e.ID == offer.ID })
}

// TestFileCancelMidTransfer: a transfer under way is cancelled by the
// receiver, then another by the sender: each side ends with file_failed
// (the other's saying "cancelled by the peer"), and bob's downloads
// folder holds neither a file nor a partial one.
func TestFileCancelMidTransfer(t *testing.T) {
	t.Parallel()
	const size = 200 << 20
	rv := startRendezvous(t, rvOptions{})
	dl := t.TempDir()
	alice := startNode(t, "alice", rv.addr, nodeOptions{})
	bob := startNode(t, "bob", rv.addr, nodeOptions{extra: []string{"-downloads", dl, "-accept-from", "alice"}})
	alice.waitRegistered(t)
	bob.waitRegistered(t)
	path := filepath.Join(t.TempDir(), "video.bin")
	randomFile(t, path, size)

	for _, canceller := range []string{"bob", "alice"} {
		am, bm := alice.mark(), bob.mark()
		alice.command(t, "/send bob "+path)
		offer, _ := bob.waitEventFrom(t, bm, waitLong, "file_offer", isType("file_offer"))
		p, _ := bob.waitEventFrom(t, bm, waitLong, "progress", func(e *event) bool {
			return e.Type == "file_progress" && e.ID == offer.ID && e.Bytes > 0
		})
		if p.Bytes >= size {
			t.Fatalf("%s: the transfer ended before it could be cancelled", canceller)
		}
		self, peer := bob, alice
		if canceller == "alice" {
			self, peer = alice, bob
		}
		self.command(t, "/cancel "+offer.ID)
		failed := func(n *node, mark int, want string) {
			t.Helper()
			f, _ := n.waitEventFrom(t, mark, waitLong, "file_failed", func(e *event) bool {
				return (e.Type == "file_failed" || e.Type == "file_done") && e.ID == offer.ID
			})
			if f.Type != "file_failed" || f.Reason != want {
				t.Errorf("%s cancelled: the other side got %v, want file_failed %q", canceller, f, want)
			}
		}
		selfMark, peerMark := am, bm
		if canceller == "bob" {
			selfMark, peerMark = bm, am
		}
		failed(self, selfMark, "cancelled")
		failed(peer, peerMark, "cancelled by the peer")
		if d := bob.events(bm, isType("file_done")); len(d) > 0 {
			t.Errorf("%s cancelled, yet bob has file_done: %v", canceller, d)
		}
		// The partial file goes once the receiving stream has let go of
		// it, which may be just after file_failed.
		deadline := time.Now().Add(waitLong)
		for {
			entries, _ := os.ReadDir(dl)
			if len(entries) == 0 {
				break
			}
			if time.Now().After(deadline) {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Fatalf("%s cancelled: downloads still hold %q", canceller, names)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
