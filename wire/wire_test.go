package wire

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// Test values. Each is written out in hex below so that the expected
// encodings can be read against the layouts in the doc comments.
const (
	verHex    = "02" // Version, as it appears in every header below
	sessHex   = "0102030405060708"
	ctrHex    = "8000000000000001" // a Sealed counter with its top bit set
	keyHex    = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
	key2Hex   = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
	srvKeyHex = "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"
	zeroKey   = "0000000000000000000000000000000000000000000000000000000000000000"
	cookieHex = "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3"
	noiseHex  = "4e6f6973650001ff"                   // stands in for a Noise message: opaque to wire
	boxHex    = "b0b1b2b3b4b5b6b7b8b9babbbcbdbebf99" // stands in for ciphertext+tag
	pathHex   = "5051525354555657"
	mailIDHex = "0102030405060708"
	msgIDHex  = "f0f1f2f3f4f5f6f7"

	// A PeerSignal of kind Hello: kind flags seq gen ufrag pwd count.
	sigHelloHex = "03" + "00" + "00000001" + "00000000" + "00" + "00" + "00"
	sigHelloLen = "000d" // its length, as Signal prefixes it

	lobbyHex = "06 236c6f626279" // str "#lobby"
	aliceHex = "05 616c696365"   // str "alice"
	bobHex   = "03 626f62"       // str "bob"
)

// unhex decodes a hex literal; spaces are allowed between fields.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex literal %q: %v", s, err)
	}
	return b
}

func mustUnhex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

var (
	testSess   = SessionID(mustUnhex(sessHex))
	testKey    = Key(mustUnhex(keyHex))
	testKey2   = Key(mustUnhex(key2Hex))
	testSrvKey = [32]byte(mustUnhex(srvKeyHex))
	testCookie = Cookie(mustUnhex(cookieHex))
	testPath   = [8]byte(mustUnhex(pathHex))
	testMsgID  = MsgID(mustUnhex(msgIDHex))

	testV4 = netip.MustParseAddrPort("192.0.2.1:41641")
	testV6 = netip.MustParseAddrPort("[2001:db8::1]:443")
)

// outerOnly are the types that travel in the clear and never inside a
// Sealed datagram. Error travels both ways.
var outerOnly = map[Type]bool{
	TypeHello: true, TypeCookie: true, TypeHandshake: true, TypeHandshakeReply: true,
	TypeSealed: true, TypeRelay: true, TypeRelayed: true,
}

// msgCase is one row of a message table. It is shared with the fuzz
// targets, which seed their corpora from it.
type msgCase struct {
	name string
	msg  Message
	// hex is the expected encoding: the whole datagram, header included,
	// for outerCases; the plaintext of a Sealed datagram (type byte, then
	// body) for innerCases.
	hex string
	// open is how many bytes can be cut off the end without an error: the
	// part of an open-ended trailing field (a payload that runs to the end
	// of the datagram) that may be missing. Trailing bytes become part of
	// such a field.
	open int
}

// outerCases are the datagrams in the clear.
var outerCases = []msgCase{
	{
		name: "hello",
		msg:  &Hello{Nonce: 0x0102030405060708},
		hex:  "ac" + verHex + "01" + "0102030405060708" + strings.Repeat("00", 53),
	},
	{
		name: "cookie",
		msg:  &CookieReply{Nonce: 0x1122334455667788, Cookie: testCookie, ServerKey: testSrvKey},
		hex:  "ac" + verHex + "02" + "1122334455667788" + cookieHex + srvKeyHex,
	},
	{
		name: "handshake",
		msg:  &Handshake{Cookie: testCookie, Noise: mustUnhex(noiseHex)},
		hex:  "ac" + verHex + "03" + cookieHex + noiseHex,
		open: len(noiseHex)/2 - 1, // at least one byte of Noise
	},
	{
		name: "handshake one noise byte",
		msg:  &Handshake{Cookie: testCookie, Noise: []byte{0x00}},
		hex:  "ac" + verHex + "03" + cookieHex + "00",
	},
	{
		name: "handshake reply",
		msg:  &HandshakeReply{Noise: mustUnhex(noiseHex)},
		hex:  "ac" + verHex + "04" + noiseHex,
		open: len(noiseHex)/2 - 1,
	},
	{
		name: "sealed",
		msg:  &Sealed{Session: testSess, Counter: 0x8000000000000001, Box: mustUnhex(boxHex)},
		hex:  "ac" + verHex + "12" + sessHex + ctrHex + boxHex,
		open: len(boxHex) / 2,
	},
	{
		name: "sealed empty box",
		msg:  &Sealed{Session: testSess, Counter: 0, Box: []byte{}},
		hex:  "ac" + verHex + "12" + sessHex + "0000000000000000",
	},
	{
		name: "relay",
		msg:  &Relay{Session: testSess, Dst: testKey, Payload: []byte{0x40, 1, 2, 3}},
		hex:  "ac" + verHex + "0d" + sessHex + keyHex + "40010203",
		open: 4,
	},
	{
		name: "relay empty payload",
		msg:  &Relay{Session: testSess, Dst: testKey, Payload: []byte{}},
		hex:  "ac" + verHex + "0d" + sessHex + keyHex,
	},
	{
		name: "relayed",
		msg:  &Relayed{Src: testKey2, Payload: []byte{0xc0, 0xff}},
		hex:  "ac" + verHex + "0e" + key2Hex + "c0ff",
		open: 2,
	},
	{
		name: "error",
		msg:  &Error{Code: CodeBadCookie, Request: TypeHandshake, TxID: 0, Message: "say hello"},
		hex:  "ac" + verHex + "11" + "0002" + "03" + "00000000" + "09 7361792068656c6c6f",
	},
	{
		name: "error empty message",
		msg:  &Error{Code: CodeRateLimited, Request: TypeHello, TxID: 0xcafe0001},
		hex:  "ac" + verHex + "11" + "0008" + "01" + "cafe0001" + "00",
	},
}

// innerCases are the plaintexts of Sealed datagrams.
var innerCases = []msgCase{
	{
		name: "heartbeat",
		msg:  &Heartbeat{},
		hex:  "05",
	},
	{
		name: "heartbeat ack ipv4",
		msg:  &HeartbeatAck{Observed: netip.MustParseAddrPort("198.51.100.7:3478"), PresenceSeq: 0xdeadbeef, RoomSeq: 3, AltSTUN: 3479},
		hex:  "06" + "04 0d96 c6336407" + "deadbeef" + "00000003" + "0d97",
	},
	{
		name: "heartbeat ack ipv6",
		msg:  &HeartbeatAck{Observed: testV6, PresenceSeq: 1},
		hex:  "06" + "06 01bb 20010db8000000000000000000000001" + "00000001" + "00000000" + "0000",
	},
	{
		name: "leave",
		msg:  &Leave{},
		hex:  "07",
	},
	{
		name: "presence join and leave",
		msg: &Presence{Seq: 42, Changes: []Change{
			{Kind: PresenceJoin, Reason: ReasonNone, Key: testKey, Name: "alice"},
			{Kind: PresenceLeft, Reason: ReasonTimeout, Key: testKey2, Name: "bob"},
		}},
		hex: "08" + "0000002a" + "02" +
			"01 00" + keyHex + aliceHex +
			"02 02" + key2Hex + bobHex,
	},
	{
		name: "presence quit",
		msg:  &Presence{Seq: 0xffffffff, Changes: []Change{{Kind: PresenceLeft, Reason: ReasonQuit, Key: testKey, Name: "Zoë"}}},
		hex:  "08" + "ffffffff" + "01" + "02 01" + keyHex + "04 5a6fc3ab",
	},
	{
		name: "presence empty",
		msg:  &Presence{Seq: 1},
		hex:  "08" + "00000001" + "00",
	},
	{
		name: "peers request",
		msg:  &PeersRequest{},
		hex:  "09",
	},
	{
		name: "peers two",
		msg: &Peers{Seq: 9, Part: 0, Parts: 2, Peers: []Peer{
			{Key: testKey, Name: "alice"}, {Key: testKey2, Name: "bob"}}},
		hex: "0a" + "00000009" + "0000" + "0002" + "02" +
			keyHex + aliceHex + key2Hex + bobHex,
	},
	{
		name: "peers last part",
		msg:  &Peers{Seq: 9, Part: 1, Parts: 2, Peers: []Peer{{Key: testKey, Name: "x"}}},
		hex:  "0a" + "00000009" + "0001" + "0002" + "01" + keyHex + "01 78",
	},
	{
		name: "peers empty",
		msg:  &Peers{Seq: 1, Part: 0, Parts: 1},
		hex:  "0a" + "00000001" + "0000" + "0001" + "00",
	},
	{
		name: "lookup by name",
		msg:  &Lookup{TxID: 0xcafe0001, Name: "bob"},
		hex:  "0b" + "cafe0001" + zeroKey + bobHex,
	},
	{
		name: "lookup by key",
		msg:  &Lookup{TxID: 2, Key: testKey},
		hex:  "0b" + "00000002" + keyHex + "00",
	},
	{
		name: "lookup reply online",
		msg:  &LookupReply{TxID: 1, Status: LookupOnline, Key: testKey2, Name: "alice"},
		hex:  "0c" + "00000001" + "00" + key2Hex + aliceHex,
	},
	{
		name: "lookup reply offline",
		msg:  &LookupReply{TxID: 0xcafe0001, Status: LookupOffline, Key: testKey, Name: "Bob"},
		hex:  "0c" + "cafe0001" + "01" + keyHex + "03 426f62",
	},
	{
		name: "lookup reply unknown",
		msg:  &LookupReply{TxID: 3, Status: LookupUnknown},
		hex:  "0c" + "00000003" + "02" + zeroKey + "00",
	},
	{
		name: "signal",
		msg:  &Signal{Dst: testKey, Body: mustUnhex(sigHelloHex)},
		hex:  "0f" + keyHex + sigHelloLen + sigHelloHex,
	},
	{
		name: "signal empty body",
		msg:  &Signal{Dst: testKey, Body: []byte{}},
		hex:  "0f" + keyHex + "0000",
	},
	{
		name: "signaled",
		msg:  &Signaled{Src: testKey2, Name: "alice", Body: mustUnhex(sigHelloHex)},
		hex:  "10" + key2Hex + aliceHex + sigHelloHex,
		open: len(sigHelloHex) / 2,
	},
	{
		name: "path challenge",
		msg:  &PathChallenge{Data: testPath},
		hex:  "13" + pathHex,
	},
	{
		name: "path response",
		msg:  &PathResponse{Data: testPath},
		hex:  "14" + pathHex,
	},
	{
		name: "mail put",
		msg:  &MailPut{TxID: 1, To: testKey, ID: MsgID(mustUnhex(mailIDHex)), Part: 0, Parts: 2, Data: []byte("hi")},
		hex:  "17" + "00000001" + keyHex + mailIDHex + "00" + "02" + "0002 6869",
	},
	{
		name: "mail put reply",
		msg:  &MailPutReply{TxID: 1, ID: MsgID(mustUnhex(mailIDHex)), Status: MailFull},
		hex:  "18" + "00000001" + mailIDHex + "03",
	},
	{
		name: "mail notice",
		msg:  &MailNotice{Count: 3, Bytes: 300},
		hex:  "19" + "00000003" + "0000012c",
	},
	{
		name: "mail fetch",
		msg:  &MailFetch{Max: 8, Skip: 3, Tag: 0x1234},
		hex:  "1a" + "08" + "0003" + "1234",
	},
	{
		name: "mail",
		msg:  &Mail{From: testKey, ID: MsgID(mustUnhex(mailIDHex)), StoredMS: 1764000000000, Tag: 0x1234, Index: 2, Count: 3, Part: 1, Parts: 2, Data: []byte("yo")},
		hex:  "1b" + keyHex + mailIDHex + "0000019ab697e800" + "1234" + "02" + "03" + "01" + "02" + "0002 796f",
	},
	{
		name: "mail ack",
		msg:  &MailAck{Refs: []MailRef{{Peer: testKey, ID: MsgID(mustUnhex(mailIDHex))}}},
		hex:  "1c" + "01" + keyHex + mailIDHex,
	},
	{
		name: "mail receipt",
		msg:  &MailReceipt{Receipts: []Receipt{{MailRef: MailRef{Peer: testKey2, ID: MsgID(mustUnhex(mailIDHex))}, Status: ReceiptExpired}}},
		hex:  "1d" + "01" + key2Hex + mailIDHex + "01",
	},
	{
		name: "mail receipt ack empty",
		msg:  &MailReceiptAck{},
		hex:  "1e" + "00",
	},
	{
		name: "room join",
		msg:  &RoomJoin{TxID: 1, Room: "#dev"},
		hex:  "1f" + "00000001" + "04 23646576",
	},
	{
		name: "room part",
		msg:  &RoomPart{TxID: 2, Room: "#dev"},
		hex:  "20" + "00000002" + "04 23646576",
	},
	{
		name: "room reply full",
		msg:  &RoomReply{TxID: 3, Status: RoomFull, Room: "#dev", Version: 7, Members: 256, Online: 5, Limit: 256},
		hex:  "21" + "00000003" + "01" + "04 23646576" + "0000000000000007" + "00000100" + "00000005" + "00000100",
	},
	{
		name: "room list",
		msg:  &RoomList{TxID: 4},
		hex:  "22" + "00000004" + "00",
	},
	{
		name: "room list reply",
		msg:  &RoomListReply{TxID: 5, More: true, Rooms: []RoomInfo{{Room: "#dev", Version: 2, Members: 3, Online: 1}}},
		hex:  "23" + "00000005" + "01" + "01" + "04 23646576" + "0000000000000002" + "00000003" + "00000001",
	},
	{
		name: "room members",
		msg:  &RoomMembers{TxID: 6, Room: "#lobby", After: "bob"},
		hex:  "24" + "00000006" + lobbyHex + bobHex,
	},
	{
		name: "room members reply",
		msg:  &RoomMembersReply{TxID: 7, Room: "#lobby", Version: 1, Total: 1, Members: []RoomMember{{Key: testKey, Name: "bob", Online: true}}},
		hex:  "25" + "00000007" + lobbyHex + "0000000000000001" + "00000001" + "00" + "01" + keyHex + "01" + bobHex,
	},
	{
		name: "room event left",
		msg:  &RoomEvent{Seq: 2, Room: "#lobby", Version: 8, Kind: RoomLeft, Reason: RoomLeftExpired, Key: testKey, Name: "bob"},
		hex:  "26" + "00000002" + lobbyHex + "0000000000000008" + "02" + "01" + keyHex + bobHex,
	},
	{
		name: "who first page",
		msg:  &Who{TxID: 7, Room: "#lobby"},
		hex:  "15" + "00000007" + lobbyHex + "00",
	},
	{
		name: "who after",
		msg:  &Who{TxID: 8, Room: "#lobby", After: "bob"},
		hex:  "15" + "00000008" + lobbyHex + bobHex,
	},
	{
		name: "who reply more",
		msg: &WhoReply{TxID: 8, Room: "#lobby", Total: 1000, More: true, Members: []Peer{
			{Key: testKey, Name: "alice"}, {Key: testKey2, Name: "bob"}}},
		hex: "16" + "00000008" + lobbyHex + "000003e8" + "01" + "02" +
			keyHex + aliceHex + key2Hex + bobHex,
	},
	{
		name: "who reply last page empty",
		msg:  &WhoReply{TxID: 9, Room: "#go", Total: 0},
		hex:  "16" + "00000009" + "03 23676f" + "00000000" + "00" + "00",
	},
	{
		name: "error",
		msg:  &Error{Code: CodeRateLimited, Request: TypeLookup, TxID: 0xcafe0001, Message: "too many lookups"},
		hex:  "11" + "0008" + "0b" + "cafe0001" + "10 746f6f206d616e79206c6f6f6b757073",
	},
	{
		name: "error not member",
		msg:  &Error{Code: CodeNotMember, Request: TypeWho, TxID: 7},
		hex:  "11" + "000f" + "15" + "00000007" + "00",
	},
}

// fromNode are the inner messages a node sends. It pads their plaintext
// (SealedMinLen), so none may end in an open-ended field.
var fromNode = map[Type]bool{
	TypeHeartbeat: true, TypeLeave: true, TypePeersRequest: true, TypeLookup: true,
	TypeSignal: true, TypePathResponse: true, TypeWho: true,
	TypeRoomJoin: true, TypeRoomPart: true, TypeRoomList: true, TypeRoomMembers: true,
}

// openPayload reports whether messages of type t end in a field that runs
// to the end of the datagram (or plaintext).
func openPayload(t Type) bool {
	switch t {
	case TypeHandshake, TypeHandshakeReply, TypeSealed, TypeRelay, TypeRelayed, TypeSignaled:
		return true
	}
	return false
}

// TestTableCoversTypes checks that every message type has a table row, in
// the right table.
func TestTableCoversTypes(t *testing.T) {
	outer, inner := map[Type]bool{}, map[Type]bool{}
	for _, c := range outerCases {
		outer[c.msg.Type()] = true
		if !outerOnly[c.msg.Type()] && c.msg.Type() != TypeError {
			t.Errorf("outer row %q has inner-only type %v", c.name, c.msg.Type())
		}
	}
	for _, c := range innerCases {
		inner[c.msg.Type()] = true
		if outerOnly[c.msg.Type()] {
			t.Errorf("inner row %q has outer-only type %v", c.name, c.msg.Type())
		}
	}
	for ty := range 256 {
		if parsers[ty] != nil && !outer[Type(ty)] && !inner[Type(ty)] {
			t.Errorf("no table row for %v", Type(ty))
		}
	}
	for ty := range outerOnly {
		if !outer[ty] {
			t.Errorf("no outer row for %v", ty)
		}
	}
	if !outer[TypeError] || !inner[TypeError] {
		t.Errorf("Error needs a row in both tables")
	}
	for ty := range fromNode {
		if openPayload(ty) {
			t.Errorf("%v is sent padded but ends in an open field", ty)
		}
	}
}

func TestMarshal(t *testing.T) {
	for _, c := range outerCases {
		t.Run(c.name, func(t *testing.T) {
			want := unhex(t, c.hex)
			if got := Marshal(c.msg); !bytes.Equal(got, want) {
				t.Errorf("Marshal:\n got %x\nwant %x", got, want)
			}
			// Append must append, not overwrite.
			prefix := []byte("xyz")
			if got := Append(prefix, c.msg); !bytes.Equal(got[:3], []byte("xyz")) || !bytes.Equal(got[3:], want) {
				t.Errorf("Append:\n got %x\nwant 78797a%x", got, want)
			}
		})
	}
}

func TestAppendInner(t *testing.T) {
	for _, c := range innerCases {
		t.Run(c.name, func(t *testing.T) {
			want := unhex(t, c.hex)
			got := AppendInner([]byte{0xee}, c.msg)
			if got[0] != 0xee || !bytes.Equal(got[1:], want) {
				t.Errorf("AppendInner:\n got %x\nwant ee%x", got, want)
			}
			// The plaintext is the clear encoding without magic and version.
			if clear := Marshal(c.msg); !bytes.Equal(clear[2:], want) {
				t.Errorf("inner %x differs from the body of the clear encoding %x", want, clear)
			}
		})
	}
}

func TestRoundtrip(t *testing.T) {
	for _, c := range outerCases {
		t.Run("outer/"+c.name, func(t *testing.T) {
			got, err := Parse(Marshal(c.msg))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, c.msg) {
				t.Errorf("Parse(Marshal(m)):\n got %#v\nwant %#v", got, c.msg)
			}
			if got.Type() != c.msg.Type() {
				t.Errorf("Type() = %v, want %v", got.Type(), c.msg.Type())
			}
		})
	}
	for _, c := range innerCases {
		t.Run("inner/"+c.name, func(t *testing.T) {
			got, err := ParseInner(AppendInner(nil, c.msg))
			if err != nil {
				t.Fatalf("ParseInner: %v", err)
			}
			if !reflect.DeepEqual(got, c.msg) {
				t.Errorf("ParseInner(AppendInner(m)):\n got %#v\nwant %#v", got, c.msg)
			}
			if got.Type() != c.msg.Type() {
				t.Errorf("Type() = %v, want %v", got.Type(), c.msg.Type())
			}
		})
	}
}

// checkTruncated cuts full at every length: each cut before the end of the
// last fixed or length-prefixed field is ErrTooShort, with no message; a
// cut inside an open-ended field shortens it.
func checkTruncated(t *testing.T, full []byte, open int, parse func([]byte) (Message, error)) {
	t.Helper()
	fixed := len(full) - open
	for n := range len(full) {
		m, err := parse(full[:n:n])
		if n < fixed {
			if !errors.Is(err, ErrTooShort) || m != nil {
				t.Errorf("first %d of %d bytes: %#v, %v; want nil, ErrTooShort", n, len(full), m, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("first %d bytes, cut in the open field: %v", n, err)
		}
	}
}

// optionalFields are the sizes of the trailing fields, in order, that an
// older sender leaves out (optionalTail).
var optionalFields = map[Type][]int{TypeHeartbeatAck: {4, 2}} // room_seq, alt_stun

func TestTruncated(t *testing.T) {
	for _, c := range outerCases {
		t.Run("outer/"+c.name, func(t *testing.T) {
			checkTruncated(t, unhex(t, c.hex), c.open, Parse)
		})
	}
	for _, c := range innerCases {
		t.Run("inner/"+c.name, func(t *testing.T) {
			full := unhex(t, c.hex)
			if optionalTail(c.msg.Type()) {
				// Without its optional fields, one by one from the last
				// (an older sender's forms), it parses; cut inside one
				// it does not.
				fields := optionalFields[c.msg.Type()]
				for i := len(fields) - 1; i >= 0; i-- {
					for n := len(full) - fields[i] + 1; n < len(full); n++ {
						if m, err := ParseInner(full[:n:n]); !errors.Is(err, ErrTooShort) || m != nil {
							t.Errorf("first %d of %d bytes: %#v, %v; want nil, ErrTooShort", n, len(full), m, err)
						}
					}
					full = full[:len(full)-fields[i]]
					if _, err := ParseInner(full); err != nil {
						t.Errorf("without its optional fields from %d on: %v", i, err)
					}
				}
			}
			checkTruncated(t, full, c.open, ParseInner)
		})
	}
}

// checkTrailing appends tail to a row: the parser must ignore it (rows
// with an open field absorb it, which is their documented layout).
func checkTrailing(t *testing.T, c msgCase, tail []byte, parse func([]byte) (Message, error), enc func(Message) []byte) {
	t.Helper()
	b := append(unhex(t, c.hex), tail...)
	got, err := parse(b)
	if err != nil {
		t.Fatalf("with %d trailing bytes: %v", len(tail), err)
	}
	if openPayload(c.msg.Type()) {
		if !bytes.Equal(enc(got), b) {
			t.Errorf("open field lost trailing bytes: %x, want %x", enc(got), b)
		}
		return
	}
	if !reflect.DeepEqual(got, c.msg) {
		t.Errorf("trailing bytes changed the message:\n got %#v\nwant %#v", got, c.msg)
	}
}

func TestTrailingIgnored(t *testing.T) {
	junk := []byte{0xff, 0xee, 0x00, 0x01, 0xac}
	for _, c := range outerCases {
		t.Run("outer/"+c.name, func(t *testing.T) {
			checkTrailing(t, c, junk, Parse, Marshal)
		})
	}
	inner := func(m Message) []byte { return AppendInner(nil, m) }
	for _, c := range innerCases {
		t.Run("inner/"+c.name, func(t *testing.T) {
			checkTrailing(t, c, junk, ParseInner, inner)
			// A node pads its plaintext with zeroes up to SealedMinLen.
			checkTrailing(t, c, make([]byte, SealedMinLen), ParseInner, inner)
		})
	}
}

func TestParseHeaderErrors(t *testing.T) {
	tests := []struct {
		name string
		hex  string
		want error
	}{
		{"empty", "", ErrTooShort},
		{"magic only", "ac", ErrTooShort},
		{"no type", "ac" + verHex, ErrTooShort},
		{"stun binding request", "0001000021124442" + "000000000000000000000000", ErrMagic},
		{"quic long header", "c0000000010000", ErrMagic},
		{"quic short header", "40" + sessHex, ErrMagic},
		{"magic off by one", "ad" + verHex + "12" + sessHex + ctrHex, ErrMagic},
		{"type zero", "ac" + verHex + "00" + sessHex, ErrUnknownType},
		{"mailbox type in the clear", "ac" + verHex + "17" + sessHex, ErrUnknownType},
		{"last reserved type", "ac" + verHex + "27" + sessHex, ErrUnknownType},
		{"type 20", "ac" + verHex + "20", ErrUnknownType},
		{"type ff", "ac" + verHex + "ff", ErrUnknownType},
		{"version 0", "ac00" + "12" + sessHex + ctrHex, ErrVersion},
		{"version 1", "ac01" + "12" + sessHex + ctrHex, ErrVersion},
		{"version 3", "ac03" + "12" + sessHex + ctrHex, ErrVersion},
		{"version 3 unknown type", "ac03ff", ErrVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(unhex(t, tt.hex))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse = %v, %v; want %v", m, err, tt.want)
			}
			if m != nil {
				t.Errorf("Parse returned a message with %v: %#v", err, m)
			}
		})
	}
}

// TestParseInnerRefusesOuter puts every clear-only message, well formed,
// inside a Sealed plaintext: ParseInner refuses it.
func TestParseInnerRefusesOuter(t *testing.T) {
	for _, c := range outerCases {
		if !outerOnly[c.msg.Type()] {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			pt := unhex(t, c.hex)[2:] // type byte and body
			m, err := ParseInner(pt)
			if !errors.Is(err, ErrUnknownType) || m != nil {
				t.Errorf("ParseInner(%x) = %#v, %v; want nil, ErrUnknownType", pt, m, err)
			}
		})
	}
	// Every outer-only type, whatever follows it.
	for ty := range outerOnly {
		for _, tail := range [][]byte{nil, make([]byte, 200)} {
			if m, err := ParseInner(append([]byte{byte(ty)}, tail...)); !errors.Is(err, ErrUnknownType) || m != nil {
				t.Errorf("ParseInner(%v + %d bytes) = %#v, %v; want ErrUnknownType", ty, len(tail), m, err)
			}
		}
	}
}

func TestParseInnerErrors(t *testing.T) {
	tests := []struct {
		name string
		hex  string
		want error
	}{
		{"empty", "", ErrTooShort},
		{"type zero", "00", ErrUnknownType},
		{"reserved type", "27" + sessHex, ErrUnknownType},
		{"type ff", "ff", ErrUnknownType},
		// A whole clear datagram sealed by mistake: 0xac is no type.
		{"clear datagram inside", "ac" + verHex + "05", ErrUnknownType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseInner(unhex(t, tt.hex))
			if !errors.Is(err, tt.want) || m != nil {
				t.Errorf("ParseInner = %#v, %v; want nil, %v", m, err, tt.want)
			}
		})
	}
}

// TestVersionError gives every outer row another version byte: Parse
// reports a *VersionError naming the type, and no message (but for Error,
// below).
func TestVersionError(t *testing.T) {
	for _, c := range outerCases {
		for _, v := range []uint8{0, 1, 3, 0xff} {
			b := unhex(t, c.hex)
			b[1] = v
			m, err := Parse(b)
			var ve *VersionError
			if !errors.As(err, &ve) {
				t.Fatalf("%s v%d: Parse error %v is not a *VersionError", c.name, v, err)
			}
			if want := (VersionError{Got: v, Want: Version, Type: c.msg.Type()}); *ve != want {
				t.Errorf("%s v%d: VersionError = %+v, want %+v", c.name, v, *ve, want)
			}
			if !errors.Is(err, ErrVersion) {
				t.Errorf("%s v%d: errors.Is(err, ErrVersion) = false", c.name, v)
			}
			if errors.Is(err, ErrMalformed) || errors.Is(err, ErrTooShort) || errors.Is(err, ErrUnknownType) {
				t.Errorf("%s v%d: version error also matches another sentinel: %v", c.name, v, err)
			}
			if c.msg.Type() == TypeError {
				if !reflect.DeepEqual(m, c.msg) {
					t.Errorf("%s v%d: frozen Error parsed as %#v, want %#v", c.name, v, m, c.msg)
				}
			} else if m != nil {
				t.Errorf("%s v%d: Parse returned %#v with a version error", c.name, v, m)
			}
		}
	}
	if s := (&VersionError{Got: 1, Want: 2}).Error(); !strings.Contains(s, "v1") || !strings.Contains(s, "v2") {
		t.Errorf("VersionError text %q names neither version", s)
	}
}

// TestErrorOtherVersion checks the frozen Error layout: an Error from a
// peer of another version (older, or newer with extra fields) still
// parses, together with the *VersionError, so a mismatch can be explained.
func TestErrorOtherVersion(t *testing.T) {
	tests := []struct {
		name string
		hex  string
		want *Error
	}{
		{
			name: "v1 rendezvous refuses a v2 hello",
			hex:  "ac01" + "11" + "0001" + "01" + "05060708" + "0a 7570677261646520746f",
			want: &Error{Code: CodeVersion, Request: TypeHello, TxID: 0x05060708, Message: "upgrade to"},
		},
		{
			name: "v3 with a field we do not know",
			hex:  "ac03" + "11" + "0001" + "12" + "00000000" + "00" + "ffff0102",
			want: &Error{Code: CodeVersion, Request: TypeSealed},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := unhex(t, tt.hex)
			m, err := Parse(b)
			var ve *VersionError
			if !errors.As(err, &ve) || ve.Got != b[1] || ve.Want != Version || ve.Type != TypeError {
				t.Fatalf("Parse error = %#v, want *VersionError{Got: %d, Type: error}", err, b[1])
			}
			if !reflect.DeepEqual(m, Message(tt.want)) {
				t.Errorf("Parse message = %#v, want %#v", m, tt.want)
			}
			// A truncated Error of another version gives only the version
			// error.
			for n := HeaderLen; n < HeaderLen+2+1+4+1; n++ {
				m, err = Parse(b[:n])
				if m != nil || !errors.As(err, &ve) {
					t.Errorf("first %d bytes: Parse = %#v, %v; want nil, *VersionError", n, m, err)
				}
			}
		})
	}
	// The frozen layout is the current one: the header's version aside, a
	// v2 Error is byte for byte what v1 sent.
	e := Marshal(&Error{Code: CodeVersion, Request: TypeHello, TxID: 0x05060708, Message: "upgrade to"})
	if want := unhex(t, tests[0].hex); !bytes.Equal(e[2:], want[2:]) || e[0] != want[0] {
		t.Errorf("Error layout changed:\n got %x\nwant %x", e, want)
	}
}

func TestParseMalformed(t *testing.T) {
	tests := []struct {
		name string
		hex  string
	}{
		{"heartbeat ack family 0", "06" + "00 0d96 c6336407" + "deadbeef"},
		{"heartbeat ack family 5", "06" + "05 0d96 c6336407" + "deadbeef"},
		{"heartbeat ack family 46", "06" + "2e 0d96 c6336407" + "deadbeef"},
		{"presence kind 0", "08" + "0000002a" + "01" + "00 00" + keyHex + aliceHex},
		{"presence kind 3", "08" + "0000002a" + "01" + "03 00" + keyHex + aliceHex},
		{"presence kind ff", "08" + "0000002a" + "01" + "ff 01" + keyHex + "00"},
		{"presence second change bad", "08" + "0000002a" + "02" + "01 00" + keyHex + aliceHex + "07 00" + key2Hex + bobHex},
		{"peers part = parts", "0a" + "00000009" + "0002" + "0002" + "00"},
		{"peers part > parts", "0a" + "00000009" + "0005" + "0002" + "00"},
		{"peers zero parts", "0a" + "00000009" + "0000" + "0000" + "00"},
		{"peers part ffff of ffff", "0a" + "00000009" + "ffff" + "ffff" + "00"},
		{"lookup status 3", "0c" + "00000003" + "03" + zeroKey + "00"},
		{"lookup status ff", "0c" + "00000003" + "ff" + keyHex + bobHex},
		{"who reply more 2", "16" + "00000009" + "03 23676f" + "00000000" + "02" + "00"},
		{"who reply more ff", "16" + "00000009" + "03 23676f" + "00000010" + "ff" + "01" + keyHex + bobHex},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseInner(unhex(t, tt.hex))
			if !errors.Is(err, ErrMalformed) || m != nil {
				t.Errorf("ParseInner = %#v, %v; want nil, ErrMalformed", m, err)
			}
		})
	}
}

// TestPeersParts checks the part/parts rule at its edges: part is 0-based
// and below parts.
func TestPeersParts(t *testing.T) {
	for _, pp := range [][2]uint16{{0, 1}, {1, 2}, {0xfffe, 0xffff}} {
		m := &Peers{Seq: 3, Part: pp[0], Parts: pp[1]}
		if got, err := ParseInner(AppendInner(nil, m)); err != nil || !reflect.DeepEqual(got, m) {
			t.Errorf("part %d of %d: %#v, %v", pp[0], pp[1], got, err)
		}
	}
	for _, pp := range [][2]uint16{{0, 0}, {1, 1}, {2, 1}, {0xffff, 0xffff}} {
		m := &Peers{Seq: 3, Part: pp[0], Parts: pp[1], Peers: []Peer{{Key: testKey, Name: "a"}}}
		if got, err := ParseInner(AppendInner(nil, m)); !errors.Is(err, ErrMalformed) || got != nil {
			t.Errorf("part %d of %d: %#v, %v; want ErrMalformed", pp[0], pp[1], got, err)
		}
	}
	// A truncated part with a bad part number is reported as truncated.
	if _, err := ParseInner(unhex(t, "0a"+"00000009"+"0000"+"0000"+"01"+keyHex)); !errors.Is(err, ErrTooShort) {
		t.Errorf("truncated, zero parts: %v; want ErrTooShort", err)
	}
}

// TestWhoReplyMore checks the more flag: one byte, 0 or 1, and the paging
// contract the flag supports (ask again After the last name).
func TestWhoReplyMore(t *testing.T) {
	for _, more := range []bool{false, true} {
		m := &WhoReply{TxID: 1, Room: "#lobby", Total: 2, More: more, Members: []Peer{{Key: testKey, Name: "alice"}}}
		b := AppendInner(nil, m)
		flag := b[1+4+1+len("#lobby")+4]
		if want := map[bool]byte{false: 0, true: 1}[more]; flag != want {
			t.Errorf("more=%v encoded as %d, want %d", more, flag, want)
		}
		got, err := ParseInner(b)
		if err != nil || got.(*WhoReply).More != more {
			t.Errorf("more=%v: %#v, %v", more, got, err)
		}
	}
	for v := 2; v < 256; v++ {
		b := unhex(t, "16"+"00000001"+lobbyHex+"00000002"+"00"+"00")
		b[len(b)-2] = byte(v)
		if m, err := ParseInner(b); !errors.Is(err, ErrMalformed) || m != nil {
			t.Fatalf("more flag %d: %#v, %v; want ErrMalformed", v, m, err)
		}
	}
	// Members beyond 255 are not encoded; the count byte says how many are.
	many := make([]Peer, 300)
	for i := range many {
		many[i] = Peer{Name: "m"}
	}
	got, err := ParseInner(AppendInner(nil, &WhoReply{Room: "#big", Total: 300, More: true, Members: many}))
	if err != nil || len(got.(*WhoReply).Members) != 255 {
		t.Errorf("300 members: %v; want 255 encoded", err)
	}
}

// TestPresenceLimits: the rendezvous sends at most MaxChanges changes per
// Presence; the encoding itself holds up to 255 (more are dropped, not
// wrapped around in the count byte), and a receiver takes what the count
// says.
func TestPresenceLimits(t *testing.T) {
	changes := func(n int, name string) []Change {
		cs := make([]Change, n)
		for i := range cs {
			cs[i] = Change{Kind: PresenceJoin, Key: testKey, Name: name}
		}
		return cs
	}
	for _, n := range []int{MaxChanges, 255} {
		m := &Presence{Seq: 5, Changes: changes(n, "bob")}
		got, err := ParseInner(AppendInner(nil, m))
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Errorf("%d changes: %v", n, err)
		}
	}
	for _, n := range []int{256, 300} {
		got, err := ParseInner(AppendInner(nil, &Presence{Seq: 5, Changes: changes(n, "bob")}))
		if err != nil || len(got.(*Presence).Changes) != 255 {
			t.Errorf("%d changes: %v; want 255 encoded", n, err)
		}
	}
	// A count larger than the changes present is truncation, not a
	// shorter list.
	b := AppendInner(nil, &Presence{Seq: 5, Changes: changes(2, "bob")})
	b[5] = 3
	if m, err := ParseInner(b); !errors.Is(err, ErrTooShort) || m != nil {
		t.Errorf("count 3, two changes: %#v, %v; want ErrTooShort", m, err)
	}
	// MaxChanges changes with names of 32 ASCII characters stay within a
	// Peers part's budget (a datagram that crosses any path unfragmented).
	ascii := AppendInner(nil, &Presence{Seq: 5, Changes: changes(MaxChanges, strings.Repeat("n", MaxNameLen))})
	if len(ascii) > 1+MaxPeersBody {
		t.Errorf("Presence of MaxChanges ASCII names is %d bytes, more than %d", len(ascii), 1+MaxPeersBody)
	}
}

// TestHelloMinLen is the no-amplification property of the first exchange:
// a Hello below HelloMinLen is refused, and the CookieReply (and an Error
// that refuses a Hello) are no longer than the smallest Hello accepted.
func TestHelloMinLen(t *testing.T) {
	hello := Marshal(&Hello{Nonce: 1})
	if len(hello) != HelloMinLen {
		t.Errorf("Marshal(Hello) is %d bytes, want HelloMinLen = %d", len(hello), HelloMinLen)
	}
	for n := HeaderLen; n < HelloMinLen; n++ {
		if m, err := Parse(hello[:n]); !errors.Is(err, ErrTooShort) || m != nil {
			t.Errorf("Hello of %d bytes: %#v, %v; want ErrTooShort", n, m, err)
		}
	}
	// Unpadded: nonce present, padding missing.
	if _, err := Parse(unhex(t, "ac"+verHex+"01"+"0102030405060708")); !errors.Is(err, ErrTooShort) {
		t.Errorf("unpadded Hello: err = %v, want ErrTooShort", err)
	}
	// Non-zero padding is accepted; its content is not looked at.
	padded := append(unhex(t, "ac"+verHex+"01"+"0102030405060708"), bytes.Repeat([]byte{0x5a}, 53)...)
	if m, err := Parse(padded); err != nil || m.(*Hello).Nonce != 0x0102030405060708 {
		t.Errorf("Hello with non-zero padding: %v, %v", m, err)
	}
	// Appending a Hello after other bytes pads the Hello, not the buffer.
	if got := Append([]byte("prefix"), &Hello{Nonce: 1}); len(got) != len("prefix")+HelloMinLen {
		t.Errorf("Append(prefix, Hello) is %d bytes, want %d", len(got), len("prefix")+HelloMinLen)
	}

	reply := Marshal(&CookieReply{Nonce: ^uint64(0), Cookie: testCookie, ServerKey: testSrvKey})
	if len(reply) > HelloMinLen {
		t.Errorf("CookieReply is %d bytes, larger than the smallest Hello (%d): amplification", len(reply), HelloMinLen)
	}
	if want := HeaderLen + 8 + CookieLen + 32; len(reply) != want {
		t.Errorf("CookieReply is %d bytes, want %d", len(reply), want)
	}
	e := ErrorFits(&Error{Code: CodeRateLimited, Request: TypeHello, Message: strings.Repeat("slow down ", 30)}, HelloMinLen)
	if len(e) == 0 || len(e) > HelloMinLen {
		t.Errorf("ErrorFits(_, HelloMinLen) = %d bytes", len(e))
	}
}

func TestErrorFits(t *testing.T) {
	const fixed = HeaderLen + 2 + 1 + 4 + 1
	messages := []string{
		"",
		"x",
		"cookie expired, say hello again",
		strings.Repeat("é", 100), // 200 bytes of two-byte runes
		strings.Repeat("m", 300), // longer than a str can hold
	}
	for _, msg := range messages {
		e := &Error{Code: CodeBadCookie, Request: TypeHandshake, TxID: 5, Message: msg}
		for limit := -1; limit <= 400; limit++ {
			b := ErrorFits(e, limit)
			if limit < fixed {
				if b != nil {
					t.Errorf("msg %d bytes, limit %d: got %d bytes, want nil", len(msg), limit, len(b))
				}
				continue
			}
			if b == nil || len(b) > limit {
				t.Fatalf("msg %d bytes, limit %d: got %d bytes", len(msg), limit, len(b))
			}
			m, err := Parse(b)
			if err != nil {
				t.Fatalf("msg %d bytes, limit %d: Parse: %v", len(msg), limit, err)
			}
			got := m.(*Error)
			if got.Code != e.Code || got.Request != e.Request || got.TxID != e.TxID || !strings.HasPrefix(msg, got.Message) {
				t.Fatalf("msg %d bytes, limit %d: parsed %#v", len(msg), limit, got)
			}
			// Nothing is cut that would have fitted.
			want := min(len(msg), limit-fixed, 255)
			for want > 0 && want < len(msg) && !utf8.RuneStart(msg[want]) {
				want-- // cut between characters
			}
			if len(got.Message) != want {
				t.Errorf("msg %d bytes, limit %d: message of %d bytes, want %d", len(msg), limit, len(got.Message), want)
			}
		}
		if e.Message != msg {
			t.Errorf("ErrorFits modified its argument")
		}
	}
	// The smallest request a rendezvous answers in the clear is a Sealed
	// or Relay header: a not_registered Error with an empty message fits
	// under it.
	if b := ErrorFits(&Error{Code: CodeNotRegistered, Request: TypeSealed, Message: "register again"}, SealedHeaderLen); b == nil {
		t.Errorf("no Error fits in a Sealed header's %d bytes", SealedHeaderLen)
	}
}

func TestErrorCodes(t *testing.T) {
	if got := CodeNameTaken.String(); got != "name_taken" {
		t.Errorf("CodeNameTaken = %q", got)
	}
	if got := Code(99).String(); got != "code_99" {
		t.Errorf("Code(99) = %q", got)
	}
	seen := map[string]Code{}
	for c, s := range codeNames {
		if prev, ok := seen[s]; ok {
			t.Errorf("codes %d and %d share the name %q", prev, c, s)
		}
		seen[s] = c
	}
	for c := Code(1); c <= CodeNotMember; c++ {
		if _, ok := codeNames[c]; !ok {
			t.Errorf("code %d has no name", c)
		}
	}
	e := &Error{Code: CodeOffline, Message: "bob is away"}
	if got := e.Error(); got != "peer_offline: bob is away" {
		t.Errorf("Error() = %q", got)
	}
}

func TestTypeString(t *testing.T) {
	names := map[string]Type{}
	for _, c := range append(append([]msgCase{}, outerCases...), innerCases...) {
		ty := c.msg.Type()
		s := ty.String()
		if strings.HasPrefix(s, "type(") {
			t.Errorf("%s: Type %d has no name", c.name, ty)
		}
		if prev, ok := names[s]; ok && prev != ty {
			t.Errorf("types %v and %d share the name %q", prev, ty, s)
		}
		names[s] = ty
	}
	if got := Type(0x27).String(); got != "type(0x27)" {
		t.Errorf("Type(0x27) = %q", got)
	}
}

func TestDemux(t *testing.T) {
	tests := []struct {
		hex         string
		proto, stun bool
	}{
		{"ac" + verHex + "01", true, false},
		{"ac0101", true, false}, // any version: the version check is Parse's
		{"ac" + verHex, false, false},
		{"0001000021124442" + "000000000000000000000000", false, true}, // STUN Binding request
		{"0101000c21124442" + "000000000000000000000000", false, true}, // STUN Binding success
		{"00010000", false, false},                                     // shorter than a STUN header
		{"c0000000010000000000000000000000000000000000", false, false}, // QUIC long header
		{"4000000000000000000000000000000000000000", false, false},     // QUIC short header
	}
	for _, tt := range tests {
		b := unhex(t, tt.hex)
		if got := IsProtocol(b); got != tt.proto {
			t.Errorf("IsProtocol(%s) = %v", tt.hex, got)
		}
		if got := IsSTUN(b); got != tt.stun {
			t.Errorf("IsSTUN(%s) = %v", tt.hex, got)
		}
	}
	// The magic byte is outside every range the other protocols use.
	if Magic < 0x80 || Magic > 0xBF {
		t.Errorf("Magic 0x%02x collides with STUN or QUIC", Magic)
	}
	// Every datagram of the tables demultiplexes as this protocol.
	for _, c := range outerCases {
		if b := unhex(t, c.hex); !IsProtocol(b) || IsSTUN(b) {
			t.Errorf("%s does not demultiplex as natchat", c.name)
		}
	}
}

// TestSealedHeader checks AppendSealedHeader against the Sealed layout: the
// header plus the box is the datagram Marshal gives, and it parses back.
func TestSealedHeader(t *testing.T) {
	h := AppendSealedHeader([]byte{0xee}, testSess, 0x8000000000000001)
	if want := unhex(t, "ee"+"ac"+verHex+"12"+sessHex+ctrHex); !bytes.Equal(h, want) {
		t.Fatalf("AppendSealedHeader = %x, want %x", h, want)
	}
	if n := len(h) - 1; n != SealedHeaderLen {
		t.Errorf("sealed header is %d bytes, SealedHeaderLen = %d", n, SealedHeaderLen)
	}
	box := unhex(t, boxHex)
	d := append(h[1:], box...)
	want := &Sealed{Session: testSess, Counter: 0x8000000000000001, Box: box}
	if m := Marshal(want); !bytes.Equal(d, m) {
		t.Errorf("header+box = %x, Marshal = %x", d, m)
	}
	m, err := Parse(d)
	if err != nil || !reflect.DeepEqual(m, Message(want)) {
		t.Fatalf("Parse = %#v, %v", m, err)
	}
	// The box aliases the datagram (documented): no copy per datagram.
	d[len(d)-1] ^= 0xff
	if m.(*Sealed).Box[len(box)-1] != d[len(d)-1] {
		t.Errorf("box does not alias the datagram")
	}
	for _, ctr := range []uint64{0, 1, 1 << 32, ^uint64(0)} {
		m, err := Parse(AppendSealedHeader(nil, SessionID{}, ctr))
		if err != nil || m.(*Sealed).Counter != ctr || len(m.(*Sealed).Box) != 0 {
			t.Errorf("counter %#x: %#v, %v", ctr, m, err)
		}
	}
}

func TestAppendRelayHeader(t *testing.T) {
	want := Marshal(&Relay{Session: testSess, Dst: testKey, Payload: []byte{9, 8, 7}})
	got := append(AppendRelayHeader(nil, testSess, testKey), 9, 8, 7)
	if !bytes.Equal(got, want) {
		t.Errorf("AppendRelayHeader+payload:\n got %x\nwant %x", got, want)
	}
	if n := len(AppendRelayHeader(nil, testSess, testKey)); n != RelayOverhead {
		t.Errorf("relay header is %d bytes, RelayOverhead = %d", n, RelayOverhead)
	}
	want = Marshal(&Relayed{Src: testKey2, Payload: []byte{9, 8, 7}})
	got = append(AppendRelayedHeader([]byte{}, testKey2), 9, 8, 7)
	if !bytes.Equal(got, want) {
		t.Errorf("AppendRelayedHeader+payload:\n got %x\nwant %x", got, want)
	}
	// The rendezvous turns a Relay into a Relayed of no larger size.
	if HeaderLen+KeyLen > RelayOverhead {
		t.Errorf("Relayed header larger than Relay header")
	}
}

func TestPayloadsAlias(t *testing.T) {
	for _, c := range outerCases {
		if c.open == 0 {
			continue
		}
		b := unhex(t, c.hex)
		m, err := Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		var p []byte
		switch m := m.(type) {
		case *Relay:
			p = m.Payload
		case *Relayed:
			p = m.Payload
		case *Sealed:
			p = m.Box
		case *Handshake:
			p = m.Noise
		case *HandshakeReply:
			p = m.Noise
		}
		b[len(b)-1] ^= 0xff
		if p[len(p)-1] != b[len(b)-1] {
			t.Errorf("%s: payload does not alias the datagram (documented)", c.name)
		}
	}
}

// Peers packs up to 255 entries; the rendezvous sizes parts by MaxPeersBody.
func TestPeersLimits(t *testing.T) {
	many := make([]Peer, 300)
	for i := range many {
		many[i] = Peer{Name: "p"}
	}
	b := AppendInner(nil, &Peers{Parts: 1, Peers: many})
	m, err := ParseInner(b)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(m.(*Peers).Peers); n != 255 {
		t.Errorf("Peers with 300 entries encodes %d, want 255", n)
	}
	// The largest entry: 32-byte key and a 255-byte name would be 288 bytes;
	// names that pass ValidateName are at most 32×4 = 128 bytes, so an
	// entry is 33 to 161 bytes as documented.
	if largest := KeyLen + 1 + MaxNameLen*utf8.UTFMax; largest != 161 {
		t.Errorf("largest valid entry is %d bytes, doc says 161", largest)
	}
}

// Strings longer than a one-byte length can say are cut at 255 bytes, not
// wrapped around.
func TestLongStrings(t *testing.T) {
	long := strings.Repeat("x", 300)
	m, err := ParseInner(AppendInner(nil, &Lookup{TxID: 1, Name: long}))
	if err != nil || m.(*Lookup).Name != long[:255] {
		t.Errorf("Lookup with a 300-byte name: %#v, %v", m, err)
	}
	w, err := ParseInner(AppendInner(nil, &Who{Room: long, After: long}))
	if err != nil || w.(*Who).Room != long[:255] || w.(*Who).After != long[:255] {
		t.Errorf("Who with 300-byte strings: %v", err)
	}
	big := bytes.Repeat([]byte{7}, 0x10005)
	s, err := ParseInner(AppendInner(nil, &Signal{Dst: testKey, Body: big}))
	if err != nil || !bytes.Equal(s.(*Signal).Body, big[:0xffff]) {
		t.Errorf("Signal with a %d-byte body: %v", len(big), err)
	}
}

var addrCases = []struct {
	name string
	addr netip.AddrPort
	hex  string
	back netip.AddrPort // what parses back
}{
	{"ipv4", testV4, "04 a2a9 c0000201", testV4},
	{"ipv6", testV6, "06 01bb 20010db8000000000000000000000001", testV6},
	{"ipv4 port 0", netip.MustParseAddrPort("10.0.0.1:0"), "04 0000 0a000001", netip.MustParseAddrPort("10.0.0.1:0")},
	{"ipv6 unspecified max port", netip.MustParseAddrPort("[::]:65535"), "06 ffff 00000000000000000000000000000000", netip.MustParseAddrPort("[::]:65535")},
	{"ipv4-mapped ipv6 is unmapped", netip.MustParseAddrPort("[::ffff:192.0.2.1]:41641"), "04 a2a9 c0000201", testV4},
	{"zone dropped", netip.MustParseAddrPort("[fe80::1%eth0]:1"), "06 0001 fe800000000000000000000000000001", netip.MustParseAddrPort("[fe80::1]:1")},
	{"invalid is 0.0.0.0:0", netip.AddrPort{}, "04 0000 00000000", netip.MustParseAddrPort("0.0.0.0:0")},
}

func TestAppendAddr(t *testing.T) {
	for _, c := range addrCases {
		t.Run(c.name, func(t *testing.T) {
			want := unhex(t, c.hex)
			got := AppendAddr([]byte{0xee}, c.addr)
			if got[0] != 0xee || !bytes.Equal(got[1:], want) {
				t.Fatalf("AppendAddr(%v) = %x, want ee%x", c.addr, got, want)
			}
			r := reader{b: want}
			back := r.addr()
			if r.err != nil || back != c.back || len(r.b) != 0 {
				t.Errorf("addr(%x) = %v, %v (left %d); want %v", want, back, r.err, len(r.b), c.back)
			}
			for n := range len(want) {
				r := reader{b: want[:n]}
				r.addr()
				if !errors.Is(r.err, ErrTooShort) {
					t.Errorf("addr(first %d bytes) err = %v, want ErrTooShort", n, r.err)
				}
			}
		})
	}
}

// TestAddrMappedFamily6 decodes an IPv4-mapped address sent as family 6 as
// the IPv4 address, the same value AppendAddr's family-4 encoding gives
// (found by FuzzParse in v1; testdata/fuzz/FuzzParseInner/mapped-family6
// keeps the input).
func TestAddrMappedFamily6(t *testing.T) {
	b := unhex(t, "06"+"06 a2a9 00000000000000000000ffffc0000201"+"00000001")
	m, err := ParseInner(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.(*HeartbeatAck).Observed; got != testV4 || !got.Addr().Is4() {
		t.Errorf("Observed = %v, want %v (IPv4)", got, testV4)
	}
	if got, want := AppendInner(nil, m), unhex(t, "06"+"04 a2a9 c0000201"+"00000001"+"00000000"+"0000"); !bytes.Equal(got, want) {
		t.Errorf("re-encoded as %x, want %x", got, want)
	}
	r, err := ParseHandshakeResult(unhex(t, "0000"+sessHex+"06 a2a9 00000000000000000000ffffc0000201"+"00000001"+"00000002"+"00000003"))
	if err != nil || r.Observed != testV4 || !r.Observed.Addr().Is4() {
		t.Errorf("HandshakeResult Observed = %v, %v; want %v (IPv4)", r, err, testV4)
	}
}

// registerPayloadCases is the RegisterPayload table, shared with the fuzzers.
var registerPayloadCases = []struct {
	name string
	p    *RegisterPayload
	hex  string
}{
	{"bob", &RegisterPayload{Key: testKey, Name: "bob"}, keyHex + bobHex},
	{"multibyte name", &RegisterPayload{Key: testKey, Name: "Zoë"}, keyHex + "04 5a6fc3ab"},
	{"empty", &RegisterPayload{}, zeroKey + "00"},
	{"longest valid name", &RegisterPayload{Key: testKey2, Name: strings.Repeat("😀", MaxNameLen)},
		key2Hex + "80" + strings.Repeat("f09f9880", MaxNameLen)},
}

func TestRegisterPayload(t *testing.T) {
	for _, c := range registerPayloadCases {
		t.Run(c.name, func(t *testing.T) {
			want := unhex(t, c.hex)
			got := AppendRegisterPayload([]byte{0xee}, c.p)
			if got[0] != 0xee || !bytes.Equal(got[1:], want) {
				t.Fatalf("AppendRegisterPayload:\n got %x\nwant ee%x", got[1:], want)
			}
			p, err := ParseRegisterPayload(want)
			if err != nil || !reflect.DeepEqual(p, c.p) {
				t.Fatalf("ParseRegisterPayload = %#v, %v; want %#v", p, err, c.p)
			}
			p, err = ParseRegisterPayload(append(want, 0xff, 0x00, 0x01))
			if err != nil || !reflect.DeepEqual(p, c.p) {
				t.Errorf("with trailing bytes: %#v, %v", p, err)
			}
			for n := range len(want) {
				if p, err := ParseRegisterPayload(want[:n:n]); !errors.Is(err, ErrTooShort) || p != nil {
					t.Errorf("first %d of %d bytes: %#v, %v; want ErrTooShort", n, len(want), p, err)
				}
			}
		})
	}
}

// handshakeResultCases is the HandshakeResult table, shared with the fuzzers.
var handshakeResultCases = []struct {
	name string
	r    *HandshakeResult
	hex  string
}{
	{
		name: "registered ipv4",
		r: &HandshakeResult{Session: testSess, Observed: testV4,
			HeartbeatMS: 25000, ExpiryMS: 90000, PresenceSeq: 7},
		hex: "0000" + sessHex + "04 a2a9 c0000201" + "000061a8" + "00015f90" + "00000007",
	},
	{
		name: "registered ipv6",
		r: &HandshakeResult{Session: testSess, Observed: testV6,
			HeartbeatMS: 1, ExpiryMS: 2, PresenceSeq: 0xffffffff},
		hex: "0000" + sessHex + "06 01bb 20010db8000000000000000000000001" +
			"00000001" + "00000002" + "ffffffff",
	},
	{
		name: "name taken",
		r:    &HandshakeResult{Code: CodeNameTaken, Message: "name taken"},
		hex:  "0004" + "0a 6e616d652074616b656e",
	},
	{
		name: "quota, no message",
		r:    &HandshakeResult{Code: CodeQuota},
		hex:  "000e" + "00",
	},
}

func TestHandshakeResult(t *testing.T) {
	for _, c := range handshakeResultCases {
		t.Run(c.name, func(t *testing.T) {
			want := unhex(t, c.hex)
			got := AppendHandshakeResult([]byte{0xee}, c.r)
			if got[0] != 0xee || !bytes.Equal(got[1:], want) {
				t.Fatalf("AppendHandshakeResult:\n got %x\nwant ee%x", got[1:], want)
			}
			r, err := ParseHandshakeResult(want)
			if err != nil || !reflect.DeepEqual(r, c.r) {
				t.Fatalf("ParseHandshakeResult = %#v, %v; want %#v", r, err, c.r)
			}
			r, err = ParseHandshakeResult(append(want, 0xff, 0x00, 0x01))
			if err != nil || !reflect.DeepEqual(r, c.r) {
				t.Errorf("with trailing bytes: %#v, %v", r, err)
			}
			for n := range len(want) {
				if r, err := ParseHandshakeResult(want[:n:n]); !errors.Is(err, ErrTooShort) || r != nil {
					t.Errorf("first %d of %d bytes: %#v, %v; want ErrTooShort", n, len(want), r, err)
				}
			}
		})
	}
	// A refusal carries only its message; a registration only its fields.
	b := AppendHandshakeResult(nil, &HandshakeResult{Code: CodeBadName, Message: "no", Session: testSess, Observed: testV4})
	if want := unhex(t, "0005"+"02 6e6f"); !bytes.Equal(b, want) {
		t.Errorf("refusal with session fields = %x, want %x", b, want)
	}
	b = AppendHandshakeResult(nil, &HandshakeResult{Message: "ignored", Session: testSess, Observed: testV4})
	if want := unhex(t, "0000"+sessHex+"04 a2a9 c0000201"+"00000000"+"00000000"+"00000000"); !bytes.Equal(b, want) {
		t.Errorf("registration with a message = %x, want %x", b, want)
	}
	// The observed address must be an address.
	for _, fam := range []string{"00", "05", "ff"} {
		h := "0000" + sessHex + fam + " a2a9 c0000201" + "000061a8" + "00015f90" + "00000007"
		if r, err := ParseHandshakeResult(unhex(t, h)); !errors.Is(err, ErrMalformed) || r != nil {
			t.Errorf("family %s: %#v, %v; want ErrMalformed", fam, r, err)
		}
	}
}

// peerSignalCase is one row of the PeerSignal table, shared with the fuzzers.
type peerSignalCase struct {
	name string
	sig  *PeerSignal
	hex  string
}

var peerSignalCases = []peerSignalCase{
	{
		name: "offer",
		sig: &PeerSignal{Kind: SignalOffer, Seq: 5, Generation: 2, Ufrag: "abcd", Pwd: "pwpwpw",
			Candidates: []string{"c1", "cand 2"}},
		hex: "01" + "00" + "00000005" + "00000002" + "04 61626364" + "06 707770777077" + "02" +
			"0002 6331" + "0006 63616e642032",
	},
	{
		name: "offer no candidates",
		sig:  &PeerSignal{Kind: SignalOffer, Seq: 0xffffffff, Generation: 0, Ufrag: "u", Pwd: "p"},
		hex:  "01" + "00" + "ffffffff" + "00000000" + "01 75" + "01 70" + "00",
	},
	{
		name: "failed answer",
		sig:  &PeerSignal{Kind: SignalOffer, Flags: SignalFailed, Seq: 9, Generation: 7, Ufrag: "u", Pwd: "p"},
		hex:  "01" + "01" + "00000009" + "00000007" + "01 75" + "01 70" + "00",
	},
	{
		name: "offer max candidates",
		sig: &PeerSignal{Kind: SignalOffer, Seq: 1, Generation: 1,
			Candidates: strings.Split(strings.Repeat("x", MaxCandidates), "")},
		hex: "01" + "00" + "00000001" + "00000001" + "00" + "00" + "20" + strings.Repeat("0001 78", MaxCandidates),
	},
	{
		name: "ack",
		sig:  &PeerSignal{Kind: SignalAck, Seq: 5},
		hex:  "02" + "00" + "00000005" + "00000000" + "00" + "00" + "00",
	},
	{
		name: "hello",
		sig:  &PeerSignal{Kind: SignalHello, Seq: 1},
		hex:  sigHelloHex,
	},
}

func TestPeerSignal(t *testing.T) {
	for _, c := range peerSignalCases {
		t.Run(c.name, func(t *testing.T) {
			want := unhex(t, c.hex)
			got := AppendPeerSignal([]byte{0xee}, c.sig)
			if got[0] != 0xee || !bytes.Equal(got[1:], want) {
				t.Fatalf("AppendPeerSignal:\n got %x\nwant ee%x", got[1:], want)
			}
			s, err := ParsePeerSignal(want)
			if err != nil || !reflect.DeepEqual(s, c.sig) {
				t.Fatalf("ParsePeerSignal = %#v, %v; want %#v", s, err, c.sig)
			}
			s, err = ParsePeerSignal(append(want, 0xff, 0x00, 0x01))
			if err != nil || !reflect.DeepEqual(s, c.sig) {
				t.Errorf("with trailing bytes: ParsePeerSignal = %#v, %v", s, err)
			}
			for n := range len(want) {
				if s, err := ParsePeerSignal(want[:n:n]); !errors.Is(err, ErrTooShort) || s != nil {
					t.Errorf("first %d of %d bytes: %#v, %v; want ErrTooShort", n, len(want), s, err)
				}
			}
			// Through the rendezvous, padded by the sending node: the
			// Signal's length keeps the padding out of the body.
			pt := AppendInner(nil, &Signal{Dst: testKey2, Body: want})
			pt = append(pt, make([]byte, SealedMinLen)...)
			m, err := ParseInner(pt)
			if err != nil {
				t.Fatal(err)
			}
			if s, err := ParsePeerSignal(m.(*Signal).Body); err != nil || !reflect.DeepEqual(s, c.sig) {
				t.Errorf("via a padded Signal: %#v, %v", s, err)
			}
		})
	}
}

func TestPeerSignalTooManyCandidates(t *testing.T) {
	// AppendPeerSignal drops candidates beyond MaxCandidates.
	cands := strings.Split(strings.Repeat("y", MaxCandidates+3), "")
	s, err := ParsePeerSignal(AppendPeerSignal(nil, &PeerSignal{Kind: SignalOffer, Candidates: cands}))
	if err != nil || len(s.Candidates) != MaxCandidates {
		t.Errorf("encoding %d candidates: parsed %v, %v; want %d", len(cands), s, err, MaxCandidates)
	}

	malformed := map[string]string{
		"33 candidates":  "01" + "00" + "00000001" + "00000001" + "00" + "00" + "21" + strings.Repeat("0001 78", 33),
		"255 candidates": "01" + "00" + "00000001" + "00000001" + "00" + "00" + "ff",
		"kind 0":         "00" + "00" + "00000005" + "00000000" + "00" + "00" + "00",
		"kind 4":         "04" + "00" + "00000005" + "00000000" + "00" + "00" + "00",
		"kind ff":        "ff" + "00" + "00000005" + "00000000" + "00" + "00" + "00",
	}
	for name, h := range malformed {
		if s, err := ParsePeerSignal(unhex(t, h)); !errors.Is(err, ErrMalformed) || s != nil {
			t.Errorf("%s: ParsePeerSignal = %#v, %v; want ErrMalformed", name, s, err)
		}
	}
}

// frameCase is one row of the session-frame table, shared with the fuzzers.
// Exactly one of msg and ack is set.
type frameCase struct {
	name string
	msg  *Msg
	ack  *MsgID
	hex  string
}

func (c frameCase) append(b []byte) []byte {
	if c.msg != nil {
		return AppendMsg(b, c.msg)
	}
	return AppendAck(b, *c.ack)
}

var frameCases = []frameCase{
	{
		name: "msg 1:1",
		msg:  &Msg{ID: testMsgID, Seq: 7, SentMS: 1700000000000, Text: "hi"},
		// kind len(30) id seq sent msgkind room text
		hex: "01" + "1e" + msgIDHex + "0000000000000007" + "0000018bcfe56800" + "00" + "00" + "0002 6869",
	},
	{
		name: "msg room two-byte length",
		msg:  &Msg{ID: testMsgID, Seq: 1 << 40, SentMS: -1, Room: "#go", Text: strings.Repeat("a", 200)},
		// body 8+8+8+1+4+2+200 = 231 = uvarint e7 01
		hex: "01" + "e701" + msgIDHex + "0000010000000000" + "ffffffffffffffff" + "00" + "03 23676f" + "00c8" + strings.Repeat("61", 200),
	},
	{
		name: "msg emote",
		msg:  &Msg{ID: testMsgID, Seq: 8, SentMS: 1700000000000, Kind: MsgEmote, Text: "waves"},
		hex:  "01" + "21" + msgIDHex + "0000000000000008" + "0000018bcfe56800" + "01" + "00" + "0005 7761766573",
	},
	{
		// An unknown kind parses: the receiver decides what to do with it.
		name: "msg unknown kind",
		msg:  &Msg{ID: testMsgID, Seq: 9, SentMS: 1700000000000, Kind: 0xfe, Text: "x"},
		hex:  "01" + "1d" + msgIDHex + "0000000000000009" + "0000018bcfe56800" + "fe" + "00" + "0001 78",
	},
	{
		name: "msg empty",
		msg:  &Msg{},
		hex:  "01" + "1c" + "0000000000000000" + "0000000000000000" + "0000000000000000" + "00" + "00" + "0000",
	},
	{
		name: "ack",
		ack:  &testMsgID,
		hex:  "02" + "08" + msgIDHex,
	},
}

func TestFrames(t *testing.T) {
	for _, c := range frameCases {
		t.Run(c.name, func(t *testing.T) {
			want := unhex(t, c.hex)
			got := c.append([]byte{0xee})
			if got[0] != 0xee || !bytes.Equal(got[1:], want) {
				t.Fatalf("encoding:\n got %x\nwant ee%x", got[1:], want)
			}
			// Two frames back to back: the first splits off exactly.
			stream := append(append([]byte{}, want...), want...)
			k, body, n, err := ParseFrame(stream)
			if err != nil || n != len(want) {
				t.Fatalf("ParseFrame = %v, %d bytes, %v; want %d bytes", k, n, err, len(want))
			}
			switch {
			case c.msg != nil:
				if k != FrameMsg {
					t.Errorf("kind = %d, want FrameMsg", k)
				}
				m, err := ParseMsg(body)
				if err != nil || !reflect.DeepEqual(m, c.msg) {
					t.Errorf("ParseMsg = %#v, %v; want %#v", m, err, c.msg)
				}
			default:
				if k != FrameAck {
					t.Errorf("kind = %d, want FrameAck", k)
				}
				id, err := ParseAck(body)
				if err != nil || id != *c.ack {
					t.Errorf("ParseAck = %v, %v; want %v", id, err, *c.ack)
				}
			}
			// Partial input: read more.
			for l := range len(want) {
				if _, _, _, err := ParseFrame(want[:l:l]); !errors.Is(err, ErrTooShort) {
					t.Errorf("ParseFrame(first %d of %d bytes) err = %v, want ErrTooShort", l, len(want), err)
				}
			}
		})
	}
}

func TestParseMsgErrors(t *testing.T) {
	// Truncated fixed fields, room and text.
	body := unhex(t, msgIDHex+"0000000000000001"+"0000018bcfe56800"+"00"+"03 23676f"+"0002 6869")
	for n := range len(body) {
		if m, err := ParseMsg(body[:n:n]); !errors.Is(err, ErrTooShort) || m != nil {
			t.Errorf("ParseMsg(first %d bytes) = %v, %v; want ErrTooShort", n, m, err)
		}
	}
	// Trailing bytes (a newer sender's fields) are ignored.
	if m, err := ParseMsg(append(append([]byte{}, body...), 0xde, 0xad)); err != nil || m.Text != "hi" || m.Seq != 1 {
		t.Errorf("with trailing bytes: %#v, %v", m, err)
	}
	// Text at and over the limit.
	head := body[:len(body)-4]
	text := func(n int) []byte {
		b := append(append([]byte{}, head...), byte(n>>8), byte(n))
		return append(b, bytes.Repeat([]byte("a"), n)...)
	}
	if m, err := ParseMsg(text(MaxTextLen)); err != nil || len(m.Text) != MaxTextLen {
		t.Errorf("text of MaxTextLen: %v", err)
	}
	if m, err := ParseMsg(text(MaxTextLen + 1)); !errors.Is(err, ErrMalformed) || m != nil {
		t.Errorf("text of MaxTextLen+1: %v, %v; want ErrMalformed", m, err)
	}
	// Ack bodies.
	for n := range 8 {
		if _, err := ParseAck(make([]byte, n)); !errors.Is(err, ErrTooShort) {
			t.Errorf("ParseAck(%d bytes) err = %v", n, err)
		}
	}
	if id, err := ParseAck(unhex(t, msgIDHex+"ffff")); err != nil || id != testMsgID {
		t.Errorf("ParseAck with trailing bytes = %v, %v", id, err)
	}
}

func TestParseFrameLength(t *testing.T) {
	tests := []struct {
		name string
		hex  string
		want error
	}{
		{"empty", "", ErrTooShort},
		{"kind only", "01", ErrTooShort},
		{"unfinished varint", "01 80", ErrTooShort},
		{"unfinished long varint", "01 ffffffff", ErrTooShort},
		{"body missing", "01 05 0102", ErrTooShort},
		{"max length, body missing", "01 808004", ErrTooShort}, // 65536
		{"max length + 1", "01 818004", ErrMalformed},          // 65537
		{"huge length", "01 ffffffffffffffff7f", ErrMalformed},
		{"varint overflow", "01 ffffffffffffffffffff01", ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, _, err := ParseFrame(unhex(t, tt.hex)); !errors.Is(err, tt.want) {
				t.Errorf("ParseFrame(%s) err = %v, want %v", tt.hex, err, tt.want)
			}
		})
	}
	// A frame of exactly MaxFrameLen parses.
	big := AppendFrame(nil, 7, make([]byte, MaxFrameLen))
	if k, body, n, err := ParseFrame(big); err != nil || k != 7 || len(body) != MaxFrameLen || n != len(big) {
		t.Errorf("frame of MaxFrameLen: kind %d, %d bytes, n %d, %v", k, len(body), n, err)
	}
	// Unknown kinds split off like any other, so a reader can skip them.
	stream := append(unhex(t, "7f 03 010203"), unhex(t, "02 08"+msgIDHex)...)
	k, _, n, err := ParseFrame(stream)
	if err != nil || k != 0x7f || n != 5 {
		t.Fatalf("unknown frame: kind %d, n %d, %v", k, n, err)
	}
	if k, _, _, err := ParseFrame(stream[n:]); err != nil || k != FrameAck {
		t.Errorf("frame after unknown: kind %d, %v", k, err)
	}
}

func TestPreamble(t *testing.T) {
	if got, want := AppendPreamble([]byte{0xee}, StreamChat), unhex(t, "ee ac"+verHex+"01"); !bytes.Equal(got, want) {
		t.Errorf("AppendPreamble(chat) = %x, want %x", got, want)
	}
	if got, want := AppendPreamble(nil, StreamFile), unhex(t, "ac"+verHex+"02"); !bytes.Equal(got, want) {
		t.Errorf("AppendPreamble(file) = %x, want %x", got, want)
	}
	for _, k := range []StreamKind{StreamChat, StreamFile, 0x42} {
		b := AppendPreamble(nil, k)
		if got, err := ParsePreamble(append(b, 0x01, 0x13)); err != nil || got != k {
			t.Errorf("ParsePreamble(%x) = %d, %v", b, got, err)
		}
		for n := range len(b) {
			if _, err := ParsePreamble(b[:n]); !errors.Is(err, ErrTooShort) {
				t.Errorf("ParsePreamble(first %d bytes) err = %v", n, err)
			}
		}
	}
	if _, err := ParsePreamble(unhex(t, "ab"+verHex+"01")); !errors.Is(err, ErrMagic) {
		t.Errorf("bad magic: err = %v", err)
	}
	for _, v := range []byte{1, 3} {
		_, err := ParsePreamble([]byte{Magic, v, 1})
		var ve *VersionError
		if !errors.Is(err, ErrVersion) || !errors.As(err, &ve) || ve.Got != v || ve.Want != Version {
			t.Errorf("version %d: err = %#v", v, err)
		}
	}
}

func TestMsgID(t *testing.T) {
	if s := testMsgID.String(); s != msgIDHex {
		t.Errorf("String() = %q", s)
	}
	id, err := ParseMsgID(msgIDHex)
	if err != nil || id != testMsgID {
		t.Errorf("ParseMsgID = %v, %v", id, err)
	}
	if id, err := ParseMsgID(strings.ToUpper(msgIDHex)); err != nil || id != testMsgID {
		t.Errorf("ParseMsgID(upper case) = %v, %v", id, err)
	}
	for _, s := range []string{"", "f0f1", msgIDHex + "00", "f0f1f2f3f4f5f6fg", "f0f1f2f3f4f5f6f"} {
		if _, err := ParseMsgID(s); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseMsgID(%q) err = %v, want ErrMalformed", s, err)
		}
	}
}

func TestKeyString(t *testing.T) {
	if testKey.String() != keyHex || testKey.Short() != keyHex[:8] {
		t.Errorf("Key.String/Short = %s, %s", testKey.String(), testKey.Short())
	}
	if testKey.IsZero() || !(Key{}).IsZero() {
		t.Errorf("IsZero wrong")
	}
}

// nameCases is the ValidateName table, shared with FuzzValidateName.
var nameCases = []struct {
	name string
	want error
}{
	{"", ErrNameEmpty},
	{"bob", nil},
	{"Bob_the-2nd.", nil},
	{"b#o/b@", nil}, // reserved only as the first character
	{strings.Repeat("a", 32), nil},
	{strings.Repeat("a", 33), ErrNameTooLong},
	{strings.Repeat("é", 32), nil}, // 64 bytes, 32 runes
	{strings.Repeat("é", 33), ErrNameTooLong},
	{strings.Repeat("日", 32), nil},
	{strings.Repeat("日", 33), ErrNameTooLong},
	{strings.Repeat("😀", 32), nil}, // 128 bytes
	{strings.Repeat("😀", 33), ErrNameTooLong},
	{"😀", nil},
	{"bob🚀", nil},
	{"❤️", nil},       // U+2764 U+FE0F: the variation selector is a mark
	{"e\u0301", nil},  // combining accent
	{"b\u043eb", nil}, // Cyrillic о: valid here; the rendezvous refuses it as confusable with "bob"
	{"\xff", ErrNameUTF8},
	{"bo\xc3", ErrNameUTF8},
	{"\xed\xa0\x80", ErrNameUTF8}, // UTF-8-encoded surrogate
	{"#" + strings.Repeat("a", 40) + "\xff", ErrNameUTF8},
	{"bob smith", ErrNameSpace},
	{" bob", ErrNameSpace},
	{"bob\t", ErrNameSpace},
	{"bob\n", ErrNameSpace},
	{"bob\u00a0", ErrNameSpace}, // no-break space
	{"bob\u3000", ErrNameSpace}, // ideographic space
	{"bob\x00", ErrNameNotPrint},
	{"bob\x1b[31m", ErrNameNotPrint},
	{"bob\x7f", ErrNameNotPrint},
	{"bob\u0085", ErrNameSpace},   // NEL is white space
	{"a\u200bb", ErrNameNotPrint}, // zero-width space
	{"evil\u202egnp", ErrNameNotPrint},
	{"👨\u200d👩\u200d👧", ErrNameNotPrint}, // ZWJ sequences are refused
	{"#room", ErrNameReserved},
	{"/nick", ErrNameReserved},
	{"@bob", ErrNameReserved},
	{"#", ErrNameReserved},
}

func TestValidateName(t *testing.T) {
	for _, tt := range nameCases {
		if err := ValidateName(tt.name); err != tt.want {
			t.Errorf("ValidateName(%q) = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestNameKey(t *testing.T) {
	same := [][]string{
		{"Bob", "BOB", "bob", "bOb"},
		{"Straße", "STRAẞE", "straße"}, // capital sharp s lowers to ß
		{"Σοφία", "ΣΟΦΊΑ", "σοφία"},
		{"ςσ", "σς", "ΣΣ"}, // final sigma folds with sigma
		{"\u212aelvin", "kelvin", "KELVIN"},
		{"İ", "ı", "i", "I"}, // all four Turkish i's are one name
		{"ſ", "s"},           // long s
	}
	for _, group := range same {
		for _, n := range group[1:] {
			if NameKey(n) != NameKey(group[0]) {
				t.Errorf("NameKey(%q) = %q, NameKey(%q) = %q; want equal", n, NameKey(n), group[0], NameKey(group[0]))
			}
		}
	}
	different := [][2]string{
		{"Straße", "STRASSE"}, // no full case folding
		{"bob", "bob2"},
		{"é", "e\u0301"},    // no normalisation
		{"bob", "b\u043eb"}, // confusables are the rendezvous's business, not NameKey's
	}
	for _, d := range different {
		if NameKey(d[0]) == NameKey(d[1]) {
			t.Errorf("NameKey(%q) = NameKey(%q) = %q; want different", d[0], d[1], NameKey(d[0]))
		}
	}
	// Every pair of ASCII names that are equal under case folding collides.
	ascii := []string{"alice", "ALICE", "Alice", "a1ice", "A_B", "a_b", "x-Y", "X-y"}
	for _, a := range ascii {
		for _, b := range ascii {
			if strings.EqualFold(a, b) != (NameKey(a) == NameKey(b)) {
				t.Errorf("EqualFold(%q, %q) = %v but NameKey equal = %v", a, b, strings.EqualFold(a, b), NameKey(a) == NameKey(b))
			}
		}
	}
	if got := NameKey("Bob"); got != "bob" {
		t.Errorf("NameKey(Bob) = %q, want bob", got)
	}
}

// TestWorkedExample checks the bytes of a worked example for
// docs/PROTOCOL.md: a Hello, the cookie MAC as the reference rendezvous
// computes it (rendezvous/cookie.go), and the CookieReply carrying the
// rendezvous's key.
func TestWorkedExample(t *testing.T) {
	hello := unhex(t, "ac 02 01"+"8f 3a 5c 7e 1d 2b 49 60"+strings.Repeat("00", 53))
	if got := Marshal(&Hello{Nonce: 0x8f3a5c7e1d2b4960}); !bytes.Equal(got, hello) {
		t.Errorf("Hello = %x, want %x", got, hello)
	}
	var secret [32]byte
	for i := range secret {
		secret[i] = byte(i)
	}
	src := netip.MustParseAddrPort("198.51.100.7:3478")
	const issued = 1764000000
	salt := []byte{0xa1, 0xb2, 0xc3, 0xd4}
	macIn := binary.BigEndian.AppendUint32(nil, issued)
	macIn = append(macIn, salt...)
	ip16 := src.Addr().As16() // IPv4 in its IPv4-mapped form
	macIn = append(macIn, ip16[:]...)
	macIn = binary.BigEndian.AppendUint16(macIn, src.Port())
	if want := unhex(t, "69248100"+"a1b2c3d4"+"00000000000000000000ffffc6336407"+"0d96"); !bytes.Equal(macIn, want) {
		t.Errorf("MAC input = %x, want %x", macIn, want)
	}
	h := hmac.New(sha256.New, secret[:])
	h.Write(macIn)
	var c Cookie
	binary.BigEndian.PutUint32(c[:4], issued)
	copy(c[4:8], salt)
	copy(c[8:], h.Sum(nil))
	reply := unhex(t, "ac 02 02"+"8f 3a 5c 7e 1d 2b 49 60"+"69 24 81 00"+"a1 b2 c3 d4"+
		"67 47 89 cd ea cb ca 26 56 b3 81 d7"+srvKeyHex)
	if got := Marshal(&CookieReply{Nonce: 0x8f3a5c7e1d2b4960, Cookie: c, ServerKey: testSrvKey}); !bytes.Equal(got, reply) {
		t.Errorf("CookieReply = %x, want %x", got, reply)
	}
	if len(reply) > len(hello) {
		t.Errorf("CookieReply (%d bytes) larger than the Hello (%d)", len(reply), len(hello))
	}
}

func TestFingerprint(t *testing.T) {
	var k Key
	fp := k.Fingerprint()
	if len(fp) != 6*5+5 || fp != k.Fingerprint() {
		t.Fatalf("fingerprint %q", fp)
	}
	k2 := k
	k2[31] = 1
	if k2.Fingerprint() == fp {
		t.Fatal("two keys, one fingerprint")
	}
	// Pinned value (checked with Python hashlib): the format must not change under users' feet.
	if want := "34584 15407 68110 72389 41680 02623"; fp != want {
		t.Errorf("zero key fingerprint %q, want %q", fp, want)
	}
}
