package files

import (
	"errors"
	"fmt"
	"io"
	"os"

	"natchat/wire"
)

// ErrTooBig means a file is larger than wire.MaxFileSize and cannot be
// offered.
var ErrTooBig = errors.New("files: file is larger than 1 TiB")

// ErrChanged means a file's size changed while HashFile read it.
var ErrChanged = errors.New("files: file changed while it was hashed")

// Manifest describes a file as a transfer needs it: its size, how it is
// cut into blocks (the last block is the remainder, shorter unless it fits
// exactly), the SHA-256 of the whole file and each block's chain value
// (chain.go: the SHA-256 state at the block's end; the last block's is
// the file's SHA-256). It is the content of a wire.FileOffer and its
// wire.FileHashes frames.
type Manifest struct {
	Size      int64
	BlockSize uint32 // a power of two, wire.MinFileBlockSize..wire.MaxFileBlockSize
	SHA256    [32]byte
	Blocks    [][32]byte // chain values, wire.BlockCount(Size, BlockSize) of them
}

// NewManifest starts the manifest of an offer: every field but Blocks,
// which AddHashes fills from the FileHashes frames that follow.
func NewManifest(o *wire.FileOffer) *Manifest {
	return &Manifest{Size: o.Size, BlockSize: o.BlockSize, SHA256: o.SHA256,
		Blocks: make([][32]byte, 0, max(0, min(o.Blocks(), wire.MaxFileBlocks)))}
}

// AddHashes appends the block hashes of one FileHashes frame. Frames come
// in order: one that does not start where the last ended, or that goes
// past the last block, is a wire.ErrMalformed.
func (m *Manifest) AddHashes(h *wire.FileHashes) error {
	if int(h.First) != len(m.Blocks) || len(h.Hashes) > m.NumBlocks()-len(m.Blocks) {
		return fmt.Errorf("files: %w: hashes of blocks %d+%d, expected from %d of %d",
			wire.ErrMalformed, h.First, len(h.Hashes), len(m.Blocks), m.NumBlocks())
	}
	m.Blocks = append(m.Blocks, h.Hashes...)
	return nil
}

// NumBlocks is the number of blocks of the file.
func (m *Manifest) NumBlocks() int { return wire.BlockCount(m.Size, m.BlockSize) }

// Complete reports whether m holds every block's hash.
func (m *Manifest) Complete() bool { return len(m.Blocks) == m.NumBlocks() }

// Validate reports why m cannot describe a transfer: a bad layout
// (wire.ValidateFileLayout, a wire.ErrMalformed), a hash list of the
// wrong length, or a last chain value that is not the file's SHA-256.
func (m *Manifest) Validate() error {
	if err := wire.ValidateFileLayout(m.Size, m.BlockSize); err != nil {
		return fmt.Errorf("files: manifest: %w", err)
	}
	if !m.Complete() {
		return fmt.Errorf("files: manifest: %w: %d block hashes for %d blocks", wire.ErrMalformed, len(m.Blocks), m.NumBlocks())
	}
	if n := len(m.Blocks); n > 0 && m.Blocks[n-1] != m.SHA256 {
		return fmt.Errorf("files: manifest: %w: the last block's value is not the file's SHA-256", wire.ErrMalformed)
	}
	return nil
}

// Offer is the offer of the file m describes, under id and name; the
// hashes follow it as wire.AppendFileHashFrames(b, m.Blocks).
func (m *Manifest) Offer(id wire.FileID, name string) *wire.FileOffer {
	return &wire.FileOffer{ID: id, Size: m.Size, BlockSize: m.BlockSize, SHA256: m.SHA256, Name: name}
}

// blockLen is the length of block i.
func (m *Manifest) blockLen(i int) int64 {
	start := int64(i) * int64(m.BlockSize)
	return min(int64(m.BlockSize), m.Size-start)
}

// bufSize is the read buffer of HashFile and of OpenPart's re-hashing:
// memory does not grow with the file or the block size.
const bufSize = 256 << 10

// HashFile computes the manifest of the regular file at path in one
// streaming pass (constant memory: a buffer and a hash state), with the
// block size wire.ChooseBlockSize picks. A file over wire.MaxFileSize is
// ErrTooBig; one whose size changes while it is read is ErrChanged.
func HashFile(path string) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("files: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("files: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("files: %s is not a regular file", path)
	}
	if fi.Size() > wire.MaxFileSize {
		return nil, fmt.Errorf("%w: %s is %d bytes", ErrTooBig, path, fi.Size())
	}
	m, err := hashReader(f, fi.Size(), wire.ChooseBlockSize(fi.Size()))
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, path)
	}
	return m, nil
}

// hashReader computes the manifest of the size bytes r holds, in blocks
// of bs, with one SHA-256 over the bytes (chain.go).
func hashReader(r io.Reader, size int64, bs uint32) (*Manifest, error) {
	m := &Manifest{Size: size, BlockSize: bs, Blocks: make([][32]byte, 0, wire.BlockCount(size, bs))}
	c := newChainer()
	buf := make([]byte, bufSize)
	var n, inBlock int64 // bytes read, and of them in the current block
	for {
		k, err := r.Read(buf)
		for p := buf[:k]; len(p) > 0; {
			w := min(int64(len(p)), int64(bs)-inBlock)
			c.h.Write(p[:w])
			p, n, inBlock = p[w:], n+w, inBlock+w
			if inBlock < int64(bs) {
				continue
			}
			inBlock = 0
			if n < size { // the last block's value is the file's SHA-256
				v, err := c.value()
				if err != nil {
					return nil, err
				}
				m.Blocks = append(m.Blocks, v)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("files: read: %w", err)
		}
		if n > size {
			break
		}
	}
	if n != size {
		return nil, fmt.Errorf("%w: %d bytes, then %d", ErrChanged, size, n)
	}
	c.h.Sum(m.SHA256[:0])
	if size > 0 {
		m.Blocks = append(m.Blocks, m.SHA256)
	}
	return m, nil
}
