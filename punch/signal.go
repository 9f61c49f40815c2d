package punch

import (
	"math/rand/v2"
	"slices"
	"time"
)

// Signal is what one Peer tells the other through the rendezvous: its ICE
// credentials and candidates for one Generation. The node carries it
// reliably (retransmit until acked); duplicates and reordering are fine.
// The package documentation gives the Generation rules.
type Signal struct {
	// Generation is the controlling side's ICE session number. An offer
	// (from the controlling side) carries its current one; an answer (from
	// the controlled side) carries the one it answers, 0 before it has seen
	// any offer.
	Generation uint32
	// Ufrag and Pwd are the sender's ICE credentials for this Generation.
	Ufrag, Pwd string
	// Candidates are the sender's candidates gathered so far, in pion's
	// Candidate.Marshal form ("1 1 udp 2130706431 10.0.0.2 5000 typ host").
	Candidates []string
	// Failed is set by the controlled side when its agent gave up on this
	// Generation; the controlling side then starts a new one after its
	// backoff.
	Failed bool
}

// Limits on what a remote Signal may carry; larger ones are dropped.
const (
	MaxCandidates   = 32
	maxCandidateLen = 256
	maxCredLen      = 256
)

func (s Signal) valid() bool {
	if s.Ufrag == "" || s.Pwd == "" || len(s.Ufrag) > maxCredLen || len(s.Pwd) > maxCredLen {
		return false
	}
	if len(s.Candidates) > MaxCandidates {
		return false
	}
	for _, c := range s.Candidates {
		if len(c) > maxCandidateLen {
			return false
		}
	}
	return true
}

func (s Signal) equal(o Signal) bool {
	return s.Generation == o.Generation && s.Ufrag == o.Ufrag && s.Pwd == o.Pwd &&
		s.Failed == o.Failed && slices.Equal(s.Candidates, o.Candidates)
}

// newerGen reports whether generation a is newer than b in serial-number
// arithmetic (RFC 1982), so the counter may wrap.
func newerGen(a, b uint32) bool { return int32(a-b) > 0 }

// nextGen returns the generation after g, skipping 0 (which means "none").
func nextGen(g uint32) uint32 {
	g++
	if g == 0 {
		g = 1
	}
	return g
}

// firstGen is the first generation of a controlling Peer created at now: the
// wall clock in seconds, so a restarted process supersedes the previous one
// (each restart adds 1, and restarts are seconds apart).
func firstGen(now time.Time) uint32 {
	g := uint32(now.Unix())
	if g == 0 {
		g = 1
	}
	return g
}

// backoff returns the delay before ICE restart number attempt (0-based):
// min doubling up to max, scaled by jitter in [0.8, 1.2).
func backoff(attempt int, min, max time.Duration, jitter float64) time.Duration {
	d := min
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return time.Duration(float64(d) * (0.8 + 0.4*jitter))
}

func randJitter() float64 { return rand.Float64() }
