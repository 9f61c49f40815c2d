// Package wire is natchat's binary protocol between nodes and the
// rendezvous, and between two nodes' sessions. It does no I/O.
//
// Every rendezvous-protocol datagram starts with a 3-byte header:
//
//	0      1        2
//	+------+--------+------+----------
//	| 0xAC | version| type | body ...
//	+------+--------+------+----------
//
// The magic byte 0xAC lies in 0x80–0xBF, outside STUN's 0x00–0x3F and
// outside QUIC's 0x40–0x7F / 0xC0–0xFF, so one socket can carry STUN,
// ICE, QUIC and this protocol and tell them apart by the first byte
// (RFC 7983 style). Integers are big-endian. Strings are UTF-8 with a
// one-byte length prefix unless stated otherwise. Decoders ignore trailing
// bytes, so a newer sender's extra fields do not break an older reader.
//
// The layout of every message is documented on its type and, byte by byte,
// in docs/PROTOCOL.md. The header and the Error message are frozen across
// versions so that a version mismatch can always be reported.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Magic is the first byte of every rendezvous-protocol datagram.
const Magic = 0xAC

// Version is the protocol version this package speaks. Version 2 has the
// authenticated control channel (Handshake, Sealed).
const Version = 2

// HeaderLen is the length of the common header.
const HeaderLen = 3

// Type identifies a message.
type Type uint8

// Message types. Direction: N = node, R = rendezvous.
const (
	//
	// In the clear:
	TypeHello          Type = 0x01 // N→R: ask for an address cookie
	TypeCookie         Type = 0x02 // R→N: the cookie and the rendezvous's key
	TypeHandshake      Type = 0x03 // N→R: cookie + first Noise message (register)
	TypeHandshakeReply Type = 0x04 // R→N: second Noise message (the session, or a refusal)
	TypeRelay          Type = 0x0D // N→R: opaque packet for a peer
	TypeRelayed        Type = 0x0E // R→N: opaque packet from a peer
	TypeError          Type = 0x11 // R→N: a request was refused (frozen layout)
	TypeSealed         Type = 0x12 // both ways: an authenticated control message
	// Inside a Sealed datagram only:
	TypeHeartbeat     Type = 0x05 // N→R
	TypeHeartbeatAck  Type = 0x06 // R→N
	TypeLeave         Type = 0x07 // N→R: notified leave
	TypePresence      Type = 0x08 // R→N: joins and leaves
	TypePeersRequest  Type = 0x09 // N→R: ask for the presence snapshot
	TypePeers         Type = 0x0A // R→N: one part of the presence snapshot
	TypeLookup        Type = 0x0B // N→R: find a node by name or key
	TypeLookupReply   Type = 0x0C // R→N
	TypeSignal        Type = 0x0F // N→R: signaling for a peer (ICE)
	TypeSignaled      Type = 0x10 // R→N: signaling from a peer, with its name
	TypePathChallenge Type = 0x13 // R→N: prove you receive at this address
	TypePathResponse  Type = 0x14 // N→R: the challenge, echoed
	TypeWho           Type = 0x15 // N→R: ask for a page of a room's members
	TypeWhoReply      Type = 0x16 // R→N: the page, and the room's size
	// 0x17–0x1E: the offline mailbox (mailbox.go); 0x1F–0x26: rooms
	// (rooms.go).
)

func (t Type) String() string {
	switch t {
	case TypeHello:
		return "hello"
	case TypeCookie:
		return "cookie"
	case TypeHandshake:
		return "handshake"
	case TypeHandshakeReply:
		return "handshake_reply"
	case TypeSealed:
		return "sealed"
	case TypePathChallenge:
		return "path_challenge"
	case TypePathResponse:
		return "path_response"
	case TypeWho:
		return "who"
	case TypeWhoReply:
		return "who_reply"
	case TypeMailPut:
		return "mail_put"
	case TypeMailPutReply:
		return "mail_put_reply"
	case TypeMailNotice:
		return "mail_notice"
	case TypeMailFetch:
		return "mail_fetch"
	case TypeMail:
		return "mail"
	case TypeMailAck:
		return "mail_ack"
	case TypeMailReceipt:
		return "mail_receipt"
	case TypeMailReceiptAck:
		return "mail_receipt_ack"
	case TypeRoomJoin:
		return "room_join"
	case TypeRoomPart:
		return "room_part"
	case TypeRoomReply:
		return "room_reply"
	case TypeRoomList:
		return "room_list"
	case TypeRoomListReply:
		return "room_list_reply"
	case TypeRoomMembers:
		return "room_members"
	case TypeRoomMembersReply:
		return "room_members_reply"
	case TypeRoomEvent:
		return "room_event"
	case TypeHeartbeat:
		return "heartbeat"
	case TypeHeartbeatAck:
		return "heartbeat_ack"
	case TypeLeave:
		return "leave"
	case TypePresence:
		return "presence"
	case TypePeersRequest:
		return "peers_request"
	case TypePeers:
		return "peers"
	case TypeLookup:
		return "lookup"
	case TypeLookupReply:
		return "lookup_reply"
	case TypeRelay:
		return "relay"
	case TypeRelayed:
		return "relayed"
	case TypeSignal:
		return "signal"
	case TypeSignaled:
		return "signaled"
	case TypeError:
		return "error"
	}
	return fmt.Sprintf("type(0x%02x)", uint8(t))
}

// Sentinel decoding errors. Parse wraps them with detail; test with errors.Is.
var (
	// ErrTooShort means the datagram ends before a field it must contain.
	ErrTooShort = errors.New("wire: message too short")
	// ErrMagic means the first byte is not Magic: not this protocol.
	ErrMagic = errors.New("wire: bad magic")
	// ErrVersion means the peer speaks another protocol version. The
	// concrete error is a *VersionError.
	ErrVersion = errors.New("wire: protocol version mismatch")
	// ErrUnknownType means the type byte names no message of this version.
	ErrUnknownType = errors.New("wire: unknown message type")
	// ErrMalformed means a field holds a value that cannot be valid.
	ErrMalformed = errors.New("wire: malformed message")
)

// VersionError reports a datagram of another protocol version.
type VersionError struct {
	Got  uint8 // version in the datagram
	Want uint8 // Version
	Type Type  // type byte of the datagram (an Error has a frozen layout)
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("wire: protocol version mismatch: got v%d, speak v%d", e.Got, e.Want)
}

// Is makes errors.Is(err, ErrVersion) true.
func (e *VersionError) Is(target error) bool { return target == ErrVersion }

// IsProtocol reports whether b looks like a rendezvous-protocol datagram
// (of any version): the demultiplexing test.
func IsProtocol(b []byte) bool { return len(b) >= HeaderLen && b[0] == Magic }

// IsSTUN reports whether b may be STUN: at least a STUN header long, with
// the first byte in 0x00–0x3F (its two top bits are zero, RFC 8489 §5).
func IsSTUN(b []byte) bool { return len(b) >= 20 && b[0] < 0x40 }

// Message is any rendezvous-protocol message.
type Message interface {
	// Type is the message's type byte.
	Type() Type
	// AppendBody appends the encoded body (everything after the header).
	AppendBody(b []byte) []byte
}

// Append appends m with its header to b and returns the extended slice.
func Append(b []byte, m Message) []byte {
	b = append(b, Magic, Version, byte(m.Type()))
	return m.AppendBody(b)
}

// Marshal returns m encoded in a new slice.
func Marshal(m Message) []byte { return Append(make([]byte, 0, 64), m) }

// outer reports whether t travels outside a Sealed datagram: the
// handshake, the relay, clear errors and Sealed itself. Every other
// message exists only inside a Sealed one (ParseInner).
func outer(t Type) bool {
	switch t {
	case TypeHello, TypeCookie, TypeHandshake, TypeHandshakeReply, TypeSealed, TypeRelay, TypeRelayed, TypeError:
		return true
	}
	return false
}

// Parse decodes one datagram. It never panics on any input; errors wrap the
// sentinel errors above.
func Parse(b []byte) (Message, error) {
	if len(b) < HeaderLen {
		return nil, fmt.Errorf("%w: %d bytes, header needs %d", ErrTooShort, len(b), HeaderLen)
	}
	if b[0] != Magic {
		return nil, fmt.Errorf("%w: 0x%02x", ErrMagic, b[0])
	}
	t := Type(b[2])
	if b[1] != Version {
		verr := &VersionError{Got: b[1], Want: Version, Type: t}
		if t == TypeError {
			// Frozen layout: a peer of any version can tell us why.
			if m, err := parseError(b[HeaderLen:]); err == nil {
				return m, verr
			}
		}
		return nil, verr
	}
	p := parsers[t]
	if p == nil || !outer(t) {
		return nil, fmt.Errorf("%w: 0x%02x", ErrUnknownType, uint8(t))
	}
	m, err := p(b[HeaderLen:])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	return m, nil
}

var parsers [256]func([]byte) (Message, error)

func init() {
	parsers[TypeHello] = parseHello
	parsers[TypeCookie] = parseCookie
	parsers[TypeHandshake] = parseHandshake
	parsers[TypeHandshakeReply] = parseHandshakeReply
	parsers[TypeSealed] = parseSealed
	parsers[TypePathChallenge] = parsePathChallenge
	parsers[TypePathResponse] = parsePathResponse
	parsers[TypeWho] = parseWho
	parsers[TypeWhoReply] = parseWhoReply
	parsers[TypeHeartbeat] = parseHeartbeat
	parsers[TypeHeartbeatAck] = parseHeartbeatAck
	parsers[TypeLeave] = parseLeave
	parsers[TypePresence] = parsePresence
	parsers[TypePeersRequest] = parsePeersRequest
	parsers[TypePeers] = parsePeers
	parsers[TypeLookup] = parseLookup
	parsers[TypeLookupReply] = parseLookupReply
	parsers[TypeRelay] = parseRelay
	parsers[TypeRelayed] = parseRelayed
	parsers[TypeSignal] = parseSignal
	parsers[TypeSignaled] = parseSignaled
	parsers[TypeError] = func(b []byte) (Message, error) { return parseError(b) }
}

// reader consumes a body; the first failure sticks in err.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b) < n {
		r.err = ErrTooShort
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() uint8 {
	v := r.take(1)
	if v == nil {
		return 0
	}
	return v[0]
}

func (r *reader) u16() uint16 {
	v := r.take(2)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint16(v)
}

func (r *reader) u32() uint32 {
	v := r.take(4)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint32(v)
}

func (r *reader) u64() uint64 {
	v := r.take(8)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// str reads a one-byte-length-prefixed string.
func (r *reader) str() string { return string(r.take(int(r.u8()))) }

// str16 reads a two-byte-length-prefixed string.
func (r *reader) str16() string { return string(r.take(int(r.u16()))) }

func (r *reader) key() (k Key) {
	copy(k[:], r.take(KeyLen))
	return k
}

func (r *reader) session() (s SessionID) {
	copy(s[:], r.take(len(s)))
	return s
}

func (r *reader) addr() netip.AddrPort {
	fam := r.u8()
	port := r.u16()
	var ip netip.Addr
	switch fam {
	case 4:
		ip = netip.AddrFrom4([4]byte(pad(r.take(4), 4)))
	case 6:
		// Unmap: AppendAddr sends IPv4-mapped addresses as family 4, so a
		// mapped family-6 address must parse to the same netip.Addr.
		ip = netip.AddrFrom16([16]byte(pad(r.take(16), 16))).Unmap()
	default:
		if r.err == nil {
			r.err = fmt.Errorf("%w: address family %d", ErrMalformed, fam)
		}
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ip, port)
}

// pad returns b, or n zero bytes when a short read left b nil.
func pad(b []byte, n int) []byte {
	if len(b) == n {
		return b
	}
	return make([]byte, n)
}

func appendU16(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }
func appendU32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }
func appendU64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

// appendStr appends a one-byte-length-prefixed string, truncated to 255 bytes.
func appendStr(b []byte, s string) []byte {
	if len(s) > 255 {
		s = s[:255]
	}
	return append(append(b, byte(len(s))), s...)
}

// appendStr16 appends a two-byte-length-prefixed string, truncated to 65535 bytes.
func appendStr16(b []byte, s string) []byte {
	s = s[:min(len(s), 0xFFFF)]
	return append(appendU16(b, uint16(len(s))), s...)
}

// appendBytes16 appends a two-byte-length-prefixed byte string, truncated
// to 65535 bytes.
func appendBytes16(b, v []byte) []byte {
	v = v[:min(len(v), 0xFFFF)]
	return append(appendU16(b, uint16(len(v))), v...)
}

// AppendAddr appends an address as family(1: 4 or 6) port(2) ip(4 or 16).
// An invalid address is encoded as 0.0.0.0:0.
func AppendAddr(b []byte, a netip.AddrPort) []byte {
	ip := a.Addr().Unmap()
	if ip.Is4() {
		b = append(b, 4)
		b = appendU16(b, a.Port())
		s := ip.As4()
		return append(b, s[:]...)
	}
	if ip.Is6() {
		b = append(b, 6)
		b = appendU16(b, a.Port())
		s := ip.As16()
		return append(b, s[:]...)
	}
	return append(b, 4, 0, 0, 0, 0, 0, 0)
}
