// Package ctrl is the authenticated control channel between a node and the
// rendezvous: a Noise handshake (Noise_IK_25519_ChaChaPoly_BLAKE2s, from
// github.com/flynn/noise) that sets up per-session keys, and the sealing
// of every control datagram after it (ChaCha20-Poly1305 with an explicit
// counter, checked against a replay window). It does no I/O; the wire
// layout of the datagrams that carry it is package wire's.
//
// # Keys
//
// The rendezvous has a long-term X25519 key (ServerKey), created on its
// first run; nodes pin its public half (trust on first use, or given by
// the user). A node's Noise static key is its Ed25519 identity key turned
// into X25519 (the private scalar from the Ed25519 seed, as libsodium's
// crypto_sign_ed25519_sk_to_curve25519 and age do; the public point by the
// birational map, filippo.io/edwards25519), so the handshake itself proves
// that the node holds its identity key: the rendezvous checks that the
// static key the handshake authenticated is the one the claimed Ed25519 key
// maps to.
//
// # The handshake
//
// IK: the node knows the rendezvous's static key before it starts.
//
//	-> e, es, s, ss   (+ payload: the node's Ed25519 key and name)
//	<- e, ee, se      (+ payload: the session, or a refusal)
//
// The prologue binds the handshake to the address cookie of the request
// that carries it (docs/PROTOCOL.md), so a first message cannot be moved to
// another registration. After the second message each side holds two
// keys, one per direction.
//
// # Sealed datagrams
//
// Every control datagram after the handshake is sealed: its header, the
// session ID and a 64-bit counter are the associated data, the counter is
// the AEAD nonce, and the receiver refuses a counter it has seen or one
// older than its window (Window). A node that restarts, or a rendezvous
// that restarts, starts a new handshake and so new keys: counters never
// repeat under one key.
package ctrl

import (
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"filippo.io/edwards25519"
	"github.com/flynn/noise"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"

	"natchat/wire"
)

// suite is the Noise cipher suite: X25519, ChaCha20-Poly1305, BLAKE2s.
var suite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)

// prologue starts the Noise prologue; the cookie follows.
const prologue = "natchat control v2\x00"

// Overhead is what sealing adds to a plaintext: the AEAD tag.
const Overhead = 16

// Errors.
var (
	// ErrHandshake: a handshake message did not check out (wrong keys,
	// tampered, or not a handshake message at all).
	ErrHandshake = errors.New("ctrl: handshake failed")
	// ErrIdentity: the handshake's static key is not the one the claimed
	// Ed25519 identity maps to.
	ErrIdentity = errors.New("ctrl: static key does not match the identity")
	// ErrOpen: a sealed datagram did not authenticate.
	ErrOpen = errors.New("ctrl: sealed datagram does not authenticate")
	// ErrReplay: a sealed datagram's counter was seen before, or is older
	// than the window.
	ErrReplay = errors.New("ctrl: replayed or too old")
	// ErrKey: a text is not a rendezvous key.
	ErrKey = errors.New("ctrl: not a rendezvous key")
)

// PublicKey is the rendezvous's public key (X25519).
type PublicKey [32]byte

// String returns the key as nodes write it: base64url without padding
// (43 characters).
func (k PublicKey) String() string { return base64.RawURLEncoding.EncodeToString(k[:]) }

// Fingerprint is the key's fingerprint for people (see wire.Key.Fingerprint).
func (k PublicKey) Fingerprint() string { return wire.Key(k).Fingerprint() }

// IsZero reports whether k is unset.
func (k PublicKey) IsZero() bool { return k == PublicKey{} }

// ParsePublicKey parses a key as String writes it.
func ParsePublicKey(s string) (PublicKey, error) {
	var k PublicKey
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("%w: %q (want 43 characters of base64url, as `rendezvous -print-key` prints)", ErrKey, s)
	}
	copy(k[:], b)
	return k, nil
}

// ServerKey is the rendezvous's long-term key pair.
type ServerKey struct {
	Private [32]byte
	Public  PublicKey
}

// NewServerKey makes a random key pair.
func NewServerKey() (ServerKey, error) {
	var k ServerKey
	if _, err := rand.Read(k.Private[:]); err != nil {
		return k, err
	}
	return ServerKeyFromPrivate(k.Private)
}

// ServerKeyFromPrivate completes a key pair from its private half.
func ServerKeyFromPrivate(priv [32]byte) (ServerKey, error) {
	pub, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		return ServerKey{}, err
	}
	k := ServerKey{Private: priv}
	copy(k.Public[:], pub)
	return k, nil
}

func (k ServerKey) dh() noise.DHKey {
	return noise.DHKey{Private: k.Private[:], Public: k.Public[:]}
}

// nodeStatic turns an Ed25519 identity into the node's X25519 key pair.
func nodeStatic(id ed25519.PrivateKey) (noise.DHKey, error) {
	h := sha512.Sum512(id.Seed())
	priv := h[:32] // X25519 clamps it
	pub, err := curve25519.X25519(priv, curve25519.Basepoint)
	if err != nil {
		return noise.DHKey{}, err
	}
	return noise.DHKey{Private: append([]byte(nil), priv...), Public: pub}, nil
}

// StaticOf returns the X25519 public key an Ed25519 identity maps to.
func StaticOf(k wire.Key) ([32]byte, error) {
	var out [32]byte
	p, err := new(edwards25519.Point).SetBytes(k[:])
	if err != nil {
		return out, fmt.Errorf("%w: %v", ErrIdentity, err)
	}
	copy(out[:], p.BytesMontgomery())
	return out, nil
}

func config(c wire.Cookie, initiator bool) noise.Config {
	return noise.Config{
		CipherSuite: suite,
		Pattern:     noise.HandshakeIK,
		Initiator:   initiator,
		Prologue:    append([]byte(prologue), c[:]...),
	}
}

// Initiator is the node's side of a handshake.
type Initiator struct {
	hs *noise.HandshakeState
}

// NewInitiator starts a handshake with the rendezvous whose key is server,
// for the request that carries cookie c.
func NewInitiator(id ed25519.PrivateKey, server PublicKey, c wire.Cookie) (*Initiator, error) {
	st, err := nodeStatic(id)
	if err != nil {
		return nil, err
	}
	cfg := config(c, true)
	cfg.StaticKeypair = st
	cfg.PeerStatic = server[:]
	hs, err := noise.NewHandshakeState(cfg)
	if err != nil {
		return nil, err
	}
	return &Initiator{hs: hs}, nil
}

// First returns the first handshake message, carrying payload (encrypted
// to the rendezvous).
func (i *Initiator) First(payload []byte) ([]byte, error) {
	out, _, _, err := i.hs.WriteMessage(nil, payload)
	return out, err
}

// Finish reads the rendezvous's answer and returns its payload and the
// session keys. It fails with ErrHandshake for anything but the answer to
// this handshake from the holder of the pinned key, and a message that
// fails leaves the handshake as it was: the real answer may still follow
// a forged one.
func (i *Initiator) Finish(msg []byte) ([]byte, *Keys, error) {
	// flynn/noise rolls its state back when a message does not decrypt,
	// but not when the message's ephemeral key is a low-order point: the
	// key is hashed in, then the Diffie-Hellman fails. One spoofed
	// datagram would spoil the handshake: refuse such a key first.
	if len(msg) < 32 || lowOrder(msg[:32]) {
		return nil, nil, fmt.Errorf("%w: no valid ephemeral key", ErrHandshake)
	}
	payload, c1, c2, err := i.hs.ReadMessage(nil, msg)
	if err != nil || c1 == nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	// c1 encrypts initiator → responder.
	return payload, newKeys(c1, c2), nil
}

// lowOrder reports whether the X25519 public key p has a small order (the
// Diffie-Hellman with any private key is then all zeroes).
func lowOrder(p []byte) bool {
	probe := [32]byte{1} // X25519 clamps it: a multiple of the cofactor
	_, err := curve25519.X25519(probe[:], p)
	return err != nil
}

// Responder is the rendezvous's side of one handshake.
type Responder struct {
	hs *noise.HandshakeState
}

// Respond reads a node's first message, sent with cookie c (already
// checked), and returns the node's payload and its X25519 static key (to be
// checked against the identity in the payload with StaticOf).
func Respond(server ServerKey, c wire.Cookie, msg []byte) (*Responder, []byte, [32]byte, error) {
	var static [32]byte
	cfg := config(c, false)
	cfg.StaticKeypair = server.dh()
	hs, err := noise.NewHandshakeState(cfg)
	if err != nil {
		return nil, nil, static, err
	}
	payload, _, _, err := hs.ReadMessage(nil, msg)
	if err != nil {
		return nil, nil, static, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	copy(static[:], hs.PeerStatic())
	return &Responder{hs: hs}, payload, static, nil
}

// Finish writes the answer carrying payload and returns it with the
// session keys.
func (r *Responder) Finish(payload []byte) ([]byte, *Keys, error) {
	out, c1, c2, err := r.hs.WriteMessage(nil, payload)
	if err != nil {
		return nil, nil, err
	}
	// c1 encrypts initiator → responder: the rendezvous receives with it.
	return out, newKeys(c2, c1), nil
}

// Keys are one side's session keys: one to seal what it sends, one to open
// what it receives, with the send counter and the receive window. Not safe
// for concurrent use: a caller serialises Seal calls and Open calls (each
// on its own: sealing and opening touch different state).
//
// Each direction's cipher is ChaCha20-Poly1305 under the key the handshake
// left in its noise.CipherState, with Noise's nonce for it (4 zero bytes,
// then the counter, little-endian). Keys holds the two keys themselves
// and makes the AEAD for each Seal and Open (a 32-byte copy and a small
// allocation): a rendezvous holds one Keys per node, and two AEAD objects
// held in it cost 64 bytes of heap per node beside the 32 of their
// interfaces in the record (noise.Cipher wrappers, 48 more), where the
// keys inline cost 32 more than the interfaces and nothing beside. Control datagrams are few per node (a
// heartbeat every 25 s), and relayed data does not go through Keys.
//
// A Keys may be copied into the record that holds it (the rendezvous
// keeps one in each node's record rather than behind a pointer), but
// only one copy may be used: two would seal under the same counters,
// which reuses nonces.
type Keys struct {
	send, recv [32]byte
	next       uint64 // the next send counter
	window     Window
}

// newKeys returns the Keys that seal with send's key and open with recv's.
func newKeys(send, recv *noise.CipherState) *Keys {
	return &Keys{send: send.UnsafeKey(), recv: recv.UnsafeKey()}
}

// aeadOfKey returns the suite's AEAD with key k.
func aeadOfKey(k *[32]byte) cipher.AEAD {
	a, err := chacha20poly1305.New(k[:])
	if err != nil {
		panic(err) // the key is 32 bytes: it cannot fail
	}
	return a
}

// nonce is Noise's ChaChaPoly nonce for counter n.
func nonce(n uint64) []byte {
	var b [chacha20poly1305.NonceSize]byte
	binary.LittleEndian.PutUint64(b[4:], n)
	return b[:]
}

// Seal appends to dst a whole Sealed datagram for session s carrying
// plaintext (an inner message, wire.AppendInner): the header with the next
// counter, then the ciphertext and tag, the header being the associated
// data.
func (k *Keys) Seal(dst []byte, s wire.SessionID, plaintext []byte) []byte {
	n := k.next
	k.next++
	start := len(dst)
	dst = wire.AppendSealedHeader(dst, s, n)
	return aeadOfKey(&k.send).Seal(dst, nonce(n), plaintext, dst[start:])
}

// Open checks a whole Sealed datagram b (whose session the caller used to
// find k) and appends its plaintext to dst, or fails with ErrOpen or
// ErrReplay. A counter is accepted once, and only after the datagram
// authenticated.
func (k *Keys) Open(dst, b []byte) ([]byte, error) {
	if len(b) < wire.SealedHeaderLen+Overhead || b[2] != byte(wire.TypeSealed) {
		return nil, ErrOpen
	}
	n := binary.BigEndian.Uint64(b[wire.SealedHeaderLen-8 : wire.SealedHeaderLen])
	if !k.window.Fresh(n) {
		return nil, ErrReplay
	}
	out, err := aeadOfKey(&k.recv).Open(dst, nonce(n), b[wire.SealedHeaderLen:], b[:wire.SealedHeaderLen])
	if err != nil {
		return nil, ErrOpen
	}
	k.window.Mark(n)
	return out, nil
}

// Window is a replay window over 64-bit counters: it accepts each counter
// once, and no counter more than WindowSize behind the highest seen (RFC
// 6479's idea, in one word: control datagrams are few and rarely far out of
// order). The zero value is ready.
type Window struct {
	top  uint64 // highest counter seen, plus one (0: none yet)
	seen uint64 // bit i: counter top-1-i seen
}

// WindowSize is how far behind the highest counter a datagram may be.
const WindowSize = 64

// Fresh reports whether counter n may be accepted (not seen, not too old).
func (w *Window) Fresh(n uint64) bool {
	switch {
	case n == ^uint64(0):
		return false
	case n >= w.top:
		return true
	case w.top-1-n >= WindowSize:
		return false
	}
	return w.seen&(1<<(w.top-1-n)) == 0
}

// Mark records counter n as seen; call it only after Fresh(n) and after the
// datagram authenticated.
func (w *Window) Mark(n uint64) {
	if n >= w.top {
		shift := n + 1 - w.top
		if shift >= WindowSize {
			w.seen = 0
		} else {
			w.seen <<= shift
		}
		w.seen |= 1
		w.top = n + 1
		return
	}
	w.seen |= 1 << (w.top - 1 - n)
}
