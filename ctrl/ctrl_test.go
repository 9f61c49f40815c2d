package ctrl

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/flynn/noise"

	"natchat/wire"
)

func newIdentity(t testing.TB) (ed25519.PrivateKey, wire.Key) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv, wire.Key(pub)
}

// handshake runs a whole handshake and returns both sides' keys.
func handshake(t *testing.T, server ServerKey, id ed25519.PrivateKey, c wire.Cookie) (*Keys, *Keys, []byte) {
	t.Helper()
	ini, err := NewInitiator(id, server.Public, c)
	if err != nil {
		t.Fatal(err)
	}
	m1, err := ini.First([]byte("hello rendezvous"))
	if err != nil {
		t.Fatal(err)
	}
	r, payload, static, err := Respond(server, c, m1)
	if err != nil {
		t.Fatal(err)
	}
	if string(payload) != "hello rendezvous" {
		t.Fatalf("payload %q", payload)
	}
	want, err := StaticOf(wire.Key(id.Public().(ed25519.PublicKey)))
	if err != nil || static != want {
		t.Fatalf("static %x, identity maps to %x (%v)", static, want, err)
	}
	m2, sk, err := r.Finish([]byte("welcome"))
	if err != nil {
		t.Fatal(err)
	}
	p2, nk, err := ini.Finish(m2)
	if err != nil || string(p2) != "welcome" {
		t.Fatalf("finish: %q, %v", p2, err)
	}
	return nk, sk, m1
}

func TestHandshakeAndSeal(t *testing.T) {
	server, _ := NewServerKey()
	id, _ := newIdentity(t)
	c := wire.Cookie{1, 2, 3}
	nk, sk, _ := handshake(t, server, id, c)
	sess := wire.SessionID{7}
	for i := range 3 {
		d := nk.Seal(nil, sess, []byte("ping"))
		if n := binary.BigEndian.Uint64(d[11:19]); n != uint64(i) {
			t.Fatalf("counter %d, want %d", n, i)
		}
		pt, err := sk.Open(nil, d)
		if err != nil || string(pt) != "ping" {
			t.Fatalf("open: %q, %v", pt, err)
		}
		// The same datagram again: a replay.
		if _, err := sk.Open(nil, d); !errors.Is(err, ErrReplay) {
			t.Fatalf("replay: %v", err)
		}
	}
	d := sk.Seal(nil, sess, []byte("pong"))
	if pt, err := nk.Open(nil, d); err != nil || string(pt) != "pong" {
		t.Fatalf("rendezvous to node: %q, %v", pt, err)
	}
	// Tampered box, header (session, counter), or truncated: refused, and
	// a refused datagram does not burn its counter.
	d = nk.Seal(nil, sess, []byte("x"))
	for _, i := range []int{len(d) - 1, wire.SealedHeaderLen, 5, 15} {
		bad := bytes.Clone(d)
		bad[i] ^= 1
		if _, err := sk.Open(nil, bad); err == nil {
			t.Fatalf("byte %d flipped: accepted", i)
		}
	}
	if _, err := sk.Open(nil, d[:wire.SealedHeaderLen+3]); !errors.Is(err, ErrOpen) {
		t.Fatalf("truncated: %v", err)
	}
	if _, err := sk.Open(nil, d); err != nil {
		t.Fatalf("the genuine datagram after forgeries: %v", err)
	}
	// Sealing in one direction cannot be opened as the other.
	d = nk.Seal(nil, sess, []byte("y"))
	if _, err := nk.Open(nil, d); err == nil {
		t.Fatal("a node opened its own datagram")
	}
}

func TestHandshakeRefusals(t *testing.T) {
	server, _ := NewServerKey()
	other, _ := NewServerKey()
	id, _ := newIdentity(t)
	c := wire.Cookie{9}
	// To a rendezvous with another key: it cannot read the first message.
	ini, _ := NewInitiator(id, other.Public, c)
	m1, _ := ini.First(nil)
	if _, _, _, err := Respond(server, c, m1); !errors.Is(err, ErrHandshake) {
		t.Fatalf("wrong server key: %v", err)
	}
	// Moved to another cookie: the prologue differs.
	ini, _ = NewInitiator(id, server.Public, c)
	m1, _ = ini.First(nil)
	if _, _, _, err := Respond(server, wire.Cookie{8}, m1); !errors.Is(err, ErrHandshake) {
		t.Fatalf("other cookie: %v", err)
	}
	// An answer from someone without the server's private key.
	r, _, _, err := Respond(server, c, m1)
	if err != nil {
		t.Fatal(err)
	}
	m2, _, _ := r.Finish(nil)
	impostor, _, _, _ := Respond(other, c, m1) // cannot even read it
	if impostor != nil {
		t.Fatal("another key read the first message")
	}
	fake := bytes.Clone(m2)
	fake[len(fake)-1] ^= 1
	if _, _, err := ini.Finish(fake); !errors.Is(err, ErrHandshake) {
		t.Fatalf("tampered answer: %v", err)
	}
	// Garbage.
	if _, _, _, err := Respond(server, c, []byte("nope")); !errors.Is(err, ErrHandshake) {
		t.Fatalf("garbage: %v", err)
	}
}

func TestStaticOfMatchesNodeStatic(t *testing.T) {
	for range 20 {
		id, k := newIdentity(t)
		st, err := nodeStatic(id)
		if err != nil {
			t.Fatal(err)
		}
		want, err := StaticOf(k)
		if err != nil || !bytes.Equal(st.Public, want[:]) {
			t.Fatalf("Montgomery of the Ed25519 key %x, X25519 of its scalar %x", want, st.Public)
		}
	}
}

func TestWindow(t *testing.T) {
	var w Window
	accept := func(n uint64) bool {
		if !w.Fresh(n) {
			return false
		}
		w.Mark(n)
		return true
	}
	for _, c := range []struct {
		n  uint64
		ok bool
	}{
		{0, true}, {0, false}, {2, true}, {1, true}, {1, false}, {2, false},
		{100, true}, {37, true}, {36, false}, {37, false}, {99, true},
		{1000, true}, {936, false}, {937, true}, {999, true}, {^uint64(0), false},
	} {
		if got := accept(c.n); got != c.ok {
			t.Fatalf("counter %d: accepted %v, want %v", c.n, got, c.ok)
		}
	}
}

func TestPublicKeyText(t *testing.T) {
	k, _ := NewServerKey()
	s := k.Public.String()
	if len(s) != 43 {
		t.Fatalf("%q: %d characters", s, len(s))
	}
	got, err := ParsePublicKey(" " + s + "\n")
	if err != nil || got != k.Public {
		t.Fatalf("parse: %v", err)
	}
	for _, bad := range []string{"", "abc", s[:42], s + "A", "!!!" + s[3:]} {
		if _, err := ParsePublicKey(bad); !errors.Is(err, ErrKey) {
			t.Errorf("ParsePublicKey(%q): %v", bad, err)
		}
	}
}

func BenchmarkHandshake(b *testing.B) {
	server, _ := NewServerKey()
	id, _ := newIdentity(b)
	c := wire.Cookie{1}
	for b.Loop() {
		ini, _ := NewInitiator(id, server.Public, c)
		m1, _ := ini.First(make([]byte, 40))
		r, _, _, err := Respond(server, c, m1)
		if err != nil {
			b.Fatal(err)
		}
		m2, _, _ := r.Finish(make([]byte, 40))
		if _, _, err := ini.Finish(m2); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSealOpen(b *testing.B) {
	server, _ := NewServerKey()
	id, _ := newIdentity(b)
	ini, _ := NewInitiator(id, server.Public, wire.Cookie{})
	m1, _ := ini.First(nil)
	r, _, _, _ := Respond(server, wire.Cookie{}, m1)
	m2, sk, _ := r.Finish(nil)
	_, nk, _ := ini.Finish(m2)
	pt := make([]byte, 48)
	d := make([]byte, 0, 128)
	out := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		d = nk.Seal(d[:0], wire.SessionID{}, pt)
		if _, err := sk.Open(out[:0], d); err != nil {
			b.Fatal(err)
		}
	}
}

// TestKeysNoiseCompatible: Keys seal and open as noise.Cipher did (the
// suite's ChaChaPoly with Noise's nonce), so a node of either kind talks
// with a rendezvous of either kind.
func TestKeysNoiseCompatible(t *testing.T) {
	var key [32]byte
	rand.Read(key[:])
	k := newKeys(noise.UnsafeNewCipherState(suite, key, 0), noise.UnsafeNewCipherState(suite, key, 0))
	ref := noise.UnsafeNewCipherState(suite, key, 0).Cipher()
	var session wire.SessionID
	rand.Read(session[:])
	for i := range 3 {
		pt := []byte{byte(i), 'h', 'i'}
		b := k.Seal(nil, session, pt)
		n := uint64(i)
		got, err := ref.Decrypt(nil, n, b[:wire.SealedHeaderLen], b[wire.SealedHeaderLen:])
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("counter %d: noise opens %q, %v; want %q", n, got, err, pt)
		}
		hdr := wire.AppendSealedHeader(nil, session, n+100)
		theirs := ref.Encrypt(hdr, n+100, hdr, pt)
		got, err = k.Open(nil, theirs)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("counter %d: Keys open %q, %v; want %q", n+100, got, err, pt)
		}
	}
}
