package rvclient_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"math"
	mrand "math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"natchat/ctrl"
	"natchat/node/rvclient"
	"natchat/wire"
)

// The node under attack: datagrams that seem to come from the rendezvous's
// address but do not come from the rendezvous. Anyone who can spoof a
// source address (no BCP 38 filtering) or who is on the path can send
// them; an observer on the path can also replay what the rendezvous sent.
// Whatever they send, a registered node stays up and registered, with its
// presence view and the names it knows unchanged, and tells its user
// nothing; a registering node still registers.

// newRng returns a seeded generator and logs the seed, so a failure can be
// replayed.
func newRng(t *testing.T) *mrand.Rand {
	t.Helper()
	var b [8]byte
	rand.Read(b[:])
	seed := binary.LittleEndian.Uint64(b[:])
	t.Logf("random seed %d", seed)
	return mrand.New(mrand.NewPCG(seed, seed>>1|1))
}

func rbytes(rng *mrand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func rkey(rng *mrand.Rand) (k wire.Key) {
	copy(k[:], rbytes(rng, len(k)))
	return k
}

// forgedKeys returns the rendezvous-side keys of a handshake that is not
// the victim's: with server (the real rendezvous's key, as a registered
// attacker holds such keys, or another), and a fresh identity.
func forgedKeys(t *testing.T, server ctrl.ServerKey) *ctrl.Keys {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	var cookie wire.Cookie
	rand.Read(cookie[:])
	ini, err := ctrl.NewInitiator(priv, server.Public, cookie)
	if err != nil {
		t.Fatal(err)
	}
	first, err := ini.First(nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, _, _, err := ctrl.Respond(server, cookie, first)
	if err != nil {
		t.Fatal(err)
	}
	out, keys, err := resp.Finish(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ini.Finish(out); err != nil {
		t.Fatal(err)
	}
	return keys
}

// sealAs returns m sealed with keys for session s, with its counter set to
// counter (the counter is associated data: rewriting it is one more
// forgery).
func sealAs(keys *ctrl.Keys, s wire.SessionID, counter uint64, m wire.Message) []byte {
	b := keys.Seal(nil, s, wire.AppendInner(nil, m))
	binary.BigEndian.PutUint64(b[wire.SealedHeaderLen-8:wire.SealedHeaderLen], counter)
	return b
}

// innerForgeries returns every message a rendezvous seals for a node (and
// those a node seals), with contents an attacker would choose: bob leaves,
// a ghost joins, presence sequence numbers near 2^32, mallory's key under
// bob's name, a refusal.
func innerForgeries(rng *mrand.Rand, bob, mallory wire.Key) []wire.Message {
	ghost := rkey(rng)
	elsewhere := netip.MustParseAddrPort("203.0.113.9:9999")
	out := []wire.Message{
		&wire.HeartbeatAck{Observed: elsewhere, PresenceSeq: math.MaxUint32 - 1},
		&wire.Presence{Seq: math.MaxUint32 - 1, Changes: []wire.Change{
			{Kind: wire.PresenceLeft, Reason: wire.ReasonQuit, Key: bob, Name: "bob"},
			{Kind: wire.PresenceJoin, Key: ghost, Name: "ghost"},
			{Kind: wire.PresenceJoin, Key: mallory, Name: "bob"},
		}},
		&wire.Presence{Seq: math.MaxUint32, Changes: []wire.Change{{Kind: wire.PresenceLeft, Reason: wire.ReasonTimeout, Key: bob, Name: "bob"}}},
		&wire.Presence{Seq: 2, Changes: []wire.Change{{Kind: wire.PresenceJoin, Key: ghost, Name: "ghost"}}},
		&wire.Peers{Seq: math.MaxUint32 - 1, Part: 0, Parts: 1, Peers: []wire.Peer{{Key: ghost, Name: "ghost"}}},
		&wire.Peers{Seq: 1 << 31, Part: 0, Parts: 1},
		&wire.Signaled{Src: mallory, Name: "bob", Body: []byte("offer from mallory")},
		&wire.Signaled{Src: bob, Name: "mallory", Body: []byte("offer")},
		&wire.PathChallenge{Data: [8]byte(rbytes(rng, 8))},
		&wire.Error{Code: wire.CodeNotRegistered, Request: wire.TypeHeartbeat},
		&wire.Error{Code: wire.CodeNameTaken, Request: wire.TypeHandshake},
		&wire.WhoReply{TxID: 1, Room: "#lobby", Total: 1, Members: []wire.Peer{{Key: mallory, Name: "bob"}}},
		&wire.Heartbeat{},
		&wire.Leave{},
		&wire.PeersRequest{},
		&wire.Lookup{TxID: 1, Name: "bob"},
		&wire.Signal{Dst: bob, Body: []byte("x")},
		&wire.PathResponse{},
		&wire.Who{TxID: 1, Room: "#lobby"},
	}
	for tx := range uint32(8) {
		out = append(out, &wire.LookupReply{TxID: tx, Status: wire.LookupOnline, Key: mallory, Name: "bob"})
	}
	return out
}

// clearForgeries returns datagrams in the clear an attacker can send
// without any secret: every message type with plausible contents (the
// v1 control messages included, which v2 carries only sealed), every
// error code for every request with guessed transaction IDs, in this
// version and others, for session s.
func clearForgeries(rng *mrand.Rand, s wire.SessionID, serverKey ctrl.PublicKey, bob, mallory wire.Key) [][]byte {
	var out [][]byte
	add := func(m wire.Message) { out = append(out, wire.Marshal(m)) }
	var cookie wire.Cookie
	copy(cookie[:], rbytes(rng, len(cookie)))
	add(&wire.Hello{Nonce: rng.Uint64()})
	add(&wire.CookieReply{Nonce: rng.Uint64(), Cookie: cookie, ServerKey: serverKey})
	add(&wire.CookieReply{Nonce: 0, Cookie: cookie, ServerKey: [32]byte(rbytes(rng, 32))})
	add(&wire.Handshake{Cookie: cookie, Noise: rbytes(rng, 96)})
	add(&wire.HandshakeReply{Noise: rbytes(rng, 48)})
	add(&wire.HandshakeReply{Noise: make([]byte, 48)}) // a low-order ephemeral
	add(&wire.Relay{Session: s, Dst: bob, Payload: rbytes(rng, 100)})
	add(&wire.Relayed{Src: mallory, Payload: rbytes(rng, 100)})
	for _, c := range []uint64{0, 1, 1 << 40, math.MaxUint64} {
		add(&wire.Sealed{Session: s, Counter: c, Box: rbytes(rng, 48)})
	}
	add(&wire.Sealed{Session: wire.SessionID(rbytes(rng, 8)), Counter: 1, Box: rbytes(rng, 48)})
	add(&wire.Sealed{Session: s, Counter: 2}) // no box at all
	for _, m := range innerForgeries(rng, bob, mallory) {
		add(m) // as v1 sent them: in the clear
	}
	requests := []wire.Type{0, wire.TypeHello, wire.TypeHandshake, wire.TypeSealed, wire.TypeHeartbeat, wire.TypeLookup, wire.TypeRelay, wire.TypeSignal}
	for code := wire.Code(0); code <= 20; code++ {
		for _, req := range requests {
			for _, tx := range []uint32{0, 1, rng.Uint32(), math.MaxUint32} {
				e := wire.Marshal(&wire.Error{Code: code, Request: req, TxID: tx, Message: "spoofed"})
				out = append(out, e)
				for _, v := range []byte{0, 1, wire.Version + 1, 255} {
					o := slices.Clone(e)
					o[1] = v
					out = append(out, o)
				}
			}
		}
	}
	// Every type byte of every version, with random bodies.
	for typ := range 256 {
		for _, n := range []int{0, 1, 8, 40, 200} {
			for _, v := range []byte{1, wire.Version, wire.Version + 1} {
				out = append(out, append([]byte{wire.Magic, v, byte(typ)}, rbytes(rng, n)...))
			}
		}
	}
	// Random bytes, and random STUN-looking datagrams.
	for range 300 {
		out = append(out, rbytes(rng, rng.IntN(1300)))
		b := rbytes(rng, 20+rng.IntN(100))
		b[0] = byte(rng.IntN(2))
		binary.BigEndian.PutUint32(b[4:], 0x2112A442)
		out = append(out, b)
	}
	// Every proper prefix of the plausible messages.
	n := len(out)
	for _, b := range out[:min(n, 60)] {
		for i := range b {
			out = append(out, b[:i:i])
		}
	}
	return out
}

// tap records datagrams between the rendezvous and the clients; it is the
// world's drop hook and drops nothing unless told.
type tap struct {
	w  *world
	mu sync.Mutex
	// Guarded by mu:
	log  []dgram
	drop func(dgram) bool
	on   func(dgram) // called for each datagram, without mu
}

func newTap(w *world) *tap {
	tp := &tap{w: w}
	w.setDrop(tp.see)
	return tp
}

func (tp *tap) see(d dgram) bool {
	tp.mu.Lock()
	tp.log = append(tp.log, d)
	drop, on := tp.drop, tp.on
	tp.mu.Unlock()
	if on != nil {
		on(d)
	}
	return drop != nil && drop(d)
}

func (tp *tap) setDrop(f func(dgram) bool) {
	tp.mu.Lock()
	tp.drop = f
	tp.mu.Unlock()
}

func (tp *tap) setOn(f func(dgram)) {
	tp.mu.Lock()
	tp.on = f
	tp.mu.Unlock()
}

// mark returns the position after the datagrams seen so far.
func (tp *tap) mark() int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return len(tp.log)
}

// since returns the datagrams seen from position i on that pred accepts.
func (tp *tap) since(i int, pred func(dgram) bool) []dgram {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	var out []dgram
	for _, d := range tp.log[i:] {
		if pred(d) {
			out = append(out, d)
		}
	}
	return out
}

func typeOf(b []byte) wire.Type {
	if !wire.IsProtocol(b) {
		return 0
	}
	return wire.Type(b[2])
}

// sentBy and sentTo select datagrams by their client.
func sentBy(c *client, types ...wire.Type) func(dgram) bool {
	return func(d dgram) bool {
		return !d.spoofed && d.from == c.addr && (len(types) == 0 || slices.Contains(types, typeOf(d.b)))
	}
}

func sentTo(w *world, c *client) func(dgram) bool {
	return func(d dgram) bool { return !d.spoofed && d.from == w.rvAddr && d.to == c.addr }
}

// state is what a registered client believes, for before/after checks.
type state struct {
	session wire.SessionID
	online  []rvclient.Peer
	notes   []string
}

func stateOf(c *client) state {
	s := state{notes: c.notes(), online: c.Online()}
	if p := c.RelaySession(); p != nil {
		s.session = *p
	}
	return s
}

// checkUnchanged fails unless c is registered with the same session, the
// same peers online, and nothing new told to its observer, and Run goes on.
func checkUnchanged(t *testing.T, c *client, before state, what string) {
	t.Helper()
	after := stateOf(c)
	if !c.IsRegistered() || after.session != before.session {
		t.Errorf("%s: %s's registration changed: registered %v", what, c.name, c.IsRegistered())
	}
	if !slices.Equal(after.online, before.online) {
		t.Errorf("%s: %s's presence view changed: %v, was %v", what, c.name, after.online, before.online)
	}
	if len(after.notes) != len(before.notes) {
		t.Errorf("%s: %s's observer was told %q", what, c.name, after.notes[len(before.notes):])
	}
	select {
	case err := <-c.done:
		t.Errorf("%s: %s's Run ended: %v", what, c.name, err)
	default:
	}
}

// TestAttackSpoofedAtRegisteredNode sends a registered node thousands of
// datagrams from the rendezvous's address: every message type in the
// clear with plausible or random contents, every inner message sealed for
// its session with keys that are not its session's (another server key,
// and the real server's key in another handshake, as a registered
// attacker holds), clear errors of every code with guessed transaction
// IDs in every version, random bytes and their truncations. Nothing
// changes; it sends the rendezvous no more than one heartbeat per burst to
// check an unauthenticated "not registered", never registers again, and
// what the rendezvous really sends afterwards (presence, lookups, signals)
// still works.
func TestAttackSpoofedAtRegisteredNode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		tp := newTap(w)
		a := w.addClient("alice", nil)
		b := w.addClient("bob", nil)
		time.Sleep(time.Second)
		settle()
		if !a.IsRegistered() || !a.IsOnline(b.key) {
			t.Fatalf("setup: alice %v", a.notes())
		}
		rng := newRng(t)
		mallory := rkey(rng)
		session := *a.RelaySession()
		other, _ := ctrl.NewServerKey()

		var forged [][]byte
		for _, keys := range []*ctrl.Keys{forgedKeys(t, other), forgedKeys(t, w.key)} {
			for _, m := range innerForgeries(rng, b.key, mallory) {
				for _, counter := range []uint64{0, 1, 2, 1000, 1 << 40, math.MaxUint64 - 1, math.MaxUint64} {
					forged = append(forged, sealAs(keys, session, counter, m))
				}
			}
		}
		forged = append(forged, clearForgeries(rng, session, w.key.Public, b.key, mallory)...)
		t.Logf("%d spoofed datagrams", len(forged))

		before := stateOf(a)
		mark := tp.mark()
		// In bursts that fit the world's queue, each delivered before the next.
		bursts := 0
		for chunk := range slices.Chunk(forged, 1000) {
			for _, d := range chunk {
				w.spoof(a.addr, d)
			}
			settle()
			bursts++
		}
		time.Sleep(3 * time.Second) // past the check of a "not registered"
		settle()
		checkUnchanged(t, a, before, "after the spoofed datagrams")
		if n, ok := a.KnownName(mallory); ok {
			t.Errorf("mallory's key is known as %q", n)
		}
		if n, _ := a.KnownName(b.key); n != "bob" {
			t.Errorf("bob's key is known as %q", n)
		}
		sent := tp.since(mark, sentBy(a))
		if rereg := tp.since(mark, sentBy(a, wire.TypeHello, wire.TypeHandshake)); len(rereg) != 0 {
			t.Errorf("alice registered again: %d hellos and handshakes", len(rereg))
		}
		// In 3 s: a heartbeat per burst that checks its spoofed "not
		// registered" errors (each burst is faster than the round trip),
		// and no other.
		if len(sent) > bursts {
			t.Errorf("alice sent the rendezvous %d datagrams in answer to %d bursts of spoofing", len(sent), bursts)
		}

		// The rendezvous's own messages still count: the presence
		// sequence did not jump, the replay window did not move.
		c := w.addClient("carol", nil)
		time.Sleep(time.Second)
		settle()
		if !a.IsOnline(c.key) || a.count("joined carol") != 1 {
			t.Errorf("alice did not see carol join after the spoofing: %v", a.notes())
		}
		if r, err := a.Lookup(context.Background(), "carol", wire.Key{}); err != nil || r.Key != c.key {
			t.Errorf("lookup after the spoofing: %+v, %v", r, err)
		}
		if !b.Signal(a.key, []byte("hello")) {
			t.Fatal("bob could not signal")
		}
		time.Sleep(time.Second)
		settle()
		if a.count("signal bob hello") != 1 {
			t.Errorf("alice did not get bob's signal: %v", a.notes())
		}
		b.Leave()
		time.Sleep(time.Second)
		settle()
		if a.count("left bob quit") != 1 || a.IsOnline(b.key) {
			t.Errorf("alice did not see bob leave: %v", a.notes())
		}
	})
}

// TestAttackForgedLookupReplies: while alice's lookup of bob is
// outstanding (the rendezvous's answers held back), forged answers for
// every likely transaction ID, sealed with a registered attacker's keys
// or sent in the clear, name mallory's key as bob. The lookup returns
// bob's real key once the real answer comes.
func TestAttackForgedLookupReplies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		tp := newTap(w)
		a := w.addClient("alice", nil)
		b := w.addClient("bob", nil)
		time.Sleep(time.Second)
		settle()
		session := *a.RelaySession()
		mallory := wire.Key{0x66}
		keys := forgedKeys(t, w.key)
		tp.setDrop(sentTo(w, a)) // the rendezvous's answers are lost for now
		type result struct {
			r   *wire.LookupReply
			err error
		}
		done := make(chan result, 1)
		go func() {
			r, err := a.Lookup(context.Background(), "bob", wire.Key{})
			done <- result{r, err}
		}()
		settle()
		for tx := range uint32(64) {
			for _, st := range []wire.LookupStatus{wire.LookupOnline, wire.LookupUnknown} {
				m := &wire.LookupReply{TxID: tx, Status: st, Key: mallory, Name: "bob"}
				w.spoof(a.addr, sealAs(keys, session, uint64(tx)+5, m))
				w.spoof(a.addr, wire.Marshal(m))
				e := &wire.Error{Code: wire.CodeRateLimited, Request: wire.TypeLookup, TxID: tx}
				w.spoof(a.addr, sealAs(keys, session, uint64(tx)+500, e))
				w.spoof(a.addr, wire.Marshal(e))
			}
		}
		time.Sleep(300 * time.Millisecond)
		settle()
		select {
		case r := <-done:
			t.Fatalf("the lookup ended on forged answers: %+v, %v", r.r, r.err)
		default:
		}
		tp.setDrop(nil)
		var r result
		select {
		case r = <-done:
		case <-time.After(15 * time.Second):
			t.Fatal("the lookup never ended")
		}
		if r.err != nil || r.r.Key != b.key || r.r.Name != "bob" {
			t.Fatalf("lookup of bob: %+v, %v; bob is %s", r.r, r.err, b.key.Short())
		}
		if n, ok := a.KnownName(mallory); ok {
			t.Fatalf("mallory's key is known as %q", n)
		}
	})
}

// TestAttackSpoofedNotRegistered: "not registered" in the clear is the one
// spoofed datagram a registered node acts on, by asking the rendezvous
// with an authenticated heartbeat; only silence is believed. Sent again
// and again, every 100 ms for a minute, it costs one heartbeat per
// answered check, never more than one outstanding, and no re-registration.
func TestAttackSpoofedNotRegistered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		tp := newTap(w)
		a := w.addClient("alice", nil)
		b := w.addClient("bob", nil)
		time.Sleep(time.Second)
		settle()
		before := stateOf(a)
		mark := tp.mark()
		const spoofs = 600
		for i := range spoofs {
			w.spoof(a.addr, wire.Marshal(&wire.Error{Code: wire.CodeNotRegistered, Request: wire.TypeSealed, TxID: uint32(i)}))
			time.Sleep(100 * time.Millisecond)
		}
		settle()
		checkUnchanged(t, a, before, "after a minute of spoofed not_registered")
		if !a.IsOnline(b.key) {
			t.Error("bob went offline")
		}
		if n := len(tp.since(mark, sentBy(a, wire.TypeHello, wire.TypeHandshake))); n != 0 {
			t.Errorf("alice registered again (%d hellos and handshakes)", n)
		}
		// Each check is one heartbeat, answered within the round trip
		// (instant here): at most one per spoofed datagram, plus the
		// regular heartbeats.
		sent := len(tp.since(mark, sentBy(a)))
		regular := int((spoofs*100*time.Millisecond)/(10*time.Second)) + 1
		if sent > spoofs+regular {
			t.Errorf("alice sent %d datagrams for %d spoofed errors", sent, spoofs)
		}
		t.Logf("%d spoofed not_registered: %d datagrams from alice", spoofs, sent)

		// A burst (a flood faster than the round trip) is one check.
		mark = tp.mark()
		tp.setDrop(sentTo(w, a)) // hold the answer back a moment
		for i := range 100 {
			w.spoof(a.addr, wire.Marshal(&wire.Error{Code: wire.CodeNotRegistered, Request: wire.TypeSealed, TxID: uint32(i)}))
		}
		time.Sleep(200 * time.Millisecond)
		settle()
		tp.setDrop(nil)
		if n := len(tp.since(mark, sentBy(a))); n != 1 {
			t.Errorf("a burst of 100 spoofed not_registered: alice sent %d datagrams, want 1 heartbeat", n)
		}
		// And when the rendezvous really forgot alice (its answers lost
		// here), silence is believed: she registers again.
		tp.setDrop(sentTo(w, a))
		w.spoof(a.addr, wire.Marshal(&wire.Error{Code: wire.CodeNotRegistered, Request: wire.TypeSealed}))
		time.Sleep(2 * time.Second)
		tp.setDrop(nil)
		time.Sleep(3 * time.Second)
		settle()
		if a.count("registered") != 2 {
			t.Errorf("a real loss of the session (an unanswered check) did not re-register: %v", a.notes())
		}
	})
}

// TestAttackReplayedCaptures: an observer on the path captures everything
// the rendezvous sends alice over a while (her registration, snapshots,
// presence, signals, lookups, heartbeat acks, path checks) and replays it
// all later, in order, backwards and twice: nothing changes. It replays it
// again while alice registers anew after a rendezvous restart: she
// registers, and the old presence (bob's leave) does not come back.
func TestAttackReplayedCaptures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		tp := newTap(w)
		a := w.addClient("alice", nil)
		_, bobPriv, _ := ed25519.GenerateKey(rand.Reader)
		b := w.addClient("bob", bobPriv)
		time.Sleep(time.Second)
		b.Signal(a.key, []byte("offer"))
		if _, err := a.Lookup(context.Background(), "bob", wire.Key{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(25 * time.Second) // heartbeats and their acks
		b.Leave()
		time.Sleep(time.Second)
		b2 := w.addClient("bob", bobPriv) // bob again, same key
		time.Sleep(time.Second)
		c := w.addClient("carol", nil)
		time.Sleep(time.Second)
		c.Leave()
		time.Sleep(time.Second)
		settle()
		captured := tp.since(0, sentTo(w, a))
		kinds := map[wire.Type]int{}
		for _, d := range captured {
			kinds[typeOf(d.b)]++
		}
		if kinds[wire.TypeSealed] < 8 || kinds[wire.TypeHandshakeReply] != 1 || kinds[wire.TypeCookie] != 1 {
			t.Fatalf("captured %v: not the whole conversation", kinds)
		}
		if !a.IsOnline(b2.key) || a.IsOnline(c.key) || a.count("left bob quit") != 1 || a.count("left carol quit") != 1 {
			t.Fatalf("setup: alice %v", a.notes())
		}
		t.Logf("captured %d datagrams from the rendezvous to alice: %v", len(captured), kinds)

		replay := func() {
			for _, d := range captured {
				w.spoof(a.addr, d.b)
			}
			for _, d := range slices.Backward(captured) {
				w.spoof(a.addr, d.b)
			}
			settle()
		}
		before := stateOf(a)
		mark := tp.mark()
		replay()
		replay()
		time.Sleep(3 * time.Second)
		settle()
		checkUnchanged(t, a, before, "after the replays")
		if n := len(tp.since(mark, sentBy(a))); n > 1 {
			t.Errorf("alice sent %d datagrams in answer to the replays", n)
		}

		// The rendezvous restarts; while alice registers again, every
		// Hello and Handshake she sends is followed by the whole capture.
		tp.setOn(func(d dgram) {
			if sentBy(a, wire.TypeHello, wire.TypeHandshake)(d) {
				for _, c := range captured {
					w.spoof(a.addr, c.b)
				}
			}
		})
		w.restartRendezvous()
		start := time.Now()
		for a.count("registered") < 2 {
			time.Sleep(100 * time.Millisecond)
			if time.Since(start) > 30*time.Second {
				t.Fatalf("alice did not register again under replays: %v", a.notes())
			}
		}
		time.Sleep(5 * time.Second)
		settle()
		tp.setOn(nil)
		replay()
		time.Sleep(3 * time.Second)
		settle()
		if !a.IsRegistered() || a.IsOnline(c.key) || !a.IsOnline(b2.key) {
			t.Errorf("after the restart and the replays: registered %v, online %v", a.IsRegistered(), a.Online())
		}
		for _, n := range a.notes()[len(before.notes):] {
			if !strings.HasPrefix(n, "registered") {
				t.Errorf("alice was told %q", n)
			}
		}
	})
}

// TestAttackWhileRegistering: spoofed datagrams at a node that is
// registering, each kind sent right after every Hello and Handshake it
// sends, so they arrive before the rendezvous's answer. It registers all
// the same, promptly, and hears no refusal.
func TestAttackWhileRegistering(t *testing.T) {
	lowOrder := [][]byte{
		make([]byte, 32),
		append([]byte{1}, make([]byte, 31)...),
		// Points of order 8 on Curve25519, and a non-canonical encoding.
		hexKey("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
		hexKey("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
		hexKey("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
	}
	cases := []struct {
		name  string
		forge func(t *testing.T, rng *mrand.Rand, w *world) [][]byte
	}{
		{"handshake replies with a low-order ephemeral", func(t *testing.T, rng *mrand.Rand, w *world) [][]byte {
			var out [][]byte
			for _, e := range lowOrder {
				out = append(out, wire.Marshal(&wire.HandshakeReply{Noise: append(slices.Clone(e), rbytes(rng, 16)...)}))
			}
			return out
		}},
		{"random handshake replies", func(t *testing.T, rng *mrand.Rand, w *world) [][]byte {
			var out [][]byte
			for _, n := range []int{1, 31, 32, 48, 64, 200} {
				out = append(out, wire.Marshal(&wire.HandshakeReply{Noise: rbytes(rng, n)}))
			}
			return out
		}},
		{"cookie replies", func(t *testing.T, rng *mrand.Rand, w *world) [][]byte {
			other, _ := ctrl.NewServerKey()
			var out [][]byte
			for _, k := range []ctrl.PublicKey{w.key.Public, other.Public} {
				out = append(out, wire.Marshal(&wire.CookieReply{Nonce: rng.Uint64(), Cookie: wire.Cookie(rbytes(rng, wire.CookieLen)), ServerKey: k}))
			}
			return out
		}},
		{"refusals in the clear", func(t *testing.T, rng *mrand.Rand, w *world) [][]byte {
			var out [][]byte
			for _, code := range []wire.Code{wire.CodeNameTaken, wire.CodeKeyInUse, wire.CodeBadName, wire.CodeBadSignature,
				wire.CodeMalformed, wire.CodeReplay, wire.CodeQuota, wire.CodeRateLimited, wire.CodeNotRegistered} {
				out = append(out, wire.Marshal(&wire.Error{Code: code, Request: wire.TypeHandshake, TxID: rng.Uint32()}))
			}
			for range 16 {
				e := wire.Marshal(&wire.Error{Code: wire.CodeVersion, Request: wire.TypeHello, TxID: rng.Uint32(), Message: "upgrade"})
				e[1] = wire.Version + 1
				out = append(out, e)
			}
			return out
		}},
		{"bad cookie in the clear", func(t *testing.T, rng *mrand.Rand, w *world) [][]byte {
			var out [][]byte
			for _, code := range []wire.Code{wire.CodeBadCookie, wire.CodeBadHandshake} {
				out = append(out, wire.Marshal(&wire.Error{Code: code, Request: wire.TypeHandshake, TxID: rng.Uint32()}))
			}
			return out
		}},
		{"sealed datagrams", func(t *testing.T, rng *mrand.Rand, w *world) [][]byte {
			keys := forgedKeys(t, w.key)
			var out [][]byte
			for _, m := range innerForgeries(rng, wire.Key{1}, wire.Key{2}) {
				out = append(out, sealAs(keys, wire.SessionID(rbytes(rng, 8)), 0, m))
			}
			return out
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				w := newWorld(t)
				forged := tc.forge(t, newRng(t), w)
				tp := newTap(w)
				var mu sync.Mutex
				var target *client
				spoofed := 0
				tp.setOn(func(d dgram) {
					mu.Lock()
					defer mu.Unlock()
					if target != nil && sentBy(target, wire.TypeHello, wire.TypeHandshake)(d) {
						for _, b := range forged {
							w.spoof(target.addr, b)
							spoofed++
						}
					}
				})
				// The first Hello may go before the target is set: the
				// retransmissions and the Handshake are what count.
				c := w.addClient("carol", nil)
				mu.Lock()
				target = c
				mu.Unlock()
				start := time.Now()
				for !c.IsRegistered() && time.Since(start) < 20*time.Second {
					time.Sleep(50 * time.Millisecond)
				}
				took := time.Since(start)
				tp.setOn(nil)
				settle()
				mu.Lock()
				n := spoofed
				mu.Unlock()
				if !c.IsRegistered() {
					t.Fatalf("carol did not register within 20 s under %d spoofed datagrams: %v", n, c.notes())
				}
				// Nothing is lost here: the first answers register her.
				if took > 100*time.Millisecond {
					t.Errorf("carol took %v to register under %d spoofed datagrams", took, n)
				}
				for _, note := range c.notes() {
					if !strings.HasPrefix(note, "registered") && note != "server key learned" {
						t.Errorf("carol was told %q", note)
					}
				}
				select {
				case err := <-c.done:
					t.Errorf("Run ended: %v", err)
				default:
				}
			})
		})
	}
}

func hexKey(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}
