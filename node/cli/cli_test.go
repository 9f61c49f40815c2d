package cli

import (
	"testing"

	"natchat/node"
)

func TestHuman(t *testing.T) {
	for _, c := range []struct {
		e    node.Event
		want string
	}{
		{&node.Registered{Name: "bob", Public: "203.0.113.5:4000"}, "* registered as bob (public address 203.0.113.5:4000)"},
		{&node.PeerJoined{Name: "alice"}, "* alice is online"},
		{&node.PeerLeft{Name: "alice", Reason: "quit"}, "* alice left"},
		{&node.PeerLeft{Name: "alice", Reason: "timeout"}, "* alice went silent (timeout)"},
		{&node.Peers{}, "* nobody else is here"},
		{&node.Peers{Peers: []node.PeerInfo{
			{Name: "alice", Path: "direct", RTTMS: 12.5, Online: true},
			{Name: "carol", Path: "relay", Online: false},
		}}, "* peers:\n    alice                direct   12.5 ms\n    carol                relay   (not in your rooms)"},
		{&node.Sent{ID: "1", To: "alice", Text: "hi"}, ""},
		{&node.Delivered{ID: "1", To: "alice"}, "  ✓ delivered to alice"},
		{&node.Message{From: "alice", Text: "hello", Path: "direct"}, "<alice> hello"},
		{&node.PathChanged{Peer: "alice", Path: "direct", Remote: "198.51.100.2:5000", RTTMS: 3.2}, "* path to alice: direct via 198.51.100.2:5000 (3.2 ms)"},
		{&node.PathChanged{Peer: "alice", Path: "relay", Remote: "203.0.113.10:3478"}, "* path to alice: relay via 203.0.113.10:3478"},
		{&node.Error{Code: "unknown_peer", Message: "no one is registered as zed", To: "zed"}, "! to zed: no one is registered as zed"},
		{&node.Error{Code: "bad_command", Message: "usage: /msg NAME TEXT"}, "! usage: /msg NAME TEXT"},
	} {
		if got := Human(c.e); got != c.want {
			t.Errorf("Human(%T) =\n%q\nwant\n%q", c.e, got, c.want)
		}
	}
}
