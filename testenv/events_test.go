package testenv

import (
	"encoding/json"
	"testing"
	"time"
)

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func TestParseEvent(t *testing.T) {
	ts := "2025-01-02T03:04:05.123456789Z"
	want, _ := time.Parse(time.RFC3339Nano, ts)
	tests := []struct {
		line string
		want Event
	}{
		{`{"type":"registered","ts":"` + ts + `","name":"alice","public":"198.51.100.2:4000"}`,
			Event{Type: "registered", TS: want, Name: "alice", Public: "198.51.100.2:4000"}},
		{`{"type":"sent","ts":"` + ts + `","id":17,"to":"bob"}`, Event{Type: "sent", TS: want, ID: "17", To: "bob"}},
		{`{"type":"delivered","ts":"` + ts + `","id":"m-3","to":"bob"}`, Event{Type: "delivered", TS: want, ID: "m-3", To: "bob"}},
		{`{"type":"path","ts":"` + ts + `","peer":"bob","path":"direct","remote":"198.51.100.3:5000","rtt_ms":12.5}`,
			Event{Type: "path", TS: want, Peer: "bob", Path: "direct", Remote: "198.51.100.3:5000", RTTMs: 12.5}},
		{`{"type":"peer_left","ts":"` + ts + `","name":"bob","reason":"timeout","extra":true}`,
			Event{Type: "peer_left", TS: want, Name: "bob", Reason: "timeout"}},
		{`{"type":"error","ts":"` + ts + `","code":404,"message":"no"}`, Event{Type: "error", TS: want, Code: "404", Message: "no"}},
		{`{"type":"registered"}`, Event{Type: EventInvalid}},
		{`{"ts":"` + ts + `"}`, Event{Type: EventInvalid}},
		{`{"type":"x","ts":"yesterday"}`, Event{Type: EventInvalid}},
		{`not json`, Event{Type: EventInvalid}},
	}
	for _, tt := range tests {
		got := ParseEvent(tt.line)
		if (got.Err != nil) != (tt.want.Type == EventInvalid) {
			t.Errorf("ParseEvent(%s) err = %v", tt.line, got.Err)
		}
		got.Err, got.Raw = nil, ""
		if got.Type != tt.want.Type || !got.TS.Equal(tt.want.TS) || got.Name != tt.want.Name || got.Public != tt.want.Public ||
			got.ID != tt.want.ID || got.To != tt.want.To || got.Peer != tt.want.Peer || got.Path != tt.want.Path ||
			got.Remote != tt.want.Remote || got.RTTMs != tt.want.RTTMs || got.Reason != tt.want.Reason ||
			got.Code != tt.want.Code || got.Message != tt.want.Message {
			t.Errorf("ParseEvent(%s) = %+v, want %+v", tt.line, got, tt.want)
		}
	}
	ev := ParseEvent(`{"type":"peers","ts":"` + ts + `","peers":[{"name":"bob","path":"relay","rtt_ms":40}]}`)
	if len(ev.Peers) != 1 || ev.Peers[0] != (PeerInfo{Name: "bob", Path: "relay", RTTMs: 40}) {
		t.Errorf("peers = %+v", ev.Peers)
	}
}

func TestParseNATType(t *testing.T) {
	for _, nt := range NATTypes {
		got, err := ParseNATType(nt.String())
		if err != nil || got != nt {
			t.Errorf("ParseNATType(%q) = %v, %v", nt.String(), got, err)
		}
	}
	for s, want := range map[string]NATType{"sym": Symmetric, "port": PortRestricted, "full": FullCone, "address": AddressRestricted, "public": None} {
		if got, err := ParseNATType(s); err != nil || got != want {
			t.Errorf("ParseNATType(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseNATType("cone"); err == nil {
		t.Error("ParseNATType accepted cone")
	}
}
