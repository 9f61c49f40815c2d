package mailbox

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/nacl/box"

	"natchat/wire"
)

func identity(t *testing.T) (ed25519.PrivateKey, wire.Key) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv, wire.Key(pub)
}

func TestRoundtrip(t *testing.T) {
	alice, aliceKey := identity(t)
	bob, bobKey := identity(t)
	for _, text := range []string{"hi", "héllo\nwörld", strings.Repeat("x", wire.MaxTextLen)} {
		m := &wire.Msg{ID: wire.MsgID{1, 2, 3}, Seq: 42, SentMS: 1764000000123, Text: text}
		blob, err := Seal(alice, bobKey, m)
		if err != nil {
			t.Fatal(err)
		}
		if len(blob) > wire.MaxMailBlob {
			t.Fatalf("a %d-byte text seals to %d bytes, over MaxMailBlob", len(text), len(blob))
		}
		got, err := OpenMail(bob, aliceKey, m.ID, blob)
		if err != nil {
			t.Fatal(err)
		}
		if *got != *m {
			t.Fatalf("opened %+v, sealed %+v", got, m)
		}
	}
}

func TestRefused(t *testing.T) {
	alice, aliceKey := identity(t)
	bob, bobKey := identity(t)
	mallory, malloryKey := identity(t)
	id := wire.MsgID{9, 9}
	m := &wire.Msg{ID: id, Seq: 1, SentMS: 1, Text: "meet at noon"}
	blob, err := Seal(alice, bobKey, m)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(blob)
	tampered[len(tampered)-1] ^= 1
	nonce := bytes.Clone(blob)
	nonce[0] ^= 1
	forged, err := Seal(mallory, bobKey, m) // mallory claims to be alice
	if err != nil {
		t.Fatal(err)
	}
	// A blob that authenticates but holds no message frame.
	priv, _ := private(alice)
	pub, _ := public(bobKey)
	var n [NonceLen]byte
	junk := box.Seal(append([]byte(nil), n[:]...), []byte("not a frame"), &n, pub, priv)
	var badPoint wire.Key // a y with no x on the curve
	for badPoint[0] = 2; ; badPoint[0]++ {
		if _, err := public(badPoint); err != nil {
			break
		}
	}

	for _, c := range []struct {
		name string
		to   ed25519.PrivateKey
		from wire.Key
		id   wire.MsgID
		blob []byte
		want error
	}{
		{"tampered ciphertext", bob, aliceKey, id, tampered, ErrOpen},
		{"tampered nonce", bob, aliceKey, id, nonce, ErrOpen},
		{"wrong sender key", bob, malloryKey, id, blob, ErrOpen},
		{"forged by another sender", bob, aliceKey, id, forged, ErrOpen},
		{"wrong recipient", mallory, aliceKey, id, blob, ErrOpen},
		{"truncated", bob, aliceKey, id, blob[:Overhead-1], ErrTruncated},
		{"empty", bob, aliceKey, id, nil, ErrTruncated},
		{"cut short", bob, aliceKey, id, blob[:len(blob)-3], ErrOpen},
		{"swapped ID", bob, aliceKey, wire.MsgID{1}, blob, ErrID},
		{"not a message", bob, aliceKey, id, junk, ErrContent},
		{"sender key not a point", bob, badPoint, id, blob, ErrKey},
	} {
		got, err := OpenMail(c.to, c.from, c.id, c.blob)
		if !errors.Is(err, c.want) || got != nil {
			t.Errorf("%s: %v, %v; want %v", c.name, got, err, c.want)
		}
	}
	// The sentinels are distinct.
	errs := []error{ErrKey, ErrTooBig, ErrTruncated, ErrOpen, ErrContent, ErrID}
	for i, a := range errs {
		for j, b := range errs {
			if i != j && errors.Is(a, b) {
				t.Errorf("%v is %v", a, b)
			}
		}
	}
}

func TestNoPlaintextInBlob(t *testing.T) {
	alice, _ := identity(t)
	_, bobKey := identity(t)
	secret := "the password is swordfish, repeat swordfish"
	m := &wire.Msg{ID: wire.MsgID{0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF, 0x11, 0x22}, Seq: 7, SentMS: 1764000000123, Text: secret}
	blob, err := Seal(alice, bobKey, m)
	if err != nil {
		t.Fatal(err)
	}
	for _, needle := range [][]byte{[]byte("swordfish"), []byte("password"), m.ID[:], wire.AppendMsg(nil, m)[:12]} {
		if bytes.Contains(blob, needle) {
			t.Fatalf("the blob contains %q in the clear", needle)
		}
	}
	// Two seals of one message differ (random nonce).
	again, _ := Seal(alice, bobKey, m)
	if bytes.Equal(blob, again) {
		t.Fatal("two seals of one message are equal")
	}
}

func TestSealLimits(t *testing.T) {
	alice, _ := identity(t)
	_, bobKey := identity(t)
	if _, err := Seal(alice, bobKey, &wire.Msg{Text: strings.Repeat("x", wire.MaxMailBlob)}); !errors.Is(err, ErrTooBig) {
		t.Fatalf("oversize: %v", err)
	}
	if _, err := Seal(alice[:10], bobKey, &wire.Msg{Text: "x"}); !errors.Is(err, ErrKey) {
		t.Fatalf("short private key: %v", err)
	}
}
