package rendezvous

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"time"

	"natchat/wire"
)

// CookieLifetime is how long an address cookie stays valid.
const CookieLifetime = 120 * time.Second

// cookieJar issues and checks stateless address cookies: a cookie is the
// issue time and an HMAC over that time and the source address, so the
// rendezvous keeps no state for a source until it proves it receives there.
type cookieJar struct {
	secret [32]byte
}

func newCookieJar() *cookieJar {
	j := &cookieJar{}
	if _, err := rand.Read(j.secret[:]); err != nil {
		panic("crypto/rand failed: " + err.Error()) // never on Linux ≥ 3.17
	}
	return j
}

func (j *cookieJar) mac(t uint32, src netip.AddrPort) []byte {
	h := hmac.New(sha256.New, j.secret[:])
	var b [4 + 16 + 2]byte
	binary.BigEndian.PutUint32(b[:4], t)
	ip := src.Addr().Unmap().As16()
	copy(b[4:20], ip[:])
	binary.BigEndian.PutUint16(b[20:], src.Port())
	h.Write(b[:])
	return h.Sum(nil)[:wire.CookieLen-4]
}

// issue returns a cookie for src at now.
func (j *cookieJar) issue(now time.Time, src netip.AddrPort) wire.Cookie {
	var c wire.Cookie
	t := uint32(now.Unix())
	binary.BigEndian.PutUint32(c[:4], t)
	copy(c[4:], j.mac(t, src))
	return c
}

// valid reports whether c was issued to src by this jar within the lifetime.
func (j *cookieJar) valid(now time.Time, src netip.AddrPort, c wire.Cookie) bool {
	t := binary.BigEndian.Uint32(c[:4])
	age := now.Unix() - int64(t)
	if age < -5 || age > int64(CookieLifetime/time.Second) {
		return false
	}
	return hmac.Equal(c[4:], j.mac(t, src))
}
