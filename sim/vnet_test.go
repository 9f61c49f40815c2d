package sim

import (
	"bufio"
	"fmt"
	"net"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"natchat/internal/vnetlab"
	"natchat/node/api"
	"natchat/rendezvous"
	"natchat/wire"
)

// The vnet tests run the whole stack (rendezvous, nodes, QUIC, punch,
// pion/ice, vnet) in testing/synctest bubbles (vnetlab.Bubble): a 30 ms WAN
// or a 25 s wait costs no wall time, and a goroutine left behind fails the
// test. SIM_REALTIME=1 runs them on the real clock instead, to tell a bubble
// artefact from a bug.
const realtimeEnv = "SIM_REALTIME"

func bubble(t *testing.T, f func(*testing.T)) { vnetlab.Bubble(t, realtimeEnv, f) }

// rvIP is the rendezvous's public address in every World.
const rvIP = "1.2.3.4"

// chatN is how many messages each side sends per cell.
const chatN = 10

// relayHold is how long a relay-only pair is watched for a direct path,
// from its first message: ICE fails its first attempt after about 5 s
// (DisconnectedTimeout + FailedTimeout) and retries after 1, 2, 4 s...,
// so this covers the first attempt and at least three retries.
const relayHold = 25 * time.Second

// TestChatAcrossNATs registers two nodes behind every pair of NATs, on a
// WAN with and without delay and loss (the loss hits node↔rendezvous
// traffic too), and has them chat both ways at once: every message arrives
// exactly once, in order, intact, every Sent gets its Delivered, and the
// pair ends on the path the NATs allow (vnetlab.Pairs): direct where ICE
// can punch through them, the relay otherwise.
func TestChatAcrossNATs(t *testing.T) {
	imps := vnetlab.Impairments()
	if testing.Short() {
		imps = imps[3:] // the hardest one: 30 ms and 10 % loss
	}
	vnetlab.RunMatrix(t, imps, realtimeEnv, chatCell)
}

// pair is a World with a rendezvous and two nodes, alice and bob.
type pair struct {
	w    *vnetlab.World
	rv   *Rendezvous
	a, b *Node
	pubA string // the IP the WAN sees for alice (her NAT's, or her own)
	pubB string
}

func newPair(t *testing.T, np vnetlab.Pair, imp vnetlab.Impairment, seed uint64) *pair {
	t.Helper()
	return newPairWith(t, np, imp, seed, nil, nil)
}

// newPairWith is newPair with the rendezvous's options and each node's
// config edited (nil: as they are).
func newPairWith(t *testing.T, np vnetlab.Pair, imp vnetlab.Impairment, seed uint64, rv func(*rendezvous.Options), node func(*NodeConfig)) *pair {
	t.Helper()
	w := vnetlab.NewWorld(t, imp, seed)
	rvh := w.PublicHost(rvIP)
	la, lb := w.LANs(np)
	ha, hb := la.Host(), lb.Host()
	w.Start()
	p := &pair{w: w, pubA: la.PublicIP, pubB: lb.PublicIP}
	if p.pubA == "" {
		p.pubA = ha.IP
	}
	if p.pubB == "" {
		p.pubB = hb.IP
	}
	p.rv = StartRendezvous(t, rvh.Listen(3478), rv)
	ca := NodeConfig{Name: "alice", Conn: ha.Listen(0), RV: p.rv.Addr, Net: ha.Net}
	cb := NodeConfig{Name: "bob", Conn: hb.Listen(0), RV: p.rv.Addr, Net: hb.Net}
	if node != nil {
		node(&ca)
		node(&cb)
	}
	p.a = StartNode(t, ca)
	p.b = StartNode(t, cb)
	p.a.WaitRegistered(30 * time.Second)
	p.b.WaitRegistered(30 * time.Second)
	// The WAN goes dark before the nodes stop (cleanups run last first),
	// so neither hears of the other's leave. A leave heard while ICE is
	// gathering closes that peer's agent on the side, which can wait for
	// pion's STUN timeout; if the node stops meanwhile, Manager.Close waits
	// on the same Peer's sync.Once, a mutex wait the bubble does not count
	// as durable, so its fake clock would never reach the timeout.
	t.Cleanup(func() { w.Cut(func(_, _ *net.UDPAddr, _ []byte) bool { return true }) })
	return p
}

func chatCell(t *testing.T, np vnetlab.Pair, imp vnetlab.Impairment, seed uint64) {
	p := newPair(t, np, imp, seed)
	a, b := p.a, p.b
	t0 := time.Now()
	toBob := sendN(a, "bob", 0, chatN)
	toAlice := sendN(b, "alice", 0, chatN)
	waitDelivered(t, a, toBob, 60*time.Second)
	waitDelivered(t, b, toAlice, 60*time.Second)
	delivered := time.Since(t0)
	checkChat(t, a, b, toBob)
	checkChat(t, b, a, toAlice)

	if !np.Direct {
		if d := relayHold - time.Since(t0); d > 0 {
			hold(d)
		}
		for _, n := range []*Node{a, b} {
			peer := p.peerOf(n)
			for _, e := range n.Events() {
				if pc, ok := e.(*api.PathChanged); ok && names(pc, peer) && pc.Path == "direct" {
					t.Errorf("%s: direct path to %s (%s) where only the relay can work: %s", n.Name, peer.Name, pc.Remote, np.Why)
				}
			}
			if last := lastPath(n, peer); last == nil || last.Path != "relay" {
				t.Errorf("%s: last path to %s is %+v, want relay", n.Name, peer.Name, last)
			}
		}
		t.Logf("relay (as expected: %s); %d+%d messages delivered in %v; no direct path in %v; %s",
			np.Why, chatN, chatN, delivered, relayHold, p.stats())
		return
	}

	var remotes []string
	for _, n := range []*Node{a, b} {
		pc := waitLastPath(t, n, p.peerOf(n), "direct", 30*time.Second)
		want := p.pubB
		if n == b {
			want = p.pubA
		}
		host, _, _ := net.SplitHostPort(pc.Remote)
		switch {
		case np.SameRouter && !strings.HasPrefix(host, "10.0."):
			t.Errorf("%s: same router: direct path via %s, want a LAN (host) candidate", n.Name, pc.Remote)
		case !np.SameRouter && host != want:
			t.Errorf("%s: direct path via %s, want the peer's public IP %s", n.Name, pc.Remote, want)
		}
		remotes = append(remotes, pc.Remote)
	}
	t.Logf("direct (%s) via %s / %s after %v; %d+%d messages delivered in %v (paths at receipt %s); %s",
		np.Why, remotes[0], remotes[1], time.Since(t0), chatN, chatN, delivered,
		receiptPaths(a, b), p.stats())
}

// TestDirectPathCutMidChat black-holes a direct path in the middle of a
// chat (node↔node WAN traffic dropped, node↔rendezvous kept): the link
// falls back to the relay within 5 s, every message sent before, during
// and after the cut arrives exactly once in order; when the network heals,
// punch's retry brings the direct path back.
func TestDirectPathCutMidChat(t *testing.T) {
	for i, imp := range []vnetlab.Impairment{
		{Delay: 30 * time.Millisecond},
		{Delay: 30 * time.Millisecond, Loss: 0.10},
	} {
		t.Run(imp.String(), func(t *testing.T) {
			t.Parallel()
			bubble(t, func(t *testing.T) { cutCell(t, imp, uint64(100+i)) })
		})
	}
}

func cutCell(t *testing.T, imp vnetlab.Impairment, seed uint64) {
	p := newPair(t, vnetlab.Pair{A: vnetlab.PortRestricted, B: vnetlab.PortRestricted}, imp, seed)
	a, b := p.a, p.b
	const batch = 5
	// Before: a direct path, proven by a chat.
	toBob := sendN(a, "bob", 0, batch)
	toAlice := sendN(b, "alice", 0, batch)
	waitDelivered(t, a, toBob, 60*time.Second)
	waitDelivered(t, b, toAlice, 60*time.Second)
	for _, n := range []*Node{a, b} {
		waitLastPath(t, n, p.peerOf(n), "direct", 30*time.Second)
	}

	// The cut, with messages sent at once into the dying direct path.
	markA, markB := len(a.Events()), len(b.Events())
	p.w.Cut(func(src, dst *net.UDPAddr, _ []byte) bool {
		return src.IP.String() != rvIP && dst.IP.String() != rvIP
	})
	tCut := time.Now()
	toBob = append(toBob, sendN(a, "bob", batch, batch)...)
	toAlice = append(toAlice, sendN(b, "alice", batch, batch)...)
	relayA := waitPath(a, b, markA, "relay", 5*time.Second)
	relayB := waitPath(b, a, markB, "relay", 5*time.Second)
	t.Logf("cut: relay after %v (alice) and %v (bob)", relayA.TS.Sub(tCut), relayB.TS.Sub(tCut))

	// On the relay: more messages; everything so far arrives.
	toBob = append(toBob, sendN(a, "bob", 2*batch, batch)...)
	toAlice = append(toAlice, sendN(b, "alice", 2*batch, batch)...)
	waitDelivered(t, a, toBob, 60*time.Second)
	waitDelivered(t, b, toAlice, 60*time.Second)
	t.Logf("cut: %d+%d messages delivered %v after the cut", 3*batch, 3*batch, time.Since(tCut))
	// Keep the path cut while ICE retries fail (first retry ~1 s after
	// the failure, the next ~2 s later).
	if d := 10*time.Second - time.Since(tCut); d > 0 {
		hold(d)
	}
	for _, n := range []*Node{a, b} {
		if pc := lastPath(n, p.peerOf(n)); pc == nil || pc.Path != "relay" {
			t.Fatalf("%s: path %+v while the direct path is cut, want relay", n.Name, pc)
		}
	}

	// Heal: the retry finds the direct path again.
	markA, markB = len(a.Events()), len(b.Events())
	p.w.Cut(nil)
	tHeal := time.Now()
	directA := waitPath(a, b, markA, "direct", 30*time.Second)
	directB := waitPath(b, a, markB, "direct", 30*time.Second)
	t.Logf("healed: direct again after %v (alice, %s) and %v (bob, %s)",
		directA.TS.Sub(tHeal), directA.Remote, directB.TS.Sub(tHeal), directB.Remote)
	toBob = append(toBob, sendN(a, "bob", 3*batch, batch)...)
	toAlice = append(toAlice, sendN(b, "alice", 3*batch, batch)...)
	waitDelivered(t, a, toBob, 60*time.Second)
	waitDelivered(t, b, toAlice, 60*time.Second)
	for _, n := range []*Node{a, b} {
		waitLastPath(t, n, p.peerOf(n), "direct", 30*time.Second)
	}
	checkChat(t, a, b, toBob)
	checkChat(t, b, a, toAlice)
	t.Logf("%d+%d messages, paths at receipt %s; %s", len(toBob), len(toAlice), receiptPaths(a, b), p.stats())
}

// A node that answers a peer before it knows the peer's name still names
// the peer in its path events, as docs/HEADLESS.md promises ("peer":
// "bob"). Here alice learns bob's name only when his chat stream arrives:
// no room (no presence), no punching (no signals, which carry names).
func TestPathEventNamesPeer(t *testing.T) {
	bubble(t, func(t *testing.T) {
		w := vnetlab.NewWorld(t, vnetlab.Impairment{Delay: 30 * time.Millisecond}, 5)
		rvh := w.PublicHost(rvIP)
		lan := w.LAN(vnetlab.NoNAT)
		ha, hb := lan.Host(), lan.Host()
		w.Start()
		rv := StartRendezvous(t, rvh.Listen(3478), func(o *rendezvous.Options) { o.DefaultRoom = "" })
		a := StartNode(t, NodeConfig{Name: "alice", Conn: ha.Listen(0), RV: rv.Addr, Net: ha.Net, NoDirect: true})
		b := StartNode(t, NodeConfig{Name: "bob", Conn: hb.Listen(0), RV: rv.Addr, Net: hb.Net, NoDirect: true})
		a.WaitRegistered(10 * time.Second)
		b.WaitRegistered(10 * time.Second)
		msgs := sendN(b, "alice", 0, 3)
		waitDelivered(t, b, msgs, 30*time.Second)
		checkChat(t, b, a, msgs)
		var peers []string
		for _, e := range a.Events() {
			if pc, ok := e.(*api.PathChanged); ok {
				peers = append(peers, pc.Peer+":"+pc.Path)
			}
		}
		if len(peers) == 0 {
			t.Fatal("alice: no path event for bob")
		}
		if peers[len(peers)-1] != "bob:relay" {
			t.Errorf("alice's path events for bob are %q, want the last one bob:relay (named, not %q, his key prefix)",
				peers, b.Key().Short())
		}
	})
}

// A peer that leaves while this node's ICE attempt to it is gathering (its
// STUN query to the rendezvous unanswered) must not stall the node: the
// read loop goes on serving everyone else.
func TestPeerLeavesWhileGathering(t *testing.T) {
	bubble(t, func(t *testing.T) {
		w := vnetlab.NewWorld(t, vnetlab.Impairment{Delay: 30 * time.Millisecond}, 6)
		rvh := w.PublicHost(rvIP)
		lan := w.LAN(vnetlab.NoNAT)
		ha, hb, hc := lan.Host(), lan.Host(), lan.Host()
		w.Start()
		// Alice's STUN queries go unanswered, as when a response is lost:
		// a gathering she starts waits for an answer (pion gives up after
		// 5 s).
		w.Cut(func(src, dst *net.UDPAddr, payload []byte) bool {
			return src.IP.String() == rvIP && dst.IP.String() == ha.IP && wire.IsSTUN(payload)
		})
		rv := StartRendezvous(t, rvh.Listen(3478), nil)
		a := StartNode(t, NodeConfig{Name: "alice", Conn: ha.Listen(0), RV: rv.Addr, Net: ha.Net})
		b := StartNode(t, NodeConfig{Name: "bob", Conn: hb.Listen(0), RV: rv.Addr, Net: hb.Net})
		c := StartNode(t, NodeConfig{Name: "carol", Conn: hc.Listen(0), RV: rv.Addr, Net: hc.Net})
		for _, n := range []*Node{a, b, c} {
			n.WaitRegistered(10 * time.Second)
		}
		t.Cleanup(func() { w.Cut(func(_, _ *net.UDPAddr, _ []byte) bool { return true }) })

		// Bob talks to alice (she starts punching to him), then quits.
		waitDelivered(t, b, sendN(b, "alice", 0, 1), 10*time.Second)
		mark := len(a.Events())
		b.Stop()
		a.Wait(mark, 5*time.Second, "bob's leave", func(e api.Event) bool {
			l, ok := e.(*api.PeerLeft)
			return ok && l.Name == "bob"
		})
		// STUN answers again: the next query's response can end the
		// gathering at once, if alice can still read it.
		w.Cut(nil)
		// Carol talks to alice: a few round trips.
		t0 := time.Now()
		msgs := sendN(c, "alice", 0, 1)
		waitDelivered(t, c, msgs, 30*time.Second)
		took := time.Since(t0)
		checkChat(t, c, a, msgs)
		if took > 2*time.Second {
			t.Errorf("carol's message to alice took %v after bob left (normally well under 1 s): "+
				"alice's read loop stalled on the teardown of her ICE agent for bob", took)
			return
		}
		t.Logf("carol's message delivered %v after bob left", took)
	})
}

func (p *pair) peerOf(n *Node) *Node {
	if n == p.a {
		return p.b
	}
	return p.a
}

// sentMsg is a message a test sent.
type sentMsg struct{ id, text string }

// msgText is message i of a chat: numbered, of sizes from a few bytes to
// a few packets (up to ~6 KB), so that a message can span QUIC packets.
func msgText(from, to string, i int) string {
	head := fmt.Sprintf("%s→%s #%02d ", from, to, i)
	pad := make([]byte, (i*1237)%6000)
	for j := range pad {
		pad[j] = 'a' + byte((i+j)%26)
	}
	return head + string(pad)
}

// sendN sends messages first..first+n-1 from n to peer, one after
// another, without waiting for receipts.
func sendN(n *Node, peer string, first, count int) []sentMsg {
	n.tb.Helper()
	var out []sentMsg
	for i := first; i < first+count; i++ {
		text := msgText(n.Name, peer, i)
		id := n.Send(peer, text)
		if id == "" {
			n.tb.Fatalf("%s: Send %d to %s refused", n.Name, i, peer)
		}
		out = append(out, sentMsg{id: id, text: text})
	}
	return out
}

// waitDelivered waits for the receipt of every message in msgs.
func waitDelivered(t *testing.T, n *Node, msgs []sentMsg, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for i, m := range msgs {
		n.Wait(0, time.Until(deadline), fmt.Sprintf("receipt of message %d of %d (%s)", i+1, len(msgs), m.id),
			func(e api.Event) bool {
				d, ok := e.(*api.Delivered)
				return ok && d.ID == m.id
			})
	}
}

// checkChat checks that to got exactly msgs from from, once each, in
// order and intact, and that from saw one Sent and one Delivered, and no
// Error, for each.
func checkChat(t *testing.T, from, to *Node, msgs []sentMsg) {
	t.Helper()
	var got []*api.Message
	for _, e := range to.Events() {
		if m, ok := e.(*api.Message); ok && m.From == from.Name {
			got = append(got, m)
		}
	}
	if len(got) != len(msgs) {
		t.Errorf("%s got %d messages from %s, want %d", to.Name, len(got), from.Name, len(msgs))
	}
	for i := range min(len(got), len(msgs)) {
		if got[i].ID != msgs[i].id || got[i].Text != msgs[i].text {
			t.Errorf("%s: message %d from %s is %s %.20q…, want %s %.20q…",
				to.Name, i, from.Name, got[i].ID, got[i].Text, msgs[i].id, msgs[i].text)
		}
	}
	sent, delivered := map[string]int{}, map[string]int{}
	for _, e := range from.Events() {
		switch e := e.(type) {
		case *api.Sent:
			sent[e.ID]++
		case *api.Delivered:
			delivered[e.ID]++
		case *api.Error:
			t.Errorf("%s: error %s: %s (id %q)", from.Name, e.Code, e.Message, e.ID)
		}
	}
	for i, m := range msgs {
		if sent[m.id] != 1 || delivered[m.id] != 1 {
			t.Errorf("%s: message %d (%s): %d Sent, %d Delivered, want 1 and 1", from.Name, i, m.id, sent[m.id], delivered[m.id])
		}
	}
}

// names reports whether pc is about peer.
func names(pc *api.PathChanged, peer *Node) bool {
	return pc.Peer == peer.Name
}

// lastPath returns n's latest path event for peer, or nil.
func lastPath(n, peer *Node) *api.PathChanged {
	var last *api.PathChanged
	for _, e := range n.Events() {
		if pc, ok := e.(*api.PathChanged); ok && names(pc, peer) {
			last = pc
		}
	}
	return last
}

// waitPath waits for a path event of n for peer, at index from or later,
// with the given path.
func waitPath(n, peer *Node, from int, path string, within time.Duration) *api.PathChanged {
	n.tb.Helper()
	e, _ := n.Wait(from, within, fmt.Sprintf("path %s to %s", path, peer.Name), func(e api.Event) bool {
		pc, ok := e.(*api.PathChanged)
		return ok && names(pc, peer) && pc.Path == path
	})
	return e.(*api.PathChanged)
}

// waitLastPath waits until n's latest path event for peer is path.
func waitLastPath(t *testing.T, n, peer *Node, path string, within time.Duration) *api.PathChanged {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		from := len(n.Events())
		if pc := lastPath(n, peer); pc != nil && pc.Path == path {
			return pc
		}
		waitPath(n, peer, from, path, time.Until(deadline))
	}
}

// receiptPaths summarises on which path the messages arrived: "relay×12
// direct×8".
func receiptPaths(nodes ...*Node) string {
	count := map[string]int{}
	for _, n := range nodes {
		for _, e := range n.Events() {
			if m, ok := e.(*api.Message); ok {
				count[m.Path]++
			}
		}
	}
	var parts []string
	for _, k := range []string{"relay", "direct", "none"} {
		if count[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s×%d", k, count[k]))
		}
	}
	return strings.Join(parts, " ")
}

// stats summarises what the network and the rendezvous did.
func (p *pair) stats() string {
	lost, cut := p.w.Drops()
	flaps := 0
	for _, n := range []*Node{p.a, p.b} {
		prev := ""
		for _, e := range n.Events() {
			if pc, ok := e.(*api.PathChanged); ok {
				if prev == "direct" && pc.Path != "direct" {
					flaps++
				}
				prev = pc.Path
			}
		}
	}
	return fmt.Sprintf("direct→relay flaps %d, WAN lost %d cut %d, rendezvous relayed %.0f packets and %.0f signals",
		flaps, lost, cut, metric(p.rv, "natchat_rendezvous_relayed_packets_total"), metric(p.rv, "natchat_rendezvous_signals_total"))
}

// metric reads one unlabelled metric of the rendezvous (-1 if absent).
func metric(rv *Rendezvous, name string) float64 {
	rec := httptest.NewRecorder()
	rv.Srv.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// A node whose presence snapshot is lost still learns who is online, in
// seconds and without waiting for a heartbeat: it asks again until it has
// a complete snapshot. (With no later presence event its sequence number
// shows no gap, so only this catches the loss.)
func TestLostPresenceSnapshot(t *testing.T) {
	bubble(t, func(t *testing.T) {
		w := vnetlab.NewWorld(t, vnetlab.Impairment{Delay: 10 * time.Millisecond}, 6)
		rvh := w.PublicHost(rvIP)
		lan := w.LAN(vnetlab.NoNAT)
		ha, hb := lan.Host(), lan.Host()
		var dropped atomic.Int32
		w.Cut(func(src, dst *net.UDPAddr, p []byte) bool {
			// Drop the first sealed datagram to bob's host: the snapshot,
			// sent right after the handshake's reply.
			if dst.IP.Equal(net.ParseIP(hb.IP)) && len(p) > 2 && p[0] == wire.Magic && wire.Type(p[2]) == wire.TypeSealed {
				return dropped.Add(1) == 1
			}
			return false
		})
		w.Start()
		rv := StartRendezvous(t, rvh.Listen(3478), nil)
		a := StartNode(t, NodeConfig{Name: "alice", Conn: ha.Listen(0), RV: rv.Addr, Net: ha.Net, NoDirect: true})
		a.WaitRegistered(10 * time.Second)
		b := StartNode(t, NodeConfig{Name: "bob", Conn: hb.Listen(0), RV: rv.Addr, Net: hb.Net, NoDirect: true,
			Heartbeat: 25 * time.Second})
		b.WaitRegistered(10 * time.Second)
		t0 := time.Now()
		b.Wait(0, 5*time.Second, "alice's join from a re-asked snapshot", func(e api.Event) bool {
			j, ok := e.(*api.PeerJoined)
			return ok && j.Name == "alice"
		})
		if dropped.Load() < 2 {
			t.Fatalf("the first snapshot was not dropped (sealed datagrams seen: %d)", dropped.Load())
		}
		t.Logf("bob saw alice %v after registering, the first snapshot lost", time.Since(t0))
	})
}
