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
// issue time, a random salt and an HMAC over both and the source address,
// so the rendezvous keeps no state for a source until it proves it
// receives there. The salt makes every cookie distinct: a node that leaves
// and registers again within the same second from the same address must
// not present the cookie of its ended registration (that is a replay).
//
// Layout: issue time (4, Unix seconds) salt (4) MAC (12).
type cookieJar struct {
	secret [32]byte
}

const cookieSaltLen = 4

func newCookieJar() *cookieJar {
	j := &cookieJar{}
	if _, err := rand.Read(j.secret[:]); err != nil {
		panic("crypto/rand failed: " + err.Error()) // never on Linux ≥ 3.17
	}
	return j
}

func (j *cookieJar) mac(tAndSalt []byte, src netip.AddrPort) []byte {
	h := hmac.New(sha256.New, j.secret[:])
	var b [4 + cookieSaltLen + 16 + 2]byte
	copy(b[:4+cookieSaltLen], tAndSalt)
	ip := src.Addr().Unmap().As16()
	copy(b[4+cookieSaltLen:], ip[:])
	binary.BigEndian.PutUint16(b[4+cookieSaltLen+16:], src.Port())
	h.Write(b[:])
	return h.Sum(nil)[:wire.CookieLen-4-cookieSaltLen]
}

// issue returns a fresh cookie for src at now.
func (j *cookieJar) issue(now time.Time, src netip.AddrPort) wire.Cookie {
	var c wire.Cookie
	binary.BigEndian.PutUint32(c[:4], uint32(now.Unix()))
	rand.Read(c[4 : 4+cookieSaltLen])
	copy(c[4+cookieSaltLen:], j.mac(c[:4+cookieSaltLen], src))
	return c
}

// valid reports whether c was issued to src by this jar within the lifetime.
func (j *cookieJar) valid(now time.Time, src netip.AddrPort, c wire.Cookie) bool {
	t := binary.BigEndian.Uint32(c[:4])
	age := now.Unix() - int64(t)
	if age < -5 || age > int64(CookieLifetime/time.Second) {
		return false
	}
	return hmac.Equal(c[4+cookieSaltLen:], j.mac(c[:4+cookieSaltLen], src))
}
