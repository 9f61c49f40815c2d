package wire

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

const (
	fileIDHex = "1112131415161718"
	// SHA-256 of the empty file.
	emptySHAHex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	aaHex       = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	bbHex       = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

var (
	testFileID = FileID(mustUnhex(fileIDHex))
	emptySHA   = [32]byte(mustUnhex(emptySHAHex))
	hashAA     = [32]byte(mustUnhex(aaHex))
	hashBB     = [32]byte(mustUnhex(bbHex))
)

// fileFrameCase is one file-stream frame and its encoding. blocks is the
// block count a FileHashes frame is parsed against.
type fileFrameCase struct {
	name   string
	frame  any // *FileOffer, *FileHashes, *FileAccept, *FileReject or *FileDone
	blocks int
	hex    string
}

var fileFrameCases = []fileFrameCase{
	{
		name:  "offer empty file",
		frame: &FileOffer{ID: testFileID, Size: 0, BlockSize: 64 << 10, SHA256: emptySHA, Name: "a.txt"},
		// kind len(59) id size block_size sha256 name
		hex: "01 3b" + fileIDHex + "0000000000000000" + "00010000" + emptySHAHex + "0005 612e747874",
	},
	{
		name:  "offer two blocks, UTF-8 name",
		frame: &FileOffer{ID: testFileID, Size: 100000, BlockSize: 64 << 10, SHA256: hashAA, Name: "résumé.pdf"},
		hex:   "01 42" + fileIDHex + "00000000000186a0" + "00010000" + aaHex + "000c 72c3a973756dc3a92e706466",
	},
	{
		name:  "offer 1 TiB",
		frame: &FileOffer{ID: testFileID, Size: MaxFileSize, BlockSize: MaxFileBlockSize, SHA256: hashBB, Name: "big.iso"},
		hex:   "01 3d" + fileIDHex + "0000010000000000" + "04000000" + bbHex + "0007 6269672e69736f",
	},
	{
		name:   "hashes",
		frame:  &FileHashes{First: 0, Hashes: [][32]byte{hashAA, hashBB}},
		blocks: 2,
		// kind len(68) first hashes
		hex: "06 44" + "00000000" + aaHex + bbHex,
	},
	{
		name:   "hashes, the last of many",
		frame:  &FileHashes{First: 16383, Hashes: [][32]byte{hashBB}},
		blocks: MaxFileBlocks,
		hex:    "06 24" + "00003fff" + bbHex,
	},
	{
		name:  "accept from the start",
		frame: &FileAccept{ID: testFileID},
		hex:   "03 10" + fileIDHex + "0000000000000000",
	},
	{
		name:  "accept resumed",
		frame: &FileAccept{ID: testFileID, Offset: 2 << 16},
		hex:   "03 10" + fileIDHex + "0000000000020000",
	},
	{
		name:  "reject by user",
		frame: &FileReject{ID: testFileID, Code: FileRejectUser, Reason: "no!"},
		// kind len(14) id code reason
		hex: "04 0e" + fileIDHex + "01" + "0003 6e6f21",
	},
	{
		// An unknown code parses: the sender shows the reason.
		name:  "reject unknown code, no reason",
		frame: &FileReject{ID: testFileID, Code: 0x42},
		hex:   "04 0b" + fileIDHex + "42" + "0000",
	},
	{
		name:  "done",
		frame: &FileDone{ID: testFileID, SHA256: emptySHA},
		hex:   "05 28" + fileIDHex + emptySHAHex,
	},
}

// appendFileFrame encodes a frame of any file kind.
func appendFileFrame(b []byte, f any) []byte {
	switch f := f.(type) {
	case *FileOffer:
		return AppendFileOffer(b, f)
	case *FileHashes:
		return AppendFileHashes(b, f)
	case *FileAccept:
		return AppendFileAccept(b, f)
	case *FileReject:
		return AppendFileReject(b, f)
	case *FileDone:
		return AppendFileDone(b, f)
	}
	panic("not a file frame")
}

// parseFileFrame decodes the body of a file frame by its kind; blocks is
// for FileHashes. It returns nil, nil for an unknown kind.
func parseFileFrame(k FrameKind, body []byte, blocks int) (any, error) {
	switch k {
	case FrameFileOffer:
		return ParseFileOffer(body)
	case FrameFileChain:
		return ParseFileHashes(body, blocks)
	case FrameFileAccept:
		return ParseFileAccept(body)
	case FrameFileReject:
		return ParseFileReject(body)
	case FrameFileDone:
		return ParseFileDone(body)
	}
	return nil, nil
}

func TestFileFrames(t *testing.T) {
	for _, c := range fileFrameCases {
		t.Run(c.name, func(t *testing.T) {
			want := unhex(t, c.hex)
			got := appendFileFrame([]byte{0xee}, c.frame)
			if got[0] != 0xee || !bytes.Equal(got[1:], want) {
				t.Fatalf("encoding:\n got %x\nwant ee%x", got[1:], want)
			}
			stream := append(append([]byte{}, want...), want...)
			k, body, n, err := ParseFrame(stream)
			if err != nil || n != len(want) {
				t.Fatalf("ParseFrame = %v, %d bytes, %v; want %d bytes", k, n, err, len(want))
			}
			if k != FrameKind(want[0]) {
				t.Fatalf("kind %d", k)
			}
			f, err := parseFileFrame(k, body, c.blocks)
			if err != nil || !reflect.DeepEqual(f, c.frame) {
				t.Fatalf("parse = %#v, %v; want %#v", f, err, c.frame)
			}
			// Every truncation of the body is too short, but for a
			// FileHashes cut at a hash boundary: fewer hashes.
			for l := range len(body) {
				f, err := parseFileFrame(k, body[:l:l], c.blocks)
				if k == FrameFileChain && l >= 36 && (l-4)%32 == 0 {
					if err != nil {
						t.Errorf("hashes cut to %d bytes: %v", l, err)
					}
					continue
				}
				if k == FrameFileChain && l > 36 {
					if !errors.Is(err, ErrMalformed) {
						t.Errorf("hashes cut inside a hash (%d bytes): %v", l, err)
					}
					continue
				}
				if !errors.Is(err, ErrTooShort) || !reflect.ValueOf(f).IsNil() {
					t.Errorf("body cut to %d of %d bytes: %#v, %v; want ErrTooShort", l, len(body), f, err)
				}
			}
			// Trailing bytes: a newer sender's fields, ignored; but a
			// FileHashes is as long as its hashes.
			f, err = parseFileFrame(k, append(bytes.Clone(body), 0xde, 0xad), c.blocks)
			if k == FrameFileChain {
				if !errors.Is(err, ErrMalformed) {
					t.Errorf("hashes with 2 more bytes: %#v, %v", f, err)
				}
			} else if err != nil || !reflect.DeepEqual(f, c.frame) {
				t.Errorf("with trailing bytes: %#v, %v", f, err)
			}
		})
	}
}

// offerBody encodes an offer's body, of any field values.
func offerBody(size uint64, bs uint32, name string) []byte {
	b := appendU64(mustUnhex(fileIDHex), size)
	b = appendU32(b, bs)
	b = append(b, emptySHA[:]...)
	return appendStr16(b, name)
}

func TestParseFileOfferErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		size uint64
		bs   uint32
		fn   string
		ok   bool
	}{
		{"smallest block", 1, MinFileBlockSize, "a", true},
		{"largest block", 1, MaxFileBlockSize, "a", true},
		{"block size 0", 0, 0, "a", false},
		{"block size 32 KiB", 1, 32 << 10, "a", false},
		{"block size 128 MiB", 1, 128 << 20, "a", false},
		{"block size not a power of two", 1, 3 << 16, "a", false},
		{"block size all ones", 1, math.MaxUint32, "a", false},
		{"16384 blocks", MaxFileBlocks * MinFileBlockSize, MinFileBlockSize, "a", true},
		{"16385 blocks", MaxFileBlocks*MinFileBlockSize + 1, MinFileBlockSize, "a", false},
		{"1 TiB", MaxFileSize, MaxFileBlockSize, "a", true},
		{"over 1 TiB", MaxFileSize + 1, MaxFileBlockSize, "a", false},
		{"size with the top bit set", 1 << 63, MaxFileBlockSize, "a", false},
		{"name of 255 bytes", 1, MinFileBlockSize, strings.Repeat("x", 255), true},
		{"name of 256 bytes", 1, MinFileBlockSize, strings.Repeat("x", 256), false},
		// The receiver judges the name (it answers FileRejectBadName).
		{"name not UTF-8", 1, MinFileBlockSize, "\xff/..", true},
		{"empty name", 1, MinFileBlockSize, "", true},
	} {
		o, err := ParseFileOffer(offerBody(c.size, c.bs, c.fn))
		if c.ok {
			if err != nil || o.Size != int64(c.size) || o.BlockSize != c.bs || o.Name != c.fn {
				t.Errorf("%s: %#v, %v", c.name, o, err)
			}
			continue
		}
		if !errors.Is(err, ErrMalformed) || o != nil {
			t.Errorf("%s: %#v, %v; want ErrMalformed", c.name, o, err)
		}
	}
}

func TestParseFileHashesErrors(t *testing.T) {
	body := func(first uint32, n int) []byte {
		b := appendU32(nil, first)
		for range n {
			b = append(b, hashAA[:]...)
		}
		return b
	}
	for _, c := range []struct {
		name   string
		b      []byte
		blocks int
		err    error
	}{
		{"full frame", body(0, MaxFileHashes), MaxFileHashes, nil},
		{"too many hashes", body(0, MaxFileHashes+1), 2 * MaxFileHashes, ErrMalformed},
		{"no hash", body(0, 0), 1, ErrTooShort},
		{"beyond the last block", body(1, 2), 2, ErrMalformed},
		{"first beyond the file", body(5, 1), 2, ErrMalformed},
		{"first at the top", body(math.MaxUint32, 1), MaxFileBlocks, ErrMalformed},
		{"empty file", body(0, 1), 0, ErrMalformed},
		{"partial hash", append(body(0, 1), 1), 2, ErrMalformed},
	} {
		h, err := ParseFileHashes(c.b, c.blocks)
		if c.err == nil {
			if err != nil || len(h.Hashes) != (len(c.b)-4)/32 {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if !errors.Is(err, c.err) || h != nil {
			t.Errorf("%s: %#v, %v; want %v", c.name, h, err, c.err)
		}
	}
	// A full frame fits a frame.
	if enc := AppendFileHashes(nil, &FileHashes{Hashes: make([][32]byte, MaxFileHashes)}); len(enc) > 1+3+MaxFrameLen {
		t.Errorf("full FileHashes frame is %d bytes", len(enc))
	} else if _, _, _, err := ParseFrame(enc); err != nil {
		t.Errorf("full FileHashes frame: %v", err)
	}
}

func TestAppendFileHashFrames(t *testing.T) {
	for _, n := range []int{0, 1, MaxFileHashes - 1, MaxFileHashes, MaxFileHashes + 1, MaxFileBlocks} {
		hashes := make([][32]byte, n)
		for i := range hashes {
			hashes[i][0], hashes[i][1] = byte(i>>8), byte(i)
		}
		b := AppendFileHashFrames(nil, hashes)
		var got [][32]byte
		frames := 0
		for len(b) > 0 {
			k, body, l, err := ParseFrame(b)
			if err != nil || k != FrameFileChain {
				t.Fatalf("%d hashes: frame %d: %v, %v", n, frames, k, err)
			}
			h, err := ParseFileHashes(body, n)
			if err != nil || int(h.First) != len(got) {
				t.Fatalf("%d hashes: frame %d: %#v, %v", n, frames, h, err)
			}
			got = append(got, h.Hashes...)
			b = b[l:]
			frames++
		}
		if frames != (n+MaxFileHashes-1)/MaxFileHashes || len(got) != n || (n > 0 && !reflect.DeepEqual(got, hashes)) {
			t.Errorf("%d hashes: %d frames, %d hashes back", n, frames, len(got))
		}
	}
}

func TestParseFileAcceptReject(t *testing.T) {
	b := append(mustUnhex(fileIDHex), mustUnhex("0000010000000001")...)
	if a, err := ParseFileAccept(b); !errors.Is(err, ErrMalformed) || a != nil {
		t.Errorf("accept beyond 1 TiB: %#v, %v", a, err)
	}
	b = appendU16(mustUnhex(fileIDHex+"01"), MaxFileReasonLen+1)
	b = append(b, strings.Repeat("r", MaxFileReasonLen+1)...)
	if j, err := ParseFileReject(b); !errors.Is(err, ErrMalformed) || j != nil {
		t.Errorf("reason over the limit: %#v, %v", j, err)
	}
	// A long reason is cut, at a character boundary.
	long := strings.Repeat("é", MaxFileReasonLen) // 2 bytes each
	_, body, _, _ := ParseFrame(AppendFileReject(nil, &FileReject{ID: testFileID, Code: FileRejectDisk, Reason: "x" + long}))
	j, err := ParseFileReject(body)
	if err != nil || j.Reason != "x"+long[:MaxFileReasonLen-2] || j.Code != FileRejectDisk {
		t.Errorf("long reason: %d bytes, %v", len(j.Reason), err)
	}
	for c, s := range map[FileRejectCode]string{FileRejectUser: "rejected", FileRejectBusy: "busy", FileRejectDisk: "cannot store", 0x42: "code(66)"} {
		if c.String() != s {
			t.Errorf("%d.String() = %q, want %q", uint8(c), c.String(), s)
		}
	}
}

func TestChooseBlockSize(t *testing.T) {
	for _, c := range []struct {
		size   int64
		bs     uint32
		blocks int
	}{
		{-1, MinFileBlockSize, 0},
		{0, MinFileBlockSize, 0},
		{1, MinFileBlockSize, 1},
		{MinFileBlockSize, MinFileBlockSize, 1},
		{MinFileBlockSize + 1, MinFileBlockSize, 2},
		{1 << 30, MinFileBlockSize, MaxFileBlocks},
		{1<<30 + 1, 128 << 10, 8193},
		{1 << 31, 128 << 10, MaxFileBlocks},
		{MaxFileSize - 1, MaxFileBlockSize, MaxFileBlocks},
		{MaxFileSize, MaxFileBlockSize, MaxFileBlocks},
		{MaxFileSize + 1, MaxFileBlockSize, MaxFileBlocks + 1},
	} {
		bs := ChooseBlockSize(c.size)
		if bs != c.bs || BlockCount(c.size, bs) != c.blocks {
			t.Errorf("size %d: block size %d, %d blocks; want %d, %d", c.size, bs, BlockCount(c.size, bs), c.bs, c.blocks)
		}
		err := ValidateFileLayout(c.size, bs)
		if valid := c.size >= 0 && c.size <= MaxFileSize; valid != (err == nil) {
			t.Errorf("ValidateFileLayout(%d, %d) = %v", c.size, bs, err)
		}
	}
	if BlockCount(math.MaxInt64, 1) != math.MaxInt || BlockCount(5, 0) != 0 {
		t.Errorf("BlockCount at the edges: %d, %d", BlockCount(math.MaxInt64, 1), BlockCount(5, 0))
	}
}

func TestFileOfferCheckAccept(t *testing.T) {
	o := &FileOffer{ID: testFileID, Size: 3*MinFileBlockSize - 7, BlockSize: MinFileBlockSize}
	if o.Blocks() != 3 {
		t.Fatalf("%d blocks", o.Blocks())
	}
	for _, c := range []struct {
		a  FileAccept
		ok bool
	}{
		{FileAccept{ID: testFileID}, true},
		{FileAccept{ID: testFileID, Offset: 2 * MinFileBlockSize}, true},
		{FileAccept{ID: testFileID, Offset: 3 * MinFileBlockSize}, false}, // past the end
		{FileAccept{ID: testFileID, Offset: o.Size}, false},               // not a block boundary
		{FileAccept{ID: testFileID, Offset: 100}, false},
		{FileAccept{ID: testFileID, Offset: -MinFileBlockSize}, false},
		{FileAccept{ID: FileID{1}}, false},
	} {
		if err := o.CheckAccept(&c.a); (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrMalformed)) {
			t.Errorf("CheckAccept(%+v) = %v", c.a, err)
		}
	}
	// The end of a file whose size is a multiple of the block size is a
	// valid offset (nothing left to send).
	o.Size = 3 * MinFileBlockSize
	if err := o.CheckAccept(&FileAccept{ID: testFileID, Offset: o.Size}); err != nil {
		t.Errorf("accept at the end: %v", err)
	}
}

func TestFileID(t *testing.T) {
	if s := testFileID.String(); s != fileIDHex {
		t.Fatalf("String = %q", s)
	}
	if id, err := ParseFileID(fileIDHex); err != nil || id != testFileID {
		t.Fatalf("ParseFileID = %v, %v", id, err)
	}
	for _, bad := range []string{"", "1112", fileIDHex + "00", "zz12131415161718"} {
		if _, err := ParseFileID(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseFileID(%q) = %v", bad, err)
		}
	}
}
