package rendezvous

import (
	"encoding/binary"
	"hash/maphash"
	"math/bits"
	"net/netip"
	"sync/atomic"
	"time"
)

// defaultSourceBuckets is the bucket count newSourceLimiter uses when given
// none: 4096 buckets of 8 bytes, 32 KiB.
const defaultSourceBuckets = 4096

// sourceLimiter bounds unauthenticated replies per source prefix (/24 for
// IPv4, /56 for IPv6) in fixed memory: a prefix is hashed, with a key drawn
// at random per limiter (hash/maphash), to one of a fixed array of token
// buckets. Prefixes that collide share a bucket. Nothing is allocated per
// call, nothing grows and nothing needs sweeping, so spoofed sources cannot
// fill it the way they fill a map keyed by address.
//
// Each bucket is one int64 in the generic cell rate algorithm (GCRA) form
// of a token bucket: the time at which it will be full again ("theoretical
// arrival time", Unix nanoseconds). Its tokens at time t are
// burst - (tat-t)/interval, with interval = 1s/rate; allowing a reply adds
// interval to tat. That is the token count and last-refill time folded
// into one integer, so a bucket is updated with one compare-and-swap.
//
// # What a flood costs others
//
// A prefix's bucket is unknown to anyone who cannot read the key, so a
// newcomer's bucket is, to an attacker, a uniformly random one of the B
// buckets. A bucket denies replies only while more than rate requests per
// second reach it; to keep a newcomer's bucket drained the attacker must
// drain nearly every bucket, some B×rate packets per second (4096×50 ≈
// 200,000 pps with the defaults), and a flood from many prefixes raises
// the cost for everyone only in proportion to the buckets it drains.
// Precisely, in the fluid model: a bucket receiving λ > rate answers a
// newcomer's request with probability rate/λ, so a flood of R requests per
// second, however spread over prefixes, leaves a fresh prefix's first
// request answered with probability at least
//
//	1 - R/(4·B·rate)   for R ≤ 2·B·rate (worst split: λ = 2·rate on R/(2·rate) buckets)
//	B·rate/R           beyond (all buckets at λ = R/B),
//
// and each retry draws again. A flood spread evenly over many random
// prefixes does less harm below capacity: with 100,000 /24s,
// TestSourceLimiterFlood sees every newcomer answered at R = B·rate/2 and
// 92–94% at R = B·rate (bound: 75%); at 2·B·rate it sees 47–51%, the bound
// give or take the discreteness of requests.
//
// The price of sharing: an innocent prefix that collides with a flooding
// one (probability about the fraction of buckets the flood drains) shares
// its fate, and hosts behind one /24 or /56 share one budget.
//
// A sourceLimiter is safe for concurrent use: the key is fixed at creation
// and each bucket is updated with a compare-and-swap.
type sourceLimiter struct {
	seed     maphash.Seed
	mask     uint64
	interval int64 // nanoseconds per token
	tau      int64 // burst × interval: how far tat may run ahead of now
	tat      []atomic.Int64
}

// newSourceLimiter returns a limiter that allows rate replies per second
// per prefix, burst at once, over buckets buckets (rounded up to a power of
// two; ≤ 0: 4096). rate must be 1..1e9 and burst at least 1; it panics
// otherwise (a caller wanting no limit does not call it).
func newSourceLimiter(rate, burst int, buckets int) *sourceLimiter {
	if rate < 1 || rate > int(time.Second) {
		panic("rendezvous: newSourceLimiter: rate must be in 1..1e9")
	}
	return newPrefixMeter(time.Second/time.Duration(rate), burst, buckets)
}

// newPrefixMeter is newSourceLimiter for rates below one a second: one
// token per interval per prefix, burst at once.
func newPrefixMeter(interval time.Duration, burst int, buckets int) *sourceLimiter {
	if interval < 1 || burst < 1 {
		panic("rendezvous: newPrefixMeter: interval must be positive and burst at least 1")
	}
	if buckets <= 0 {
		buckets = defaultSourceBuckets
	}
	n := 1 << bits.Len(uint(buckets-1))
	return &sourceLimiter{
		seed:     maphash.MakeSeed(),
		mask:     uint64(n - 1),
		interval: int64(interval),
		tau:      int64(burst) * int64(interval),
		tat:      make([]atomic.Int64, n),
	}
}

// allow reports whether src's prefix may have one more reply at now, and
// if so takes it from the budget. If the clock steps back further than a
// full burst, the bucket starts full again rather than staying shut.
func (l *sourceLimiter) allow(src netip.Addr, now time.Time) bool {
	b := &l.tat[l.index(src)]
	t := now.UnixNano()
	for {
		old := b.Load()
		tat := old
		if tat < t || tat-t > l.tau {
			tat = t // full (idle long enough), or the clock stepped back
		}
		next := tat + l.interval
		if next-t > l.tau {
			return false
		}
		if b.CompareAndSwap(old, next) {
			return true
		}
	}
}

// index returns the bucket of src's prefix.
func (l *sourceLimiter) index(src netip.Addr) uint64 {
	return maphash.Comparable(l.seed, prefixKey(src)) & l.mask
}

// prefixKey packs the /24 of an IPv4 address (IPv4-mapped IPv6 included)
// or the /56 of an IPv6 one into 64 bits, the family in the top byte.
func prefixKey(a netip.Addr) uint64 {
	a = a.Unmap()
	switch {
	case a.Is4():
		b := a.As4()
		return 4<<56 | uint64(b[0])<<16 | uint64(b[1])<<8 | uint64(b[2])
	case a.Is6():
		b := a.As16()
		return 6<<56 | binary.BigEndian.Uint64(b[:8])>>8
	}
	return 0 // the zero Addr: a bucket of its own, like any prefix
}
