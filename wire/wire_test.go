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
	sessHex   = "0102030405060708"
	keyHex    = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
	key2Hex   = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
	zeroKey   = "0000000000000000000000000000000000000000000000000000000000000000"
	cookieHex = "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3"
	sigHex    = "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f" +
		"606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
	msgIDHex = "f0f1f2f3f4f5f6f7"

	// A PeerSignal of kind Hello: kind flags seq gen ufrag pwd count.
	sigHelloHex = "03" + "00" + "00000001" + "00000000" + "00" + "00" + "00"
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
	testCookie = Cookie(mustUnhex(cookieHex))
	testSig    = [SigLen]byte(mustUnhex(sigHex))
	testMsgID  = MsgID(mustUnhex(msgIDHex))

	testV4 = netip.MustParseAddrPort("192.0.2.1:41641")
	testV6 = netip.MustParseAddrPort("[2001:db8::1]:443")
)

// msgCase is one row of the rendezvous-message table. It is shared with the
// fuzz targets, which seed their corpora from it.
type msgCase struct {
	name string
	msg  Message
	hex  string // the expected datagram, header included
	// open is the length of an open-ended trailing field (a payload that
	// runs to the end of the datagram): cutting into it is not an error
	// and trailing bytes become part of it.
	open int
}

var msgCases = []msgCase{
	{
		name: "hello",
		msg:  &Hello{Nonce: 0x0102030405060708},
		hex:  "ac0101" + "0102030405060708" + strings.Repeat("00", 53),
	},
	{
		name: "cookie",
		msg:  &CookieReply{Nonce: 0x1122334455667788, Cookie: testCookie},
		hex:  "ac0102" + "1122334455667788" + cookieHex,
	},
	{
		name: "register",
		msg:  &Register{Cookie: testCookie, Key: testKey, Name: "bob", Sig: testSig},
		hex:  "ac0103" + cookieHex + keyHex + "03 626f62" + sigHex,
	},
	{
		name: "register multibyte name",
		msg:  &Register{Cookie: testCookie, Key: testKey, Name: "Zoë", Sig: testSig},
		hex:  "ac0103" + cookieHex + keyHex + "04 5a6fc3ab" + sigHex,
	},
	{
		name: "registered ipv4",
		msg: &Registered{Session: testSess, Observed: testV4,
			HeartbeatMS: 25000, ExpiryMS: 90000, PresenceSeq: 7},
		hex: "ac0104" + sessHex + "04 a2a9 c0000201" + "000061a8" + "00015f90" + "00000007",
	},
	{
		name: "registered ipv6",
		msg: &Registered{Session: testSess, Observed: testV6,
			HeartbeatMS: 1, ExpiryMS: 2, PresenceSeq: 0xffffffff},
		hex: "ac0104" + sessHex + "06 01bb 20010db8000000000000000000000001" +
			"00000001" + "00000002" + "ffffffff",
	},
	{
		name: "heartbeat",
		msg:  &Heartbeat{Session: testSess},
		hex:  "ac0105" + sessHex,
	},
	{
		name: "heartbeat ack",
		msg:  &HeartbeatAck{Observed: netip.MustParseAddrPort("198.51.100.7:3478"), PresenceSeq: 0xdeadbeef},
		hex:  "ac0106" + "04 0d96 c6336407" + "deadbeef",
	},
	{
		name: "leave",
		msg:  &Leave{Session: testSess},
		hex:  "ac0107" + sessHex,
	},
	{
		name: "presence join",
		msg:  &Presence{Seq: 42, Kind: PresenceJoin, Reason: ReasonNone, Key: testKey, Name: "alice"},
		hex:  "ac0108" + "0000002a" + "01" + "00" + keyHex + "05 616c696365",
	},
	{
		name: "presence left timeout",
		msg:  &Presence{Seq: 43, Kind: PresenceLeft, Reason: ReasonTimeout, Key: testKey2, Name: "bob"},
		hex:  "ac0108" + "0000002b" + "02" + "02" + key2Hex + "03 626f62",
	},
	{
		name: "peers request",
		msg:  &PeersRequest{Session: testSess},
		hex:  "ac0109" + sessHex,
	},
	{
		name: "peers two",
		msg: &Peers{Seq: 9, Part: 0, Parts: 2, Peers: []Peer{
			{Key: testKey, Name: "alice"}, {Key: testKey2, Name: "bob"}}},
		hex: "ac010a" + "00000009" + "0000" + "0002" + "02" +
			keyHex + "05 616c696365" + key2Hex + "03 626f62",
	},
	{
		name: "peers empty",
		msg:  &Peers{Seq: 1, Part: 0, Parts: 1},
		hex:  "ac010a" + "00000001" + "0000" + "0001" + "00",
	},
	{
		name: "lookup by name",
		msg:  &Lookup{Session: testSess, TxID: 0xcafe0001, Name: "bob"},
		hex:  "ac010b" + sessHex + "cafe0001" + zeroKey + "03 626f62",
	},
	{
		name: "lookup by key",
		msg:  &Lookup{Session: testSess, TxID: 2, Key: testKey},
		hex:  "ac010b" + sessHex + "00000002" + keyHex + "00",
	},
	{
		name: "lookup reply offline",
		msg:  &LookupReply{TxID: 0xcafe0001, Status: LookupOffline, Key: testKey, Name: "Bob"},
		hex:  "ac010c" + "cafe0001" + "01" + keyHex + "03 426f62",
	},
	{
		name: "lookup reply unknown",
		msg:  &LookupReply{TxID: 3, Status: LookupUnknown},
		hex:  "ac010c" + "00000003" + "02" + zeroKey + "00",
	},
	{
		name: "relay",
		msg:  &Relay{Session: testSess, Dst: testKey, Payload: []byte{0x40, 1, 2, 3}},
		hex:  "ac010d" + sessHex + keyHex + "40010203",
		open: 4,
	},
	{
		name: "relay empty payload",
		msg:  &Relay{Session: testSess, Dst: testKey, Payload: []byte{}},
		hex:  "ac010d" + sessHex + keyHex,
	},
	{
		name: "relayed",
		msg:  &Relayed{Src: testKey2, Payload: []byte{0xc0, 0xff}},
		hex:  "ac010e" + key2Hex + "c0ff",
		open: 2,
	},
	{
		name: "signal",
		msg:  &Signal{Session: testSess, Dst: testKey, Body: mustUnhex(sigHelloHex)},
		hex:  "ac010f" + sessHex + keyHex + sigHelloHex,
		open: len(sigHelloHex) / 2,
	},
	{
		name: "signaled",
		msg:  &Signaled{Src: testKey2, Name: "alice", Body: mustUnhex(sigHelloHex)},
		hex:  "ac0110" + key2Hex + "05 616c696365" + sigHelloHex,
		open: len(sigHelloHex) / 2,
	},
	{
		name: "error",
		msg:  &Error{Code: CodeNameTaken, Request: TypeRegister, TxID: 0, Message: "name taken"},
		hex:  "ac0111" + "0004" + "03" + "00000000" + "0a 6e616d652074616b656e",
	},
	{
		name: "error empty message",
		msg:  &Error{Code: CodeRateLimited, Request: TypeLookup, TxID: 0xcafe0001},
		hex:  "ac0111" + "0008" + "0b" + "cafe0001" + "00",
	},
}

// openPayload reports whether messages of type t end in a payload that runs
// to the end of the datagram.
func openPayload(t Type) bool {
	switch t {
	case TypeRelay, TypeRelayed, TypeSignal, TypeSignaled:
		return true
	}
	return false
}

// TestTableCoversTypes checks that every message type has a table row.
func TestTableCoversTypes(t *testing.T) {
	seen := map[Type]bool{}
	for _, c := range msgCases {
		seen[c.msg.Type()] = true
	}
	for ty := range 256 {
		if parsers[ty] != nil && !seen[Type(ty)] {
			t.Errorf("no table row for %v", Type(ty))
		}
	}
}

func TestMarshal(t *testing.T) {
	for _, c := range msgCases {
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

func TestRoundtrip(t *testing.T) {
	for _, c := range msgCases {
		t.Run(c.name, func(t *testing.T) {
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
}

// TestTruncated cuts every row at every length: each cut before the end of
// the last fixed or length-prefixed field is ErrTooShort; a cut inside an
// open-ended payload shortens the payload.
func TestTruncated(t *testing.T) {
	for _, c := range msgCases {
		t.Run(c.name, func(t *testing.T) {
			full := unhex(t, c.hex)
			fixed := len(full) - c.open
			for n := range len(full) {
				m, err := Parse(full[:n:n])
				if n < fixed {
					if !errors.Is(err, ErrTooShort) || m != nil {
						t.Errorf("Parse(first %d of %d bytes) = %v, %v; want nil, ErrTooShort", n, len(full), m, err)
					}
					continue
				}
				if err != nil {
					t.Errorf("Parse(first %d bytes, cut in payload) = %v", n, err)
				}
			}
		})
	}
}

// TestTrailingIgnored appends junk to every row: the parsers must ignore it
// (rows with an open payload absorb it, which is their documented layout).
func TestTrailingIgnored(t *testing.T) {
	junk := []byte{0xff, 0xee, 0x00, 0x01, 0xac}
	for _, c := range msgCases {
		t.Run(c.name, func(t *testing.T) {
			b := append(unhex(t, c.hex), junk...)
			got, err := Parse(b)
			if err != nil {
				t.Fatalf("Parse with trailing bytes: %v", err)
			}
			if openPayload(c.msg.Type()) {
				// Open payload: the junk is part of it.
				if !bytes.HasSuffix(Marshal(got), junk) {
					t.Errorf("open payload lost trailing bytes: %x", Marshal(got))
				}
				return
			}
			if !reflect.DeepEqual(got, c.msg) {
				t.Errorf("trailing bytes changed the message:\n got %#v\nwant %#v", got, c.msg)
			}
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
		{"no type", "ac01", ErrTooShort},
		{"stun binding request", "0001000021124442" + "000000000000000000000000", ErrMagic},
		{"quic long header", "c0000000010000", ErrMagic},
		{"quic short header", "40" + sessHex, ErrMagic},
		{"magic off by one", "ad0105" + sessHex, ErrMagic},
		{"type zero", "ac0100" + sessHex, ErrUnknownType},
		{"reserved mailbox type", "ac0112" + sessHex, ErrUnknownType},
		{"reserved rooms type", "ac011f" + sessHex, ErrUnknownType},
		{"type ff", "ac01ff", ErrUnknownType},
		{"version 0", "ac0005" + sessHex, ErrVersion},
		{"version 2", "ac0205" + sessHex, ErrVersion},
		{"version 2 unknown type", "ac02ff", ErrVersion},
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

func TestVersionError(t *testing.T) {
	for _, v := range []uint8{0, 2, 0xff} {
		b := unhex(t, "ac00"+"05"+sessHex)
		b[1] = v
		_, err := Parse(b)
		var ve *VersionError
		if !errors.As(err, &ve) {
			t.Fatalf("v%d: Parse error %v is not a *VersionError", v, err)
		}
		if want := (VersionError{Got: v, Want: Version, Type: TypeHeartbeat}); *ve != want {
			t.Errorf("v%d: VersionError = %+v, want %+v", v, *ve, want)
		}
		if !errors.Is(err, ErrVersion) {
			t.Errorf("v%d: errors.Is(err, ErrVersion) = false", v)
		}
		if errors.Is(err, ErrMalformed) || errors.Is(err, ErrTooShort) {
			t.Errorf("v%d: version error also matches another sentinel: %v", v, err)
		}
	}
}

// TestErrorOtherVersion checks the frozen Error layout: an Error from a
// peer of another version still parses, together with the *VersionError.
func TestErrorOtherVersion(t *testing.T) {
	b := unhex(t, "ac02"+"11"+"0001"+"03"+"00000000"+"0a 7570677261646520746f"+"ffff")
	m, err := Parse(b)
	var ve *VersionError
	if !errors.As(err, &ve) || ve.Got != 2 || ve.Want != Version || ve.Type != TypeError {
		t.Fatalf("Parse error = %#v, want *VersionError{Got: 2, Type: error}", err)
	}
	want := &Error{Code: CodeVersion, Request: TypeRegister, Message: "upgrade to"}
	if !reflect.DeepEqual(m, Message(want)) {
		t.Errorf("Parse message = %#v, want %#v", m, want)
	}

	// A truncated Error of another version gives only the version error.
	m, err = Parse(b[:8])
	if m != nil || !errors.As(err, &ve) {
		t.Errorf("truncated v2 error: Parse = %#v, %v; want nil, *VersionError", m, err)
	}
}

func TestParseMalformed(t *testing.T) {
	tests := []struct {
		name string
		hex  string
	}{
		{"registered family 0", "ac0104" + sessHex + "00 a2a9 c0000201" + "000061a8" + "00015f90" + "00000007"},
		{"registered family 5", "ac0104" + sessHex + "05 a2a9 c0000201" + "000061a8" + "00015f90" + "00000007"},
		{"heartbeat ack family 46", "ac0106" + "2e 0d96 c6336407" + "deadbeef"},
		{"presence kind 0", "ac0108" + "0000002a" + "00" + "00" + keyHex + "05 616c696365"},
		{"presence kind 3", "ac0108" + "0000002a" + "03" + "00" + keyHex + "05 616c696365"},
		{"presence kind ff", "ac0108" + "0000002a" + "ff" + "01" + keyHex + "00"},
		{"peers part = parts", "ac010a" + "00000009" + "0002" + "0002" + "00"},
		{"peers part > parts", "ac010a" + "00000009" + "0005" + "0002" + "00"},
		{"peers zero parts", "ac010a" + "00000009" + "0000" + "0000" + "00"},
		{"lookup status 3", "ac010c" + "00000003" + "03" + zeroKey + "00"},
		{"lookup status ff", "ac010c" + "00000003" + "ff" + keyHex + "03 626f62"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(unhex(t, tt.hex))
			if !errors.Is(err, ErrMalformed) || m != nil {
				t.Errorf("Parse = %#v, %v; want nil, ErrMalformed", m, err)
			}
		})
	}
}

// TestHelloMinLen is the no-amplification property of the handshake: a Hello
// below HelloMinLen is refused, and the CookieReply (and an Error that
// refuses a Hello) are shorter than the smallest Hello accepted.
func TestHelloMinLen(t *testing.T) {
	hello := Marshal(&Hello{Nonce: 1})
	if len(hello) != HelloMinLen {
		t.Errorf("Marshal(Hello) is %d bytes, want HelloMinLen = %d", len(hello), HelloMinLen)
	}
	for n := HeaderLen; n < HelloMinLen; n++ {
		if _, err := Parse(hello[:n]); !errors.Is(err, ErrTooShort) {
			t.Errorf("Hello of %d bytes: err = %v, want ErrTooShort", n, err)
		}
	}
	// Unpadded: nonce present, padding missing.
	if _, err := Parse(unhex(t, "ac0101"+"0102030405060708")); !errors.Is(err, ErrTooShort) {
		t.Errorf("unpadded Hello: err = %v, want ErrTooShort", err)
	}
	// Non-zero padding is accepted; its content is not looked at.
	padded := append(unhex(t, "ac0101"+"0102030405060708"), bytes.Repeat([]byte{0x5a}, 53)...)
	if m, err := Parse(padded); err != nil || m.(*Hello).Nonce != 0x0102030405060708 {
		t.Errorf("Hello with non-zero padding: %v, %v", m, err)
	}

	reply := Marshal(&CookieReply{Nonce: ^uint64(0), Cookie: testCookie})
	if len(reply) >= HelloMinLen {
		t.Errorf("CookieReply is %d bytes, not shorter than the smallest Hello (%d): amplification", len(reply), HelloMinLen)
	}
	if want := HeaderLen + 8 + CookieLen; len(reply) != want {
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
		e := &Error{Code: CodeBadCookie, Request: TypeRegister, TxID: 5, Message: msg}
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
			if want := min(len(msg), limit-fixed, 255); len(got.Message) != want {
				t.Errorf("msg %d bytes, limit %d: message of %d bytes, want %d", len(msg), limit, len(got.Message), want)
			}
		}
		if e.Message != msg {
			t.Errorf("ErrorFits modified its argument")
		}
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
	for c := Code(1); c <= CodeUnknownPeer; c++ {
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
	for _, c := range msgCases {
		if s := c.msg.Type().String(); strings.HasPrefix(s, "type(") {
			t.Errorf("%s: Type %d has no name", c.name, c.msg.Type())
		}
	}
	if got := Type(0x12).String(); got != "type(0x12)" {
		t.Errorf("Type(0x12) = %q", got)
	}
}

func TestDemux(t *testing.T) {
	tests := []struct {
		hex         string
		proto, stun bool
	}{
		{"ac0101", true, false},
		{"ac01", false, false},
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
}

func TestRelayPayloadAliases(t *testing.T) {
	b := unhex(t, "ac010d"+sessHex+keyHex+"40010203")
	m, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	p := m.(*Relay).Payload
	b[len(b)-1] = 0x99
	if p[3] != 0x99 {
		t.Errorf("payload does not alias the datagram (documented)")
	}
}

// Peers packs up to 255 entries; the rendezvous sizes parts by MaxPeersBody.
func TestPeersLimits(t *testing.T) {
	many := make([]Peer, 300)
	for i := range many {
		many[i] = Peer{Name: "p"}
	}
	b := Marshal(&Peers{Parts: 1, Peers: many})
	m, err := Parse(b)
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
// (found by FuzzParse: testdata/fuzz/FuzzParse/5df39a6d75556985).
func TestAddrMappedFamily6(t *testing.T) {
	b := unhex(t, "ac0106"+"06 a2a9 00000000000000000000ffffc0000201"+"00000001")
	m, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.(*HeartbeatAck).Observed; got != testV4 || !got.Addr().Is4() {
		t.Errorf("Observed = %v, want %v (IPv4)", got, testV4)
	}
	if got, want := Marshal(m), unhex(t, "ac0106"+"04 a2a9 c0000201"+"00000001"); !bytes.Equal(got, want) {
		t.Errorf("re-encoded as %x, want %x", got, want)
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
	if got, want := AppendPreamble([]byte{0xee}, StreamChat), unhex(t, "ee ac0101"); !bytes.Equal(got, want) {
		t.Errorf("AppendPreamble(chat) = %x, want %x", got, want)
	}
	if got, want := AppendPreamble(nil, StreamFile), unhex(t, "ac0102"); !bytes.Equal(got, want) {
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
	if _, err := ParsePreamble(unhex(t, "ab0101")); !errors.Is(err, ErrMagic) {
		t.Errorf("bad magic: err = %v", err)
	}
	_, err := ParsePreamble(unhex(t, "ac0201"))
	var ve *VersionError
	if !errors.Is(err, ErrVersion) || !errors.As(err, &ve) || ve.Got != 2 || ve.Want != Version {
		t.Errorf("version 2: err = %#v", err)
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

func TestRegisterSigned(t *testing.T) {
	got := RegisterSigned(testCookie, testKey, "bob")
	want := append([]byte("natchat register v1\x00"), unhex(t, cookieHex+keyHex+"03 626f62")...)
	if !bytes.Equal(got, want) {
		t.Errorf("RegisterSigned:\n got %x\nwant %x", got, want)
	}
	// The signed bytes are the Register body without its signature, after
	// the context: a verifier can rebuild them from the parsed message.
	reg := Marshal(&Register{Cookie: testCookie, Key: testKey, Name: "bob", Sig: testSig})
	if !bytes.Equal(got[len(RegisterContext):], reg[HeaderLen:len(reg)-SigLen]) {
		t.Errorf("signed bytes differ from the Register body")
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
	{"❤️", nil},      // U+2764 U+FE0F: the variation selector is a mark
	{"e\u0301", nil}, // combining accent
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
		{"é", "e\u0301"}, // no normalisation
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

// TestWorkedExample checks the worked example of docs/PROTOCOL.md: a Hello,
// the cookie MAC as the reference rendezvous computes it, the CookieReply,
// and the RegisterSigned context bytes.
func TestWorkedExample(t *testing.T) {
	hello := unhex(t, "ac 01 01"+"8f 3a 5c 7e 1d 2b 49 60"+strings.Repeat("00", 53))
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
	reply := unhex(t, "ac 01 02"+"8f 3a 5c 7e 1d 2b 49 60"+"69 24 81 00"+"a1 b2 c3 d4"+
		"67 47 89 cd ea cb ca 26 56 b3 81 d7")
	if got := Marshal(&CookieReply{Nonce: 0x8f3a5c7e1d2b4960, Cookie: c}); !bytes.Equal(got, reply) {
		t.Errorf("CookieReply = %x, want %x", got, reply)
	}
	if ctx := unhex(t, "6e617463686174207265676973746572207631 00"); RegisterContext != string(ctx) {
		t.Errorf("RegisterContext = %x, want %x", RegisterContext, ctx)
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
