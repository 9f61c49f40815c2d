package wire

import (
	"bytes"
	"errors"
	"net/netip"
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

// canonical reports whether a message of type t re-encodes to a prefix of
// any datagram it parsed from: all but Hello (its padding may hold
// anything) and those with an address (an IPv4-mapped address sent as
// family 6 is re-encoded as family 4, shorter).
func canonical(t Type) bool { return t != TypeHello && t != TypeHeartbeatAck }

func FuzzParse(f *testing.F) {
	for _, c := range outerCases {
		b := mustUnhex(c.hex)
		f.Add(b)
		f.Add(b[:len(b)/2])
		f.Add(append(b[:len(b):len(b)], 0xff, 0x00))
		for _, v := range []byte{1, 3} {
			other := bytes.Clone(b)
			other[1] = v
			f.Add(other)
		}
	}
	// Inner messages in the clear: they parse, and every receiver drops
	// them (only a Sealed datagram's plaintext is acted on).
	for _, c := range innerCases {
		f.Add(append([]byte{Magic, Version}, mustUnhex(c.hex)...))
	}
	for _, c := range addrCases {
		f.Add(append(mustUnhex("ac"+verHex+"06"+c.hex), 0, 0, 0, 1))
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
				// Only an Error of another version comes with its message,
				// and its layout is the frozen one.
				var ve *VersionError
				e, ok := m.(*Error)
				if !ok || !errors.As(err, &ve) || ve.Type != TypeError {
					t.Fatalf("Parse returned %#v with error %v", m, err)
				}
				if enc := Marshal(e); !bytes.HasPrefix(b[HeaderLen:], enc[HeaderLen:]) {
					t.Fatalf("Error of v%d re-encodes as %x, not a prefix of %x", ve.Got, enc, b)
				}
			}
			return
		}
		if !IsProtocol(b) || IsSTUN(b) {
			t.Fatalf("parsed %x, which does not demultiplex as natchat", b)
		}
		if b[1] != Version || m.Type() != Type(b[2]) {
			t.Fatalf("header %x parsed as %v", b[:HeaderLen], m.Type())
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
		if canonical(m.Type()) {
			if !bytes.HasPrefix(b, enc) {
				t.Fatalf("re-encoding %x is not a prefix of the input %x", enc, b)
			}
		} else if len(enc) > len(b) {
			t.Fatalf("re-encoding %x is longer than the input %x", enc, b)
		}
		// The encoding has no slack: one byte less is too short (but for
		// an open field, which just gets shorter).
		if !openPayload(m.Type()) {
			if m3, err := Parse(enc[:len(enc)-1]); !errors.Is(err, ErrTooShort) || m3 != nil {
				t.Fatalf("%x less its last byte: %#v, %v; want ErrTooShort", enc, m3, err)
			}
		}
		// What travels only in the clear is refused inside a Sealed one.
		if outerOnly[m.Type()] {
			if m3, err := ParseInner(b[2:]); !errors.Is(err, ErrUnknownType) || m3 != nil {
				t.Fatalf("ParseInner accepted the clear-only %v: %#v, %v", m.Type(), m3, err)
			}
		}
	})
}

func FuzzParseInner(f *testing.F) {
	for _, c := range innerCases {
		b := mustUnhex(c.hex)
		f.Add(b)
		f.Add(b[:len(b)/2])
		f.Add(append(b[:len(b):len(b)], 0xff, 0x00))
		f.Add(append(b[:len(b):len(b)], make([]byte, SealedMinLen)...)) // a node's padding
	}
	for _, c := range outerCases {
		f.Add(mustUnhex(c.hex)[2:]) // clear-only messages, sealed
	}
	for _, c := range addrCases {
		f.Add(append(mustUnhex("06"+c.hex), 0, 0, 0, 1))
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		m, err := ParseInner(b)
		if !bytes.Equal(b, in) {
			t.Fatalf("ParseInner modified its input")
		}
		if err != nil {
			if m != nil || !isSentinel(err) {
				t.Fatalf("ParseInner = %#v, %v", m, err)
			}
			return
		}
		if outerOnly[m.Type()] {
			t.Fatalf("ParseInner accepted the clear-only %v", m.Type())
		}
		if m.Type() != Type(b[0]) {
			t.Fatalf("type byte 0x%02x parsed as %v", b[0], m.Type())
		}
		enc := AppendInner(nil, m)
		m2, err := ParseInner(enc)
		if err != nil {
			t.Fatalf("re-encoded %#v as %x, which does not parse: %v", m, enc, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("roundtrip changed the message:\n  in %x\n got %#v\nthen %#v", b, m, m2)
		}
		if enc2 := AppendInner(nil, m2); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable: %x then %x", enc, enc2)
		}
		if canonical(m.Type()) {
			if !bytes.HasPrefix(b, enc) {
				t.Fatalf("re-encoding %x is not a prefix of the input %x", enc, b)
			}
		} else if len(enc) > len(b) && !optionalTail(m.Type()) {
			t.Fatalf("re-encoding %x is longer than the input %x", enc, b)
		}
		if !openPayload(m.Type()) && !optionalTail(m.Type()) {
			if m3, err := ParseInner(enc[:len(enc)-1]); !errors.Is(err, ErrTooShort) || m3 != nil {
				t.Fatalf("%x less its last byte: %#v, %v; want ErrTooShort", enc, m3, err)
			}
			// A node's zero padding changes nothing.
			padded := append(bytes.Clone(enc), make([]byte, SealedMinLen)...)
			if m3, err := ParseInner(padded); err != nil || !reflect.DeepEqual(m3, m) {
				t.Fatalf("padded %x: %#v, %v; want %#v", enc, m3, err, m)
			}
		}
	})
}

func FuzzParseRegisterPayload(f *testing.F) {
	for _, c := range registerPayloadCases {
		b := mustUnhex(c.hex)
		f.Add(b)
		f.Add(b[:len(b)-1])
		f.Add(append(b[:len(b):len(b)], 0x01))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseRegisterPayload(b)
		if err != nil {
			if p != nil || !errors.Is(err, ErrTooShort) {
				t.Fatalf("ParseRegisterPayload = %#v, %v", p, err)
			}
			return
		}
		enc := AppendRegisterPayload(nil, p)
		if !bytes.HasPrefix(b, enc) {
			t.Fatalf("re-encoding %x is not a prefix of the input %x", enc, b)
		}
		if p2, err := ParseRegisterPayload(enc); err != nil || !reflect.DeepEqual(p, p2) {
			t.Fatalf("roundtrip: %#v then %#v, %v", p, p2, err)
		}
		if _, err := ParseRegisterPayload(enc[:len(enc)-1]); !errors.Is(err, ErrTooShort) {
			t.Fatalf("%x less its last byte: %v", enc, err)
		}
	})
}

func FuzzParseHandshakeResult(f *testing.F) {
	for _, c := range handshakeResultCases {
		b := mustUnhex(c.hex)
		f.Add(b)
		f.Add(b[:len(b)-1])
		f.Add(append(b[:len(b):len(b)], 0x01))
	}
	for _, c := range addrCases {
		f.Add(mustUnhex("0000" + sessHex + c.hex + "00000001" + "00000002" + "00000003"))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseHandshakeResult(b)
		if err != nil {
			if r != nil || (!errors.Is(err, ErrTooShort) && !errors.Is(err, ErrMalformed)) {
				t.Fatalf("ParseHandshakeResult = %#v, %v", r, err)
			}
			return
		}
		if r.Code != 0 && (r.Session != SessionID{} || r.Observed.IsValid() || r.HeartbeatMS != 0 || r.ExpiryMS != 0 || r.PresenceSeq != 0) {
			t.Fatalf("refusal %v carries registration fields: %#v", r.Code, r)
		}
		if r.Code == 0 && r.Message != "" {
			t.Fatalf("registration carries a refusal message: %#v", r)
		}
		enc := AppendHandshakeResult(nil, r)
		if r.Code != 0 && !bytes.HasPrefix(b, enc) {
			t.Fatalf("re-encoding %x is not a prefix of the input %x", enc, b)
		}
		if len(enc) > len(b) {
			t.Fatalf("re-encoding %x is longer than the input %x", enc, b)
		}
		if r2, err := ParseHandshakeResult(enc); err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("roundtrip: %#v then %#v, %v", r, r2, err)
		}
		if _, err := ParseHandshakeResult(enc[:len(enc)-1]); !errors.Is(err, ErrTooShort) {
			t.Fatalf("%x less its last byte: %v", enc, err)
		}
	})
}

// fuzzAddr makes an address from fuzz input, and the value it decodes to
// (IPv4-mapped addresses come back unmapped).
func fuzzAddr(raw []byte, u64 uint64) (in, want netip.AddrPort) {
	var b16 [16]byte
	copy(b16[:], raw)
	port := uint16(u64 >> 16)
	ip := netip.AddrFrom16(b16)
	if u64&1 == 0 {
		ip = netip.AddrFrom4([4]byte(b16[:4]))
	}
	return netip.AddrPortFrom(ip, port), netip.AddrPortFrom(ip.Unmap(), port)
}

// clip is what a one-byte-length string field keeps of s.
func clip(s string) string { return s[:min(len(s), 255)] }

// fuzzMessage builds message number sel (modulo the number of types) from
// fuzz input, and the value it must decode to.
func fuzzMessage(sel uint8, u32 uint32, u64 uint64, raw []byte, s1, s2 string) (m, want Message) {
	var key Key
	copy(key[:], raw)
	var sess SessionID
	copy(sess[:], raw[min(len(raw), KeyLen):])
	var data [8]byte
	copy(data[:], raw[min(len(raw), 8):])
	var cookie Cookie
	copy(cookie[:], raw[min(len(raw), 1):])
	body := append([]byte{}, raw...) // parsers return empty, not nil, fields
	addr, addrBack := fuzzAddr(raw, u64)
	names := func(i int) string {
		if i%2 == 0 {
			return s1
		}
		return s2
	}
	peers := func(n int) (in, back []Peer) {
		for i := range n {
			k := key
			k[0] ^= byte(i)
			in = append(in, Peer{Key: k, Name: names(i)})
			back = append(back, Peer{Key: k, Name: clip(names(i))})
		}
		return in, back
	}
	same := func(m Message) (Message, Message) { return m, m }

	switch sel % 30 {
	case 0:
		return same(&Hello{Nonce: u64})
	case 1:
		var sk [32]byte
		copy(sk[:], raw[min(len(raw), 3):])
		return same(&CookieReply{Nonce: u64, Cookie: cookie, ServerKey: sk})
	case 2:
		// The Noise message cannot be empty.
		return same(&Handshake{Cookie: cookie, Noise: append([]byte{byte(u32)}, raw...)})
	case 3:
		return same(&HandshakeReply{Noise: append([]byte{byte(u32)}, raw...)})
	case 4:
		return same(&Sealed{Session: sess, Counter: u64, Box: body})
	case 5:
		return same(&Relay{Session: sess, Dst: key, Payload: body})
	case 6:
		return same(&Relayed{Src: key, Payload: body})
	case 7:
		e := &Error{Code: Code(u32 >> 16), Request: Type(u32), TxID: u32, Message: s1}
		w := *e
		w.Message = clip(s1)
		return e, &w
	case 8:
		return same(&Heartbeat{})
	case 9:
		return same(&Leave{})
	case 10:
		return same(&PeersRequest{})
	case 11:
		return &HeartbeatAck{Observed: addr, PresenceSeq: u32, RoomSeq: u32 >> 3, AltSTUN: uint16(u64)},
			&HeartbeatAck{Observed: addrBack, PresenceSeq: u32, RoomSeq: u32 >> 3, AltSTUN: uint16(u64)}
	case 12:
		in, back := &Presence{Seq: u32}, &Presence{Seq: u32}
		for i := range int(u64 % 20) {
			c := Change{Kind: PresenceJoin, Reason: LeaveReason(u32 >> (i % 32)), Key: key, Name: names(i)}
			if u64>>(8+i)&1 == 1 {
				c.Kind = PresenceLeft
			}
			c.Key[1] ^= byte(i)
			in.Changes = append(in.Changes, c)
			c.Name = clip(c.Name)
			back.Changes = append(back.Changes, c)
		}
		return in, back
	case 13:
		parts := max(uint16(u64>>16), 1)
		in, back := peers(int(u32 % 10))
		return &Peers{Seq: u32, Part: uint16(u64) % parts, Parts: parts, Peers: in},
			&Peers{Seq: u32, Part: uint16(u64) % parts, Parts: parts, Peers: back}
	case 14:
		return &Lookup{TxID: u32, Key: key, Name: s1}, &Lookup{TxID: u32, Key: key, Name: clip(s1)}
	case 15:
		st := LookupStatus(u64 % 3)
		return &LookupReply{TxID: u32, Status: st, Key: key, Name: s1}, &LookupReply{TxID: u32, Status: st, Key: key, Name: clip(s1)}
	case 16:
		return &Signal{Dst: key, Body: body}, &Signal{Dst: key, Body: body[:min(len(body), 0xffff)]}
	case 17:
		return &Signaled{Src: key, Name: s1, Body: body}, &Signaled{Src: key, Name: clip(s1), Body: body}
	case 18:
		return same(&PathChallenge{Data: data})
	case 19:
		return same(&PathResponse{Data: data})
	case 20:
		return &Who{TxID: u32, Room: s1, After: s2}, &Who{TxID: u32, Room: clip(s1), After: clip(s2)}
	case 21, 22:
		// A valid part: 1..MaxMailParts parts, 1..MailPartLen bytes.
		parts := uint8(1 + u32%MaxMailParts)
		part := uint8(u32>>8) % parts
		d := append([]byte{byte(u64)}, body[:min(len(body), MailPartLen-1)]...)
		id := MsgID(data)
		if sel%30 == 21 {
			return same(&MailPut{TxID: u32, To: key, ID: id, Part: part, Parts: parts, Data: d})
		}
		count := uint8(1 + (u32>>16)%MailFetchMax)
		return same(&Mail{From: key, ID: id, StoredMS: int64(u64), Tag: uint16(u64 >> 48), Index: uint8(u32>>24) % count, Count: count,
			Part: part, Parts: parts, Data: d})
	case 23:
		return same(&MailPutReply{TxID: u32, ID: MsgID(data), Status: MailStatus(u64)})
	case 24:
		return same(&MailNotice{Count: u32, Bytes: uint32(u64)})
	case 25:
		return same(&MailFetch{Max: uint8(u32), Skip: uint16(u64), Tag: uint16(u64 >> 16)})
	case 26, 27:
		var refs []MailRef
		for i := range int(u32 % (MaxMailAcks + 1)) {
			k := key
			k[0] ^= byte(i)
			refs = append(refs, MailRef{Peer: k, ID: MsgID(data)})
		}
		if sel%30 == 26 {
			return same(&MailAck{Refs: refs})
		}
		return same(&MailReceiptAck{Refs: refs})
	case 28:
		var rs []Receipt
		for i := range int(u32 % (MaxMailAcks + 1)) {
			k := key
			k[0] ^= byte(i)
			rs = append(rs, Receipt{MailRef: MailRef{Peer: k, ID: MsgID(data)}, Status: ReceiptStatus(u64 >> (i % 8))})
		}
		return same(&MailReceipt{Receipts: rs})
	default:
		in, back := peers(int(u32 % 10))
		more := u64&1 == 1
		return &WhoReply{TxID: u32, Room: s2, Total: uint32(u64 >> 32), More: more, Members: in},
			&WhoReply{TxID: u32, Room: clip(s2), Total: uint32(u64 >> 32), More: more, Members: back}
	}
}

// FuzzRoundtrip builds every message, and the two handshake payloads, from
// fuzzed field values and checks that each decodes to what was encoded
// (strings longer than their length prefix allows are cut, addresses are
// unmapped): the encoders' side of the fuzzing.
func FuzzRoundtrip(f *testing.F) {
	names := []string{"alice", "bob", "Zoë", "#lobby", ""}
	for _, c := range registerPayloadCases {
		names = append(names, c.p.Name)
	}
	for sel := range 30 {
		for i, raw := range [][]byte{mustUnhex(keyHex + sessHex + pathHex), mustUnhex(noiseHex), mustUnhex(sigHelloHex), nil} {
			f.Add(uint8(sel), uint32(0xcafe0001)+uint32(i), uint64(0x0102030405060708)<<i, raw, names[(sel+i)%len(names)], names[(sel+i+1)%len(names)])
		}
	}
	f.Add(uint8(12), uint32(0xffffffff), uint64(19), []byte{}, strings.Repeat("x", 300), "y")
	f.Fuzz(func(t *testing.T, sel uint8, u32 uint32, u64 uint64, raw []byte, s1, s2 string) {
		m, want := fuzzMessage(sel, u32, u64, raw, s1, s2)
		if outerOnly[m.Type()] || m.Type() == TypeError {
			enc := Marshal(m)
			got, err := Parse(enc)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("Parse(Marshal(%#v)) = %#v, %v; want %#v", m, got, err, want)
			}
		}
		if !outerOnly[m.Type()] {
			enc := AppendInner(nil, m)
			got, err := ParseInner(enc)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("ParseInner(AppendInner(%#v)) = %#v, %v; want %#v", m, got, err, want)
			}
		}

		var key Key
		copy(key[:], raw)
		p, err := ParseRegisterPayload(AppendRegisterPayload(nil, &RegisterPayload{Key: key, Name: s1}))
		if err != nil || p.Key != key || p.Name != clip(s1) {
			t.Fatalf("RegisterPayload %x %q: %#v, %v", key, s1, p, err)
		}

		addr, back := fuzzAddr(raw, u64)
		var sess SessionID
		copy(sess[:], raw)
		r := &HandshakeResult{Session: sess, Observed: addr, HeartbeatMS: u32, ExpiryMS: uint32(u64), PresenceSeq: uint32(u64 >> 32)}
		wantR := *r
		wantR.Observed = back
		if code := Code(u32 >> 16); code != 0 {
			r.Code, r.Message = code, s2
			wantR = HandshakeResult{Code: code, Message: clip(s2)}
		}
		gotR, err := ParseHandshakeResult(AppendHandshakeResult(nil, r))
		if err != nil || !reflect.DeepEqual(gotR, &wantR) {
			t.Fatalf("HandshakeResult %#v: %#v, %v; want %#v", r, gotR, err, wantR)
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
		// Through the rendezvous and back: a padded Signal from the
		// sender, a Signaled to the receiver.
		sig, err := ParseInner(append(AppendInner(nil, &Signal{Dst: testKey2, Body: enc}), make([]byte, SealedMinLen)...))
		if err != nil {
			t.Fatal(err)
		}
		m, err := ParseInner(AppendInner(nil, &Signaled{Src: testKey, Name: "bob", Body: sig.(*Signal).Body}))
		if err != nil {
			t.Fatal(err)
		}
		if s3, err := ParsePeerSignal(m.(*Signaled).Body); err != nil || !reflect.DeepEqual(s, s3) {
			t.Fatalf("via Signal and Signaled: %#v, %v", s3, err)
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
	for _, c := range registerPayloadCases {
		f.Add(c.p.Name)
	}
	for _, c := range innerCases {
		if p, ok := c.msg.(*Presence); ok {
			for _, ch := range p.Changes {
				f.Add(ch.Name)
			}
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
		// A valid name survives the one-byte-length string encoding, in
		// the registration and in what the rendezvous sends back.
		p, err := ParseRegisterPayload(AppendRegisterPayload(nil, &RegisterPayload{Key: testKey, Name: name}))
		if err != nil || p.Name != name {
			t.Fatalf("name %q does not survive RegisterPayload: %v", name, err)
		}
		m, err := ParseInner(AppendInner(nil, &Signaled{Src: testKey, Name: name}))
		if err != nil || m.(*Signaled).Name != name {
			t.Fatalf("name %q does not survive Signaled: %v", name, err)
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

// optionalTail reports whether messages of type t end in a field that an
// older sender leaves out (it parses as zero).
func optionalTail(t Type) bool { return t == TypeHeartbeatAck }

// FuzzParseFileFrame reads a file stream's frames as a receiver (and a
// sender) would: FileHashes against the block count of the last offer
// (MaxFileBlocks before any). What parses is within the limits and
// re-encodes to a prefix of its body.
func FuzzParseFileFrame(f *testing.F) {
	var all []byte
	for _, c := range fileFrameCases {
		b := mustUnhex(c.hex)
		f.Add(b)
		f.Add(b[:len(b)-1])
		f.Add(append(b[:len(b):len(b)], 0xff))
		all = append(all, b...)
	}
	f.Add(all)
	f.Add(AppendFileHashFrames(AppendFileOffer(nil, &FileOffer{Size: 3000 << 16, BlockSize: 1 << 16, Name: "x"}), make([][32]byte, 3000)))
	f.Add(mustUnhex("02 848002 00000000"))
	f.Fuzz(func(t *testing.T, b []byte) {
		blocks := MaxFileBlocks
		rest := b
		for len(rest) > 0 {
			k, body, n, err := ParseFrame(rest)
			if err != nil {
				return
			}
			rest = rest[n:]
			in := bytes.Clone(body)
			v, err := parseFileFrame(k, body, blocks)
			if !bytes.Equal(body, in) {
				t.Fatalf("parsing modified its input")
			}
			if err != nil {
				if !isSentinel(err) || !reflect.ValueOf(v).IsNil() {
					t.Fatalf("kind %d: %#v, %v", k, v, err)
				}
				continue
			}
			if v == nil {
				continue // a kind of a newer version
			}
			switch v := v.(type) {
			case *FileOffer:
				if err := ValidateFileLayout(v.Size, v.BlockSize); err != nil || len(v.Name) > MaxFileNameLen {
					t.Fatalf("accepted offer %#v: %v", v, err)
				}
				blocks = v.Blocks()
			case *FileHashes:
				if len(v.Hashes) == 0 || len(v.Hashes) > MaxFileHashes || int64(v.First)+int64(len(v.Hashes)) > int64(blocks) {
					t.Fatalf("accepted hashes %d+%d of %d blocks", v.First, len(v.Hashes), blocks)
				}
			case *FileAccept:
				if v.Offset < 0 || v.Offset > MaxFileSize {
					t.Fatalf("accepted offset %d", v.Offset)
				}
			case *FileReject:
				if len(v.Reason) > MaxFileReasonLen {
					t.Fatalf("accepted reason of %d bytes", len(v.Reason))
				}
			}
			enc := appendFileFrame(nil, v)
			k2, body2, n2, err := ParseFrame(enc)
			if err != nil || k2 != k || n2 != len(enc) || !bytes.HasPrefix(body, body2) {
				t.Fatalf("kind %d: %x re-encodes as %x (%v)", k, body, enc, err)
			}
			v2, err := parseFileFrame(k, body2, blocks)
			if err != nil || !reflect.DeepEqual(v, v2) {
				t.Fatalf("roundtrip: %#v then %#v, %v", v, v2, err)
			}
			if v3, err := parseFileFrame(k, body2[:len(body2)-1], blocks); err == nil {
				t.Fatalf("%x less its last byte parses as %#v", body2, v3)
			}
		}
	})
}

// FuzzFileLayout checks ChooseBlockSize and BlockCount for any size: the
// block size is the smallest that fits MaxFileBlocks, and the blocks
// cover the file with less than one block to spare.
func FuzzFileLayout(f *testing.F) {
	for _, s := range []int64{-1, 0, 1, MinFileBlockSize, 1 << 30, 1<<30 + 1, MaxFileSize, MaxFileSize + 1, 1<<63 - 1} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, size int64) {
		bs := ChooseBlockSize(size)
		err := ValidateFileLayout(size, bs)
		if (size >= 0 && size <= MaxFileSize) != (err == nil) {
			t.Fatalf("size %d, block size %d: %v", size, bs, err)
		}
		if bs > MinFileBlockSize && BlockCount(size, bs/2) <= MaxFileBlocks {
			t.Fatalf("size %d: block size %d, but %d would do", size, bs, bs/2)
		}
		if size <= 0 || size > MaxFileSize {
			if size <= 0 && BlockCount(size, bs) != 0 {
				t.Fatalf("size %d has %d blocks", size, BlockCount(size, bs))
			}
			return
		}
		n := int64(BlockCount(size, bs))
		if (n-1)*int64(bs) >= size || n*int64(bs) < size {
			t.Fatalf("size %d: %d blocks of %d", size, n, bs)
		}
	})
}
