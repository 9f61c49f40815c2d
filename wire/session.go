package wire

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// Session streams. Two nodes talk over QUIC (TLS 1.3, identity keys pinned)
// on their per-peer link. Every QUIC stream starts with a 3-byte preamble
//
//	magic(0xAC) version(1) stream_kind(1)
//
// followed by frames: kind(1) length(uvarint) body(length).
// Unknown frame kinds are skipped by length, so newer senders can add them.

// StreamKind says what a QUIC stream carries.
type StreamKind uint8

// Stream kinds.
const (
	StreamChat StreamKind = 1 // messages and their receipts
	StreamFile StreamKind = 2 // one file transfer (files.go)
)

// PreambleLen is the length of a stream preamble.
const PreambleLen = 3

// AppendPreamble appends a stream preamble.
func AppendPreamble(b []byte, k StreamKind) []byte { return append(b, Magic, Version, byte(k)) }

// ParsePreamble checks a stream preamble and returns its kind.
func ParsePreamble(b []byte) (StreamKind, error) {
	if len(b) < PreambleLen {
		return 0, ErrTooShort
	}
	if b[0] != Magic {
		return 0, fmt.Errorf("%w: 0x%02x", ErrMagic, b[0])
	}
	if b[1] != Version {
		return 0, &VersionError{Got: b[1], Want: Version}
	}
	return StreamKind(b[2]), nil
}

// FrameKind identifies a frame on a stream.
type FrameKind uint8

// Frame kinds on a chat stream.
const (
	FrameMsg FrameKind = 1 // a chat message
	FrameAck FrameKind = 2 // delivery receipt for a message
)

// MaxFrameLen bounds a frame body; longer frames end the stream.
const MaxFrameLen = 64 << 10

// MaxTextLen bounds a message's text in bytes.
const MaxTextLen = 16 << 10

// MsgID names a message end to end. The sender picks it at random.
type MsgID [8]byte

// String returns the ID in hex, as the headless interface shows it.
func (id MsgID) String() string { return hex.EncodeToString(id[:]) }

// ParseMsgID parses the hex form.
func ParseMsgID(s string) (MsgID, error) {
	var id MsgID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("%w: message id %q", ErrMalformed, s)
	}
	copy(id[:], b)
	return id, nil
}

// MsgKind says what a message is.
type MsgKind uint8

// Message kinds. ParseMsg accepts any kind, so that newer senders can add
// them; a receiver shows the kinds it knows and drops the others.
const (
	MsgText  MsgKind = 0 // plain text
	MsgEmote MsgKind = 1 // an action, "/me waves": shown as "* NAME waves"
)

// Msg is a chat message.
// Body: id(8) seq(8) sent_unix_ms(8) kind(1) room(str; empty for 1:1)
// text(u16 length + bytes) [group(8)]. Trailing bytes are ignored (newer
// senders).
//
// A room message goes to each member as its own copy, with its own ID
// (the member's receipt names it) and Group, the ID of the message in the
// room, the same in every copy (what members show). Group is left out when
// zero (1:1 messages).
type Msg struct {
	ID MsgID
	// Seq numbers the sender's messages in this conversation, from 1, in
	// the order sent; it survives the sender's restarts.
	Seq    uint64
	SentMS int64 // sender's clock, Unix milliseconds
	Kind   MsgKind
	Room   string
	Text   string
	Group  MsgID
}

// ShownID is the ID a receiver shows for m: Group for a room message's
// copy, else ID.
func (m *Msg) ShownID() MsgID {
	if m.Group != (MsgID{}) {
		return m.Group
	}
	return m.ID
}

// AppendFrame appends a frame with the given kind and body.
func AppendFrame(b []byte, k FrameKind, body []byte) []byte {
	b = append(b, byte(k))
	b = binary.AppendUvarint(b, uint64(len(body)))
	return append(b, body...)
}

// AppendMsg appends m as a FrameMsg frame.
func AppendMsg(b []byte, m *Msg) []byte {
	body := make([]byte, 0, 8+8+8+1+1+len(m.Room)+2+len(m.Text)+8)
	body = append(body, m.ID[:]...)
	body = appendU64(body, m.Seq)
	body = appendU64(body, uint64(m.SentMS))
	body = append(body, byte(m.Kind))
	body = appendStr(body, m.Room)
	body = appendStr16(body, m.Text)
	if m.Group != (MsgID{}) {
		body = append(body, m.Group[:]...)
	}
	return AppendFrame(b, FrameMsg, body)
}

// ParseMsg decodes a FrameMsg body.
func ParseMsg(b []byte) (*Msg, error) {
	r := reader{b: b}
	m := &Msg{}
	copy(m.ID[:], r.take(8))
	m.Seq = r.u64()
	m.SentMS = int64(r.u64())
	m.Kind = MsgKind(r.u8())
	m.Room = r.str()
	m.Text = r.str16()
	if len(r.b) >= len(m.Group) {
		copy(m.Group[:], r.b)
	}
	if r.err != nil {
		return nil, fmt.Errorf("msg: %w", r.err)
	}
	if len(m.Text) > MaxTextLen {
		return nil, fmt.Errorf("msg: %w: text of %d bytes", ErrMalformed, len(m.Text))
	}
	return m, nil
}

// AppendAck appends a FrameAck frame for id.
func AppendAck(b []byte, id MsgID) []byte { return AppendFrame(b, FrameAck, id[:]) }

// ParseAck decodes a FrameAck body.
func ParseAck(b []byte) (MsgID, error) {
	var id MsgID
	if len(b) < len(id) {
		return id, fmt.Errorf("ack: %w", ErrTooShort)
	}
	copy(id[:], b)
	return id, nil
}

// ParseFrame splits the first frame off b. It returns ErrTooShort when b
// holds only part of a frame (read more), ErrMalformed for a bad length.
func ParseFrame(b []byte) (k FrameKind, body []byte, n int, err error) {
	if len(b) < 2 {
		return 0, nil, 0, ErrTooShort
	}
	l, ln := binary.Uvarint(b[1:])
	if ln == 0 {
		return 0, nil, 0, ErrTooShort
	}
	if ln < 0 || l > MaxFrameLen {
		return 0, nil, 0, fmt.Errorf("%w: frame length", ErrMalformed)
	}
	n = 1 + ln + int(l)
	if len(b) < n {
		return 0, nil, 0, ErrTooShort
	}
	return FrameKind(b[0]), b[1+ln : n], n, nil
}
