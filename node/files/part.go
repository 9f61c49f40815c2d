package files

import (
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"natchat/wire"
)

// Errors of a Part.
var (
	// ErrCorruptBlock means a received block does not match its hash; the
	// concrete error is a *CorruptBlockError.
	ErrCorruptBlock = errors.New("files: block does not match its hash")
	// ErrExtraData means more bytes were written than the file holds.
	ErrExtraData = errors.New("files: more data than the file holds")
	// ErrIncomplete means Finish was called before every block was
	// verified and synced.
	ErrIncomplete = errors.New("files: file is incomplete")
	// ErrFileHash means every block matched but the whole file's SHA-256
	// did not: the sender's manifest contradicts itself. Resending will
	// not help; Remove the part.
	ErrFileHash = errors.New("files: file does not match its SHA-256")
	// ErrNoFreeName means Finish found no free numbered name.
	ErrNoFreeName = errors.New("files: no free name")
)

// CorruptBlockError reports the block that did not match its hash.
type CorruptBlockError struct {
	Index int // the block's number, from 0
}

func (e *CorruptBlockError) Error() string {
	return fmt.Sprintf("files: block %d does not match its hash", e.Index)
}

// Is makes errors.Is(err, ErrCorruptBlock) true.
func (e *CorruptBlockError) Is(target error) bool { return target == ErrCorruptBlock }

// partFile is what a Part needs of an *os.File; tests wrap it to inject
// faults.
type partFile interface {
	io.ReaderAt
	io.WriterAt
	Truncate(size int64) error
	Sync() error
	Stat() (fs.FileInfo, error)
	Close() error
}

var _ partFile = (*os.File)(nil)

// defaultSyncEvery is how many verified bytes may wait for an fsync while
// a Part is written: the most a crash costs (a receiver killed at 40 % of
// a 200 MiB file resumes from 36 % at least). An fsync per 8 MiB is a few
// milliseconds a second at disk speed.
const defaultSyncEvery = 8 << 20

// maxNumbered bounds the numbered names Finish tries.
const maxNumbered = 10000

// Part is a file being received, kept in the downloads directory as the
// hidden "<dir>/.natchat-<id>.part" and its state file
// ".natchat-<id>.state" until Finish gives it its name.
//
// Bytes are written in order (Write). Each block is hashed as it arrives
// and checked against the manifest when it completes; a block that does
// not match is cut off again. Verified blocks are fsync'd at least every
// 8 MiB, at the end of the file, and by Rewind, Close and a corrupt
// block; only then do they count in Verified.
//
// Crash safety. The state file records the verified offset and the
// SHA-256 state of the file up to it, with a checksum; it is rewritten in
// place only after an fsync of the .part, so it never names a byte that
// is not on disk. OpenPart trusts the state (if its checksum holds and it
// names this manifest), then re-hashes whatever whole blocks lie beyond it
// in the .part (written before a crash but perhaps not synced): those that
// match their hash are fsync'd and recorded before they count, and the
// rest is cut off. Without a usable state file it re-hashes from the
// start. The state file is thus only a shortcut: a block is trusted
// because it matched its hash and was fsync'd, wherever that was learnt.
//
// After an I/O error (a failed write, fsync or truncate: disk full gives
// an error matching syscall.ENOSPC) the Part keeps returning that error:
// Close it, and OpenPart resumes from the last block that was fsync'd. The
// .part is never renamed but by a successful Finish.
//
// A Part is not safe for concurrent use, but for Verified, which a
// progress display may call while another goroutine writes. Open at most
// one Part per directory and ID.
type Part struct {
	m         *Manifest
	digest    [32]byte // of the manifest, recorded in the state file
	path      string   // the .part
	statePath string
	f         partFile
	state     partFile
	link      func(oldname, newname string) error // os.Link; tests replace it
	syncEvery int64

	durable  atomic.Int64 // Verified: verified, fsync'd and recorded
	verified int64        // verified, perhaps not yet fsync'd; a block boundary
	off      int64        // where the next Write goes: verified + the incomplete block
	whole    hash.Hash    // SHA-256 of [0, off)
	wholeAt  []byte       // whole's marshalled state at verified
	next     []byte       // scratch: whole's state at the end of the block being checked
	err      error        // sticky I/O error
	closed   bool
}

var _ io.Writer = (*Part)(nil)

// partName and stateName are the hidden files of a Part. A leading dot is
// one SafeName refuses, so no offered file can be saved over them.
func partName(id wire.FileID) string  { return ".natchat-" + id.String() + ".part" }
func stateName(id wire.FileID) string { return ".natchat-" + id.String() + ".state" }

// OpenPart opens the partial file of transfer id in dir, creating it, or
// resuming what an earlier Part left there. m must be complete (Validate).
// Verified tells where the sender should resume. If the .part was left by
// a transfer with another manifest, the blocks that match this one's
// hashes are kept and the rest is cut off.
func OpenPart(dir string, id wire.FileID, m *Manifest) (*Part, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	p := &Part{
		m:         m,
		digest:    manifestDigest(m),
		path:      filepath.Join(dir, partName(id)),
		statePath: filepath.Join(dir, stateName(id)),
		link:      os.Link,
		syncEvery: defaultSyncEvery,
		whole:     sha256.New(),
	}
	f, err := os.OpenFile(p.path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, fmt.Errorf("files: %w", err)
	}
	st, err := os.OpenFile(p.statePath, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("files: %w", err)
	}
	p.f, p.state = f, st
	err = syncDir(dir)
	if err == nil {
		err = p.recover()
	}
	if err != nil {
		f.Close()
		st.Close()
		return nil, err
	}
	return p, nil
}

// RemovePart deletes what a Part of transfer id left in dir, if anything:
// for a cancelled transfer whose Part is not open.
func RemovePart(dir string, id wire.FileID) error {
	return errors.Join(removeIfExists(filepath.Join(dir, partName(id))), removeIfExists(filepath.Join(dir, stateName(id))))
}

// HasPart reports whether dir holds the partial file of transfer id: one
// to resume with OpenPart (after a restart, say).
func HasPart(dir string, id wire.FileID) bool {
	fi, err := os.Lstat(filepath.Join(dir, partName(id)))
	return err == nil && fi.Mode().IsRegular()
}

// Verified is the number of bytes, from the start, that matched their
// block hashes and were fsync'd: a multiple of the block size, or the
// size. It is where the sender resumes (the offset of a wire.FileAccept)
// and, after OpenPart, Rewind or a Write that failed with ErrCorruptBlock,
// where the next Write goes. While a stream is written it lags behind by
// up to 8 MiB (what waits for an fsync).
func (p *Part) Verified() int64 { return p.durable.Load() }

// Size is the size of the file.
func (p *Part) Size() int64 { return p.m.Size }

// Write appends b to the file, in order. Each block is checked when its
// last byte arrives: one that does not match its hash gives a
// *CorruptBlockError (ErrCorruptBlock); its bytes are cut off, everything
// before it is fsync'd, and Verified is its start, where the sender must
// resend from (on a new stream: reset this one). n counts the bytes
// consumed, the corrupt block's included. Bytes beyond the size are
// refused with ErrExtraData. Write errors, such as a full disk, are
// returned wrapped and stick (see Part).
func (p *Part) Write(b []byte) (n int, err error) {
	if err := p.usable(); err != nil {
		return 0, err
	}
	bs := int64(p.m.BlockSize)
	for len(b) > 0 {
		if p.off >= p.m.Size {
			return n, fmt.Errorf("%w: %d more bytes after %d", ErrExtraData, len(b), p.m.Size)
		}
		i := int(p.off / bs)
		end := min(int64(i+1)*bs, p.m.Size)
		c := min(int64(len(b)), end-p.off)
		if _, err := p.f.WriteAt(b[:c], p.off); err != nil {
			return n, p.fail(fmt.Errorf("files: write %s: %w", p.path, err))
		}
		p.whole.Write(b[:c])
		p.off += c
		n += int(c)
		b = b[c:]
		if p.off < end {
			continue
		}
		ok, err := p.blockMatches(i)
		if err != nil {
			return n, p.fail(err)
		}
		if !ok {
			cerr := &CorruptBlockError{Index: i}
			if err := p.Rewind(); err != nil {
				return n, errors.Join(cerr, err)
			}
			return n, cerr
		}
		p.verified = p.off
		if p.verified-p.durable.Load() >= p.syncEvery || p.verified == p.m.Size {
			if err := p.checkpoint(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// Rewind cuts off the bytes of an incomplete block and fsyncs the
// verified ones, so that Verified is where the next Write goes: call it
// when a stream ends early, before accepting the rest from Verified.
func (p *Part) Rewind() error {
	if err := p.usable(); err != nil {
		return err
	}
	if p.off != p.verified {
		if err := unmarshalHash(p.whole, p.wholeAt); err != nil {
			return p.fail(err)
		}
		if err := p.f.Truncate(p.verified); err != nil {
			return p.fail(fmt.Errorf("files: truncate %s: %w", p.path, err))
		}
		p.off = p.verified
	}
	if p.durable.Load() < p.verified {
		return p.checkpoint()
	}
	return nil
}

// Finish saves the complete, verified file in dir (the Part's own
// directory, or one on the same file system) under name, which must pass
// SafeName, or under the first free numbered form of it ("a.txt", then
// "a (1).txt", "a (2).txt", ...), and returns its path. It checks the
// whole file's SHA-256 first (ErrFileHash). An existing file is never
// overwritten, even by a concurrent Finish: the name is taken with a hard
// link, which fails if it exists (or, where the file system has no hard
// links, by creating it exclusively and renaming the .part over it). The
// Part is closed once Finish gets to naming the file; if that fails the
// .part stays as it is, complete: OpenPart and Finish again. If only the
// last fsync of dir fails, the file is saved (perhaps not durably): Finish
// returns its path with the error.
func (p *Part) Finish(dir, name string) (string, error) {
	if err := p.usable(); err != nil {
		return "", err
	}
	if p.durable.Load() != p.m.Size {
		return "", fmt.Errorf("%w: %d of %d bytes verified", ErrIncomplete, p.durable.Load(), p.m.Size)
	}
	if _, err := SafeName(name); err != nil {
		return "", err
	}
	var sum [32]byte
	p.whole.Sum(sum[:0])
	if sum != p.m.SHA256 {
		return "", fmt.Errorf("%w: got %x, want %x", ErrFileHash, sum, p.m.SHA256)
	}
	if err := p.closeFiles(); err != nil {
		return "", err
	}
	final, err := p.place(dir, name)
	if err != nil {
		return "", err
	}
	// The file has its name: what is left is the hidden leftovers, which
	// no one reads again (their transfer is done).
	_ = removeIfExists(p.path)
	_ = removeIfExists(p.statePath)
	if err := syncDir(dir); err != nil {
		return final, err
	}
	return final, nil
}

// Close fsyncs and records the verified blocks and closes the files,
// leaving the .part to resume with OpenPart.
func (p *Part) Close() error {
	if p.closed {
		return nil
	}
	var err error
	if p.err == nil && p.durable.Load() < p.verified {
		err = p.checkpoint()
	}
	return errors.Join(err, p.closeFiles())
}

// Remove closes the Part and deletes its files: a cancelled or failed
// transfer. It does not touch a file Finish saved.
func (p *Part) Remove() error {
	var err error
	if !p.closed {
		err = p.closeFiles()
	}
	return errors.Join(err, removeIfExists(p.path), removeIfExists(p.statePath))
}

// usable returns the error that stops p, if any.
func (p *Part) usable() error {
	if p.closed {
		return fmt.Errorf("files: %s: %w", p.path, fs.ErrClosed)
	}
	return p.err
}

// fail makes err stick and returns it.
func (p *Part) fail(err error) error {
	p.err = err
	return err
}

func (p *Part) closeFiles() error {
	p.closed = true
	return errors.Join(p.f.Close(), p.state.Close())
}

// checkpoint makes the verified blocks durable: fsync the .part, then
// record them in the state file and fsync it.
func (p *Part) checkpoint() error {
	if err := p.f.Sync(); err != nil {
		return p.fail(fmt.Errorf("files: sync %s: %w", p.path, err))
	}
	if _, err := p.state.WriteAt(encodeState(p.digest, p.verified, p.wholeAt), 0); err != nil {
		return p.fail(fmt.Errorf("files: write %s: %w", p.statePath, err))
	}
	if err := p.state.Sync(); err != nil {
		return p.fail(fmt.Errorf("files: sync %s: %w", p.statePath, err))
	}
	p.durable.Store(p.verified)
	return nil
}

// recover finds where an earlier Part stopped: the state file's offset,
// if it is usable, then every whole block after it that matches its hash.
// The rest of the .part is cut off, and the result checkpointed.
func (p *Part) recover() error {
	fi, err := p.f.Stat()
	if err != nil {
		return fmt.Errorf("files: %w", err)
	}
	size := fi.Size()
	start, hs, ok := p.readState()
	if ok && start <= size {
		ok = unmarshalHash(p.whole, hs) == nil
	} else {
		ok = false
	}
	if !ok {
		start = 0
		p.whole.Reset()
	} else {
		p.durable.Store(start)
	}
	p.verified = start
	if p.wholeAt, err = marshalHash(p.whole, p.wholeAt); err != nil {
		return err
	}
	buf := make([]byte, min(bufSize, int64(p.m.BlockSize)))
	for p.verified < p.m.Size {
		i := int(p.verified / int64(p.m.BlockSize))
		l := p.m.blockLen(i)
		if p.verified+l > size {
			break
		}
		if err := hashAt(p.f, p.verified, l, buf, p.whole); err != nil {
			return fmt.Errorf("files: read %s: %w", p.path, err)
		}
		ok, err := p.blockMatches(i)
		if err != nil {
			return err
		}
		if !ok {
			if err := unmarshalHash(p.whole, p.wholeAt); err != nil {
				return err
			}
			break
		}
		p.verified += l
	}
	p.off = p.verified
	if size != p.verified {
		if err := p.f.Truncate(p.verified); err != nil {
			return fmt.Errorf("files: truncate %s: %w", p.path, err)
		}
	}
	if !ok || p.verified > start {
		if err := p.checkpoint(); err != nil {
			return err
		}
	}
	return nil
}

// blockMatches checks block i, whose last byte whole has just been given,
// against its chain value. If it matches, wholeAt becomes whole's state
// there.
func (p *Part) blockMatches(i int) (bool, error) {
	var err error
	if p.next, err = marshalHash(p.whole, p.next); err != nil {
		return false, err
	}
	var v [32]byte
	if i == p.m.NumBlocks()-1 {
		p.whole.Sum(v[:0]) // the file's SHA-256 (Validate: also the last value)
	} else if v, err = chainValue(p.next); err != nil {
		return false, err
	}
	if v != p.m.Blocks[i] {
		return false, nil
	}
	p.wholeAt, p.next = p.next, p.wholeAt
	return true, nil
}

// hashAt feeds the n bytes of r at off to the hashes.
func hashAt(r io.ReaderAt, off, n int64, buf []byte, hs ...hash.Hash) error {
	for n > 0 {
		k, err := r.ReadAt(buf[:min(int64(len(buf)), n)], off)
		for _, h := range hs {
			h.Write(buf[:k])
		}
		off, n = off+int64(k), n-int64(k)
		if err != nil && (n > 0 || err != io.EOF) {
			return err
		}
	}
	return nil
}

// State file: magic(8) manifest_digest(32) verified(8)
// hash_state(u8 length + bytes) crc32c(4) of all before it. It is always
// written whole at offset 0, and keeps its length.
const stateMagic = "natchat\x01"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func encodeState(digest [32]byte, verified int64, hs []byte) []byte {
	b := make([]byte, 0, 8+32+8+1+len(hs)+4)
	b = append(b, stateMagic...)
	b = append(b, digest[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(verified))
	b = append(b, byte(len(hs)))
	b = append(b, hs...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// readState returns the state file's verified offset and hash state, and
// whether they can be used for this Part: intact, of this manifest, at a
// block boundary within the file.
func (p *Part) readState() (int64, []byte, bool) {
	b := make([]byte, 8+32+8+1+255+4)
	n, err := p.state.ReadAt(b, 0)
	if err != nil && err != io.EOF {
		return 0, nil, false
	}
	b = b[:n]
	if n < 8+32+8+1 || string(b[:8]) != stateMagic {
		return 0, nil, false
	}
	end := 8 + 32 + 8 + 1 + int(b[48])
	if n < end+4 || binary.BigEndian.Uint32(b[end:]) != crc32.Checksum(b[:end], castagnoli) {
		return 0, nil, false
	}
	if [32]byte(b[8:40]) != p.digest {
		return 0, nil, false
	}
	v := binary.BigEndian.Uint64(b[40:])
	if v > uint64(p.m.Size) || (int64(v) != p.m.Size && v%uint64(p.m.BlockSize) != 0) {
		return 0, nil, false
	}
	return int64(v), b[49:end], true
}

// manifestDigest names a manifest in the state file.
func manifestDigest(m *Manifest) [32]byte {
	h := sha256.New()
	h.Write([]byte("natchat file manifest\x00"))
	var b [12]byte
	binary.BigEndian.PutUint64(b[:], uint64(m.Size))
	binary.BigEndian.PutUint32(b[8:], m.BlockSize)
	h.Write(b[:])
	h.Write(m.SHA256[:])
	for _, s := range m.Blocks {
		h.Write(s[:])
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// marshalHash appends h's state to b[:0].
func marshalHash(h hash.Hash, b []byte) ([]byte, error) {
	b, err := h.(encoding.BinaryAppender).AppendBinary(b[:0])
	if err != nil {
		return nil, fmt.Errorf("files: %w", err)
	}
	return b, nil
}

func unmarshalHash(h hash.Hash, b []byte) error {
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(b); err != nil {
		return fmt.Errorf("files: %w", err)
	}
	return nil
}

// place gives the closed .part its name in dir: name, or the first free
// numbered form of it.
func (p *Part) place(dir, name string) (string, error) {
	base, ext := splitExt(name)
	useLink := true
	for i := range maxNumbered {
		target := filepath.Join(dir, numbered(base, ext, i))
		if useLink {
			err := p.link(p.path, target)
			if err == nil {
				return target, nil
			}
			if errors.Is(err, fs.ErrExist) {
				continue
			}
			// No hard links here (FAT, some FUSE and network file
			// systems): reserve names by exclusive creation instead.
			useLink = false
		}
		f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("files: %w", err)
		}
		f.Close()
		if err := os.Rename(p.path, target); err != nil {
			os.Remove(target)
			return "", fmt.Errorf("files: %w", err)
		}
		return target, nil
	}
	return "", fmt.Errorf("%w for %q in %s", ErrNoFreeName, name, dir)
}

// splitExt splits name into what the number goes after and the extension
// it goes before: "a.txt" is "a" and ".txt". An extension too long to
// leave room for a number is none.
func splitExt(name string) (base, ext string) {
	ext = filepath.Ext(name)
	if len(ext) == len(name) || len(ext) > wire.MaxFileNameLen-len(" (10000)")-1 {
		return name, ""
	}
	return strings.TrimSuffix(name, ext), ext
}

// numbered is the i-th name to try: base+ext, then "base (i)ext", with
// base cut (at a character boundary) to keep within wire.MaxFileNameLen.
func numbered(base, ext string, i int) string {
	if i == 0 {
		return base + ext
	}
	suffix := fmt.Sprintf(" (%d)", i)
	room := wire.MaxFileNameLen - len(suffix) - len(ext)
	if len(base) > room {
		for room > 0 && !utf8.RuneStart(base[room]) {
			room--
		}
		base = base[:room]
	}
	return base + suffix + ext
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("files: %w", err)
	}
	return nil
}

// syncDir makes dir's entries durable (new, renamed and linked files).
// Windows cannot fsync a directory, and needs not.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("files: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("files: sync %s: %w", dir, err)
	}
	return nil
}
