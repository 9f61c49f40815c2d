// Package relay holds the rendezvous's relaying policy: which packets it
// forwards and how fast. The rendezvous forwards opaque payloads (QUIC
// packets, already end-to-end encrypted) between registered nodes only, and
// each node's relayed traffic is bounded in packets and bytes per second so
// one node cannot use the rendezvous to flood another or starve the rest.
//
// The package does no I/O; the rendezvous calls it on its read loop.
package relay

import (
	"time"

	"golang.org/x/time/rate"
)

// Limits bound one node's relayed traffic. The zero value means the
// defaults below; a negative field means unlimited.
type Limits struct {
	PacketsPerSec int // sustained packets per second (default 16000)
	BytesPerSec   int // sustained bytes per second (default 20 MiB)
	Burst         time.Duration
	// Burst is how much of the rate a node may send at once (default 250ms
	// worth, and never less than one maximum-size packet).

	// SmallPacketsPerSec is a budget of its own for packets of at most
	// SmallPacket bytes: a node's chat messages, acknowledgements and
	// control. They spend it first, and the shared budget above only when
	// it is spent, so that a file a node sends through the relay (full
	// packets, throttled by the shared budget, which QUIC's congestion
	// control then follows) never holds up its chat. Default 500.
	SmallPacketsPerSec int
}

// SmallPacket is the largest packet that counts as small (Limits).
const SmallPacket = 512

// Defaults. A node's file through the relay gets about 150 Mbit/s: QUIC
// sends 1200-byte packets (1235 bytes with the relay's header), so 16000
// packets a second are 19 MB/s, under the 20 MiB/s byte budget; its peer's
// acknowledgements (one for every two packets) fit its own budget. Past
// 100 Mbit/s for a pair, as operators expect of a TURN server, yet one
// node cannot take a 1 Gbit/s rendezvous for itself.
const (
	DefaultPacketsPerSec = 16000
	DefaultBytesPerSec   = 20 << 20
	DefaultBurst         = 250 * time.Millisecond

	DefaultSmallPacketsPerSec = 500
	maxPacket                 = 1500
)

func (l Limits) withDefaults() Limits {
	if l.PacketsPerSec == 0 {
		l.PacketsPerSec = DefaultPacketsPerSec
	}
	if l.BytesPerSec == 0 {
		l.BytesPerSec = DefaultBytesPerSec
	}
	if l.Burst <= 0 {
		l.Burst = DefaultBurst
	}
	if l.SmallPacketsPerSec == 0 {
		l.SmallPacketsPerSec = DefaultSmallPacketsPerSec
	}
	return l
}

// Limiter meters one node's relayed traffic. Not safe for concurrent use:
// the rendezvous owns one per registered node under its lock.
type Limiter struct {
	pkts, bytes *rate.Limiter // nil = unlimited
	small       *rate.Limiter // small packets' own budget; nil: none
}

// NewLimiter returns a full limiter for l.
func NewLimiter(l Limits) *Limiter {
	l = l.withDefaults()
	lim := &Limiter{}
	if l.PacketsPerSec > 0 {
		burst := max(1, int(float64(l.PacketsPerSec)*l.Burst.Seconds()))
		lim.pkts = rate.NewLimiter(rate.Limit(l.PacketsPerSec), burst)
	}
	if l.BytesPerSec > 0 {
		burst := max(maxPacket, int(float64(l.BytesPerSec)*l.Burst.Seconds()))
		lim.bytes = rate.NewLimiter(rate.Limit(l.BytesPerSec), burst)
	}
	if l.SmallPacketsPerSec > 0 {
		lim.small = rate.NewLimiter(rate.Limit(l.SmallPacketsPerSec), max(1, int(float64(l.SmallPacketsPerSec)*l.Burst.Seconds())))
	}
	return lim
}

// Allow reports whether a packet of n bytes may be relayed at now, and
// spends the tokens if so. A refused packet spends nothing. A small packet
// spends its own budget first.
func (l *Limiter) Allow(now time.Time, n int) bool {
	if n <= SmallPacket && l.small != nil && l.small.AllowN(now, 1) {
		return true
	}
	if l.pkts != nil && l.pkts.TokensAt(now) < 1 {
		return false
	}
	if l.bytes != nil && !l.bytes.AllowN(now, n) {
		return false
	}
	if l.pkts != nil {
		l.pkts.AllowN(now, 1)
	}
	return true
}

// Drop reasons, the label values of the rendezvous's dropped-packets counter.
const (
	DropMalformed     = "malformed"      // did not parse
	DropVersion       = "version"        // another protocol version
	DropUnknownType   = "unknown_type"   // type not meant for the rendezvous
	DropBadCookie     = "bad_cookie"     // registration with a bad or old cookie
	DropBadSignature  = "bad_signature"  // registration signature wrong
	DropNotRegistered = "not_registered" // request with an unknown session
	DropRateLimited   = "rate_limited"   // a node's relay budget is spent
	DropOffline       = "peer_offline"   // relay to a key that is not online
	DropReplay        = "replay"         // registration replayed after leave
	DropSourceLimited = "source_limited" // unauthenticated source over its budget
	DropNotSTUN       = "stun_other"     // STUN that is not a Binding request
	DropBadHandshake  = "bad_handshake"  // a handshake that did not check out
	DropBusy          = "busy"           // registrations queued past the workers' capacity
	DropOpen          = "unauthentic"    // a sealed datagram that did not authenticate or was replayed
	DropUnvalidated   = "unvalidated"    // relay from an address not (yet) the session's
	DropQuota         = "quota"          // a node over its lookup or introduction rate, or a network over its new names
)
