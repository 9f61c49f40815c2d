package e2e

import (
	"crypto/ed25519"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"natchat/wire"
)

// newRand returns a seeded generator and logs the seed, so a failure can
// be replayed.
func newRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	return rand.New(rand.NewPCG(seed, seed>>1|1))
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// garbage returns a random datagram: arbitrary bytes, a version-1 protocol
// header of any type with a random body, or a STUN-looking header.
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

// crafted is a registration the test makes by hand with its own key.
type crafted struct {
	conn     *net.UDPConn
	rv       *net.UDPAddr
	name     string
	register []byte // the signed Register datagram
	session  wire.SessionID
}

// readMsg reads datagrams on c until one parses to a message pred accepts.
func readMsg(t *testing.T, c *net.UDPConn, timeout time.Duration, what string, pred func(wire.Message) bool) wire.Message {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if m, err := wire.Parse(buf[:n]); err == nil && pred(m) {
			return m
		}
	}
}

func isErrorCode(code wire.Code) func(wire.Message) bool {
	return func(m wire.Message) bool { e, ok := m.(*wire.Error); return ok && e.Code == code }
}

// craftRegistration asks the rendezvous at rv for a cookie and builds a
// signed Register for name with a fresh key, without sending it.
func craftRegistration(t *testing.T, rv, name string) *crafted {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp4", rv)
	if err != nil {
		t.Fatal(err)
	}
	c := &crafted{conn: udpSocket(t), rv: ua, name: name}
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	c.send(t, wire.Marshal(&wire.Hello{Nonce: 42}))
	cookie := readMsg(t, c.conn, 5*time.Second, "cookie", func(m wire.Message) bool {
		r, ok := m.(*wire.CookieReply)
		return ok && r.Nonce == 42
	}).(*wire.CookieReply).Cookie
	r := &wire.Register{Cookie: cookie, Key: wire.Key(priv.Public().(ed25519.PublicKey)), Name: name}
	copy(r.Sig[:], ed25519.Sign(priv, wire.RegisterSigned(r.Cookie, r.Key, r.Name)))
	c.register = wire.Marshal(r)
	return c
}

func (c *crafted) send(t *testing.T, b []byte) { sendTo(t, c.conn, b, c.rv) }

func sendTo(t *testing.T, c *net.UDPConn, b []byte, to *net.UDPAddr) {
	t.Helper()
	if _, err := c.WriteToUDP(b, to); err != nil {
		t.Fatalf("send to %v: %v", to, err)
	}
}

// TestRendezvousBadInput: random datagrams, every truncation of a valid
// Register, and replays of a registration (from another source port,
// after leave) are dropped and counted; the rendezvous stays up and
// relays for the nodes registered on it.
func TestRendezvousBadInput(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{metrics: true})
	// Signaling blocked: the nodes chat through the rendezvous, so their
	// chat after the abuse shows it still relays.
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

	// Every truncation of a valid Register is malformed. Sent in small
	// batches, each counted before the next, so no socket buffer overflows.
	mallory := craftRegistration(t, rv.addr, "mallory")
	cuts := truncations(mallory.register)
	for i, b := range cuts {
		mallory.send(t, b)
		if i%16 == 15 || i == len(cuts)-1 {
			counterAtLeast("malformed", dropped(m0, "malformed")+float64(i+1))
		}
	}

	// The whole Register is accepted, and the nodes see mallory join.
	mallory.send(t, mallory.register)
	reg := readMsg(t, mallory.conn, 5*time.Second, "registered", func(m wire.Message) bool {
		_, ok := m.(*wire.Registered)
		return ok
	}).(*wire.Registered)
	mallory.session = reg.Session
	alice.waitPeerJoined(t, "mallory")

	// Replayed from the same source while registered, it is a retransmit:
	// answered again with the same session.
	mallory.send(t, mallory.register)
	again := readMsg(t, mallory.conn, 5*time.Second, "registered again", func(m wire.Message) bool {
		_, ok := m.(*wire.Registered)
		return ok
	}).(*wire.Registered)
	if again.Session != reg.Session {
		t.Errorf("retransmitted Register got a new session")
	}

	// Replayed from another source port, the cookie does not match.
	other := udpSocket(t)
	sendTo(t, other, mallory.register, rvUDP)
	readMsg(t, other, 5*time.Second, "bad_cookie error", isErrorCode(wire.CodeBadCookie))
	counterAtLeast("bad_cookie", dropped(m0, "bad_cookie")+1)

	// After leave, a replay from the original source is refused as a
	// replay, and from elsewhere as a bad cookie.
	mark := alice.mark()
	mallory.send(t, wire.Marshal(&wire.Leave{Session: mallory.session}))
	e, _ := alice.waitEventFrom(t, mark, waitLong, "peer_left mallory", func(e *event) bool {
		return e.Type == "peer_left" && e.Name == "mallory"
	})
	if e.Reason != "quit" {
		t.Errorf("mallory left with %v, want reason quit", e)
	}
	mallory.send(t, mallory.register)
	readMsg(t, mallory.conn, 5*time.Second, "replay error", isErrorCode(wire.CodeReplay))
	counterAtLeast("replay", dropped(m0, "replay")+1)
	sendTo(t, other, mallory.register, rvUDP)
	counterAtLeast("bad_cookie", dropped(m0, "bad_cookie")+2)
	if on := rv.scrape(t)["natchat_rendezvous_online_nodes"]; on != 2 {
		t.Errorf("online nodes %v after the replays, want 2", on)
	}

	// Random datagrams, in batches; after each batch a datagram of another
	// protocol version (counted as "version", which garbage never is)
	// proves the batch was handled.
	rng := newRand(t)
	junk := udpSocket(t)
	const batches, perBatch = 12, 25
	base := dropped(rv.scrape(t), "version")
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
	if got, want := droppedTotal(m1)-droppedTotal(m0), float64(len(cuts)+3+batches); got < want {
		t.Errorf("dropped packets grew by %v, want at least %v", got, want)
	}
	chat(t, alice, bob, "after", 5)
	if m2 := rv.scrape(t); m2["natchat_rendezvous_relayed_packets_total"] <= m1["natchat_rendezvous_relayed_packets_total"] {
		t.Errorf("relayed packets did not grow while the nodes chatted after the abuse")
	}
}

// rvMessages returns a valid example of every message a rendezvous sends
// a node, with random contents. Errors are non-fatal ones: a node must
// take a registration refusal or a version mismatch from its rendezvous
// seriously, and the rendezvous's address is all it can check.
func rvMessages(rng *rand.Rand) []wire.Message {
	var k wire.Key
	copy(k[:], randBytes(rng, wire.KeyLen))
	var s wire.SessionID
	copy(s[:], randBytes(rng, len(s)))
	var c wire.Cookie
	copy(c[:], randBytes(rng, len(c)))
	ap := netip.MustParseAddrPort("192.0.2.7:4242")
	return []wire.Message{
		&wire.CookieReply{Nonce: rng.Uint64(), Cookie: c},
		&wire.Registered{Session: s, Observed: ap, HeartbeatMS: 1, ExpiryMS: 1, PresenceSeq: 1},
		&wire.HeartbeatAck{Observed: ap, PresenceSeq: 1 << 30},
		&wire.Presence{Seq: 1 << 30, Kind: wire.PresenceLeft, Reason: wire.ReasonTimeout, Key: k, Name: "ghost"},
		&wire.Peers{Seq: 1 << 30, Part: 0, Parts: 2, Peers: []wire.Peer{{Key: k, Name: "ghost"}}},
		&wire.LookupReply{TxID: rng.Uint32(), Status: wire.LookupOnline, Key: k, Name: "ghost"},
		&wire.Relayed{Src: k, Payload: randBytes(rng, 1200)},
		&wire.Signaled{Src: k, Name: "ghost", Body: randBytes(rng, 40)},
		&wire.Error{Code: wire.CodeRateLimited, Request: wire.TypeHeartbeat, Message: "slow down"},
	}
}

// TestNodeBadInput: random and truncated datagrams at a node's socket, from
// a stranger and (behind a proxy) from the rendezvous's own address, do
// not crash it, and it chats on.
func TestNodeBadInput(t *testing.T) {
	t.Parallel()
	for _, mode := range pathModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			rv := startRendezvous(t, rvOptions{})
			var proxy *udpProxy
			addr := rv.addr
			if mode.relay {
				proxy = startProxy(t, rv.addr, noSignaling)
				addr = proxy.addr()
			}
			alice, bob := startPair(t, addr, nodeOptions{})
			chat(t, alice, bob, "before", 2)

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
			var valid [][]byte
			for _, m := range rvMessages(rng) {
				valid = append(valid, wire.Marshal(m))
			}
			for _, to := range targets {
				ua := net.UDPAddrFromAddrPort(to)
				for range 300 {
					sendTo(t, stranger, garbage(rng), ua)
				}
				for _, b := range valid {
					for _, cut := range truncations(b) {
						sendTo(t, stranger, cut, ua)
					}
					sendTo(t, stranger, b, ua)
				}
				if proxy == nil {
					continue
				}
				// From the rendezvous's address: parsed as rendezvous
				// protocol. Every truncation, and random bodies for every
				// message type, Error and other versions included.
				for _, b := range valid {
					for _, cut := range truncations(b) {
						proxy.inject(cut, to)
					}
				}
				for range 300 {
					proxy.inject(garbage(rng), to)
				}
			}

			// Datagrams on one socket are handled in order: these messages
			// are sent after the garbage was queued.
			chat(t, alice, bob, "after", 5)
			for _, n := range []*node{alice, bob} {
				if n.exited() {
					t.Errorf("%s exited", n.label)
				}
			}
		})
	}
}

// TestNodeSpoofedRefusal: a registered node keeps running when a datagram
// from its rendezvous's address refuses a registration it did not just
// send, or claims another protocol version. Such a datagram is 3 to 11
// bytes that anyone able to spoof the rendezvous's source address can
// send; a refusal matters only as the answer to the node's own Register.
func TestNodeSpoofedRefusal(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		b    []byte
	}{
		{"version mismatch", []byte{wire.Magic, wire.Version + 1, byte(wire.TypeHeartbeatAck)}},
		{"name taken", wire.Marshal(&wire.Error{Code: wire.CodeNameTaken, Request: wire.TypeRegister})},
		{"key in use", wire.Marshal(&wire.Error{Code: wire.CodeKeyInUse, Request: wire.TypeHeartbeat})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rv := startRendezvous(t, rvOptions{})
			proxy := startProxy(t, rv.addr, noSignaling)
			alice, bob := startPair(t, proxy.addr(), nodeOptions{})
			for _, c := range proxy.clients() {
				proxy.inject(tc.b, c)
			}
			chat(t, alice, bob, "after", 1)
			for _, n := range []*node{alice, bob} {
				if n.exited() {
					t.Errorf("%s exited: %v", n.label, n.state)
				}
			}
		})
	}
}
