package rendezvous

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"time"

	"github.com/pion/stun/v2"

	"natchat/relay"
)

// handleSTUNLocked answers a STUN Binding request with the source's
// address (XOR-MAPPED-ADDRESS, SOFTWARE, FINGERPRINT), within the source's
// budget: the response is larger than a minimal request, as in any STUN
// server, so the per-source rate is what bounds reflection. alt says the
// request came to the AltSTUN socket, which sends the answer: the same
// answer, charged to the same budget, as on the main port.
//
// A request carrying a comprehension-required attribute the server does not
// understand (see understoodBindingAttr) is answered, within the same
// budget, with a 420 (Unknown Attribute) error listing them (RFC 8489
// §6.3.1); see unknownAttrReply for its size bound.
func (s *Server) handleSTUNLocked(b []byte, src netip.AddrPort, now time.Time, alt bool) {
	// Decoded into a Message kept for it (under mu), whose Attributes
	// stop growing after the first requests: a new one per request is
	// garbage. Read only, and b is not kept past this call.
	req := &s.hot.stunReq
	req.Raw = b
	defer forgetRequest(req)
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
	var unknown unknownAttrs
	for _, a := range req.Attributes {
		if !understoodBindingAttr(a.Type) {
			unknown.add(a.Type)
		}
	}
	var resp *stun.Message
	var err error
	if unknown.n > 0 {
		resp, err = unknownAttrReply(&s.hot.stunResp, req.TransactionID, unknown)
	} else {
		resp, err = s.bindingSuccessLocked(req.TransactionID, src)
	}
	if err != nil {
		s.log.Error().Err(err).Msg("stun build")
		return
	}
	if alt {
		s.sendAlt(resp.Raw, src)
	} else {
		s.send(resp.Raw, src)
	}
	s.m.stun.Inc()
}

// forgetRequest drops req's references to the datagram it was decoded
// from, which belongs to the caller.
func forgetRequest(req *stun.Message) {
	req.Raw = nil
	clear(req.Attributes)
	req.Attributes = req.Attributes[:0]
}

// understoodBindingAttr reports whether the server understands attribute
// type t in a Binding request. Comprehension-optional types (0x8000 and
// up) are understood in RFC 8489's sense: ignored if unknown. The server
// runs the plain, unauthenticated Binding method of RFC 8489, which needs
// no comprehension-required attribute: every client we know of (our
// rvclient, pion/ice srflx gathering, browsers) sends a Binding request
// with nothing but comprehension-optional ones (FINGERPRINT, SOFTWARE,
// ICE-CONTROLLING...), which RFC 8489 §6.3.1 says to ignore. So it
// understands none, and answers 420 to:
//   - USERNAME, USERHASH, MESSAGE-INTEGRITY(-SHA256), REALM, NONCE,
//     PASSWORD-ALGORITHM: credential mechanisms it does not run; a success
//     without integrity would be discarded by the client anyway, a 420 says
//     why.
//   - PRIORITY, USE-CANDIDATE: ICE connectivity checks; the rendezvous is
//     not an ICE agent.
//   - CHANGE-REQUEST, RESPONSE-PORT, PADDING (RFC 5780): it cannot answer
//     from another address and will not answer to another port or pad the
//     reply (both would help reflection); a 420 is how an RFC 5780 client
//     learns that the server lacks them.
//   - response attributes (XOR-MAPPED-ADDRESS, ERROR-CODE...), TURN ones,
//     and every type not yet assigned.
//
// Supporting one later is a case here plus the code that acts on it.
func understoodBindingAttr(t stun.AttrType) bool {
	return t.Optional()
}

// maxUnknownAttrs caps the types listed in UNKNOWN-ATTRIBUTES, so a 420
// has a fixed upper size however many unknown attributes the request has.
const maxUnknownAttrs = 8

// unknownAttrs collects distinct unknown attribute types, the first
// maxUnknownAttrs of them, in request order, without allocating.
type unknownAttrs struct {
	n     int
	types [maxUnknownAttrs]stun.AttrType
}

func (u *unknownAttrs) add(t stun.AttrType) {
	if u.n == len(u.types) || slices.Contains(u.types[:u.n], t) {
		return
	}
	u.types[u.n] = t
	u.n++
}

// AddTo adds UNKNOWN-ATTRIBUTES as RFC 8489 §14.9 lays it out: one 16-bit
// type after another, padded to 4 bytes like any attribute. (pion's
// stun.UnknownAttributes writes each type in 4 bytes, two of them zero,
// which an RFC decoder reads as extra 0x0000 types.)
func (u *unknownAttrs) AddTo(m *stun.Message) error {
	var v [2 * maxUnknownAttrs]byte
	for i, t := range u.types[:u.n] {
		binary.BigEndian.PutUint16(v[2*i:], uint16(t))
	}
	m.Add(stun.AttrUnknownAttributes, v[:2*u.n])
	return nil
}

// unknownAttrReply builds the 420 error response to the request with
// transaction id: ERROR-CODE 420 "Unknown Attribute", UNKNOWN-ATTRIBUTES,
// FINGERPRINT, and no SOFTWARE, to keep it small. It is at most
// 20 (header) + 28 (ERROR-CODE) + 4+16 (8 types) + 8 (FINGERPRINT) = 76
// bytes, 64 for one unknown type: the size of a success answer (64 bytes
// to IPv4, 76 to IPv6 with the default SOFTWARE), while the request that
// causes it is at least 24 bytes and grows by 4 or more per unknown type.
// So it reflects no more than the success path, under the same budget.
// It is built into m, whose buffers are reused. (u is a copy, so that
// only this rare answer puts one on the heap, as a stun.Setter.)
func unknownAttrReply(m *stun.Message, id [stun.TransactionIDSize]byte, u unknownAttrs) (*stun.Message, error) {
	err := m.Build(
		stun.NewTransactionIDSetter(id),
		stun.BindingError,
		stun.CodeUnknownAttribute,
		&u,
		stun.Fingerprint,
	)
	if err != nil {
		return nil, err
	}
	return m, nil
}
