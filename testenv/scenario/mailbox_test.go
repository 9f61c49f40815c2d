package scenario

import (
	"fmt"
	"testing"

	"natchat/headless"
	"natchat/testenv"
)

// TestMailboxBehindNAT: a direct pair (port-restricted on both sides) and
// a relayed pair (-no-direct) talk; bob, behind his NAT, quits; alice
// writes to him and each message is stored; bob comes back from behind
// the same NAT, is told of his mail and shown every message once, in
// order, from the mailbox; alice gets every receipt; and the pair talks
// live again.
func TestMailboxBehindNAT(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		path string
	}{
		{"direct", nil, "direct"},
		{"relayed", []string{"-no-direct"}, "relay"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, 0, 0)
			ha, hb, _, _ := portPair(t, w.lab, false)
			start := func(h *testenv.Host) *testenv.Node {
				n, err := w.lab.StartNode(h, testenv.NodeConfig{Bin: bins.Node, RV: w.rv.Addr, Heartbeat: heartbeat, Args: tc.args})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					if t.Failed() {
						t.Log(n.Dump())
					}
				})
				if _, err := n.Wait(waitShort, testenv.Registered()); err != nil {
					t.Fatal(err)
				}
				return n
			}
			a, b := start(ha), start(hb)
			if _, err := a.Wait(waitShort, testenv.PeerJoined(b.Name)); err != nil {
				t.Fatal(err)
			}
			converse(t, a, b, 2, "before", sendWait)
			if tc.path == "direct" {
				waitDirectBoth(t, a, b, nil, waitDirect)
			}

			mark := a.Mark()
			if err := b.Quit(waitShort); err != nil {
				t.Fatal(err)
			}
			if _, err := a.WaitFrom(mark, waitShort, testenv.PeerLeft(b.Name, "")); err != nil {
				t.Fatal(err)
			}
			var ids, texts []string
			for i := range 5 {
				text := fmt.Sprintf("while away #%d", i)
				sent, err := a.Send(b.Name, text)
				if err != nil {
					t.Fatal(err)
				}
				ids, texts = append(ids, sent.ID), append(texts, text)
			}
			for _, id := range ids {
				if _, err := a.WaitFrom(mark, sendWait, testenv.Match{Desc: "stored " + id, F: func(e testenv.Event) bool {
					return e.Type == "stored" && e.ID == id
				}}); err != nil {
					t.Fatal(err)
				}
			}

			b = start(hb) // the same name and identity, behind the same NAT
			for i, id := range ids {
				e, err := b.Wait(sendWait, testenv.Match{Desc: "message " + id, F: func(e testenv.Event) bool {
					return e.Type == headless.TypeMessage && e.ID == id
				}})
				if err != nil {
					t.Fatal(err)
				}
				if e.Text != texts[i] || e.Via != "mailbox" {
					t.Errorf("message %d: %q via %q, want %q via mailbox", i, e.Text, e.Via, texts[i])
				}
			}
			var shown []string
			for _, e := range b.Events() {
				if e.Type == headless.TypeMessage && e.From == a.Name && e.Via == "mailbox" {
					shown = append(shown, e.ID)
				}
			}
			if fmt.Sprint(shown) != fmt.Sprint(ids) {
				t.Errorf("shown from the mailbox %v, want %v once each in order", shown, ids)
			}
			for _, id := range ids {
				if _, err := a.WaitFrom(mark, sendWait, testenv.Delivered(id)); err != nil {
					t.Fatal(err)
				}
			}
			converse(t, a, b, 2, "after", sendWait)
			if tc.path == "direct" {
				waitDirectBoth(t, a, b, map[*testenv.Node]int{a: mark}, waitDirect)
			}
		})
	}
}
