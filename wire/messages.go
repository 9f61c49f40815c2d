package wire

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"
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

// SessionID names a node's registration in the clear (Sealed and Relay
// headers), so the rendezvous can find its keys. It is not a secret: a
// Sealed datagram is believed for its AEAD tag, a Relay for coming from
// the session's validated address.
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

// CookieReply answers a Hello with a cookie and the rendezvous's public
// key (unauthenticated here: a node pins it, or checks it against the key
// it was given, and the handshake proves it).
// Body: nonce(8) cookie(20) server_key(32).
type CookieReply struct {
	Nonce     uint64
	Cookie    Cookie
	ServerKey [32]byte
}

func (*CookieReply) Type() Type { return TypeCookie }
func (m *CookieReply) AppendBody(b []byte) []byte {
	b = appendU64(b, m.Nonce)
	b = append(b, m.Cookie[:]...)
	return append(b, m.ServerKey[:]...)
}
func parseCookie(b []byte) (Message, error) {
	r := reader{b: b}
	m := &CookieReply{Nonce: r.u64()}
	copy(m.Cookie[:], r.take(CookieLen))
	copy(m.ServerKey[:], r.take(32))
	return m, r.err
}

// Handshake registers: the cookie of a CookieReply, then the first message
// of the Noise handshake (package ctrl), whose encrypted payload is a
// RegisterPayload. Body: cookie(20) noise(rest).
type Handshake struct {
	Cookie Cookie
	Noise  []byte // aliases the parsed datagram
}

func (*Handshake) Type() Type { return TypeHandshake }
func (m *Handshake) AppendBody(b []byte) []byte {
	b = append(b, m.Cookie[:]...)
	return append(b, m.Noise...)
}
func parseHandshake(b []byte) (Message, error) {
	r := reader{b: b}
	m := &Handshake{}
	copy(m.Cookie[:], r.take(CookieLen))
	m.Noise = r.b
	if r.err == nil && len(m.Noise) == 0 {
		return nil, fmt.Errorf("%w: handshake without a noise message", ErrTooShort)
	}
	return m, r.err
}

// HandshakeReply answers a Handshake: the second Noise message, whose
// encrypted payload is a HandshakeResult. Body: noise(rest).
type HandshakeReply struct {
	Noise []byte // aliases the parsed datagram
}

func (*HandshakeReply) Type() Type                   { return TypeHandshakeReply }
func (m *HandshakeReply) AppendBody(b []byte) []byte { return append(b, m.Noise...) }
func parseHandshakeReply(b []byte) (Message, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty handshake reply", ErrTooShort)
	}
	return &HandshakeReply{Noise: b}, nil
}

// RegisterPayload is what a node registers, inside the first Noise message:
// its Ed25519 identity key (the handshake's static key must be its X25519
// image) and its name. Layout: key(32) name(str).
type RegisterPayload struct {
	Key  Key
	Name string
}

// AppendRegisterPayload appends p's encoding.
func AppendRegisterPayload(b []byte, p *RegisterPayload) []byte {
	b = append(b, p.Key[:]...)
	return appendStr(b, p.Name)
}

// ParseRegisterPayload decodes a RegisterPayload.
func ParseRegisterPayload(b []byte) (*RegisterPayload, error) {
	r := reader{b: b}
	p := &RegisterPayload{Key: r.key(), Name: r.str()}
	if r.err != nil {
		return nil, fmt.Errorf("register payload: %w", r.err)
	}
	return p, nil
}

// HandshakeResult is the rendezvous's answer inside the second Noise
// message: a refusal (Code not 0, with Message), or the registration.
// Layout: code(2) then, when code is 0: session(8) observed(addr)
// heartbeat_ms(4) expiry_ms(4) presence_seq(4); else message(str).
type HandshakeResult struct {
	Code        Code           // 0: registered
	Message     string         // why, when refused
	Session     SessionID      // the session ID, for Sealed and Relay
	Observed    netip.AddrPort // the node's address as the rendezvous saw it
	HeartbeatMS uint32         // interval the rendezvous suggests
	ExpiryMS    uint32         // silence after which the node is dropped
	PresenceSeq uint32         // sequence number of the node's presence feed
}

// AppendHandshakeResult appends r's encoding.
func AppendHandshakeResult(b []byte, r *HandshakeResult) []byte {
	b = appendU16(b, uint16(r.Code))
	if r.Code != 0 {
		return appendStr(b, r.Message)
	}
	b = append(b, r.Session[:]...)
	b = AppendAddr(b, r.Observed)
	b = appendU32(b, r.HeartbeatMS)
	b = appendU32(b, r.ExpiryMS)
	return appendU32(b, r.PresenceSeq)
}

// ParseHandshakeResult decodes a HandshakeResult.
func ParseHandshakeResult(b []byte) (*HandshakeResult, error) {
	r := reader{b: b}
	res := &HandshakeResult{Code: Code(r.u16())}
	if res.Code != 0 {
		res.Message = r.str()
	} else {
		res.Session = r.session()
		res.Observed = r.addr()
		res.HeartbeatMS = r.u32()
		res.ExpiryMS = r.u32()
		res.PresenceSeq = r.u32()
	}
	if r.err != nil {
		return nil, fmt.Errorf("handshake result: %w", r.err)
	}
	return res, nil
}

// SealedHeaderLen is the length of a Sealed datagram's header: the common
// header, the session ID and the counter. It is the associated data of
// the seal; the box (ciphertext and tag) follows.
const SealedHeaderLen = HeaderLen + 8 + 8

// SealedMinLen is the least length of a Sealed datagram a node sends: it
// pads its plaintext up to it, so that a path challenge sent in answer to
// any of them is never larger than what caused it.
const SealedMinLen = 64

// Sealed is an authenticated control datagram (package ctrl seals and
// opens it). Body: session(8) counter(8) box(rest).
type Sealed struct {
	Session SessionID
	Counter uint64
	Box     []byte // aliases the parsed datagram
}

func (*Sealed) Type() Type { return TypeSealed }
func (m *Sealed) AppendBody(b []byte) []byte {
	b = append(b, m.Session[:]...)
	b = appendU64(b, m.Counter)
	return append(b, m.Box...)
}
func parseSealed(b []byte) (Message, error) {
	r := reader{b: b}
	m := &Sealed{Session: r.session(), Counter: r.u64()}
	m.Box = r.b
	return m, r.err
}

// AppendSealedHeader appends a Sealed datagram's header (the associated
// data of its seal); the caller appends the box.
func AppendSealedHeader(b []byte, s SessionID, counter uint64) []byte {
	b = append(b, Magic, Version, byte(TypeSealed))
	b = append(b, s[:]...)
	return appendU64(b, counter)
}

// AppendInner appends m as the plaintext of a Sealed datagram: its type,
// then its body.
func AppendInner(b []byte, m Message) []byte {
	return m.AppendBody(append(b, byte(m.Type())))
}

// ParseInner decodes the plaintext of a Sealed datagram. Trailing bytes
// (padding) are ignored; a Sealed, Handshake or Relay inside is refused.
func ParseInner(b []byte) (Message, error) {
	if len(b) < 1 {
		return nil, fmt.Errorf("%w: empty sealed plaintext", ErrTooShort)
	}
	t := Type(b[0])
	switch t {
	case TypeSealed, TypeHandshake, TypeHandshakeReply, TypeHello, TypeCookie, TypeRelay, TypeRelayed:
		return nil, fmt.Errorf("%w: %s inside a sealed datagram", ErrUnknownType, t)
	}
	p := parsers[t]
	if p == nil {
		return nil, fmt.Errorf("%w: 0x%02x", ErrUnknownType, uint8(t))
	}
	m, err := p(b[1:])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	return m, nil
}

// PathChallenge asks a node to prove it receives at the address it sent
// from. Body: data(8).
type PathChallenge struct{ Data [8]byte }

func (*PathChallenge) Type() Type                   { return TypePathChallenge }
func (m *PathChallenge) AppendBody(b []byte) []byte { return append(b, m.Data[:]...) }
func parsePathChallenge(b []byte) (Message, error) {
	r := reader{b: b}
	m := &PathChallenge{}
	copy(m.Data[:], r.take(8))
	return m, r.err
}

// PathResponse echoes a PathChallenge's data. Body: data(8).
type PathResponse struct{ Data [8]byte }

func (*PathResponse) Type() Type                   { return TypePathResponse }
func (m *PathResponse) AppendBody(b []byte) []byte { return append(b, m.Data[:]...) }
func parsePathResponse(b []byte) (Message, error) {
	r := reader{b: b}
	m := &PathResponse{}
	copy(m.Data[:], r.take(8))
	return m, r.err
}

// Heartbeat keeps a registration and the NAT mapping alive (sealed).
// Body: empty.
type Heartbeat struct{}

func (*Heartbeat) Type() Type                   { return TypeHeartbeat }
func (m *Heartbeat) AppendBody(b []byte) []byte { return b }
func parseHeartbeat(b []byte) (Message, error)  { return &Heartbeat{}, nil }

// HeartbeatAck answers a Heartbeat. Body: observed(addr) presence_seq(4)
// room_seq(4) alt_stun(2).
// A node whose last presence event is older than PresenceSeq lost one and
// asks for the snapshot again.
type HeartbeatAck struct {
	Observed    netip.AddrPort
	PresenceSeq uint32
	// RoomSeq is the Seq of the last RoomEvent sent to the node (0:
	// none). It follows PresenceSeq; a HeartbeatAck without it parses as
	// 0.
	RoomSeq uint32
	// AltSTUN is the port of the rendezvous's second STUN socket, on the
	// rendezvous's IP address (0: it has none). It follows RoomSeq; a
	// HeartbeatAck without it parses as 0.
	AltSTUN uint16
}

func (*HeartbeatAck) Type() Type { return TypeHeartbeatAck }
func (m *HeartbeatAck) AppendBody(b []byte) []byte {
	return appendU16(appendU32(appendU32(AppendAddr(b, m.Observed), m.PresenceSeq), m.RoomSeq), m.AltSTUN)
}
func parseHeartbeatAck(b []byte) (Message, error) {
	r := reader{b: b}
	m := &HeartbeatAck{Observed: r.addr(), PresenceSeq: r.u32()}
	if len(r.b) > 0 {
		m.RoomSeq = r.u32()
	}
	if r.err == nil && len(r.b) > 0 {
		m.AltSTUN = r.u16()
	}
	return m, r.err
}

// Leave ends a registration at once (sealed). Body: empty.
type Leave struct{}

func (*Leave) Type() Type                   { return TypeLeave }
func (m *Leave) AppendBody(b []byte) []byte { return b }
func parseLeave(b []byte) (Message, error)  { return &Leave{}, nil }

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

// Change is one peer joining or leaving the set of peers a node sees.
type Change struct {
	Kind   PresenceKind
	Reason LeaveReason
	Key    Key
	Name   string
}

// Presence reports the changes to the peers a node sees since the last
// Presence, in order (the rendezvous gathers them for a short while and
// sends them together) (sealed). Seq numbers the node's Presence datagrams.
// Body: seq(4) count(1) {kind(1) reason(1) key(32) name(str)}*count.
type Presence struct {
	Seq     uint32
	Changes []Change
}

// MaxChanges bounds the changes in one Presence; the rendezvous also
// keeps each Presence body within MaxPeersBody bytes (names are up to 128
// bytes), so that it fits any path.
const MaxChanges = 16

func (*Presence) Type() Type { return TypePresence }
func (m *Presence) AppendBody(b []byte) []byte {
	b = appendU32(b, m.Seq)
	n := min(len(m.Changes), 255)
	b = append(b, byte(n))
	for _, c := range m.Changes[:n] {
		b = append(b, byte(c.Kind), byte(c.Reason))
		b = append(b, c.Key[:]...)
		b = appendStr(b, c.Name)
	}
	return b
}
func parsePresence(b []byte) (Message, error) {
	r := reader{b: b}
	m := &Presence{Seq: r.u32()}
	n := int(r.u8())
	for i := 0; i < n && r.err == nil; i++ {
		c := Change{Kind: PresenceKind(r.u8()), Reason: LeaveReason(r.u8()), Key: r.key(), Name: r.str()}
		if r.err == nil && c.Kind != PresenceJoin && c.Kind != PresenceLeft {
			return nil, fmt.Errorf("%w: presence kind %d", ErrMalformed, c.Kind)
		}
		m.Changes = append(m.Changes, c)
	}
	if r.err != nil {
		return nil, r.err
	}
	return m, nil
}

// PeersRequest asks for the presence snapshot (sealed). Body: empty.
type PeersRequest struct{}

func (*PeersRequest) Type() Type                   { return TypePeersRequest }
func (m *PeersRequest) AppendBody(b []byte) []byte { return b }
func parsePeersRequest(b []byte) (Message, error)  { return &PeersRequest{}, nil }

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

// Who asks for one page of the members of a room the node is in (sealed):
// those whose name sorts after After (by NameKey), up to one datagram's
// worth. Body: txid(4) room(str) after(str).
type Who struct {
	TxID  uint32
	Room  string
	After string // "": from the start
}

func (*Who) Type() Type { return TypeWho }
func (m *Who) AppendBody(b []byte) []byte {
	b = appendU32(b, m.TxID)
	b = appendStr(b, m.Room)
	return appendStr(b, m.After)
}
func parseWho(b []byte) (Message, error) {
	r := reader{b: b}
	m := &Who{TxID: r.u32(), Room: r.str(), After: r.str()}
	return m, r.err
}

// WhoReply is one page of a room's members, sorted by name, and the number
// of members online (sealed). More says that members sort after the last
// one here: ask again with After set to its name.
// Body: txid(4) room(str) total(4) more(1) count(1) {key(32) name(str)}*count.
type WhoReply struct {
	TxID    uint32
	Room    string
	Total   uint32
	More    bool
	Members []Peer
}

func (*WhoReply) Type() Type { return TypeWhoReply }
func (m *WhoReply) AppendBody(b []byte) []byte {
	b = appendU32(b, m.TxID)
	b = appendStr(b, m.Room)
	b = appendU32(b, m.Total)
	more := byte(0)
	if m.More {
		more = 1
	}
	b = append(b, more)
	n := min(len(m.Members), 255)
	b = append(b, byte(n))
	for _, p := range m.Members[:n] {
		b = append(b, p.Key[:]...)
		b = appendStr(b, p.Name)
	}
	return b
}
func parseWhoReply(b []byte) (Message, error) {
	r := reader{b: b}
	m := &WhoReply{TxID: r.u32(), Room: r.str(), Total: r.u32()}
	switch r.u8() {
	case 0:
	case 1:
		m.More = true
	default:
		if r.err == nil {
			return nil, fmt.Errorf("%w: who_reply more flag", ErrMalformed)
		}
	}
	n := int(r.u8())
	for i := 0; i < n && r.err == nil; i++ {
		m.Members = append(m.Members, Peer{Key: r.key(), Name: r.str()})
	}
	return m, r.err
}

// Lookup asks for a node by name (Key zero) or by key (Name empty)
// (sealed). Body: txid(4) key(32) name(str).
type Lookup struct {
	TxID uint32
	Key  Key
	Name string
}

func (*Lookup) Type() Type { return TypeLookup }
func (m *Lookup) AppendBody(b []byte) []byte {
	b = appendU32(b, m.TxID)
	b = append(b, m.Key[:]...)
	return appendStr(b, m.Name)
}
func parseLookup(b []byte) (Message, error) {
	r := reader{b: b}
	m := &Lookup{TxID: r.u32(), Key: r.key(), Name: r.str()}
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

// Signal carries peer-to-peer signaling (a PeerSignal) to Dst (sealed).
// Body: dst(32) len(2) signal(len): the length, because a node pads what it
// seals.
type Signal struct {
	Dst  Key
	Body []byte // an encoded PeerSignal; aliases the datagram
}

func (*Signal) Type() Type { return TypeSignal }
func (m *Signal) AppendBody(b []byte) []byte {
	b = append(b, m.Dst[:]...)
	return appendBytes16(b, m.Body)
}
func parseSignal(b []byte) (Message, error) {
	r := reader{b: b}
	m := &Signal{Dst: r.key()}
	m.Body = r.take(int(r.u16()))
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
	CodeBadHandshake  Code = 13 // the handshake did not check out: say Hello again
	CodeQuota         Code = 14 // too many new names from this network; try later
	CodeNotMember     Code = 15 // the node is not in that room
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
	CodeBadHandshake:  "bad_handshake",
	CodeQuota:         "quota",
	CodeNotMember:     "not_member",
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
	if n := min(limit-fixed, 255); len(e.Message) > n {
		c := *e
		for n > 0 && !utf8.RuneStart(c.Message[n]) {
			n-- // cut between characters, not inside one
		}
		c.Message = c.Message[:n]
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
