package wire

import "fmt"

// SignalKind says what a PeerSignal carries.
type SignalKind uint8

// Signal kinds.
const (
	// SignalOffer carries ICE credentials and candidates of one generation.
	SignalOffer SignalKind = 1
	// SignalAck acknowledges the offer with the same Seq.
	SignalAck SignalKind = 2
	// SignalHello announces the sender to the receiver: "I want to talk".
	// It carries no ICE data; the receiver starts its side of the link.
	SignalHello SignalKind = 3
)

// MaxCandidates bounds the candidates in one offer.
const MaxCandidates = 32

// Signal flags.
const (
	// SignalFailed: the sender's ICE agent gave up on this generation
	// (the controlled side tells the controlling side to restart).
	SignalFailed uint8 = 1 << 0
)

// PeerSignal is end-to-end signaling between two nodes, carried by Signal
// and Signaled through the rendezvous. The rendezvous does not read it.
// Offers are retransmitted until the Ack with the same Seq arrives.
//
// Body: kind(1) flags(1) seq(4) generation(4) ufrag(str) pwd(str) count(1)
// {candidate(str16)}*count. Ack and Hello carry the same fields, empty.
// Unknown flag bits are ignored.
type PeerSignal struct {
	Kind       SignalKind
	Flags      uint8 // SignalFailed
	Seq        uint32
	Generation uint32 // ICE restart counter of the sender
	Ufrag, Pwd string
	Candidates []string // ICE candidate strings (a=candidate values)
}

// AppendPeerSignal appends s's encoding to b.
func AppendPeerSignal(b []byte, s *PeerSignal) []byte {
	b = append(b, byte(s.Kind), s.Flags)
	b = appendU32(b, s.Seq)
	b = appendU32(b, s.Generation)
	b = appendStr(b, s.Ufrag)
	b = appendStr(b, s.Pwd)
	n := min(len(s.Candidates), MaxCandidates)
	b = append(b, byte(n))
	for _, c := range s.Candidates[:n] {
		b = appendStr16(b, c)
	}
	return b
}

// ParsePeerSignal decodes a PeerSignal.
func ParsePeerSignal(b []byte) (*PeerSignal, error) {
	r := reader{b: b}
	s := &PeerSignal{Kind: SignalKind(r.u8()), Flags: r.u8(), Seq: r.u32(), Generation: r.u32(), Ufrag: r.str(), Pwd: r.str()}
	n := int(r.u8())
	if r.err == nil && n > MaxCandidates {
		return nil, fmt.Errorf("%w: %d candidates", ErrMalformed, n)
	}
	for i := 0; i < n && r.err == nil; i++ {
		s.Candidates = append(s.Candidates, r.str16())
	}
	if r.err != nil {
		return nil, fmt.Errorf("peer signal: %w", r.err)
	}
	if s.Kind < SignalOffer || s.Kind > SignalHello {
		return nil, fmt.Errorf("peer signal: %w: kind %d", ErrMalformed, s.Kind)
	}
	return s, nil
}
