package wire

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"math/bits"
	"unicode/utf8"
)

// File streams. A file transfer runs on its own QUIC stream of kind
// StreamFile: after the preamble, frames as on a chat stream (kind(1)
// uvarint(len) body, AppendFrame and ParseFrame). S is the sender of the
// file, R its receiver.
//
//	S→R  FileOffer                     what the file is
//	S→R  FileHashes × ceil(blocks/1024) the block chain values, in order
//	R→S  FileAccept | FileReject        send from this offset, or no
//	S→R  raw bytes [offset, size), FIN  not framed: R knows the size
//	R→S  FileDone                       verified and saved
//
// The file is cut into blocks of BlockSize bytes (the last one shorter).
// Each block has a 32-byte chain value: for every block but the last, the
// SHA-256 intermediate hash value (FIPS 180-4's H, the eight state words,
// big-endian) after the file's bytes up to the block's end; for the last
// block, the file's SHA-256. A receiver hashes the file once, in order, and
// checks the state at each block's end against its value: each block is
// verified as it arrives, the last check is the whole file's, and a resumed
// transfer goes on from the state at the last verified block. (Before
// FrameFileChain, frame 2 carried each block's own SHA-256, which cost a
// second pass over every byte at both ends.) A cancel is a stream reset,
// not a frame. Integers are big-endian.

// Frame kinds on a file stream.
const (
	FrameFileOffer  FrameKind = 1 // S→R: FileOffer
	FrameFileAccept FrameKind = 3 // R→S: FileAccept
	FrameFileReject FrameKind = 4 // R→S: FileReject
	FrameFileDone   FrameKind = 5 // R→S: FileDone
	FrameFileChain  FrameKind = 6 // S→R: FileHashes, the blocks' chain values

	// FrameFileBlockHashes is retired: it carried each block's own
	// SHA-256. A receiver answers it with FileRejectVersion.
	FrameFileBlockHashes FrameKind = 2
)

// File limits.
const (
	// MaxFileSize is the largest file that can be offered: 1 TiB.
	MaxFileSize = 1 << 40
	// MinFileBlockSize and MaxFileBlockSize bound a block size, which is a
	// power of two.
	MinFileBlockSize = 64 << 10
	MaxFileBlockSize = 64 << 20
	// MaxFileBlocks bounds the blocks of one file (MaxFileSize /
	// MaxFileBlockSize): the hash list is at most 512 KiB.
	MaxFileBlocks = 16384
	// MaxFileHashes bounds the hashes in one FileHashes frame, so that it
	// fits MaxFrameLen.
	MaxFileHashes = 1024
	// MaxFileNameLen bounds an offered name, in bytes.
	MaxFileNameLen = 255
	// MaxFileReasonLen bounds a FileReject's reason, in bytes.
	MaxFileReasonLen = 1024
)

// FileID names a transfer end to end. The sender picks it at random; a
// resumed transfer keeps its ID.
type FileID [8]byte

// String returns the ID in hex, as /accept and /reject take it.
func (id FileID) String() string { return hex.EncodeToString(id[:]) }

// ParseFileID parses the hex form.
func ParseFileID(s string) (FileID, error) {
	var id FileID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("%w: file id %q", ErrMalformed, s)
	}
	copy(id[:], b)
	return id, nil
}

// BlockCount is the number of blocks of a file: ceil(size/blockSize), 0 for
// an empty file (or a block size of 0).
func BlockCount(size int64, blockSize uint32) int {
	if size <= 0 || blockSize == 0 {
		return 0
	}
	n := (size-1)/int64(blockSize) + 1
	if n > math.MaxInt {
		return math.MaxInt
	}
	return int(n)
}

// ChooseBlockSize is the block size a sender uses for a file of size
// bytes: the smallest power of two from MinFileBlockSize that cuts it into
// at most MaxFileBlocks blocks (MaxFileBlockSize for a size over
// MaxFileSize, which cannot be offered).
func ChooseBlockSize(size int64) uint32 {
	bs := uint32(MinFileBlockSize)
	for bs < MaxFileBlockSize && BlockCount(size, bs) > MaxFileBlocks {
		bs <<= 1
	}
	return bs
}

// ValidateFileLayout reports, as an ErrMalformed, why a file of size bytes
// cannot be sent in blocks of blockSize: a size outside 0..MaxFileSize, a
// block size that is not a power of two from MinFileBlockSize to
// MaxFileBlockSize, or more than MaxFileBlocks blocks.
func ValidateFileLayout(size int64, blockSize uint32) error {
	switch {
	case size < 0 || size > MaxFileSize:
		return fmt.Errorf("%w: file size %d", ErrMalformed, size)
	case blockSize < MinFileBlockSize || blockSize > MaxFileBlockSize || bits.OnesCount32(blockSize) != 1:
		return fmt.Errorf("%w: block size %d", ErrMalformed, blockSize)
	case BlockCount(size, blockSize) > MaxFileBlocks:
		return fmt.Errorf("%w: %d blocks", ErrMalformed, BlockCount(size, blockSize))
	}
	return nil
}

// FileOffer offers a file (S→R, FrameFileOffer). Body:
//
//	id(8) size(8) block_size(4) sha256(32) name(u16 length + bytes)
//
// ParseFileOffer refuses (ErrMalformed) a layout ValidateFileLayout
// refuses and a name over MaxFileNameLen bytes; whether the name is one to
// save under is the receiver's business (it answers FileRejectBadName),
// so a name that is not UTF-8 parses. Trailing bytes are ignored.
type FileOffer struct {
	ID        FileID
	Size      int64  // bytes, 0..MaxFileSize
	BlockSize uint32 // a power of two, MinFileBlockSize..MaxFileBlockSize
	SHA256    [32]byte
	Name      string // the base name the sender suggests, at most MaxFileNameLen bytes
}

// Blocks is the file's block count: the offer is followed by
// ceil(Blocks/MaxFileHashes) FileHashes frames.
func (o *FileOffer) Blocks() int { return BlockCount(o.Size, o.BlockSize) }

// CheckAccept reports, as an ErrMalformed, why a sends the sender nowhere
// in this offer: another ID, or an offset that is not a multiple of the
// block size or lies beyond the end of the file.
func (o *FileOffer) CheckAccept(a *FileAccept) error {
	switch {
	case a.ID != o.ID:
		return fmt.Errorf("%w: accept of %v, offered %v", ErrMalformed, a.ID, o.ID)
	case a.Offset < 0 || a.Offset > o.Size || (o.BlockSize != 0 && a.Offset%int64(o.BlockSize) != 0):
		return fmt.Errorf("%w: accept offset %d (size %d, blocks of %d)", ErrMalformed, a.Offset, o.Size, o.BlockSize)
	}
	return nil
}

// AppendFileOffer appends o as a FrameFileOffer frame. It encodes o as it
// is: a sender offers only a valid layout and a name of at most
// MaxFileNameLen bytes.
func AppendFileOffer(b []byte, o *FileOffer) []byte {
	body := make([]byte, 0, 8+8+4+32+2+len(o.Name))
	body = append(body, o.ID[:]...)
	body = appendU64(body, uint64(o.Size))
	body = appendU32(body, o.BlockSize)
	body = append(body, o.SHA256[:]...)
	body = appendStr16(body, o.Name)
	return AppendFrame(b, FrameFileOffer, body)
}

// ParseFileOffer decodes a FrameFileOffer body.
func ParseFileOffer(b []byte) (*FileOffer, error) {
	r := reader{b: b}
	o := &FileOffer{}
	copy(o.ID[:], r.take(8))
	size := r.u64()
	o.BlockSize = r.u32()
	copy(o.SHA256[:], r.take(32))
	o.Name = r.str16()
	if r.err != nil {
		return nil, fmt.Errorf("file_offer: %w", r.err)
	}
	if size > MaxFileSize {
		return nil, fmt.Errorf("file_offer: %w: size %d", ErrMalformed, size)
	}
	o.Size = int64(size)
	if err := ValidateFileLayout(o.Size, o.BlockSize); err != nil {
		return nil, fmt.Errorf("file_offer: %w", err)
	}
	if len(o.Name) > MaxFileNameLen {
		return nil, fmt.Errorf("file_offer: %w: name of %d bytes", ErrMalformed, len(o.Name))
	}
	return o, nil
}

// FileHashes carries the chain values (see the top of this file) of
// blocks First..First+len(Hashes)-1 (S→R, FrameFileChain). Body:
//
//	first(4) value(32) × n
//
// n is the body's length less 4, over 32: 1..MaxFileHashes. The frame has
// no count, so it cannot grow trailing fields (a newer version would add a
// frame kind instead).
type FileHashes struct {
	First  uint32
	Hashes [][32]byte
}

// AppendFileHashes appends h as one FrameFileChain frame. h holds at most
// MaxFileHashes hashes; AppendFileHashFrames cuts a whole list.
func AppendFileHashes(b []byte, h *FileHashes) []byte {
	body := make([]byte, 0, 4+32*len(h.Hashes))
	body = appendU32(body, h.First)
	for _, s := range h.Hashes {
		body = append(body, s[:]...)
	}
	return AppendFrame(b, FrameFileChain, body)
}

// AppendFileHashFrames appends the FrameFileChain frames that follow an
// offer: hashes (every block's chain value, in order) cut into frames of at most
// MaxFileHashes. No frame for an empty file.
func AppendFileHashFrames(b []byte, hashes [][32]byte) []byte {
	for first := 0; first < len(hashes); first += MaxFileHashes {
		end := min(first+MaxFileHashes, len(hashes))
		b = AppendFileHashes(b, &FileHashes{First: uint32(first), Hashes: hashes[first:end]})
	}
	return b
}

// ParseFileHashes decodes a FrameFileChain body for a file of blocks
// blocks (FileOffer.Blocks): hashes beyond the last block, a partial hash
// or more than MaxFileHashes are ErrMalformed.
func ParseFileHashes(b []byte, blocks int) (*FileHashes, error) {
	if len(b) < 4+32 {
		return nil, fmt.Errorf("file_hashes: %w", ErrTooShort)
	}
	if (len(b)-4)%32 != 0 {
		return nil, fmt.Errorf("file_hashes: %w: %d bytes of hashes", ErrMalformed, len(b)-4)
	}
	n := (len(b) - 4) / 32
	if n > MaxFileHashes {
		return nil, fmt.Errorf("file_hashes: %w: %d hashes", ErrMalformed, n)
	}
	first := binary.BigEndian.Uint32(b)
	if int64(first)+int64(n) > int64(blocks) {
		return nil, fmt.Errorf("file_hashes: %w: blocks %d..%d of %d", ErrMalformed, first, int64(first)+int64(n)-1, blocks)
	}
	h := &FileHashes{First: first, Hashes: make([][32]byte, n)}
	for i := range h.Hashes {
		h.Hashes[i] = [32]byte(b[4+32*i:])
	}
	return h, nil
}

// FileAccept asks for the file from Offset on (R→S, FrameFileAccept).
// Body: id(8) offset(8). Offset is a multiple of the block size, at most
// the size (FileOffer.CheckAccept): 0 for a new transfer, the verified
// bytes for a resumed one. Trailing bytes are ignored.
type FileAccept struct {
	ID     FileID
	Offset int64
}

// AppendFileAccept appends a as a FrameFileAccept frame.
func AppendFileAccept(b []byte, a *FileAccept) []byte {
	body := make([]byte, 0, 16)
	body = append(body, a.ID[:]...)
	body = appendU64(body, uint64(a.Offset))
	return AppendFrame(b, FrameFileAccept, body)
}

// ParseFileAccept decodes a FrameFileAccept body. An offset over
// MaxFileSize is ErrMalformed; the rest is for FileOffer.CheckAccept.
func ParseFileAccept(b []byte) (*FileAccept, error) {
	r := reader{b: b}
	a := &FileAccept{}
	copy(a.ID[:], r.take(8))
	off := r.u64()
	if r.err != nil {
		return nil, fmt.Errorf("file_accept: %w", r.err)
	}
	if off > MaxFileSize {
		return nil, fmt.Errorf("file_accept: %w: offset %d", ErrMalformed, off)
	}
	a.Offset = int64(off)
	return a, nil
}

// FileRejectCode says why a receiver refused or stopped a transfer.
type FileRejectCode uint8

// Reject codes. ParseFileReject accepts any code, so that newer receivers
// can add them; a sender shows the reason of a code it does not know.
const (
	FileRejectUser      FileRejectCode = 1 // the user said no
	FileRejectTooBig    FileRejectCode = 2 // larger than the receiver takes
	FileRejectBadName   FileRejectCode = 3 // a name the receiver will not save under
	FileRejectBusy      FileRejectCode = 4 // too many transfers at once
	FileRejectDisk      FileRejectCode = 5 // the receiver cannot store it (disk full, ...)
	FileRejectCancelled FileRejectCode = 6 // the receiver cancelled it
	// Code 7 is the node's: the same block failed verification three times.
	FileRejectVersion FileRejectCode = 8 // the sender speaks an older file protocol
)

func (c FileRejectCode) String() string {
	switch c {
	case FileRejectUser:
		return "rejected"
	case FileRejectTooBig:
		return "too big"
	case FileRejectBadName:
		return "bad name"
	case FileRejectBusy:
		return "busy"
	case FileRejectDisk:
		return "cannot store"
	case FileRejectCancelled:
		return "cancelled"
	case FileRejectVersion:
		return "unsupported version"
	}
	return fmt.Sprintf("code(%d)", uint8(c))
}

// FileReject refuses a transfer, or ends one (R→S, FrameFileReject). Body:
//
//	id(8) code(1) reason(u16 length + bytes)
//
// Reason is free text for the sender's user, at most MaxFileReasonLen
// bytes (AppendFileReject cuts a longer one at a character boundary; a
// longer one is ErrMalformed). It is peer text: escape it before display.
// Trailing bytes are ignored.
type FileReject struct {
	ID     FileID
	Code   FileRejectCode
	Reason string
}

// AppendFileReject appends j as a FrameFileReject frame.
func AppendFileReject(b []byte, j *FileReject) []byte {
	reason := j.Reason
	if len(reason) > MaxFileReasonLen {
		n := MaxFileReasonLen
		for n > 0 && !utf8.RuneStart(reason[n]) {
			n--
		}
		reason = reason[:n]
	}
	body := make([]byte, 0, 8+1+2+len(reason))
	body = append(body, j.ID[:]...)
	body = append(body, byte(j.Code))
	body = appendStr16(body, reason)
	return AppendFrame(b, FrameFileReject, body)
}

// ParseFileReject decodes a FrameFileReject body.
func ParseFileReject(b []byte) (*FileReject, error) {
	r := reader{b: b}
	j := &FileReject{}
	copy(j.ID[:], r.take(8))
	j.Code = FileRejectCode(r.u8())
	j.Reason = r.str16()
	if r.err != nil {
		return nil, fmt.Errorf("file_reject: %w", r.err)
	}
	if len(j.Reason) > MaxFileReasonLen {
		return nil, fmt.Errorf("file_reject: %w: reason of %d bytes", ErrMalformed, len(j.Reason))
	}
	return j, nil
}

// FileDone says the receiver verified the whole file against SHA256 and
// saved it (R→S, FrameFileDone). Body: id(8) sha256(32). Trailing bytes
// are ignored.
type FileDone struct {
	ID     FileID
	SHA256 [32]byte
}

// AppendFileDone appends d as a FrameFileDone frame.
func AppendFileDone(b []byte, d *FileDone) []byte {
	body := make([]byte, 0, 40)
	body = append(body, d.ID[:]...)
	body = append(body, d.SHA256[:]...)
	return AppendFrame(b, FrameFileDone, body)
}

// ParseFileDone decodes a FrameFileDone body.
func ParseFileDone(b []byte) (*FileDone, error) {
	r := reader{b: b}
	d := &FileDone{}
	copy(d.ID[:], r.take(8))
	copy(d.SHA256[:], r.take(32))
	if r.err != nil {
		return nil, fmt.Errorf("file_done: %w", r.err)
	}
	return d, nil
}
