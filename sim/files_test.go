package sim

import (
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"natchat/internal/vnetlab"
	"natchat/node/api"
	"natchat/relay"
	"natchat/rendezvous"
)

// TestFileAcrossPathChanges: a file starts on the relay (the direct path
// black-holed from the first packet), goes on over the direct path once
// the network heals and ICE finds it, and back over the relay when the
// direct path is cut again, on the one QUIC stream: the receiver accepts
// it once, its progress never goes back (nothing is sent again from an
// earlier offset), and the file verifies. The relay is slowed (256 KiB/s
// a node) so that the transfer outlasts the path changes.
func TestFileAcrossPathChanges(t *testing.T) {
	bubble(t, func(t *testing.T) {
		dl := t.TempDir()
		p := newPairWith(t, vnetlab.Pair{A: vnetlab.PortRestricted, B: vnetlab.PortRestricted}, vnetlab.Impairment{Delay: 20 * time.Millisecond}, 300,
			func(o *rendezvous.Options) { o.Relay = relay.Limits{BytesPerSec: 256 << 10, PacketsPerSec: -1} },
			func(c *NodeConfig) {
				if c.Name == "bob" {
					c.Downloads, c.AcceptFrom = dl, []string{"alice"}
				}
			})
		a, b := p.a, p.b
		cutDirect := func() {
			p.w.Cut(func(src, dst *net.UDPAddr, _ []byte) bool {
				return src.IP.String() != rvIP && dst.IP.String() != rvIP
			})
		}
		cutDirect()

		const size = 24 << 20
		data := make([]byte, size)
		r := rand.NewChaCha8([32]byte{7})
		r.Read(data)
		path := filepath.Join(t.TempDir(), "trip.bin")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)

		markB := len(b.Events())
		a.Do(api.SendFile{To: "bob", Path: path})
		offer, _ := b.Wait(markB, 60*time.Second, "file_offer", func(e api.Event) bool { _, ok := e.(*api.FileOffer); return ok })
		id := offer.(*api.FileOffer).ID
		progress := func(atLeast int64) func(api.Event) bool {
			return func(e api.Event) bool {
				fp, ok := e.(*api.FileProgress)
				return ok && fp.ID == id && fp.Bytes >= atLeast
			}
		}
		if pc := lastPath(a, b); pc != nil && pc.Path == api.PathDirect {
			t.Fatalf("direct before the heal: %+v", pc)
		}
		b.Wait(markB, 120*time.Second, "10% on the relay", progress(size/10))

		// Heal: the direct path comes back under the transfer.
		markA := len(a.Events())
		p.w.Cut(nil)
		waitPath(a, b, markA, api.PathDirect, 60*time.Second)
		t.Logf("direct under the transfer")
		_, at := b.Wait(markB, 60*time.Second, "progress on the direct path", progress(0))
		// Cut again: back to the relay, the transfer still on its stream.
		markA = len(a.Events())
		cutDirect()
		waitPath(a, b, markA, api.PathRelay, 30*time.Second)
		t.Logf("back on the relay")

		done, _ := b.Wait(at, 240*time.Second, "file_done", func(e api.Event) bool {
			switch e := e.(type) {
			case *api.FileDone:
				return e.ID == id
			case *api.FileFailed:
				return e.ID == id
			}
			return false
		})
		d, ok := done.(*api.FileDone)
		if !ok {
			t.Fatalf("bob: %+v", done)
		}
		got, err := os.ReadFile(d.Path)
		if err != nil || sha256.Sum256(got) != sum || d.SHA256 != hex.EncodeToString(sum[:]) {
			t.Fatalf("saved file: %v, sha256 %x, event %+v", err, sha256.Sum256(got), d)
		}
		var last int64
		paths := map[string]int{}
		offers := 0
		for _, e := range b.Events()[markB:] {
			switch e := e.(type) {
			case *api.FileOffer:
				offers++
			case *api.FileProgress:
				if e.ID != id {
					continue
				}
				if e.Bytes < last {
					t.Errorf("progress went back from %d to %d: the transfer restarted", last, e.Bytes)
				}
				last = e.Bytes
				paths[e.Path]++
			}
		}
		if offers != 1 {
			t.Errorf("bob saw %d offers, want 1", offers)
		}
		t.Logf("progress reports by path: %v", paths)
	})
}
