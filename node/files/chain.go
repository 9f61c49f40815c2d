package files

import (
	"crypto/sha256"
	"fmt"
	"hash"
)

// The chain values of wire's file protocol: for a block that is not the
// file's last, the SHA-256 intermediate hash value (FIPS 180-4's H, eight
// 32-bit words, big-endian) once the file's bytes up to the block's end are
// hashed; for the last block, the file's SHA-256. One SHA-256 over the
// file, in order, thus checks every block as it completes and, at the end,
// the whole file: one pass over each byte where a hash per block and one
// for the file took two.
//
// crypto/sha256 exposes H only through its marshalled state (stable across
// Go versions, since a state saved by one must load in the next):
// "sha\x03", H, the unprocessed chunk (64 bytes), the length (8 bytes).
// Blocks are multiples of 64 bytes, so at a block's end the chunk is empty
// and H is the state.

const (
	sha256Magic    = "sha\x03"
	sha256StateLen = len(sha256Magic) + 32 + sha256.BlockSize + 8
)

// chainValue is H in state, a crypto/sha256 state that marshalHash wrote
// after a multiple of 64 bytes.
func chainValue(state []byte) ([32]byte, error) {
	if len(state) != sha256StateLen || string(state[:len(sha256Magic)]) != sha256Magic {
		return [32]byte{}, fmt.Errorf("files: unexpected SHA-256 state (%d bytes)", len(state))
	}
	return [32]byte(state[len(sha256Magic):]), nil
}

// chainer computes the chain values of a stream of bytes cut into blocks.
type chainer struct {
	h     hash.Hash
	state []byte // scratch for h's marshalled state
}

func newChainer() *chainer {
	return &chainer{h: sha256.New(), state: make([]byte, 0, sha256StateLen)}
}

// value is the chain value after what h has been given, which must be a
// multiple of 64 bytes.
func (c *chainer) value() ([32]byte, error) {
	var err error
	if c.state, err = marshalHash(c.h, c.state); err != nil {
		return [32]byte{}, err
	}
	return chainValue(c.state)
}
