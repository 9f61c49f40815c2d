package wire

import (
	"bytes"
	"errors"
	"testing"
)

func TestMailPartsBounds(t *testing.T) {
	id := MsgID{1}
	ok := func(part, parts uint8, n int) *MailPut {
		return &MailPut{TxID: 1, To: testKey, ID: id, Part: part, Parts: parts, Data: bytes.Repeat([]byte{'x'}, n)}
	}
	for _, c := range []struct {
		name string
		m    *MailPut
		err  error
	}{
		{"one part", ok(0, 1, 1), nil},
		{"last of most parts, full", ok(MaxMailParts-1, MaxMailParts, MailPartLen), nil},
		{"no parts", ok(0, 0, 1), ErrMalformed},
		{"too many parts", ok(0, MaxMailParts+1, 1), ErrMalformed},
		{"part past the count", ok(2, 2, 1), ErrMalformed},
		{"empty part", ok(0, 1, 0), ErrMalformed},
		{"part too long", ok(0, 1, MailPartLen+1), ErrMalformed},
	} {
		_, err := ParseInner(AppendInner(nil, c.m))
		if !errors.Is(err, c.err) && !(c.err == nil && err == nil) {
			t.Errorf("%s: MailPut err %v, want %v", c.name, err, c.err)
		}
		mail := &Mail{From: testKey, ID: id, Count: 1, Part: c.m.Part, Parts: c.m.Parts, Data: c.m.Data}
		_, err = ParseInner(AppendInner(nil, mail))
		if !errors.Is(err, c.err) && !(c.err == nil && err == nil) {
			t.Errorf("%s: Mail err %v, want %v", c.name, err, c.err)
		}
	}
	// A part's datagram fits 1200 bytes with the sealed overhead
	// (3 header + 8 session + 8 counter + 16 tag).
	if n := 3 + 8 + 8 + len(AppendInner(nil, ok(0, 1, MailPartLen))) + 16; n > 1200 {
		t.Errorf("a full MailPut is a %d-byte datagram", n)
	}
	if n := 3 + 8 + 8 + len(AppendInner(nil, &Mail{Tag: 0xffff, Index: MailFetchMax - 1, Count: MailFetchMax, Parts: 1, Data: make([]byte, MailPartLen)})) + 16; n > 1200 {
		t.Errorf("a full Mail is a %d-byte datagram", n)
	}
}

func TestMailAnswerBounds(t *testing.T) {
	for _, c := range []struct {
		index, count uint8
		err          error
	}{
		{0, 1, nil},
		{MailFetchMax - 1, MailFetchMax, nil},
		{0, 0, ErrMalformed},
		{0, MailFetchMax + 1, ErrMalformed},
		{1, 1, ErrMalformed},
		{3, 2, ErrMalformed},
	} {
		m := &Mail{From: testKey, ID: MsgID{1}, Tag: 7, Index: c.index, Count: c.count, Parts: 1, Data: []byte("x")}
		got, err := ParseInner(AppendInner(nil, m))
		if !errors.Is(err, c.err) && !(c.err == nil && err == nil) {
			t.Errorf("index %d of %d: err %v, want %v", c.index, c.count, err, c.err)
		}
		if err == nil {
			if g := got.(*Mail); g.Tag != 7 || g.Index != c.index || g.Count != c.count {
				t.Errorf("index %d of %d: parsed %+v", c.index, c.count, g)
			}
		}
	}
}

func TestMailRefsBounds(t *testing.T) {
	refs := make([]MailRef, MaxMailAcks+5)
	got, err := ParseInner(AppendInner(nil, &MailAck{Refs: refs}))
	if err != nil || len(got.(*MailAck).Refs) != MaxMailAcks {
		t.Fatalf("MailAck with %d refs: %v, %d back; want %d (the rest cut)", len(refs), err, len(got.(*MailAck).Refs), MaxMailAcks)
	}
	b := append([]byte{byte(TypeMailAck), MaxMailAcks + 1}, make([]byte, (MaxMailAcks+1)*40)...)
	if _, err := ParseInner(b); !errors.Is(err, ErrMalformed) {
		t.Errorf("MailAck of %d refs: %v, want malformed", MaxMailAcks+1, err)
	}
	b = append([]byte{byte(TypeMailReceipt), MaxMailAcks + 1}, make([]byte, (MaxMailAcks+1)*41)...)
	if _, err := ParseInner(b); !errors.Is(err, ErrMalformed) {
		t.Errorf("MailReceipt of %d: %v, want malformed", MaxMailAcks+1, err)
	}
	if _, err := ParseInner([]byte{byte(TypeMailReceiptAck), 2, 0}); !errors.Is(err, ErrTooShort) {
		t.Errorf("truncated MailReceiptAck: %v, want too short", err)
	}
}

func TestMailParts(t *testing.T) {
	for _, n := range []int{1, MailPartLen - 1, MailPartLen, MailPartLen + 1, MaxMailBlob} {
		blob := bytes.Repeat([]byte{7}, n)
		parts := MailParts(blob)
		if want := (n + MailPartLen - 1) / MailPartLen; len(parts) != want {
			t.Errorf("%d bytes: %d parts, want %d", n, len(parts), want)
		}
		if got := bytes.Join(parts, nil); !bytes.Equal(got, blob) {
			t.Errorf("%d bytes: parts do not join back", n)
		}
	}
	if len(MailParts(make([]byte, MaxMailBlob))) != MaxMailParts {
		t.Error("the largest blob is not MaxMailParts parts")
	}
	// The largest message fits the largest blob: a text of MaxTextLen
	// with the Msg header, a 24-byte nonce and a 16-byte tag.
	msg := AppendMsg(nil, &Msg{Text: string(make([]byte, MaxTextLen)), Room: string(make([]byte, 255))})
	if n := len(msg) + 24 + 16; n > MaxMailBlob {
		t.Errorf("the largest sealed message is %d bytes, over MaxMailBlob %d", n, MaxMailBlob)
	}
}
