package wire

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
)

// KeyLen is the length of an Ed25519 public key, a node's identity.
const KeyLen = 32

// SigLen is the length of an Ed25519 signature.
const SigLen = 64

// Key is a node's Ed25519 public key.
type Key [KeyLen]byte

// String returns the key in hex.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// Short returns the first 8 hex digits, for logs.
func (k Key) Short() string { return hex.EncodeToString(k[:4]) }

// IsZero reports whether k is all zeroes.
func (k Key) IsZero() bool { return k == Key{} }

// SessionID is the secret the rendezvous hands a node at registration; the
// node puts it in every later request so a spoofed source address alone
// cannot act for it.
type SessionID [8]byte

// CookieLen is the length of an address cookie. Its content is the
// rendezvous's business (docs/PROTOCOL.md §6); nodes treat it as opaque.
const CookieLen = 20

// Cookie proves that the holder received a datagram at its source address.
type Cookie [CookieLen]byte

// HelloMinLen is the least length of a Hello datagram, header included.
// The Cookie reply is smaller, so a spoofed Hello is never amplified.
const HelloMinLen = 64

// Hello asks for a cookie. Body: nonce(8) padding(to HelloMinLen).
type Hello struct {
	Nonce uint64
}

func (*Hello) Type() Type { return TypeHello }
func (m *Hello) AppendBody(b []byte) []byte {
	start := len(b) - HeaderLen
	b = appendU64(b, m.Nonce)
	for len(b)-start < HelloMinLen {
		b = append(b, 0)
	}
	return b
}
func parseHello(b []byte) (Message, error) {
	if len(b)+HeaderLen < HelloMinLen {
		return nil, fmt.Errorf("%w: hello must be padded to %d bytes", ErrTooShort, HelloMinLen)
	}
	r := reader{b: b}
	m := &Hello{Nonce: r.u64()}
	return m, r.err
}

// CookieReply answers a Hello. Body: nonce(8) cookie(20).
type CookieReply struct {
	Nonce  uint64
	Cookie Cookie
}

func (*CookieReply) Type() Type { return TypeCookie }
func (m *CookieReply) AppendBody(b []byte) []byte {
	b = appendU64(b, m.Nonce)
	return append(b, m.Cookie[:]...)
}
func parseCookie(b []byte) (Message, error) {
	r := reader{b: b}
	m := &CookieReply{Nonce: r.u64()}
	copy(m.Cookie[:], r.take(CookieLen))
	return m, r.err
}

// Register binds Name to Key and the sender's address.
// Body: cookie(20) key(32) name(str) sig(64).
// Sig is Ed25519 over RegisterSigned(cookie, key, name).
type Register struct {
	Cookie Cookie
	Key    Key
	Name   string
	Sig    [SigLen]byte
}

// RegisterContext is the domain-separation prefix of a registration signature.
const RegisterContext = "natchat register v1\x00"

// RegisterSigned returns the bytes a registration signature covers.
func RegisterSigned(c Cookie, k Key, name string) []byte {
	b := make([]byte, 0, len(RegisterContext)+CookieLen+KeyLen+1+len(name))
	b = append(b, RegisterContext...)
	b = append(b, c[:]...)
	b = append(b, k[:]...)
	return appendStr(b, name)
}

func (*Register) Type() Type { return TypeRegister }
func (m *Register) AppendBody(b []byte) []byte {
	b = append(b, m.Cookie[:]...)
	b = append(b, m.Key[:]...)
	b = appendStr(b, m.Name)
	return append(b, m.Sig[:]...)
}
func parseRegister(b []byte) (Message, error) {
	r := reader{b: b}
	m := &Register{}
	copy(m.Cookie[:], r.take(CookieLen))
	m.Key = r.key()
	m.Name = r.str()
	copy(m.Sig[:], r.take(SigLen))
	return m, r.err
}

// Registered accepts a registration.
// Body: session(8) observed(addr) heartbeat_ms(4) expiry_ms(4) presence_seq(4).
type Registered struct {
	Session     SessionID
	Observed    netip.AddrPort // the node's address as the rendezvous saw it
	HeartbeatMS uint32         // interval the rendezvous suggests
	ExpiryMS    uint32         // silence after which the node is dropped
	PresenceSeq uint32         // sequence number of the node's presence feed
}

func (*Registered) Type() Type { return TypeRegistered }
func (m *Registered) AppendBody(b []byte) []byte {
	b = append(b, m.Session[:]...)
	b = AppendAddr(b, m.Observed)
	b = appendU32(b, m.HeartbeatMS)
	b = appendU32(b, m.ExpiryMS)
	return appendU32(b, m.PresenceSeq)
}
func parseRegistered(b []byte) (Message, error) {
	r := reader{b: b}
	m := &Registered{Session: r.session(), Observed: r.addr()}
	m.HeartbeatMS = r.u32()
	m.ExpiryMS = r.u32()
	m.PresenceSeq = r.u32()
	return m, r.err
}

// Heartbeat keeps a registration and the NAT mapping alive. Body: session(8).
type Heartbeat struct{ Session SessionID }

func (*Heartbeat) Type() Type                   { return TypeHeartbeat }
func (m *Heartbeat) AppendBody(b []byte) []byte { return append(b, m.Session[:]...) }
func parseHeartbeat(b []byte) (Message, error) {
	r := reader{b: b}
	m := &Heartbeat{Session: r.session()}
	return m, r.err
}

// HeartbeatAck answers a Heartbeat. Body: observed(addr) presence_seq(4).
// A node whose last presence event is older than PresenceSeq lost one and
// asks for the snapshot again.
type HeartbeatAck struct {
	Observed    netip.AddrPort
	PresenceSeq uint32
}

func (*HeartbeatAck) Type() Type { return TypeHeartbeatAck }
func (m *HeartbeatAck) AppendBody(b []byte) []byte {
	return appendU32(AppendAddr(b, m.Observed), m.PresenceSeq)
}
func parseHeartbeatAck(b []byte) (Message, error) {
	r := reader{b: b}
	m := &HeartbeatAck{Observed: r.addr(), PresenceSeq: r.u32()}
	return m, r.err
}

// Leave ends a registration at once. Body: session(8).
type Leave struct{ Session SessionID }

func (*Leave) Type() Type                   { return TypeLeave }
func (m *Leave) AppendBody(b []byte) []byte { return append(b, m.Session[:]...) }
func parseLeave(b []byte) (Message, error) {
	r := reader{b: b}
	m := &Leave{Session: r.session()}
	return m, r.err
}

// PresenceKind says what a Presence event reports.
type PresenceKind uint8

// Presence kinds.
const (
	PresenceJoin PresenceKind = 1
	PresenceLeft PresenceKind = 2
)

// LeaveReason says why a node left.
type LeaveReason uint8

// Leave reasons.
const (
	ReasonNone    LeaveReason = 0 // joins
	ReasonQuit    LeaveReason = 1 // the node sent Leave
	ReasonTimeout LeaveReason = 2 // heartbeats stopped
)

func (r LeaveReason) String() string {
	switch r {
	case ReasonQuit:
		return "quit"
	case ReasonTimeout:
		return "timeout"
	}
	return ""
}

// Presence reports one peer joining or leaving a room the node shares with it.
// Body: seq(4) kind(1) reason(1) key(32) name(str).
type Presence struct {
	Seq    uint32
	Kind   PresenceKind
	Reason LeaveReason
	Key    Key
	Name   string
}

func (*Presence) Type() Type { return TypePresence }
func (m *Presence) AppendBody(b []byte) []byte {
	b = appendU32(b, m.Seq)
	b = append(b, byte(m.Kind), byte(m.Reason))
	b = append(b, m.Key[:]...)
	return appendStr(b, m.Name)
}
func parsePresence(b []byte) (Message, error) {
	r := reader{b: b}
	m := &Presence{Seq: r.u32(), Kind: PresenceKind(r.u8()), Reason: LeaveReason(r.u8()), Key: r.key(), Name: r.str()}
	if r.err == nil && m.Kind != PresenceJoin && m.Kind != PresenceLeft {
		return nil, fmt.Errorf("%w: presence kind %d", ErrMalformed, m.Kind)
	}
	return m, r.err
}

// PeersRequest asks for the presence snapshot. Body: session(8).
type PeersRequest struct{ Session SessionID }

func (*PeersRequest) Type() Type                   { return TypePeersRequest }
func (m *PeersRequest) AppendBody(b []byte) []byte { return append(b, m.Session[:]...) }
func parsePeersRequest(b []byte) (Message, error) {
	r := reader{b: b}
	m := &PeersRequest{Session: r.session()}
	return m, r.err
}

// Peer is one entry of a snapshot.
type Peer struct {
	Key  Key
	Name string
}

// MaxPeersBody bounds the body of one Peers datagram; the rendezvous packs
// entries (33 to 161 bytes each) greedily up to it, so a part fits any path.
const MaxPeersBody = 1100

// Peers is one part of the presence snapshot: everyone online who shares a
// room with the node, as of presence sequence Seq.
// Body: seq(4) part(2) parts(2) count(1) {key(32) name(str)}*count.
type Peers struct {
	Seq   uint32
	Part  uint16 // 0-based
	Parts uint16 // ≥ 1
	Peers []Peer
}

func (*Peers) Type() Type { return TypePeers }
func (m *Peers) AppendBody(b []byte) []byte {
	b = appendU32(b, m.Seq)
	b = appendU16(b, m.Part)
	b = appendU16(b, m.Parts)
	n := min(len(m.Peers), 255)
	b = append(b, byte(n))
	for _, p := range m.Peers[:n] {
		b = append(b, p.Key[:]...)
		b = appendStr(b, p.Name)
	}
	return b
}
func parsePeers(b []byte) (Message, error) {
	r := reader{b: b}
	m := &Peers{Seq: r.u32(), Part: r.u16(), Parts: r.u16()}
	n := int(r.u8())
	for i := 0; i < n && r.err == nil; i++ {
		m.Peers = append(m.Peers, Peer{Key: r.key(), Name: r.str()})
	}
	if r.err == nil && (m.Parts == 0 || m.Part >= m.Parts) {
		return nil, fmt.Errorf("%w: part %d of %d", ErrMalformed, m.Part, m.Parts)
	}
	return m, r.err
}

// Lookup asks for a node by name (Key zero) or by key (Name empty).
// Body: session(8) txid(4) key(32) name(str).
type Lookup struct {
	Session SessionID
	TxID    uint32
	Key     Key
	Name    string
}

func (*Lookup) Type() Type { return TypeLookup }
func (m *Lookup) AppendBody(b []byte) []byte {
	b = append(b, m.Session[:]...)
	b = appendU32(b, m.TxID)
	b = append(b, m.Key[:]...)
	return appendStr(b, m.Name)
}
func parseLookup(b []byte) (Message, error) {
	r := reader{b: b}
	m := &Lookup{Session: r.session(), TxID: r.u32(), Key: r.key(), Name: r.str()}
	return m, r.err
}

// LookupStatus is the outcome of a Lookup.
type LookupStatus uint8

// Lookup outcomes.
const (
	LookupOnline  LookupStatus = 0 // registered now
	LookupOffline LookupStatus = 1 // the name is bound to a key but not online
	LookupUnknown LookupStatus = 2 // no such name or key
)

// LookupReply answers a Lookup. Key and Name are the binding (canonical
// spelling) when Status is not LookupUnknown.
// Body: txid(4) status(1) key(32) name(str).
type LookupReply struct {
	TxID   uint32
	Status LookupStatus
	Key    Key
	Name   string
}

func (*LookupReply) Type() Type { return TypeLookupReply }
func (m *LookupReply) AppendBody(b []byte) []byte {
	b = appendU32(b, m.TxID)
	b = append(b, byte(m.Status))
	b = append(b, m.Key[:]...)
	return appendStr(b, m.Name)
}
func parseLookupReply(b []byte) (Message, error) {
	r := reader{b: b}
	m := &LookupReply{TxID: r.u32(), Status: LookupStatus(r.u8()), Key: r.key(), Name: r.str()}
	if r.err == nil && m.Status > LookupUnknown {
		return nil, fmt.Errorf("%w: lookup status %d", ErrMalformed, m.Status)
	}
	return m, r.err
}

// RelayOverhead is how many bytes Relay adds to a payload, header included.
const RelayOverhead = HeaderLen + 8 + KeyLen

// Relay carries an opaque payload to the peer with key Dst.
// Body: session(8) dst(32) payload(rest).
type Relay struct {
	Session SessionID
	Dst     Key
	Payload []byte // aliases the parsed datagram
}

func (*Relay) Type() Type { return TypeRelay }
func (m *Relay) AppendBody(b []byte) []byte {
	b = append(b, m.Session[:]...)
	b = append(b, m.Dst[:]...)
	return append(b, m.Payload...)
}
func parseRelay(b []byte) (Message, error) {
	r := reader{b: b}
	m := &Relay{Session: r.session(), Dst: r.key()}
	m.Payload = r.b
	return m, r.err
}

// AppendRelayHeader appends the header and fixed fields of a Relay so a
// caller can append the payload in place without a copy.
func AppendRelayHeader(b []byte, s SessionID, dst Key) []byte {
	b = append(b, Magic, Version, byte(TypeRelay))
	b = append(b, s[:]...)
	return append(b, dst[:]...)
}

// AppendRelayedHeader appends the header and fixed fields of a Relayed, so
// the rendezvous can append the payload without building a message.
func AppendRelayedHeader(b []byte, src Key) []byte {
	b = append(b, Magic, Version, byte(TypeRelayed))
	return append(b, src[:]...)
}

// Relayed carries an opaque payload from the peer with key Src.
// Body: src(32) payload(rest).
type Relayed struct {
	Src     Key
	Payload []byte // aliases the parsed datagram
}

func (*Relayed) Type() Type { return TypeRelayed }
func (m *Relayed) AppendBody(b []byte) []byte {
	b = append(b, m.Src[:]...)
	return append(b, m.Payload...)
}
func parseRelayed(b []byte) (Message, error) {
	r := reader{b: b}
	m := &Relayed{Src: r.key()}
	m.Payload = r.b
	return m, r.err
}

// Signal carries peer-to-peer signaling (a PeerSignal) to Dst.
// Body: session(8) dst(32) signal(rest).
type Signal struct {
	Session SessionID
	Dst     Key
	Body    []byte // an encoded PeerSignal; aliases the datagram
}

func (*Signal) Type() Type { return TypeSignal }
func (m *Signal) AppendBody(b []byte) []byte {
	b = append(b, m.Session[:]...)
	b = append(b, m.Dst[:]...)
	return append(b, m.Body...)
}
func parseSignal(b []byte) (Message, error) {
	r := reader{b: b}
	m := &Signal{Session: r.session(), Dst: r.key()}
	m.Body = r.b
	return m, r.err
}

// Signaled delivers a Signal with the sender's key and registered name, so
// the receiver learns who wants to talk without a lookup.
// Body: src(32) name(str) signal(rest).
type Signaled struct {
	Src  Key
	Name string
	Body []byte
}

func (*Signaled) Type() Type { return TypeSignaled }
func (m *Signaled) AppendBody(b []byte) []byte {
	b = append(b, m.Src[:]...)
	b = appendStr(b, m.Name)
	return append(b, m.Body...)
}
func parseSignaled(b []byte) (Message, error) {
	r := reader{b: b}
	m := &Signaled{Src: r.key(), Name: r.str()}
	m.Body = r.b
	return m, r.err
}

// Code is why the rendezvous refused a request.
type Code uint16

// Error codes. Their names are also the headless `error` codes that a
// refusal turns into (docs/HEADLESS.md).
const (
	CodeVersion       Code = 1  // protocol version mismatch
	CodeBadCookie     Code = 2  // cookie missing, forged, or expired: say Hello again
	CodeBadSignature  Code = 3  // registration signature does not verify
	CodeNameTaken     Code = 4  // the name is bound to another key
	CodeBadName       Code = 5  // the name breaks the naming rules
	CodeKeyInUse      Code = 6  // the key is bound to another name
	CodeNotRegistered Code = 7  // unknown session: register again
	CodeRateLimited   Code = 8  // slow down
	CodeMalformed     Code = 9  // the request did not parse
	CodeReplay        Code = 10 // a registration was replayed after leave
	CodeOffline       Code = 11 // the destination is not online
	CodeUnknownPeer   Code = 12 // no node has that key
)

var codeNames = map[Code]string{
	CodeVersion:       "version_mismatch",
	CodeBadCookie:     "bad_cookie",
	CodeBadSignature:  "bad_signature",
	CodeNameTaken:     "name_taken",
	CodeBadName:       "bad_name",
	CodeKeyInUse:      "key_in_use",
	CodeNotRegistered: "not_registered",
	CodeRateLimited:   "rate_limited",
	CodeMalformed:     "malformed",
	CodeReplay:        "replay",
	CodeOffline:       "peer_offline",
	CodeUnknownPeer:   "unknown_peer",
}

func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("code_%d", uint16(c))
}

// Error refuses a request. Its layout is frozen across versions.
// Body: code(2) request_type(1) txid(4) message(str).
type Error struct {
	Code    Code
	Request Type   // type of the refused request
	TxID    uint32 // the request's TxID where it has one
	Message string // human-readable detail
}

func (*Error) Type() Type { return TypeError }
func (m *Error) AppendBody(b []byte) []byte {
	b = appendU16(b, uint16(m.Code))
	b = append(b, byte(m.Request))
	b = appendU32(b, m.TxID)
	return appendStr(b, m.Message)
}
func (m *Error) Error() string { return fmt.Sprintf("%s: %s", m.Code, m.Message) }

func parseError(b []byte) (*Error, error) {
	r := reader{b: b}
	m := &Error{Code: Code(r.u16()), Request: Type(r.u8()), TxID: r.u32(), Message: r.str()}
	if r.err != nil {
		return nil, r.err
	}
	return m, nil
}

// ErrorFits returns e encoded, with its message shortened so the datagram
// is no longer than limit bytes (a reply to an unproven source must not
// amplify). It returns nil when even an empty message does not fit.
func ErrorFits(e *Error, limit int) []byte {
	const fixed = HeaderLen + 2 + 1 + 4 + 1
	if limit < fixed {
		return nil
	}
	if len(e.Message) > limit-fixed {
		c := *e
		c.Message = c.Message[:limit-fixed]
		e = &c
	}
	return Marshal(e)
}

// Fingerprint returns the key's fingerprint for people to compare out of
// band (read aloud, or side by side): six groups of five digits, each group
// five bytes of the key's SHA-256 taken modulo 100000, as Signal's safety
// numbers do. About 100 bits: a look-alike key cannot be made.
func (k Key) Fingerprint() string {
	h := sha256.Sum256(k[:])
	var b strings.Builder
	for i := range 6 {
		var v uint64
		for _, c := range h[i*5 : i*5+5] {
			v = v<<8 | uint64(c)
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%05d", v%100000)
	}
	return b.String()
}
