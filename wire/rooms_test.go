package wire

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestRoomMessagesRoundTrip(t *testing.T) {
	k := Key{1, 2, 3}
	msgs := []Message{
		&RoomJoin{TxID: 1, Room: "#dev"},
		&RoomPart{TxID: 2, Room: "#dev"},
		&RoomReply{TxID: 3, Status: RoomFull, Room: "#Dev", Version: 9, Members: 256, Online: 12, Limit: 256},
		&RoomList{TxID: 4, After: "#a"},
		&RoomListReply{TxID: 5, More: true, Rooms: []RoomInfo{{Room: "#a", Version: 1, Members: 2, Online: 1}, {Room: "#b", Version: 3}}},
		&RoomListReply{TxID: 5},
		&RoomMembers{TxID: 6, Room: "#dev", After: "bob"},
		&RoomMembersReply{TxID: 7, Room: "#dev", Version: 4, Total: 2, Members: []RoomMember{{Key: k, Name: "ann", Online: true}, {Key: k, Name: "bob"}}},
		&RoomEvent{Seq: 1, Room: "#dev", Version: 5, Kind: RoomLeft, Reason: RoomLeftExpired, Key: k, Name: "bob"},
	}
	for _, m := range msgs {
		got, err := ParseInner(AppendInner(nil, m))
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Errorf("%v: got %#v, %v; want %#v", m.Type(), got, err, m)
		}
		// Every truncation is refused, never a panic.
		b := AppendInner(nil, m)
		for i := 1; i < len(b); i++ {
			if got, err := ParseInner(b[:i]); err == nil && i < len(b) {
				// A prefix may parse only if it holds the whole message
				// (trailing fields are optional only for Msg).
				t.Errorf("%v: %d of %d bytes parsed as %#v", m.Type(), i, len(b), got)
			}
		}
	}
}

func TestRoomMalformed(t *testing.T) {
	ev := AppendInner(nil, &RoomEvent{Room: "#r", Version: 1, Kind: RoomJoined, Name: "x"})
	ev[1+4+1+2+8] = 9 // kind
	if _, err := ParseInner(ev); !errors.Is(err, ErrMalformed) {
		t.Errorf("room event of kind 9: %v, want malformed", err)
	}
	b := AppendInner(nil, &RoomMembersReply{Room: "#r", Members: []RoomMember{{Name: "a"}}})
	b[1+4+3+8+4+1+1+KeyLen] = 2 // online flag
	if _, err := ParseInner(b); !errors.Is(err, ErrMalformed) {
		t.Errorf("online flag 2: %v, want malformed", err)
	}
}

func TestValidateRoom(t *testing.T) {
	for _, ok := range []string{"#dev", "#a", "#café", "#" + strings.Repeat("x", MaxRoomLen)} {
		if err := ValidateRoom(ok); err != nil {
			t.Errorf("ValidateRoom(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "#", "dev", "##dev", "#/x", "#a b", "#a\x1b", "#" + strings.Repeat("x", MaxRoomLen+1), "#\xff"} {
		if err := ValidateRoom(bad); err == nil {
			t.Errorf("ValidateRoom(%q) = nil", bad)
		}
	}
}

func TestMsgGroup(t *testing.T) {
	m := &Msg{ID: MsgID{1}, Seq: 2, Room: "#dev", Text: "hi", Group: MsgID{9, 9}}
	k, body, _, err := ParseFrame(AppendMsg(nil, m))
	if err != nil || k != FrameMsg {
		t.Fatal(k, err)
	}
	got, err := ParseMsg(body)
	if err != nil || !reflect.DeepEqual(got, m) || got.ShownID() != m.Group {
		t.Fatalf("got %#v, %v", got, err)
	}
	m.Group = MsgID{}
	_, body, _, _ = ParseFrame(AppendMsg(nil, m))
	if got, _ := ParseMsg(body); got.Group != (MsgID{}) || got.ShownID() != m.ID {
		t.Fatalf("1:1 message has group %v", got.Group)
	}
}

// TestHeartbeatAckWithoutRoomSeq: an older rendezvous's HeartbeatAck has
// no RoomSeq (nor AltSTUN); it parses as 0, and one cut inside
// PresenceSeq does not.
func TestHeartbeatAckWithoutRoomSeq(t *testing.T) {
	full := AppendInner(nil, &HeartbeatAck{PresenceSeq: 7, RoomSeq: 9, AltSTUN: 3479})
	old := full[:len(full)-6]
	m, err := ParseInner(old)
	if a, ok := m.(*HeartbeatAck); err != nil || !ok || a.PresenceSeq != 7 || a.RoomSeq != 0 || a.AltSTUN != 0 {
		t.Fatalf("old ack: %#v, %v", m, err)
	}
	if _, err := ParseInner(old[:len(old)-1]); !errors.Is(err, ErrTooShort) {
		t.Fatalf("ack cut in presence_seq: %v", err)
	}
}

// TestHeartbeatAckAltSTUN: a HeartbeatAck from a rendezvous before the
// second STUN socket (RoomSeq, no AltSTUN) parses with AltSTUN 0; one cut
// inside AltSTUN is malformed; a newer one with more fields after AltSTUN
// parses (what an older node does with ours: it stops after RoomSeq); and
// AltSTUN survives a round trip.
func TestHeartbeatAckAltSTUN(t *testing.T) {
	obs := netip.MustParseAddrPort("198.51.100.7:40000")
	want := HeartbeatAck{Observed: obs, PresenceSeq: 7, RoomSeq: 9, AltSTUN: 3479}
	full := AppendInner(nil, &want)
	m, err := ParseInner(full)
	if err != nil || *m.(*HeartbeatAck) != want {
		t.Fatalf("round trip: %#v, %v", m, err)
	}
	noAlt := full[:len(full)-2]
	m, err = ParseInner(noAlt)
	if err != nil || *m.(*HeartbeatAck) != (HeartbeatAck{Observed: obs, PresenceSeq: 7, RoomSeq: 9}) {
		t.Fatalf("ack without alt_stun: %#v, %v", m, err)
	}
	if _, err := ParseInner(full[:len(full)-1]); !errors.Is(err, ErrTooShort) {
		t.Fatalf("ack cut in alt_stun: %v", err)
	}
	longer := append(bytes.Clone(full), 0xde, 0xad, 0xbe, 0xef)
	m, err = ParseInner(longer)
	if err != nil || *m.(*HeartbeatAck) != want {
		t.Fatalf("ack with a newer tail: %#v, %v", m, err)
	}
}
