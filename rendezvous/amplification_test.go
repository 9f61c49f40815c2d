package rendezvous_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"natchat/rendezvous"
	"natchat/wire"
)

// TestNoAmplificationFromUnvalidatedSource plays a registered attacker who
// sends, with its own session and a victim's source address, every kind of
// request there is: the victim must never receive more bytes than were
// sent in its name, in total and per request, however big the answers to
// the attacker would be at its own address. (STUN is not among them: a
// Binding response is larger than the request, and the per-source rate
// bounds it instead; see stun_test.go.)
func TestNoAmplificationFromUnvalidatedSource(t *testing.T) {
	h := newHarness(t, func(o *rendezvous.Options) { o.SourceRate = -1; o.LookupRate = -1; o.IntroRate = -1 })
	m := newNode(t, "mallory", "198.51.100.66:6666")
	h.mustRegister(m)
	// Many peers with long names: mallory's snapshot is several datagrams.
	var peers []*node
	for i := range 30 {
		p := newNode(t, fmt.Sprintf("%s%02d", strings.Repeat("p", 30), i), fmt.Sprintf("10.%d.0.1:1000", i))
		h.register(p)
		peers = append(peers, p)
	}
	h.flushInto(m)
	victim := netip.MustParseAddrPort("203.0.113.200:53")
	peer := peers[0]
	rng := rand.New(rand.NewPCG(8, 9))

	seal := func(msg wire.Message) func() []byte { return func() []byte { return m.seal(msg) } }
	short := func(msg wire.Message) func() []byte { return func() []byte { return m.sealShort(msg) } }
	raw := func(b []byte) func() []byte { return func() []byte { return b } }
	garbage := func(n int, header bool) func() []byte {
		return func() []byte {
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			if header && n >= wire.HeaderLen {
				b[0], b[1] = wire.Magic, wire.Version
			}
			return b
		}
	}
	var captured [][]byte // mallory's datagrams from its own address, replayed
	for _, msg := range []wire.Message{&wire.Heartbeat{}, &wire.PeersRequest{}} {
		d := m.seal(msg)
		m.msgs(t, h.handle(d, m.addr))
		captured = append(captured, d)
	}
	m.rv.Server = h.key.Public
	zeroCookie, err := m.rv.Handshake(wire.Cookie{}, m.name)
	if err != nil {
		t.Fatal(err)
	}
	ownCookie, err := m.rv.Handshake(h.cookie(m.addr), m.name) // a good cookie, for mallory's address
	if err != nil {
		t.Fatal(err)
	}
	unknownInner := func() []byte {
		pt := make([]byte, 64)
		pt[0] = 0x7f
		return m.rv.Keys.Seal(nil, m.session, pt)
	}

	requests := []struct {
		name string
		make func() []byte
	}{
		{"hello", raw(helloBytes())},
		{"hello padded", raw(append(helloBytes(), make([]byte, 1000)...))},
		{"handshake, zero cookie", raw(zeroCookie)},
		{"handshake, another address's good cookie", raw(ownCookie)},
		{"handshake, mallory's accepted one", raw(m.hs)},
		{"handshake, garbage noise", raw(wire.Marshal(&wire.Handshake{Noise: make([]byte, 48)}))},
		{"garbage", garbage(100, false)},
		{"garbage with our header", garbage(100, true)},
		{"garbage with our header, short", garbage(12, true)},
		{"garbage with our header, long", garbage(1400, true)},
		{"other version", raw([]byte{wire.Magic, 1, byte(wire.TypeSealed), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})},
		{"sealed, unknown session", raw(wire.Marshal(&wire.Sealed{Session: wire.SessionID{9}, Box: make([]byte, 60)}))},
		{"relay, unknown session", raw(wire.Marshal(&wire.Relay{Session: wire.SessionID{9}, Dst: peer.key, Payload: make([]byte, 60)}))},
		{"relay, empty", func() []byte { return m.rv.Relay(peer.key, nil) }},
		{"relay, 100 bytes", func() []byte { return m.rv.Relay(peer.key, make([]byte, 100)) }},
		{"relay, 1200 bytes", func() []byte { return m.rv.Relay(peer.key, make([]byte, 1200)) }},
		{"replayed heartbeat", raw(captured[0])},
		{"replayed peers request", raw(captured[1])},
		{"sealed unknown inner type", unknownInner},
	}
	inner := []wire.Message{
		&wire.Heartbeat{},
		&wire.PeersRequest{},
		&wire.Lookup{TxID: 1, Name: peer.name},
		&wire.Lookup{TxID: 2, Key: peer.key},
		&wire.Lookup{TxID: 3, Name: "nobody"},
		&wire.Signal{Dst: peer.key, Body: make([]byte, 200)},
		&wire.Signal{Dst: wire.Key{1}, Body: []byte{1}},
		&wire.Who{TxID: 4, Room: "#lobby"},
		&wire.Who{TxID: 5, Room: "#elsewhere"},
		&wire.PathResponse{Data: [8]byte{1, 2, 3}},
		&wire.MailPut{TxID: 1, To: peer.key, ID: wire.MsgID{1}, Parts: 1, Data: make([]byte, 100)},
		&wire.MailPut{TxID: 2, To: wire.Key{1}, ID: wire.MsgID{2}, Parts: 1, Data: []byte{1}},
		&wire.MailPut{TxID: 3, To: peer.key, ID: wire.MsgID{3}, Parts: 2, Data: []byte{1}},
		&wire.MailFetch{Max: 8},
		&wire.MailAck{Refs: []wire.MailRef{{Peer: peer.key}}},
		&wire.MailReceiptAck{Refs: []wire.MailRef{{Peer: peer.key}}},
		// Types the rendezvous sends, sealed by a node.
		&wire.HeartbeatAck{Observed: victim},
		&wire.Presence{Seq: 1},
		&wire.Peers{Parts: 1},
		&wire.LookupReply{TxID: 1},
		&wire.Signaled{Src: peer.key},
		&wire.PathChallenge{},
		&wire.WhoReply{Room: "#lobby"},
		&wire.Error{Code: wire.CodeMalformed},
		&wire.MailPutReply{TxID: 1},
		&wire.MailNotice{Count: 1},
		&wire.Mail{From: peer.key, Count: 1, Parts: 1, Data: []byte{1}},
		&wire.MailReceipt{Receipts: []wire.Receipt{{MailRef: wire.MailRef{Peer: peer.key}}}},
	}
	for _, msg := range inner {
		requests = append(requests,
			struct {
				name string
				make func() []byte
			}{"sealed " + msg.Type().String(), seal(msg)},
			struct {
				name string
				make func() []byte
			}{"sealed unpadded " + msg.Type().String(), short(msg)})
	}
	// The Leave last: it ends mallory's session.
	requests = append(requests, struct {
		name string
		make func() []byte
	}{"sealed leave", seal(&wire.Leave{})})

	in, sent := 0, 0
	for _, r := range requests {
		for _, step := range []time.Duration{time.Second, 0, 0} { // a fresh challenge budget, then none
			h.clock.Step(step)
			req := r.make()
			out := h.handle(req, victim)
			out = append(out, h.flush()...)
			n := bytesTo(out, victim)
			in += len(req)
			sent += n
			if n > len(req) {
				t.Errorf("%s: %d bytes to the victim for %d", r.name, n, len(req))
			}
			if sent > in {
				t.Fatalf("after %s: %d bytes to the victim for %d received from it", r.name, sent, in)
			}
			if r.name == "sealed leave" {
				break
			}
		}
	}
	t.Logf("%d bytes received from the victim's address, %d sent to it", in, sent)
	if sent == 0 {
		t.Error("no challenge was ever sent: the test did not exercise the validation path")
	}
	// The victim's address was never validated: mallory's session never
	// moved there (and it left by its own, authentic, Leave).
	if got := h.metric("natchat_rendezvous_roams_total"); got != 0 {
		t.Errorf("roams %v, want 0", got)
	}
	if got := h.s.Online(); slices.Contains(got, "mallory") || len(got) != len(peers) {
		t.Errorf("online %d nodes, mallory among them: %v", len(got), slices.Contains(got, "mallory"))
	}
}
