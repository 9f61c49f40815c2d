package vnetlab

import (
	"fmt"
	"testing"
	"time"
)

// Pair is two hosts' NATs, and whether a hole punch between them can
// succeed on a World: ICE-style, with host, server-reflexive (a STUN
// server on the WAN) and peer-reflexive candidates, and checks sent from
// both sides.
type Pair struct {
	A, B       NAT
	SameRouter bool   // both hosts behind one router, of kind A (B equals A)
	Direct     bool   // a direct path can be punched; otherwise only a relay works
	Why        string // the reason for Direct
}

// String names the pair after its NATs ("port-restricted to symmetric"),
// or "same router".
func (p Pair) String() string {
	if p.SameRouter {
		return "same router"
	}
	return fmt.Sprintf("%s to %s", p.A, p.B)
}

// Pairs returns the NAT matrix: every unordered pair of kinds, then two
// hosts behind one port-restricted router, each with its expected
// outcome.
func Pairs() []Pair {
	return []Pair{
		{A: NoNAT, B: NoNAT, Direct: true, Why: "host to host"},
		{A: NoNAT, B: FullCone, Direct: true, Why: "public host reachable; NAT side opens its own mapping"},
		{A: NoNAT, B: AddrRestricted, Direct: true, Why: "public host reachable; NAT side opens its own mapping"},
		{A: NoNAT, B: PortRestricted, Direct: true, Why: "public host reachable; NAT side opens its own mapping"},
		{A: NoNAT, B: Symmetric, Direct: true, Why: "public host learns the symmetric side as peer-reflexive"},
		{A: FullCone, B: FullCone, Direct: true, Why: "srflx to srflx, no filtering"},
		{A: FullCone, B: AddrRestricted, Direct: true, Why: "srflx to srflx, checks from both sides open the filters"},
		{A: FullCone, B: PortRestricted, Direct: true, Why: "srflx to srflx, checks from both sides open the filters"},
		{A: FullCone, B: Symmetric, Direct: true, Why: "full cone accepts the symmetric side's new mapping (peer-reflexive)"},
		{A: AddrRestricted, B: AddrRestricted, Direct: true, Why: "srflx to srflx hole punch"},
		{A: AddrRestricted, B: PortRestricted, Direct: true, Why: "srflx to srflx hole punch"},
		{A: AddrRestricted, B: Symmetric, Direct: true, Why: "address filter opened towards the symmetric side's IP admits its new port"},
		{A: PortRestricted, B: PortRestricted, Direct: true, Why: "srflx to srflx hole punch"},
		{A: PortRestricted, B: Symmetric, Direct: false, Why: "symmetric port unpredictable, port filter never opens"},
		{A: Symmetric, B: Symmetric, Direct: false, Why: "neither mapping is predictable"},
		{A: PortRestricted, B: PortRestricted, SameRouter: true, Direct: true, Why: "same LAN: host to host (no hairpinning needed)"},
	}
}

// Impairments returns the WAN conditions to try each Pair under: clean,
// lossy, delayed, then delayed and lossy (the hardest, last).
func Impairments() []Impairment {
	return []Impairment{
		{Delay: 0, Loss: 0},
		{Delay: 0, Loss: 0.10},
		{Delay: 30 * time.Millisecond, Loss: 0},
		{Delay: 30 * time.Millisecond, Loss: 0.10},
	}
}

// LANs adds the LANs of p's two sides: one each, or one for both if
// p.SameRouter.
func (w *World) LANs(p Pair) (a, b *LAN) {
	w.tb.Helper()
	a = w.LAN(p.A)
	if p.SameRouter {
		return a, a
	}
	return a, w.LAN(p.B)
}

// RunMatrix runs cell for every Pair under every impairment of imps, each
// in a parallel subtest "<pair>/<impairment>" inside a Bubble (realtime as
// for Bubble), with a seed of its own: 10×(pair index)+(impairment index).
func RunMatrix(t *testing.T, imps []Impairment, realtime string, cell func(t *testing.T, p Pair, imp Impairment, seed uint64)) {
	for pi, p := range Pairs() {
		t.Run(p.String(), func(t *testing.T) {
			for ii, imp := range imps {
				t.Run(imp.String(), func(t *testing.T) {
					t.Parallel()
					Bubble(t, realtime, func(t *testing.T) { cell(t, p, imp, uint64(pi*10+ii)) })
				})
			}
		})
	}
}
