package e2e

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"natchat/internal/rvtest"
	"natchat/wire"
)

// newRand returns a seeded generator and logs the seed, so a failure can
// be replayed.
func newRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("NATCHAT_SEED"); v != "" {
		// Replay a failed run: NATCHAT_SEED=<the logged seed>.
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("NATCHAT_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("random seed %d (NATCHAT_SEED replays it)", seed)
	return rand.New(rand.NewPCG(seed, seed>>1|1))
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// garbage returns a random datagram: arbitrary bytes, a protocol header
// of this version and any type with a random body, or a STUN-looking
// header.
func garbage(rng *rand.Rand) []byte {
	var b []byte
	switch rng.IntN(3) {
	case 0:
		b = randBytes(rng, rng.IntN(1400))
	case 1:
		b = randBytes(rng, wire.HeaderLen+rng.IntN(300))
		b[0], b[2] = wire.Magic, byte(rng.IntN(0x20))
	default:
		b = randBytes(rng, 20+rng.IntN(120))
		b[0] = byte(rng.IntN(2))
		binary.BigEndian.PutUint32(b[4:], 0x2112A442) // STUN magic cookie
	}
	if len(b) >= 2 && b[0] == wire.Magic {
		b[1] = wire.Version // other versions are the pacing marker
	}
	return b
}

// truncations returns every proper prefix of b, the empty one included.
func truncations(b []byte) [][]byte {
	out := make([][]byte, len(b))
	for i := range b {
		out[i] = b[:i:i]
	}
	return out
}

// crafted is a node the test drives by hand (internal/rvtest) from its
// own socket.
type crafted struct {
	*rvtest.Node
	conn      *net.UDPConn
	rv        *net.UDPAddr
	handshake []byte // the Handshake datagram, once made
}

// readRaw reads datagrams on c until one pred accepts, and returns it.
// pred's argument is the read buffer: it must not keep it.
func readRaw(t *testing.T, c *net.UDPConn, timeout time.Duration, what string, pred func([]byte) bool) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if pred(buf[:n]) {
			return append([]byte(nil), buf[:n]...)
		}
	}
}

// readMsg reads datagrams on c until one parses to a message pred accepts.
func readMsg(t *testing.T, c *net.UDPConn, timeout time.Duration, what string, pred func(wire.Message) bool) wire.Message {
	t.Helper()
	b := readRaw(t, c, timeout, what, func(b []byte) bool {
		m, err := wire.Parse(b)
		return err == nil && pred(m)
	})
	m, _ := wire.Parse(b)
	return m
}

func isErrorCode(code wire.Code) func(wire.Message) bool {
	return func(m wire.Message) bool { e, ok := m.(*wire.Error); return ok && e.Code == code }
}

func isWire(typ wire.Type) func([]byte) bool {
	return func(b []byte) bool { return wire.IsProtocol(b) && b[1] == wire.Version && wire.Type(b[2]) == typ }
}

// craftHandshake asks the rendezvous at rv for a cookie and builds the
// Handshake that registers name with a fresh key, without sending it.
func craftHandshake(t *testing.T, rv, name string) *crafted {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp4", rv)
	if err != nil {
		t.Fatal(err)
	}
	c := &crafted{Node: rvtest.New(name), conn: udpSocket(t), rv: ua}
	c.send(t, c.Hello(42))
	cookie := readRaw(t, c.conn, 5*time.Second, "cookie", func(b []byte) bool {
		m, err := wire.Parse(b)
		r, ok := m.(*wire.CookieReply)
		return err == nil && ok && r.Nonce == 42
	})
	if c.handshake, err = c.FromCookie(cookie); err != nil {
		t.Fatal(err)
	}
	return c
}

// register sends the Handshake and completes it.
func (c *crafted) register(t *testing.T) []byte {
	t.Helper()
	c.send(t, c.handshake)
	reply := readRaw(t, c.conn, 5*time.Second, "handshake reply", isWire(wire.TypeHandshakeReply))
	if _, err := c.Finish(reply); err != nil {
		t.Fatalf("%s: %v", c.Name, err)
	}
	return reply
}

// request sends m sealed and returns the first sealed answer, opened.
func (c *crafted) request(t *testing.T, m wire.Message, what string) wire.Message {
	t.Helper()
	c.send(t, c.Seal(m))
	var got wire.Message
	readRaw(t, c.conn, 5*time.Second, what, func(b []byte) bool {
		if !isWire(wire.TypeSealed)(b) {
			return false
		}
		m, err := c.Open(b)
		if err != nil {
			t.Fatalf("%s: a sealed answer does not open: %v", c.Name, err)
		}
		got = m
		return true
	})
	return got
}

func (c *crafted) send(t *testing.T, b []byte) { sendTo(t, c.conn, b, c.rv) }

func sendTo(t *testing.T, c *net.UDPConn, b []byte, to *net.UDPAddr) {
	t.Helper()
	if _, err := c.WriteToUDP(b, to); err != nil {
		t.Fatalf("send to %v: %v", to, err)
	}
}

// TestRendezvousBadInput: every truncation of a valid Handshake and of a
// sealed request, replays of a registration (from the same source while
// registered, from another source port, after leave), replays of a sealed
// heartbeat (from the same source and from another) and random datagrams
// are dropped and counted, and none is answered with more bytes than it
// had; the rendezvous stays up and relays for the nodes registered on it.
func TestRendezvousBadInput(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{metrics: true})
	// Relay only: the nodes chat through the rendezvous, so their chat
	// after the abuse shows it still relays.
	alice, bob := startPairMode(t, rv, true, nodeOptions{})
	chat(t, alice, bob, "before", 2)
	rvUDP, err := net.ResolveUDPAddr("udp4", rv.addr)
	if err != nil {
		t.Fatal(err)
	}
	m0 := rv.scrape(t)
	// counterAtLeast waits until the dropped counter for reason reaches want.
	counterAtLeast := func(reason string, want float64) {
		t.Helper()
		var got float64
		eventually(t, 10*time.Second, "dropped{reason="+reason+"} reaching the datagrams sent", func() bool {
			got = dropped(rv.scrape(t), reason)
			return got >= want
		})
	}
	// untilCounted sends b until the dropped counter for reason grows: a
	// Handshake whose cookie a registration worker holds is a
	// retransmission, ignored uncounted.
	untilCounted := func(c *crafted, b []byte, reason string) {
		t.Helper()
		before := dropped(rv.scrape(t), reason)
		deadline := time.Now().Add(10 * time.Second)
		for {
			c.send(t, b)
			sent := time.Now()
			for time.Since(sent) < 300*time.Millisecond {
				if dropped(rv.scrape(t), reason) > before {
					return
				}
				time.Sleep(10 * time.Millisecond) // polling the counter, with a deadline
			}
			if time.Now().After(deadline) {
				t.Fatalf("a %d-byte datagram never counted as %s", len(b), reason)
			}
		}
	}

	// Every truncation of a valid Handshake: malformed while the cookie
	// or the Noise message is missing; with the cookie whole, a handshake
	// that does not check out.
	mallory := craftHandshake(t, rv.addr, "mallory")
	cuts := truncations(mallory.handshake)
	const whole = wire.HeaderLen + wire.CookieLen + 1
	for i, b := range cuts[:whole] {
		mallory.send(t, b)
		if i%16 == 15 || i == whole-1 {
			counterAtLeast("malformed", dropped(m0, "malformed")+float64(i+1))
		}
	}
	for _, b := range cuts[whole:] {
		untilCounted(mallory, b, "bad_handshake")
	}
	counterAtLeast("bad_handshake", dropped(m0, "bad_handshake")+float64(len(cuts)-whole))
	// Their answers (bad_handshake errors, while the source's budget
	// lasts) are no larger than what they answer.
	mallory.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	buf := make([]byte, 64<<10)
	for {
		n, err := mallory.conn.Read(buf)
		if err != nil {
			break
		}
		if n > len(mallory.handshake) {
			t.Errorf("a truncated handshake got a %d-byte answer", n)
		}
	}
	mallory.conn.SetReadDeadline(time.Time{})

	// The whole Handshake registers mallory, and the nodes see him join.
	mallory.register(t)
	alice.waitPeerJoined(t, "mallory")
	if _, ok := mallory.request(t, &wire.PeersRequest{}, "snapshot").(*wire.Peers); !ok {
		t.Fatal("mallory's first sealed answer is not the snapshot")
	}

	// Replayed from the same source once mallory was heard on his
	// session (the snapshot request above), it gets no answer: he has the
	// reply, and the rendezvous no longer keeps it. (A retransmission
	// before that gets the same reply again: rendezvous/register_test.go.)
	mallory.send(t, mallory.handshake)
	mallory.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	for {
		n, err := mallory.conn.Read(buf)
		if err != nil {
			break
		}
		if m, err := wire.Parse(buf[:n]); err == nil && m.Type() == wire.TypeHandshakeReply {
			t.Errorf("a Handshake replayed after the session was in use was answered")
		}
	}
	mallory.conn.SetReadDeadline(time.Time{})

	// Replayed from another source port, the cookie does not match.
	other := udpSocket(t)
	sendTo(t, other, mallory.handshake, rvUDP)
	if e := readMsg(t, other, 5*time.Second, "bad_cookie error", isErrorCode(wire.CodeBadCookie)); len(wire.Marshal(e)) > len(mallory.handshake) {
		t.Errorf("bad_cookie answer larger than the handshake")
	}
	counterAtLeast("bad_cookie", dropped(m0, "bad_cookie")+1)

	// A sealed heartbeat is answered once; replayed from the same source
	// it is refused by the replay window, and from another source too,
	// with nothing sent there (the next answer that source gets is the
	// cookie it asks for after).
	hb := mallory.Seal(&wire.Heartbeat{})
	mallory.send(t, hb)
	readRaw(t, mallory.conn, 5*time.Second, "heartbeat ack", func(b []byte) bool {
		m, err := mallory.Open(b)
		_, ok := m.(*wire.HeartbeatAck)
		return err == nil && ok
	})
	base := dropped(rv.scrape(t), "unauthentic")
	mallory.send(t, hb)
	counterAtLeast("unauthentic", base+1)
	sendTo(t, other, hb, rvUDP)
	counterAtLeast("unauthentic", base+2)
	sendTo(t, other, mallory.Hello(7), rvUDP)
	first := readRaw(t, other, 5*time.Second, "any answer", func([]byte) bool { return true })
	if m, err := wire.Parse(first); err != nil || m.Type() != wire.TypeCookie {
		t.Errorf("the other source got %x after the replayed heartbeat, want only the cookie it asked for", first)
	}

	// Every truncation of a sealed request with mallory's session:
	// malformed up to the counter, then it does not authenticate.
	sealed := mallory.Seal(&wire.PeersRequest{})
	scuts := truncations(sealed)
	mBase, uBase := dropped(rv.scrape(t), "malformed"), dropped(rv.scrape(t), "unauthentic")
	for i, b := range scuts {
		mallory.send(t, b)
		if i%16 == 15 || i == len(scuts)-1 {
			mal := min(i+1, wire.SealedHeaderLen)
			counterAtLeast("malformed", mBase+float64(mal))
			counterAtLeast("unauthentic", uBase+float64(i+1-mal))
		}
	}
	// The whole one still works: the truncations moved no window.
	mallory.send(t, sealed)
	readRaw(t, mallory.conn, 5*time.Second, "snapshot", func(b []byte) bool {
		m, err := mallory.Open(b)
		_, ok := m.(*wire.Peers)
		return err == nil && ok
	})

	// After leave, a replay from the original source is refused as a
	// replay, and from elsewhere as a bad cookie; the replayed Leave is
	// not registered, and its answer is no larger than it.
	mark := alice.mark()
	leave := mallory.Seal(&wire.Leave{})
	mallory.send(t, leave)
	e, _ := alice.waitEventFrom(t, mark, waitLong, "peer_left mallory", func(e *event) bool {
		return e.Type == "peer_left" && e.Name == "mallory"
	})
	if e.Reason != "quit" {
		t.Errorf("mallory left with %v, want reason quit", e)
	}
	mallory.send(t, mallory.handshake)
	counterAtLeast("replay", dropped(m0, "replay")+1)
	sendTo(t, other, mallory.handshake, rvUDP)
	counterAtLeast("bad_cookie", dropped(m0, "bad_cookie")+2)
	mallory.send(t, leave)
	if b := readRaw(t, mallory.conn, 5*time.Second, "not_registered", func(b []byte) bool {
		m, err := wire.Parse(b)
		return err == nil && isErrorCode(wire.CodeNotRegistered)(m)
	}); len(b) > len(leave) {
		t.Errorf("a %d-byte replayed Leave got a %d-byte answer", len(leave), len(b))
	}
	if on := rv.scrape(t)["natchat_rendezvous_online_nodes"]; on != 2 {
		t.Errorf("online nodes %v after the replays, want 2", on)
	}

	// Random datagrams, in batches; after each batch a datagram of another
	// protocol version (counted as "version", which garbage never is)
	// proves the batch was handled.
	rng := newRand(t)
	junk := udpSocket(t)
	const batches, perBatch = 12, 25
	base = dropped(rv.scrape(t), "version")
	for i := range batches {
		for range perBatch {
			sendTo(t, junk, garbage(rng), rvUDP)
		}
		sendTo(t, junk, []byte{wire.Magic, wire.Version + 1, byte(wire.TypeHello)}, rvUDP)
		counterAtLeast("version", base+float64(i+1))
	}

	if rv.exited() {
		t.Fatal("the rendezvous exited")
	}
	m1 := rv.scrape(t)
	if got, want := droppedTotal(m1)-droppedTotal(m0), float64(len(cuts)+len(scuts)+6+batches); got < want {
		t.Errorf("dropped packets grew by %v, want at least %v", got, want)
	}
	chat(t, alice, bob, "after", 5)
	if m2 := rv.scrape(t); m2["natchat_rendezvous_relayed_packets_total"] <= m1["natchat_rendezvous_relayed_packets_total"] {
		t.Errorf("relayed packets did not grow while the nodes chatted after the abuse")
	}
}

// rvForgeries returns datagrams that claim to come from a node's
// rendezvous, as someone who spoofs its address would send them: every
// message type in the clear with random or hostile contents (those v2
// seals included, as v1 sent them), sealed datagrams for session s (read
// off the wire: it travels in the clear) that do not authenticate, and
// errors of every code. None carries a secret of the node's.
func rvForgeries(rng *rand.Rand, s wire.SessionID) [][]byte {
	var k wire.Key
	copy(k[:], randBytes(rng, wire.KeyLen))
	var c wire.Cookie
	copy(c[:], randBytes(rng, len(c)))
	ap := netip.MustParseAddrPort("192.0.2.7:4242")
	var out [][]byte
	for _, m := range []wire.Message{
		&wire.CookieReply{Nonce: rng.Uint64(), Cookie: c, ServerKey: [32]byte(randBytes(rng, 32))},
		&wire.HandshakeReply{Noise: randBytes(rng, 48)},
		&wire.HandshakeReply{Noise: make([]byte, 48)}, // a low-order ephemeral
		&wire.HeartbeatAck{Observed: ap, PresenceSeq: 1<<32 - 2},
		&wire.Presence{Seq: 1<<32 - 2, Changes: []wire.Change{{Kind: wire.PresenceLeft, Reason: wire.ReasonTimeout, Key: k, Name: "bob"}}},
		&wire.Peers{Seq: 1 << 30, Part: 0, Parts: 2, Peers: []wire.Peer{{Key: k, Name: "ghost"}}},
		&wire.LookupReply{TxID: rng.Uint32(), Status: wire.LookupOnline, Key: k, Name: "bob"},
		&wire.Relayed{Src: k, Payload: randBytes(rng, 1200)},
		&wire.Signaled{Src: k, Name: "bob", Body: randBytes(rng, 40)},
		&wire.PathChallenge{},
		&wire.WhoReply{TxID: 1, Room: "#lobby", Total: 1, Members: []wire.Peer{{Key: k, Name: "bob"}}},
		&wire.Sealed{Session: s, Counter: 1 << 40, Box: randBytes(rng, 64)},
		&wire.Sealed{Session: s, Counter: 1<<64 - 1, Box: randBytes(rng, 64)},
		&wire.Sealed{Session: s, Counter: 3, Box: randBytes(rng, 16)},
	} {
		out = append(out, wire.Marshal(m))
	}
	for code := wire.Code(1); code <= 16; code++ {
		for _, req := range []wire.Type{wire.TypeHello, wire.TypeHandshake, wire.TypeSealed, wire.TypeRelay} {
			e := wire.Marshal(&wire.Error{Code: code, Request: req, TxID: rng.Uint32(), Message: "spoofed"})
			out = append(out, e)
			v := bytes.Clone(e)
			v[1] = wire.Version + 1
			out = append(out, v)
		}
	}
	return out
}

// sessionOf returns the session of a node from the sealed datagrams a
// proxy forwarded to it (the session travels in the clear).
func sessionOf(t *testing.T, p *udpProxy, client netip.AddrPort) wire.SessionID {
	t.Helper()
	for _, d := range p.datagrams() {
		if d.client == client && d.toRV && d.typ() == wire.TypeSealed {
			if m, err := wire.Parse(d.b); err == nil {
				return m.(*wire.Sealed).Session
			}
		}
	}
	t.Fatalf("no sealed datagram from %v", client)
	return wire.SessionID{}
}

// TestNodeBadInput: random and truncated datagrams at a node's socket, from
// a stranger and (behind a proxy) from the rendezvous's own address, do
// not crash it; neither do forged rendezvous messages, sealed datagrams of
// its session that do not authenticate, nor replays of everything the
// rendezvous really sent it. It stays registered, tells its user nothing,
// and chats on.
func TestNodeBadInput(t *testing.T) {
	t.Parallel()
	for _, mode := range pathModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			rv := startRendezvous(t, rvOptions{})
			var proxy *udpProxy
			addr := rv.addr
			if mode.relay {
				proxy = startProxy(t, rv.addr, nil)
				addr = proxy.addr()
			}
			alice, bob := startPair(t, addr, nodeOptions{noDirect: mode.relay})
			chat(t, alice, bob, "before", 2)
			marks := map[*node]int{alice: alice.mark(), bob: bob.mark()}

			// The nodes' own sockets: as the rendezvous saw them, or as
			// the proxy sees them.
			var targets []netip.AddrPort
			if proxy == nil {
				for _, n := range []*node{alice, bob} {
					targets = append(targets, mustAddrPort(t, n.waitRegistered(t).Public))
				}
			} else {
				targets = proxy.clients()
				if len(targets) != 2 {
					t.Fatalf("proxy has %d clients, want 2", len(targets))
				}
			}

			rng := newRand(t)
			stranger := udpSocket(t)
			for _, to := range targets {
				var s wire.SessionID
				if proxy != nil {
					s = sessionOf(t, proxy, to)
				} else {
					copy(s[:], randBytes(rng, len(s)))
				}
				forged := rvForgeries(rng, s)
				ua := net.UDPAddrFromAddrPort(to)
				for range 300 {
					sendTo(t, stranger, garbage(rng), ua)
				}
				for _, b := range forged {
					for _, cut := range truncations(b) {
						sendTo(t, stranger, cut, ua)
					}
					sendTo(t, stranger, b, ua)
				}
				if proxy == nil {
					continue
				}
				// From the rendezvous's address: parsed as rendezvous
				// protocol. Every forgery and its truncations, random
				// bodies for every message type, and every datagram the
				// rendezvous sent this node so far, replayed.
				for _, b := range forged {
					for _, cut := range truncations(b) {
						proxy.inject(cut, to)
					}
					proxy.inject(b, to)
				}
				for range 300 {
					proxy.inject(garbage(rng), to)
				}
				replays := 0
				for _, d := range proxy.datagrams() {
					if !d.toRV && d.client == to {
						proxy.inject(d.b, to)
						replays++
					}
				}
				t.Logf("%v: %d forgeries, %d replays from the rendezvous's address", to, len(forged), replays)
			}

			// Datagrams on one socket are handled in order: these messages
			// are sent after the garbage was queued.
			chat(t, alice, bob, "after", 5)
			for _, n := range []*node{alice, bob} {
				if n.exited() {
					t.Errorf("%s exited", n.label)
				}
				for _, e := range n.events(marks[n], func(e *event) bool {
					return e.Type == "error" || e.Type == "peer_left" || e.Type == "registered"
				}) {
					t.Errorf("%s: %v after the bad input", n.label, e)
				}
			}
		})
	}
}

// TestNodeSpoofedRefusal: a registered node keeps running, registered,
// when a datagram from its rendezvous's address refuses a registration it
// did not just send, claims another protocol version, says its cookie is
// bad or its session unknown, or answers a handshake it is not making.
// Such a datagram is a few bytes that anyone able to spoof the
// rendezvous's source address can send; v2 believes a refusal only inside
// the handshake, and "not registered" only when an authenticated
// heartbeat then goes unanswered.
func TestNodeSpoofedRefusal(t *testing.T) {
	t.Parallel()
	version := func(typ wire.Type) []byte { return []byte{wire.Magic, wire.Version + 1, byte(typ)} }
	vErr := wire.Marshal(&wire.Error{Code: wire.CodeVersion, Request: wire.TypeHello, Message: "upgrade"})
	vErr[1] = wire.Version + 1
	cases := []struct {
		name string
		b    [][]byte
	}{
		{"version mismatch", [][]byte{version(wire.TypeHeartbeatAck), version(wire.TypeSealed), version(wire.TypeError), vErr}},
		{"name taken", [][]byte{wire.Marshal(&wire.Error{Code: wire.CodeNameTaken, Request: wire.TypeHandshake})}},
		{"key in use", [][]byte{wire.Marshal(&wire.Error{Code: wire.CodeKeyInUse, Request: wire.TypeSealed})}},
		{"bad cookie", [][]byte{wire.Marshal(&wire.Error{Code: wire.CodeBadCookie, Request: wire.TypeHandshake})}},
		{"not registered", [][]byte{wire.Marshal(&wire.Error{Code: wire.CodeNotRegistered, Request: wire.TypeSealed})}},
		{"handshake reply", [][]byte{wire.Marshal(&wire.HandshakeReply{Noise: make([]byte, 96)})}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rv := startRendezvous(t, rvOptions{})
			proxy := startProxy(t, rv.addr, nil)
			alice, bob := startPair(t, proxy.addr(), nodeOptions{noDirect: true})
			marks := map[*node]int{alice: alice.mark(), bob: bob.mark()}
			for _, c := range proxy.clients() {
				for _, b := range tc.b {
					proxy.inject(b, c)
				}
			}
			chat(t, alice, bob, "after", 1)
			for _, n := range []*node{alice, bob} {
				if n.exited() {
					t.Errorf("%s exited: %v", n.label, n.state)
				}
				for _, e := range n.events(marks[n], func(e *event) bool {
					return e.Type == "error" || e.Type == "peer_left" || e.Type == "registered"
				}) {
					t.Errorf("%s: %v after the spoofed datagram", n.label, e)
				}
			}
		})
	}
}

// TestStrangerLearnsNothing: a stranger who has not registered asks the
// rendezvous about the nodes on it with every request, in the clear (as
// v1 allowed) and sealed, with sessions it made up or read off the wire
// (alice's), and relays to alice with both. Every answer is an error or a
// path challenge sealed for alice (opaque to the stranger), no larger than
// the request, and holds no node's name or key.
func TestStrangerLearnsNothing(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{})
	proxy := startProxy(t, rv.addr, nil)
	alice, bob := startPair(t, proxy.addr(), nodeOptions{noDirect: true})
	chat(t, alice, bob, "seen", 1)
	aliceKey, bobKey := selfKey(t, alice), selfKey(t, bob)
	var aliceSession wire.SessionID
	for _, c := range proxy.clients() {
		s := sessionOf(t, proxy, c)
		for _, d := range proxy.datagrams() {
			if d.client == c && d.typ() == wire.TypeRelay && bytes.Equal(d.b[wire.HeaderLen+8:wire.HeaderLen+8+wire.KeyLen], bobKey[:]) {
				aliceSession = s // alice relays to bob
			}
		}
	}
	if aliceSession == (wire.SessionID{}) {
		t.Fatal("no relay datagram from alice to bob captured")
	}
	rng := newRand(t)
	randomSession := wire.SessionID(randBytes(rng, 8))
	var requests []wire.Message
	for _, m := range []wire.Message{
		&wire.Lookup{TxID: 1, Name: "alice"},
		&wire.Lookup{TxID: 2, Key: aliceKey},
		&wire.Who{TxID: 3, Room: "#lobby"},
		&wire.PeersRequest{},
		&wire.Heartbeat{},
		&wire.Signal{Dst: aliceKey, Body: []byte("who are you?")},
	} {
		requests = append(requests, m)
		for _, s := range []wire.SessionID{aliceSession, randomSession} {
			box := append(wire.AppendInner(nil, m), make([]byte, 16)...) // the stranger cannot seal: a plaintext and a zero tag
			requests = append(requests, &wire.Sealed{Session: s, Counter: 1 << 40, Box: box})
		}
	}
	requests = append(requests, &wire.Relay{Session: randomSession, Dst: aliceKey, Payload: randBytes(rng, 100)},
		&wire.Relay{Session: aliceSession, Dst: bobKey, Payload: randBytes(rng, 100)})
	stranger := udpSocket(t)
	ua, err := net.ResolveUDPAddr("udp4", rv.addr)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range requests {
		req := wire.Marshal(m)
		what := m.Type().String()
		if s, ok := m.(*wire.Sealed); ok {
			what = "sealed " + wire.Type(s.Box[0]).String()
		}
		sendTo(t, stranger, req, ua)
		// A Hello after it: its cookie comes after every answer to the
		// request (one socket, handled in order).
		nonce := uint64(1000 + i)
		sendTo(t, stranger, wire.Marshal(&wire.Hello{Nonce: nonce}), ua)
		var answers [][]byte
		readRaw(t, stranger, 5*time.Second, "the cookie after the request", func(b []byte) bool {
			if m, err := wire.Parse(b); err == nil {
				if c, ok := m.(*wire.CookieReply); ok && c.Nonce == nonce {
					return true
				}
			}
			answers = append(answers, bytes.Clone(b)) // b is the read buffer
			return false
		})
		total := 0
		for _, a := range answers {
			total += len(a)
			m, err := wire.Parse(a)
			switch m := m.(type) {
			case *wire.Error:
			case *wire.Sealed:
				if m.Session != aliceSession {
					t.Errorf("%s: answered with a sealed datagram of another session", what)
				}
			default:
				t.Errorf("%s: answered with %x (%v)", what, a, err)
			}
			for _, k := range []wire.Key{aliceKey, bobKey} {
				if bytes.Contains(a, k[:]) {
					t.Errorf("%s: the answer holds a node's key", what)
				}
			}
			for _, name := range []string{"alice", "bob"} {
				if bytes.Contains(a, []byte(name)) {
					t.Errorf("%s: the answer holds the name %s", what, name)
				}
			}
		}
		if total > len(req) {
			t.Errorf("a %d-byte %s got %d bytes of answers", len(req), what, total)
		}
	}
}
