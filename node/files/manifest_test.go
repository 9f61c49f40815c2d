package files

import (
	"bytes"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"natchat/wire"
)

const bs = wire.MinFileBlockSize // the block size of every test file

// randomBytes returns n bytes that depend on seed only.
func randomBytes(n int, seed uint64) []byte {
	var key [32]byte
	key[0], key[1] = byte(seed), byte(seed>>8)
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

// wantManifest computes a manifest the plain way: a fresh SHA-256 of each
// prefix that ends a block.
func wantManifest(data []byte, blockSize int) *Manifest {
	m := &Manifest{Size: int64(len(data)), BlockSize: uint32(blockSize), SHA256: sha256.Sum256(data), Blocks: [][32]byte{}}
	for end := blockSize; end < len(data); end += blockSize {
		m.Blocks = append(m.Blocks, prefixChainValue(data[:end]))
	}
	if len(data) > 0 {
		m.Blocks = append(m.Blocks, m.SHA256)
	}
	return m
}

// prefixChainValue is the SHA-256 intermediate hash value after data, a
// multiple of 64 bytes.
func prefixChainValue(data []byte) [32]byte {
	h := sha256.New()
	h.Write(data)
	state, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		panic(err)
	}
	v, err := chainValue(state)
	if err != nil {
		panic(err)
	}
	return v
}

// TestChainValueIsH checks that chainValue reads FIPS 180-4's intermediate
// hash value, with the published example: "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
// is two blocks once padded, and H after the first (the message, 0x80 and
// seven zero bytes) is given in NIST's SHA-256 example computation.
func TestChainValueIsH(t *testing.T) {
	block := append([]byte("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"), 0x80, 0, 0, 0, 0, 0, 0, 0)
	want, _ := hex.DecodeString("85e655d6417a17953363376a624cde5c76e09589cac5f811cc4b32c1f20e533a")
	if got := prefixChainValue(block); !bytes.Equal(got[:], want) {
		t.Fatalf("H(1) = %x, want %x", got, want)
	}
	c := newChainer()
	c.h.Write(block)
	if got, err := c.value(); err != nil || !bytes.Equal(got[:], want) {
		t.Fatalf("chainer: %x, %v", got, err)
	}
	if _, err := chainValue([]byte("sha\x02short")); err == nil {
		t.Error("chainValue took a state that is not SHA-256's")
	}
}

func TestHashFile(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name   string
		size   int
		blocks int
	}{
		{"empty", 0, 0},
		{"one byte", 1, 1},
		{"one block less a byte", bs - 1, 1},
		{"exactly one block", bs, 1},
		{"one block and a byte", bs + 1, 2},
		{"many blocks", 10*bs + 12345, 11},
		{"many whole blocks", 7 * bs, 7},
	} {
		data := randomBytes(c.size, uint64(c.size))
		path := filepath.Join(dir, c.name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := HashFile(path)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		want := wantManifest(data, bs)
		if !reflect.DeepEqual(m, want) || len(m.Blocks) != c.blocks || m.Validate() != nil {
			t.Errorf("%s: got %d blocks, sha %x; want %d, %x", c.name, len(m.Blocks), m.SHA256, len(want.Blocks), want.SHA256)
		}
	}
	if _, err := HashFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := HashFile(dir); err == nil {
		t.Errorf("a directory hashed")
	}
}

// TestHashFileMemory: HashFile's allocations do not grow with the file
// (but for the hash list, one slice).
func TestHashFileMemory(t *testing.T) {
	dir := t.TempDir()
	allocs := func(size int) float64 {
		path := filepath.Join(dir, "f")
		if err := os.WriteFile(path, randomBytes(size, 1), 0o644); err != nil {
			t.Fatal(err)
		}
		return testing.AllocsPerRun(3, func() {
			if _, err := HashFile(path); err != nil {
				t.Fatal(err)
			}
		})
	}
	slack := 0.0
	if raceEnabled {
		slack = 40 // one a block boundary: see raceEnabled
	}
	if small, big := allocs(bs), allocs(40*bs+1); big > small+slack {
		t.Errorf("HashFile allocates %v times for a 1-block file, %v for 41 blocks", small, big)
	}
}

// TestHashReaderChanged: a file that holds more or fewer bytes than it
// did when HashFile looked, or fails to read.
func TestHashReaderChanged(t *testing.T) {
	data := randomBytes(3*bs, 2)
	for _, size := range []int64{3*bs - 1, 3*bs + 1, 2 * bs, 0} {
		if _, err := hashReader(bytes.NewReader(data), size, bs); !errors.Is(err, ErrChanged) {
			t.Errorf("%d bytes read as %d: %v", len(data), size, err)
		}
	}
	if _, err := hashReader(io.MultiReader(bytes.NewReader(data[:10]), iotest{}), 3*bs, bs); err == nil || errors.Is(err, ErrChanged) {
		t.Errorf("read error: %v", err)
	}
}

type iotest struct{}

func (iotest) Read([]byte) (int, error) { return 0, errors.New("boom") }

// TestManifestFromFrames: a manifest goes through an offer and its hash
// frames, and comes back whole.
func TestManifestFromFrames(t *testing.T) {
	m := &Manifest{Size: 2500 * bs, BlockSize: bs, SHA256: sha256.Sum256([]byte("x")), Blocks: make([][32]byte, 2500)}
	for i := range m.Blocks {
		m.Blocks[i] = sha256.Sum256([]byte{byte(i), byte(i >> 8)})
	}
	m.Blocks[len(m.Blocks)-1] = m.SHA256
	id := wire.FileID{1, 2, 3}
	b := wire.AppendFileOffer(nil, m.Offer(id, "a.bin"))
	b = wire.AppendFileHashFrames(b, m.Blocks)

	var got *Manifest
	for len(b) > 0 {
		k, body, n, err := wire.ParseFrame(b)
		if err != nil {
			t.Fatal(err)
		}
		b = b[n:]
		switch k {
		case wire.FrameFileOffer:
			o, err := wire.ParseFileOffer(body)
			if err != nil || o.ID != id || o.Name != "a.bin" {
				t.Fatalf("offer %#v, %v", o, err)
			}
			got = NewManifest(o)
			if got.Complete() || got.Validate() == nil {
				t.Fatalf("manifest complete before its hashes")
			}
		case wire.FrameFileChain:
			h, err := wire.ParseFileHashes(body, got.NumBlocks())
			if err != nil {
				t.Fatal(err)
			}
			if err := got.AddHashes(h); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !got.Complete() || got.Validate() != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("manifest from frames differs")
	}
	// Out of order, repeated, or beyond the end.
	fresh := NewManifest(m.Offer(id, "a.bin"))
	for _, h := range []*wire.FileHashes{
		{First: 1, Hashes: m.Blocks[1:2]},
		{First: 0, Hashes: append(m.Blocks[:2500:2500], m.Blocks[0])},
	} {
		if err := fresh.AddHashes(h); !errors.Is(err, wire.ErrMalformed) {
			t.Errorf("hashes %d+%d into an empty manifest: %v", h.First, len(h.Hashes), err)
		}
	}
	if err := fresh.AddHashes(&wire.FileHashes{Hashes: m.Blocks[:1024]}); err != nil {
		t.Fatal(err)
	}
	if err := fresh.AddHashes(&wire.FileHashes{Hashes: m.Blocks[:1024]}); !errors.Is(err, wire.ErrMalformed) {
		t.Errorf("repeated hashes: %v", err)
	}
	if err := fresh.AddHashes(&wire.FileHashes{First: 1024, Hashes: m.Blocks[1024:]}); err != nil || !fresh.Complete() {
		t.Fatal(err)
	}
	if err := fresh.AddHashes(&wire.FileHashes{First: 2500, Hashes: m.Blocks[:1]}); !errors.Is(err, wire.ErrMalformed) {
		t.Errorf("hashes beyond the last block: %v", err)
	}
}
