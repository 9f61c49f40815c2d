package files

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"natchat/wire"
)

// testFile is the content of a file to receive and its manifest.
type testFile struct {
	data []byte
	m    *Manifest
}

func newTestFile(size int, seed uint64) testFile {
	data := randomBytes(size, seed)
	return testFile{data: data, m: wantManifest(data, bs)}
}

func openPart(t *testing.T, dir string, id wire.FileID, m *Manifest) *Part {
	t.Helper()
	p, err := OpenPart(dir, id, m)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// write feeds data[from:to] to p in chunks of random sizes, stopping at
// the first error.
func write(p *Part, data []byte, from, to int64, rng *rand.Rand) error {
	for off := from; off < to; {
		n := min(to-off, 1+rng.Int64N(3*bs/2))
		k, err := p.Write(data[off : off+n])
		if err != nil {
			return err
		}
		if k != int(n) {
			return fmt.Errorf("wrote %d of %d bytes", k, n)
		}
		off += n
	}
	return nil
}

// visible lists the names in dir that do not start with a dot.
func visible(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	return names
}

func checkFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes, not the %d sent", path, len(got), len(want))
	}
}

// checkPrefix checks that the .part of p holds exactly data[:Verified].
func checkPrefix(t *testing.T, p *Part, data []byte) {
	t.Helper()
	got, err := os.ReadFile(p.path)
	if err != nil {
		t.Fatal(err)
	}
	v := p.Verified()
	if int64(len(got)) != v || !bytes.Equal(got, data[:v]) {
		t.Fatalf(".part is %d bytes, Verified %d; matches the data: %v", len(got), v, bytes.Equal(got, data[:min(int64(len(got)), int64(len(data)))]))
	}
}

func TestPartRandomChunks(t *testing.T) {
	for _, size := range []int{1, bs - 1, bs, bs + 1, 7*bs + 1000, 8 * bs} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			dir := t.TempDir()
			f := newTestFile(size, uint64(size))
			p := openPart(t, dir, wire.FileID{1}, f.m)
			if p.Verified() != 0 || p.Size() != int64(size) {
				t.Fatalf("new part: Verified %d, Size %d", p.Verified(), p.Size())
			}
			if err := write(p, f.data, 0, int64(size), rand.New(rand.NewPCG(uint64(size), 1))); err != nil {
				t.Fatal(err)
			}
			if p.Verified() != int64(size) {
				t.Fatalf("Verified = %d after all %d bytes", p.Verified(), size)
			}
			if n, err := p.Write([]byte{0}); !errors.Is(err, ErrExtraData) || n != 0 {
				t.Fatalf("a byte too many: %d, %v", n, err)
			}
			final, err := p.Finish(dir, "a.bin")
			if err != nil || final != filepath.Join(dir, "a.bin") {
				t.Fatalf("Finish = %q, %v", final, err)
			}
			checkFile(t, final, f.data)
			if ents, _ := os.ReadDir(dir); len(ents) != 1 {
				t.Fatalf("left in the directory: %v", ents)
			}
			if _, err := p.Write([]byte{0}); !errors.Is(err, fs.ErrClosed) {
				t.Fatalf("write after Finish: %v", err)
			}
			if err := p.Remove(); err != nil {
				t.Fatal(err)
			}
			checkFile(t, final, f.data) // Remove leaves the finished file alone
		})
	}
}

func TestPartEmptyFile(t *testing.T) {
	dir := t.TempDir()
	f := newTestFile(0, 0)
	p := openPart(t, dir, wire.FileID{2}, f.m)
	if n, err := p.Write(nil); n != 0 || err != nil {
		t.Fatal(n, err)
	}
	if _, err := p.Write([]byte("x")); !errors.Is(err, ErrExtraData) {
		t.Fatalf("a byte into an empty file: %v", err)
	}
	final, err := p.Finish(dir, "empty")
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, final, nil)
}

func TestPartCorruptBlock(t *testing.T) {
	for _, bad := range []int{0, 2, 4} { // 4 is the last, short block
		t.Run(fmt.Sprint(bad), func(t *testing.T) {
			dir := t.TempDir()
			f := newTestFile(4*bs+100, 5)
			p := openPart(t, dir, wire.FileID{3}, f.m)
			sent := bytes.Clone(f.data)
			sent[bad*bs+17] ^= 1
			rng := rand.New(rand.NewPCG(5, 5))
			err := write(p, sent, 0, f.m.Size, rng)
			var cbe *CorruptBlockError
			if !errors.As(err, &cbe) || cbe.Index != bad || !errors.Is(err, ErrCorruptBlock) {
				t.Fatalf("corrupt block %d: %v", bad, err)
			}
			if p.Verified() != int64(bad*bs) {
				t.Fatalf("Verified = %d, want the corrupt block's start %d", p.Verified(), bad*bs)
			}
			checkPrefix(t, p, f.data)
			// The sender resends from there, rightly this time.
			if err := write(p, f.data, p.Verified(), f.m.Size, rng); err != nil {
				t.Fatal(err)
			}
			final, err := p.Finish(dir, "a.bin")
			if err != nil {
				t.Fatal(err)
			}
			checkFile(t, final, f.data)
		})
	}
}

// TestPartCorruptBlockInOneWrite: the error comes in the middle of a
// write, which consumed up to the end of the bad block.
func TestPartCorruptBlockInOneWrite(t *testing.T) {
	f := newTestFile(3*bs, 6)
	p := openPart(t, t.TempDir(), wire.FileID{4}, f.m)
	sent := bytes.Clone(f.data)
	sent[bs] ^= 0x80
	n, err := p.Write(sent)
	if !errors.Is(err, ErrCorruptBlock) || n != 2*bs || p.Verified() != bs {
		t.Fatalf("Write = %d, %v; Verified %d", n, err, p.Verified())
	}
	checkPrefix(t, p, f.data)
	p.Close()
}

func TestPartRewind(t *testing.T) {
	dir := t.TempDir()
	f := newTestFile(3*bs+5, 7)
	p := openPart(t, dir, wire.FileID{5}, f.m)
	if _, err := p.Write(f.data[:bs+bs/2]); err != nil {
		t.Fatal(err)
	}
	// Verified lags until an fsync.
	if p.Verified() != 0 {
		t.Fatalf("Verified = %d before any fsync", p.Verified())
	}
	if err := p.Rewind(); err != nil {
		t.Fatal(err)
	}
	if p.Verified() != bs {
		t.Fatalf("Verified = %d after Rewind, want %d", p.Verified(), bs)
	}
	checkPrefix(t, p, f.data)
	if err := write(p, f.data, bs, f.m.Size, rand.New(rand.NewPCG(7, 7))); err != nil {
		t.Fatal(err)
	}
	final, err := p.Finish(dir, "r")
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, final, f.data)
}

// TestPartResume: close without Finish (or crash without Close), reopen:
// Verified is the last whole verified block, and the rest follows.
func TestPartResume(t *testing.T) {
	for _, how := range []string{"close", "crash", "crash, state lost"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			f := newTestFile(6*bs+99, 8)
			id := wire.FileID{6}
			p := openPart(t, dir, id, f.m)
			p.syncEvery = 2 * bs
			stop := int64(3*bs + bs/3)
			if err := write(p, f.data, 0, stop, rand.New(rand.NewPCG(8, 8))); err != nil {
				t.Fatal(err)
			}
			if p.Verified() != 2*bs {
				t.Fatalf("Verified = %d, want %d (the last fsync)", p.Verified(), 2*bs)
			}
			switch how {
			case "close":
				if err := p.Close(); err != nil {
					t.Fatal(err)
				}
				if err := p.Close(); err != nil {
					t.Fatal(err)
				}
			default:
				// The process dies: no Close, nothing synced after block 2,
				// but what was written is in the .part.
				p.f.Close()
				p.state.Close()
				if how == "crash, state lost" {
					os.Remove(p.statePath)
				}
			}
			p = openPart(t, dir, id, f.m)
			if p.Verified() != 3*bs {
				t.Fatalf("reopened: Verified = %d, want %d", p.Verified(), 3*bs)
			}
			checkPrefix(t, p, f.data)
			if err := write(p, f.data, p.Verified(), f.m.Size, rand.New(rand.NewPCG(9, 9))); err != nil {
				t.Fatal(err)
			}
			final, err := p.Finish(dir, "resumed.bin")
			if err != nil {
				t.Fatal(err)
			}
			checkFile(t, final, f.data)
		})
	}
}

// TestPartStateFile: the state file is a shortcut, never trusted blindly.
func TestPartStateFile(t *testing.T) {
	f := newTestFile(5*bs, 10)
	id := wire.FileID{7}
	start := func(t *testing.T) string {
		dir := t.TempDir()
		p := openPart(t, dir, id, f.m)
		if _, err := p.Write(f.data[:3*bs+1]); err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	statePath := func(dir string) string { return filepath.Join(dir, stateName(id)) }
	for _, c := range []struct {
		name  string
		spoil func(t *testing.T, dir string)
		m     *Manifest
		want  int64
	}{
		{"intact", func(*testing.T, string) {}, f.m, 3 * bs},
		{"flipped bit", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(statePath(dir))
			b[45] ^= 1
			os.WriteFile(statePath(dir), b, 0o644)
		}, f.m, 3 * bs},
		{"truncated", func(t *testing.T, dir string) { os.Truncate(statePath(dir), 30) }, f.m, 3 * bs},
		{"empty", func(t *testing.T, dir string) { os.Truncate(statePath(dir), 0) }, f.m, 3 * bs},
		{"gone", func(t *testing.T, dir string) { os.Remove(statePath(dir)) }, f.m, 3 * bs},
		{"the .part cut short", func(t *testing.T, dir string) { os.Truncate(filepath.Join(dir, partName(id)), bs+5) }, f.m, bs},
		{"the .part emptied", func(t *testing.T, dir string) { os.Truncate(filepath.Join(dir, partName(id)), 0) }, f.m, 0},
		{"the .part damaged", func(t *testing.T, dir string) {
			pf, _ := os.OpenFile(filepath.Join(dir, partName(id)), os.O_WRONLY, 0)
			pf.WriteAt([]byte("xx"), 2*bs+3)
			pf.Close()
		}, f.m, 3 * bs}, // trusted: the state says it was verified and fsync'd
		{"another manifest", func(*testing.T, string) {}, func() *Manifest {
			// Same first two blocks, a different third.
			other := bytes.Clone(f.data)
			other[2*bs+1] ^= 1
			return wantManifest(other, bs)
		}(), 2 * bs},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := start(t)
			c.spoil(t, dir)
			p := openPart(t, dir, id, c.m)
			defer p.Close()
			if p.Verified() != c.want {
				t.Fatalf("Verified = %d, want %d", p.Verified(), c.want)
			}
			if c.name != "the .part damaged" {
				checkPrefix(t, p, f.data)
			}
			// The state was written anew: a second open agrees.
			p.Close()
			p2 := openPart(t, dir, id, c.m)
			defer p2.Close()
			if p2.Verified() != c.want {
				t.Fatalf("second open: Verified = %d", p2.Verified())
			}
		})
	}
}

// errPowerCut is what every operation returns once the power is cut.
var errPowerCut = errors.New("power cut")

// powerCut cuts the power before operation number at on any of the files
// that share it.
type powerCut struct{ ops, at int }

func (c *powerCut) op() error {
	c.ops++
	if c.ops >= c.at {
		return errPowerCut
	}
	return nil
}

// crashFile is a file whose unsynced writes a power cut can lose: it
// remembers the content at the last Sync, and does nothing once the power
// is cut.
type crashFile struct {
	*os.File
	synced []byte
	cut    *powerCut
}

func newCrashFile(t *testing.T, f partFile, cut *powerCut) *crashFile {
	of := f.(*os.File)
	b, err := os.ReadFile(of.Name())
	if err != nil {
		t.Fatal(err)
	}
	return &crashFile{File: of, synced: b, cut: cut}
}

func (c *crashFile) WriteAt(b []byte, off int64) (int, error) {
	if err := c.cut.op(); err != nil {
		return 0, err
	}
	return c.File.WriteAt(b, off)
}

func (c *crashFile) Truncate(n int64) error {
	if err := c.cut.op(); err != nil {
		return err
	}
	return c.File.Truncate(n)
}

func (c *crashFile) Sync() error {
	if err := c.cut.op(); err != nil {
		return err
	}
	if err := c.File.Sync(); err != nil {
		return err
	}
	b, err := os.ReadFile(c.Name())
	c.synced = b
	return err
}

// TestPartPowerLoss cuts the power at random points of a transfer,
// between any two writes, truncates or fsyncs: each file goes back to what
// was last fsync'd (and the .part may gain junk, or keep what was
// written: a process crash), or the state file keeps its last unsynced
// write. Every reopen verifies no less than was fsync'd and nothing that
// is not the file; the transfer always completes.
func TestPartPowerLoss(t *testing.T) {
	f := newTestFile(12*bs+333, 11)
	id := wire.FileID{8}
	for seed := range uint64(16) {
		dir := t.TempDir()
		rng := rand.New(rand.NewPCG(seed, 11))
		crashes := 0
		for {
			p := openPart(t, dir, id, f.m)
			checkPrefix(t, p, f.data)
			if p.Verified() == f.m.Size {
				final, err := p.Finish(dir, "f")
				if err != nil {
					t.Fatal(err)
				}
				checkFile(t, final, f.data)
				break
			}
			p.syncEvery = int64(1+rng.IntN(3)) * bs
			cut := &powerCut{at: 1 + rng.IntN(16)}
			pf, ps := newCrashFile(t, p.f, cut), newCrashFile(t, p.state, cut)
			p.f, p.state = pf, ps
			stop := min(f.m.Size, p.Verified()+rng.Int64N(6*bs))
			if err := write(p, f.data, p.Verified(), stop, rng); err != nil && !errors.Is(err, errPowerCut) {
				t.Fatal(err)
			}
			if rng.IntN(4) == 0 {
				if err := p.Rewind(); err != nil && !errors.Is(err, errPowerCut) {
					t.Fatal(err)
				}
			}
			durable := p.Verified()
			pf.File.Close()
			ps.File.Close()
			crashes++
			mode := rng.IntN(4)
			switch mode {
			case 0: // process crash: everything written is there
			case 1: // power cut
				os.WriteFile(pf.Name(), pf.synced, 0o644)
				os.WriteFile(ps.Name(), ps.synced, 0o644)
			case 2: // power cut, the .part gains junk
				os.WriteFile(pf.Name(), append(pf.synced, randomBytes(rng.IntN(6*bs), 1000+seed)...), 0o644)
				os.WriteFile(ps.Name(), ps.synced, 0o644)
			case 3: // power cut, the state's last write survived its missing fsync
				os.WriteFile(pf.Name(), pf.synced, 0o644)
			}
			p2 := openPart(t, dir, id, f.m)
			if p2.Verified() < durable || p2.Verified() > stop {
				t.Fatalf("seed %d: fsync'd %d, wrote up to %d; reopened at %d", seed, durable, stop, p2.Verified())
			}
			checkPrefix(t, p2, f.data)
			p2.Close()
		}
		if crashes == 0 {
			t.Fatalf("seed %d: no crash", seed)
		}
	}
}

// recFile logs the operations on a file that matter for crash safety.
type recFile struct {
	partFile
	name string
	log  *[]string
}

func (r *recFile) WriteAt(b []byte, off int64) (int, error) {
	*r.log = append(*r.log, r.name+".write")
	return r.partFile.WriteAt(b, off)
}

func (r *recFile) Sync() error {
	*r.log = append(*r.log, r.name+".sync")
	return r.partFile.Sync()
}

func (r *recFile) Truncate(n int64) error {
	*r.log = append(*r.log, r.name+".truncate")
	return r.partFile.Truncate(n)
}

// TestPartCheckpointOrder: the state file is written only after an fsync
// of the .part, and Verified moves only after the state's fsync.
func TestPartCheckpointOrder(t *testing.T) {
	f := newTestFile(9*bs+1, 12)
	p := openPart(t, t.TempDir(), wire.FileID{9}, f.m)
	var log []string
	p.f = &recFile{p.f, "part", &log}
	p.state = &recFile{p.state, "state", &log}
	p.syncEvery = 2 * bs
	rng := rand.New(rand.NewPCG(12, 12))
	var verified []int64
	for off := int64(0); off < f.m.Size; {
		n := min(f.m.Size-off, 1+rng.Int64N(bs))
		if _, err := p.Write(f.data[off : off+n]); err != nil {
			t.Fatal(err)
		}
		off += n
		if v := p.Verified(); len(verified) == 0 || v != verified[len(verified)-1] {
			verified = append(verified, v)
			if v > off || (v%bs != 0 && v != f.m.Size) {
				t.Fatalf("Verified = %d with %d written", v, off)
			}
		}
	}
	if !slices.Equal(verified, []int64{0, 2 * bs, 4 * bs, 6 * bs, 8 * bs, 9*bs + 1}) {
		t.Fatalf("Verified went %v", verified)
	}
	dirty := false
	for i, op := range log {
		switch op {
		case "part.write", "part.truncate":
			dirty = true
		case "part.sync":
			dirty = false
		case "state.write":
			if dirty || i+1 >= len(log) || log[i+1] != "state.sync" {
				t.Fatalf("state written over unsynced data, or not synced: %v", log[max(0, i-3):min(len(log), i+2)])
			}
		}
	}
	if n := strings.Count(strings.Join(log, " "), "state.write"); n != 5 {
		t.Fatalf("%d checkpoints: %v", n, log)
	}
	p.Close()
}

// fullFile is a .part on a disk with room for so many bytes.
type fullFile struct {
	partFile
	room    int64
	syncErr error
}

func (f *fullFile) WriteAt(b []byte, off int64) (int, error) {
	if off+int64(len(b)) <= f.room {
		return f.partFile.WriteAt(b, off)
	}
	n, _ := f.partFile.WriteAt(b[:max(0, f.room-off)], off)
	return n, &fs.PathError{Op: "write", Path: "disk", Err: syscall.ENOSPC}
}

func (f *fullFile) Sync() error {
	if f.syncErr != nil {
		return f.syncErr
	}
	return f.partFile.Sync()
}

func TestPartDiskFull(t *testing.T) {
	for _, how := range []string{"write", "fsync"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			f := newTestFile(6*bs+3, 13)
			id := wire.FileID{10}
			p := openPart(t, dir, id, f.m)
			p.syncEvery = bs
			full := &fullFile{partFile: p.f, room: 1 << 62}
			if how == "write" {
				full.room = 2*bs + bs/2
			} else {
				full.syncErr = &fs.PathError{Op: "sync", Path: "disk", Err: syscall.ENOSPC}
			}
			p.f = full
			err := write(p, f.data, 0, f.m.Size, rand.New(rand.NewPCG(13, 13)))
			if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), partName(id)) {
				t.Fatalf("disk full: %v", err)
			}
			// It sticks, and nothing is saved.
			if _, err2 := p.Write(f.data[:1]); !errors.Is(err2, syscall.ENOSPC) {
				t.Fatalf("write after the error: %v", err2)
			}
			if _, err2 := p.Finish(dir, "full.bin"); !errors.Is(err2, syscall.ENOSPC) {
				t.Fatalf("Finish after the error: %v", err2)
			}
			if err := p.Rewind(); !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Rewind after the error: %v", err)
			}
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			if v := visible(t, dir); len(v) != 0 {
				t.Fatalf("a disk-full transfer left %v", v)
			}
			// Space is freed: resume from what was fsync'd.
			p = openPart(t, dir, id, f.m)
			// "write": blocks 0 and 1 were fsync'd, block 2 is cut off.
			// "fsync": the fsync after block 0 failed, but block 0 is in
			// the .part: re-hashed and synced now.
			want := int64(2 * bs)
			if how == "fsync" {
				want = bs
			}
			if p.Verified() != want {
				t.Fatalf("resumed at %d, want %d", p.Verified(), want)
			}
			checkPrefix(t, p, f.data)
			if err := write(p, f.data, p.Verified(), f.m.Size, rand.New(rand.NewPCG(14, 14))); err != nil {
				t.Fatal(err)
			}
			final, err := p.Finish(dir, "full.bin")
			if err != nil {
				t.Fatal(err)
			}
			checkFile(t, final, f.data)
		})
	}
}

func TestPartFinishNumbered(t *testing.T) {
	f := newTestFile(bs+1, 15)
	for _, noLink := range []bool{false, true} {
		t.Run(fmt.Sprintf("noLink=%v", noLink), func(t *testing.T) {
			dir := t.TempDir()
			for _, n := range []string{"a.txt", "a (1).txt", "README"} {
				if err := os.WriteFile(filepath.Join(dir, n), []byte("old "+n), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Mkdir(filepath.Join(dir, "a (2).txt"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("nowhere", filepath.Join(dir, "a (3).txt")); err != nil {
				t.Fatal(err)
			}
			finish := func(id byte, name string) string {
				p := openPart(t, dir, wire.FileID{id}, f.m)
				if noLink {
					p.link = func(string, string) error { return &os.LinkError{Op: "link", Err: syscall.EPERM} }
				}
				if err := write(p, f.data, 0, f.m.Size, rand.New(rand.NewPCG(15, uint64(id)))); err != nil {
					t.Fatal(err)
				}
				final, err := p.Finish(dir, name)
				if err != nil {
					t.Fatal(err)
				}
				checkFile(t, final, f.data)
				return filepath.Base(final)
			}
			if got := finish(1, "a.txt"); got != "a (4).txt" {
				t.Errorf("a.txt saved as %q", got)
			}
			if got := finish(2, "a.txt"); got != "a (5).txt" {
				t.Errorf("a.txt saved as %q", got)
			}
			if got := finish(3, "README"); got != "README (1)" {
				t.Errorf("README saved as %q", got)
			}
			long := strings.Repeat("長", 83) + ".md" // 252 bytes
			if got := finish(4, long); got != long {
				t.Errorf("long name saved as %q", got)
			}
			if got := finish(5, long); got != strings.Repeat("長", 82)+" (1).md" {
				t.Errorf("long name saved as %q", got)
			}
			for _, n := range []string{"a.txt", "a (1).txt", "README"} {
				checkFile(t, filepath.Join(dir, n), []byte("old "+n))
			}
			if target, err := os.Readlink(filepath.Join(dir, "a (3).txt")); err != nil || target != "nowhere" {
				t.Errorf("symlink: %q, %v", target, err)
			}
		})
	}
}

// TestPartConcurrentFinish: parts with the same name finishing at once
// get different names, and none is overwritten.
func TestPartConcurrentFinish(t *testing.T) {
	for _, noLink := range []bool{false, true} {
		t.Run(fmt.Sprintf("noLink=%v", noLink), func(t *testing.T) {
			dir := t.TempDir()
			const n = 8
			files := make([]testFile, n)
			parts := make([]*Part, n)
			for i := range parts {
				files[i] = newTestFile(bs+i, uint64(100+i))
				parts[i] = openPart(t, dir, wire.FileID{byte(i)}, files[i].m)
				if noLink {
					parts[i].link = func(string, string) error { return &os.LinkError{Op: "link", Err: syscall.ENOTSUP} }
				}
				if _, err := parts[i].Write(files[i].data); err != nil {
					t.Fatal(err)
				}
			}
			finals := make([]string, n)
			var wg sync.WaitGroup
			for i, p := range parts {
				wg.Go(func() {
					final, err := p.Finish(dir, "same.txt")
					if err != nil {
						t.Error(err)
					}
					finals[i] = final
				})
			}
			wg.Wait()
			want := []string{"same.txt"}
			for i := 1; i < n; i++ {
				want = append(want, fmt.Sprintf("same (%d).txt", i))
			}
			slices.Sort(want)
			if got := visible(t, dir); !slices.Equal(got, want) {
				t.Fatalf("saved as %v", got)
			}
			for i, final := range finals {
				checkFile(t, final, files[i].data)
			}
		})
	}
}

func TestPartErrors(t *testing.T) {
	dir := t.TempDir()
	f := newTestFile(2*bs, 16)

	incomplete := *f.m
	incomplete.Blocks = incomplete.Blocks[:1]
	if _, err := OpenPart(dir, wire.FileID{1}, &incomplete); !errors.Is(err, wire.ErrMalformed) {
		t.Errorf("OpenPart with a hash missing: %v", err)
	}
	if _, err := OpenPart(filepath.Join(dir, "nodir"), wire.FileID{1}, f.m); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenPart in a missing directory: %v", err)
	}

	p := openPart(t, dir, wire.FileID{1}, f.m)
	if _, err := p.Write(f.data[:bs]); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Finish(dir, "x"); !errors.Is(err, ErrIncomplete) {
		t.Errorf("Finish of half a file: %v", err)
	}
	if _, err := p.Write(f.data[bs:]); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"../x", "", ".hidden", "CON"} {
		if _, err := p.Finish(dir, bad); !errors.Is(err, ErrBadName) {
			t.Errorf("Finish as %q: %v", bad, err)
		}
	}
	if err := p.Remove(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("Remove left %v", ents)
	}
	if _, err := p.Write(f.data[:1]); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("write after Remove: %v", err)
	}

	// A manifest whose SHA-256 is not its last block's value contradicts
	// itself: refused before anything is written.
	liar := *f.m
	liar.SHA256[0] ^= 1
	if _, err := OpenPart(dir, wire.FileID{2}, &liar); !errors.Is(err, wire.ErrMalformed) {
		t.Errorf("OpenPart with a SHA-256 that is not the last value: %v", err)
	}
	// One that lies consistently (the file's SHA-256 and the last value
	// both wrong): every block but the last verifies, the last does not,
	// and the .part stays a .part.
	liar.Blocks = append([][32]byte(nil), f.m.Blocks...)
	liar.Blocks[len(liar.Blocks)-1] = liar.SHA256
	p = openPart(t, dir, wire.FileID{2}, &liar)
	last := (len(liar.Blocks) - 1) * int(liar.BlockSize)
	if _, err := p.Write(f.data); !errors.Is(err, ErrCorruptBlock) || p.Verified() != int64(last) {
		t.Errorf("a lying last value: %v, verified %d, want %d", err, p.Verified(), last)
	}
	if _, err := p.Finish(dir, "liar"); !errors.Is(err, ErrIncomplete) {
		t.Errorf("Finish with a wrong SHA-256: %v", err)
	}
	if v := visible(t, dir); len(v) != 0 {
		t.Errorf("a wrong file was saved: %v", v)
	}
	if _, err := os.Stat(filepath.Join(dir, partName(wire.FileID{2}))); err != nil {
		t.Errorf("the .part: %v", err)
	}
	p.Close()
	if !HasPart(dir, wire.FileID{2}) || HasPart(dir, wire.FileID{3}) {
		t.Errorf("HasPart: %v for a .part, %v for none", HasPart(dir, wire.FileID{2}), HasPart(dir, wire.FileID{3}))
	}
	if err := RemovePart(dir, wire.FileID{2}); err != nil {
		t.Fatal(err)
	}
	if HasPart(dir, wire.FileID{2}) {
		t.Error("HasPart after RemovePart")
	}
	if err := RemovePart(dir, wire.FileID{2}); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("RemovePart left %v", ents)
	}
}
