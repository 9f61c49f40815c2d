package wire

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// Fuzz targets. Each corpus is seeded from the tables in wire_test.go, so a
// new table row is a new seed. Run one with, for example:
//
//	go test -run='^$' -fuzz='^FuzzParse$' -fuzztime=20s ./wire/

// sentinels are the errors every decoding failure must match.
var sentinels = []error{ErrTooShort, ErrMagic, ErrVersion, ErrUnknownType, ErrMalformed}

func isSentinel(err error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

func FuzzParse(f *testing.F) {
	for _, c := range msgCases {
		b := mustUnhex(c.hex)
		f.Add(b)
		f.Add(b[:len(b)/2])
		f.Add(append(b[:len(b):len(b)], 0xff, 0x00))
		v2 := bytes.Clone(b)
		v2[1] = 2
		f.Add(v2)
	}
	for _, c := range addrCases {
		f.Add(append(mustUnhex("ac0106"+c.hex), 0, 0, 0, 1))
	}
	f.Add([]byte{})
	f.Add(mustUnhex("0001000021124442000000000000000000000000"))
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		m, err := Parse(b)
		if !bytes.Equal(b, in) {
			t.Fatalf("Parse modified its input")
		}
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error %v matches no sentinel", err)
			}
			if m != nil {
				// Only an Error of another version comes with its message.
				var ve *VersionError
				if _, ok := m.(*Error); !ok || !errors.As(err, &ve) {
					t.Fatalf("Parse returned %#v with error %v", m, err)
				}
			}
			return
		}
		if !IsProtocol(b) || IsSTUN(b) {
			t.Fatalf("parsed %x, which does not demultiplex as natchat", b)
		}
		if m.Type() != Type(b[2]) {
			t.Fatalf("type byte 0x%02x parsed as %v", b[2], m.Type())
		}
		enc := Marshal(m)
		m2, err := Parse(enc)
		if err != nil {
			t.Fatalf("re-marshalled %#v as %x, which does not parse: %v", m, enc, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("roundtrip changed the message:\n  in %x\n got %#v\nthen %#v", b, m, m2)
		}
		if enc2 := Marshal(m2); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable: %x then %x", enc, enc2)
		}
		// Apart from Hello's padding and an IPv4-mapped address sent as
		// family 6 (re-encoded as family 4), the encoding is canonical: it
		// reproduces the input up to trailing bytes.
		switch m.Type() {
		case TypeHello:
		case TypeRegistered, TypeHeartbeatAck:
			if len(enc) > len(b) {
				t.Fatalf("re-encoding %x is longer than the input %x", enc, b)
			}
		default:
			if !bytes.HasPrefix(b, enc) {
				t.Fatalf("re-encoding %x is not a prefix of the input %x", enc, b)
			}
		}
	})
}

func FuzzParsePeerSignal(f *testing.F) {
	for _, c := range peerSignalCases {
		b := mustUnhex(c.hex)
		f.Add(b)
		f.Add(b[:len(b)-1])
		f.Add(append(b[:len(b):len(b)], 0x01))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParsePeerSignal(b)
		if err != nil {
			if s != nil || !isSentinel(err) {
				t.Fatalf("ParsePeerSignal = %#v, %v", s, err)
			}
			return
		}
		if len(s.Candidates) > MaxCandidates {
			t.Fatalf("%d candidates", len(s.Candidates))
		}
		enc := AppendPeerSignal(nil, s)
		if !bytes.HasPrefix(b, enc) {
			t.Fatalf("re-encoding %x is not a prefix of the input %x", enc, b)
		}
		s2, err := ParsePeerSignal(enc)
		if err != nil || !reflect.DeepEqual(s, s2) {
			t.Fatalf("roundtrip: %#v then %#v, %v", s, s2, err)
		}
		// Through the rendezvous and back.
		sig := Marshal(&Signaled{Src: testKey, Name: "bob", Body: enc})
		m, err := Parse(sig)
		if err != nil {
			t.Fatal(err)
		}
		if s3, err := ParsePeerSignal(m.(*Signaled).Body); err != nil || !reflect.DeepEqual(s, s3) {
			t.Fatalf("via Signaled: %#v, %v", s3, err)
		}
	})
}

func FuzzParseFrame(f *testing.F) {
	var all []byte
	for _, c := range frameCases {
		b := mustUnhex(c.hex)
		f.Add(b)
		f.Add(b[:len(b)-1])
		all = append(all, b...)
	}
	f.Add(all)
	f.Add(mustUnhex("01 818004"))
	f.Add(mustUnhex("7f 03 010203 02 08 f0f1f2f3f4f5f6f7"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rest := b
		for len(rest) > 0 {
			k, body, n, err := ParseFrame(rest)
			if err != nil {
				if !errors.Is(err, ErrTooShort) && !errors.Is(err, ErrMalformed) {
					t.Fatalf("ParseFrame error %v", err)
				}
				return
			}
			if n <= 0 || n > len(rest) || len(body) > MaxFrameLen || !bytes.Equal(body, rest[n-len(body):n]) || k != FrameKind(rest[0]) {
				t.Fatalf("ParseFrame(%x) = %d, %x, %d", rest, k, body, n)
			}
			// Re-encoding gives the same frame (the length may have been
			// a non-minimal varint in the input).
			enc := AppendFrame(nil, k, body)
			k2, body2, n2, err := ParseFrame(enc)
			if err != nil || k2 != k || !bytes.Equal(body2, body) || n2 != len(enc) || n2 > n {
				t.Fatalf("frame roundtrip: %d %x -> %x -> %d %x %d %v", k, body, enc, k2, body2, n2, err)
			}
			switch k {
			case FrameMsg:
				if m, err := ParseMsg(body); err == nil {
					checkMsgRoundtrip(t, body, m)
				} else if !isSentinel(err) {
					t.Fatalf("ParseMsg error %v", err)
				}
			case FrameAck:
				if id, err := ParseAck(body); err == nil {
					if enc := AppendAck(nil, id); !bytes.Equal(enc[2:], body[:8]) {
						t.Fatalf("ack roundtrip: %x -> %x", body, enc)
					}
				} else if !errors.Is(err, ErrTooShort) {
					t.Fatalf("ParseAck error %v", err)
				}
			}
			rest = rest[n:]
		}
	})
}

func FuzzParseMsg(f *testing.F) {
	for _, c := range frameCases {
		if c.msg == nil {
			continue
		}
		_, body, _, err := ParseFrame(mustUnhex(c.hex))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
		f.Add(body[:len(body)/2])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMsg(b)
		if err != nil {
			if m != nil || !isSentinel(err) {
				t.Fatalf("ParseMsg = %#v, %v", m, err)
			}
			return
		}
		checkMsgRoundtrip(t, b, m)
	})
}

// checkMsgRoundtrip checks that m, parsed from body, encodes back to a
// prefix of body (trailing bytes are ignored) and parses back to m.
func checkMsgRoundtrip(t *testing.T, body []byte, m *Msg) {
	t.Helper()
	if len(m.Text) > MaxTextLen {
		t.Fatalf("text of %d bytes", len(m.Text))
	}
	enc := AppendMsg(nil, m)
	k, body2, n, err := ParseFrame(enc)
	if err != nil || k != FrameMsg || n != len(enc) {
		t.Fatalf("AppendMsg(%#v) = %x: %d, %v", m, enc, k, err)
	}
	if !bytes.HasPrefix(body, body2) {
		t.Fatalf("Msg body roundtrip: %x -> %x", body, body2)
	}
	m2, err := ParseMsg(body2)
	if err != nil || !reflect.DeepEqual(m, m2) {
		t.Fatalf("Msg roundtrip: %#v then %#v, %v", m, m2, err)
	}
}

func FuzzValidateName(f *testing.F) {
	for _, c := range nameCases {
		f.Add(c.name)
	}
	for _, c := range msgCases {
		switch m := c.msg.(type) {
		case *Register:
			f.Add(m.Name)
		case *Presence:
			f.Add(m.Name)
		}
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateName(name)
		key := NameKey(name)
		if err != nil {
			switch err {
			case ErrNameEmpty, ErrNameTooLong, ErrNameUTF8, ErrNameSpace, ErrNameNotPrint, ErrNameReserved:
			default:
				t.Fatalf("ValidateName(%q) = unknown error %v", name, err)
			}
			return
		}
		if name == "" || !utf8.ValidString(name) || utf8.RuneCountInString(name) > MaxNameLen ||
			len(name) > MaxNameLen*utf8.UTFMax || strings.ContainsAny(name[:1], "#/@") {
			t.Fatalf("ValidateName accepted %q", name)
		}
		for _, r := range name {
			if unicode.IsSpace(r) || !unicode.IsPrint(r) {
				t.Fatalf("ValidateName accepted %q with %U", name, r)
			}
		}
		// A valid name survives the one-byte-length string encoding.
		reg := &Register{Key: testKey, Name: name}
		if m, err := Parse(Marshal(reg)); err != nil || m.(*Register).Name != name {
			t.Fatalf("name %q does not survive Register: %v", name, err)
		}
		// The key of a valid name is a valid name of the same length, and
		// is its own key.
		if err := ValidateName(key); err != nil {
			t.Fatalf("NameKey(%q) = %q is not a valid name: %v", name, key, err)
		}
		if utf8.RuneCountInString(key) != utf8.RuneCountInString(name) {
			t.Fatalf("NameKey(%q) = %q changes the length", name, key)
		}
		if NameKey(key) != key {
			t.Fatalf("NameKey not idempotent: %q -> %q -> %q", name, key, NameKey(key))
		}
		if NameKey(strings.ToUpper(name)) != key || NameKey(strings.ToLower(name)) != key {
			t.Fatalf("NameKey(%q) depends on case", name)
		}
	})
}
