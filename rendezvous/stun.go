package rendezvous

import (
	"net/netip"
	"time"

	"github.com/pion/stun/v2"

	"natchat/relay"
)

// handleSTUNLocked answers a STUN Binding request with the source's
// address (XOR-MAPPED-ADDRESS, SOFTWARE, FINGERPRINT), within the source's
// budget: the response is larger than a minimal request, as in any STUN
// server, so the per-source rate is what bounds reflection.
func (s *Server) handleSTUNLocked(b []byte, src netip.AddrPort, now time.Time) {
	req := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := req.Decode(); err != nil {
		s.drop(relay.DropMalformed)
		return
	}
	if req.Type != stun.BindingRequest {
		s.drop(relay.DropNotSTUN)
		return
	}
	if !s.allowSourceLocked(src.Addr(), now) {
		s.drop(relay.DropSourceLimited)
		return
	}
	resp, err := stun.Build(
		stun.NewTransactionIDSetter(req.TransactionID),
		stun.BindingSuccess,
		&stun.XORMappedAddress{IP: src.Addr().AsSlice(), Port: int(src.Port())},
		stun.NewSoftware(s.opts.Software),
		stun.Fingerprint,
	)
	if err != nil {
		s.log.Error().Err(err).Msg("stun build")
		return
	}
	s.send(resp.Raw, src)
	s.m.stun.Inc()
}
