// Package mailbox seals a chat message for a peer's offline mailbox on the
// rendezvous, and opens one. The rendezvous stores and forwards the sealed
// blob with its routing metadata (sender, recipient, ID, size, time) and can
// neither read, alter nor forge it. It does no I/O.
//
// # Construction
//
// NaCl box (golang.org/x/crypto/nacl/box: X25519, XSalsa20-Poly1305) between
// the sender's and the recipient's X25519 keys, which are their Ed25519
// identity keys converted as the control channel converts them (package
// ctrl): the private scalar from SHA-512 of the Ed25519 seed, the public
// point by the birational map (ctrl.StaticOf). Box authenticates the pair:
// only the holder of the sender's or of the recipient's private key can
// make a blob that opens for that pair, so a blob that opens came from the
// sender (the recipient does not forge messages to itself).
//
//	blob = nonce (24, random) || box(plaintext)
//	plaintext = wire.AppendMsg(m): one FrameMsg frame, as on a chat stream
//
// The recipient also checks that the ID the rendezvous gives with the blob
// is the one sealed in it (OpenMail): the rendezvous cannot replay one
// message under another ID. That the sender's key is the one pinned for
// its name is the caller's check.
package mailbox

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"errors"
	"fmt"

	"golang.org/x/crypto/nacl/box"

	"natchat/ctrl"
	"natchat/wire"
)

// NonceLen is the length of the random nonce that starts a blob.
const NonceLen = 24

// Overhead is what sealing adds to the encoded message: nonce and tag.
const Overhead = NonceLen + box.Overhead

var (
	// ErrKey means a key is not a usable identity key (an Ed25519 public
	// key that is not a valid point, or a private key of the wrong size).
	ErrKey = errors.New("mailbox: not a usable identity key")
	// ErrTooBig means the message does not fit wire.MaxMailBlob sealed.
	ErrTooBig = errors.New("mailbox: message too big to seal")
	// ErrTruncated means the blob is shorter than a nonce and a tag.
	ErrTruncated = errors.New("mailbox: blob truncated")
	// ErrOpen means the blob does not authenticate: it was altered, or it
	// was not sealed by this sender for this recipient. (Box cannot tell
	// these apart, by design.)
	ErrOpen = errors.New("mailbox: blob does not authenticate (altered, or not from this sender to this recipient)")
	// ErrContent means the blob authenticated but does not hold one chat
	// message.
	ErrContent = errors.New("mailbox: sealed content is not a message")
	// ErrID means the sealed message's ID is not the one the blob came
	// with.
	ErrID = errors.New("mailbox: sealed message ID differs from the mailbox's")
)

// private returns the X25519 private key of an Ed25519 identity.
func private(id ed25519.PrivateKey) (*[32]byte, error) {
	if len(id) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: private key of %d bytes", ErrKey, len(id))
	}
	h := sha512.Sum512(id.Seed())
	var k [32]byte
	copy(k[:], h[:32]) // X25519 clamps it
	return &k, nil
}

// public returns the X25519 public key of an Ed25519 identity key.
func public(k wire.Key) (*[32]byte, error) {
	p, err := ctrl.StaticOf(k)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	return &p, nil
}

// Seal seals m from the identity from to the identity to.
func Seal(from ed25519.PrivateKey, to wire.Key, m *wire.Msg) ([]byte, error) {
	priv, err := private(from)
	if err != nil {
		return nil, err
	}
	pub, err := public(to)
	if err != nil {
		return nil, err
	}
	pt := wire.AppendMsg(nil, m)
	if len(pt)+Overhead > wire.MaxMailBlob {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooBig, len(pt)+Overhead)
	}
	var nonce [NonceLen]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	out := make([]byte, NonceLen, len(pt)+Overhead)
	copy(out, nonce[:])
	return box.Seal(out, pt, &nonce, pub, priv), nil
}

// Open opens a blob sealed by the identity from for the identity to and
// returns its message. It fails with ErrKey, ErrTruncated, ErrOpen or
// ErrContent.
func Open(to ed25519.PrivateKey, from wire.Key, blob []byte) (*wire.Msg, error) {
	if len(blob) < Overhead {
		return nil, fmt.Errorf("%w: %d bytes", ErrTruncated, len(blob))
	}
	priv, err := private(to)
	if err != nil {
		return nil, err
	}
	pub, err := public(from)
	if err != nil {
		return nil, err
	}
	nonce := (*[NonceLen]byte)(blob[:NonceLen])
	pt, ok := box.Open(nil, blob[NonceLen:], nonce, pub, priv)
	if !ok {
		return nil, ErrOpen
	}
	k, body, n, err := wire.ParseFrame(pt)
	if err != nil || k != wire.FrameMsg || n != len(pt) {
		return nil, fmt.Errorf("%w: not one message frame", ErrContent)
	}
	m, err := wire.ParseMsg(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrContent, err)
	}
	return m, nil
}

// OpenMail opens a blob the mailbox gave with message ID id, as Open does,
// and checks that the sealed message has that ID (else ErrID).
func OpenMail(to ed25519.PrivateKey, from wire.Key, id wire.MsgID, blob []byte) (*wire.Msg, error) {
	m, err := Open(to, from, blob)
	if err != nil {
		return nil, err
	}
	if m.ID != id {
		return nil, fmt.Errorf("%w: sealed %s, given %s", ErrID, m.ID, id)
	}
	return m, nil
}
