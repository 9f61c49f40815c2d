package peernet

import (
	"net/netip"
	"testing"

	"natchat/wire"
)

// newPunchingNet returns a Net with ICE, not running: tests drive its
// worker with work (below). Its ICE agents are stopped at cleanup.
func newPunchingNet(t *testing.T, maxDirect int) *Net {
	t.Helper()
	p, err := New(Options{Conn: newSock(), Rendezvous: netip.MustParseAddrPort("127.0.0.1:3478"), Local: wire.Key{1}, RV: &fakeRV{}, MaxDirect: maxDirect})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.mu.Lock()
		p.stopped = true // as Run does
		ds := make([]*direct, 0, len(p.directs))
		for _, d := range p.directs {
			ds = append(ds, d)
		}
		p.directs = map[wire.Key]*direct{}
		p.mu.Unlock()
		for _, d := range ds {
			p.stopDirect(d)
		}
		p.stops.Wait()
		p.punch.Close()
		p.link.Close()
	})
	return p
}

// work does what Open, Vouch, Close and Signaled queued, as the worker would.
func work(p *Net) {
	for {
		select {
		case o := <-p.ops:
			p.do(o)
		default:
			return
		}
	}
}

// directs returns how many peers have an ICE agent, and which.
func directs(p *Net) (n int, has func(wire.Key) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	set := make(map[wire.Key]bool, len(p.directs))
	for k := range p.directs {
		set[k] = true
	}
	return len(set), func(k wire.Key) bool { return set[k] }
}

// offer has peer k send an offer, as through the rendezvous.
func offer(p *Net, k wire.Key) {
	// 32 candidates, most of them pointing at one third party: the agent
	// gets at most maxOfferCandidates, duplicates dropped.
	var cs []string
	for i := range 32 {
		cs = append(cs, "candidate:1 1 udp 2130706431 198.51.100.9 "+itoa(4000+i%3)+" typ host")
	}
	p.Signaled(k, wire.AppendPeerSignal(nil, &wire.PeerSignal{Kind: wire.SignalOffer, Seq: 1, Generation: 1,
		Ufrag: "abcdefghijklmnop", Pwd: "abcdefghijklmnopqrstuvwxyz012345", Candidates: cs}))
	work(p)
}

// TestStrangerIntroductionsCapped: offers from peers we never had a session
// with each cost an ICE agent, so they are taken only up to half of
// MaxDirect; a peer we talk with still gets one beyond that, up to
// MaxDirect.
func TestStrangerIntroductionsCapped(t *testing.T) {
	p := newPunchingNet(t, 8)
	for i := range 20 {
		offer(p, wire.Key{0x80, byte(i)})
	}
	if n, _ := directs(p); n != 4 {
		t.Fatalf("%d strangers' offers taken, want MaxDirect/2 = 4", n)
	}
	friend := wire.Key{0x90}
	p.Open(friend) // we dialed it: its session is ours
	p.Vouch(friend)
	work(p)
	offer(p, friend)
	if _, has := directs(p); !has(friend) {
		t.Fatal("a peer we talk with was refused along with the strangers")
	}
}

// TestInboundSessionsAreStrangers: any registered key can dial a session to
// us, so a session only the peer dialed does not make it ours: 130 such
// peers get no more ICE agents than the strangers' cap (half of the
// default MaxDirect), and a peer we dial, or one we come to talk with,
// still gets one.
func TestInboundSessionsAreStrangers(t *testing.T) {
	p := newPunchingNet(t, 0) // MaxDirect 128: strangers' cap 64
	var inbound []wire.Key
	for i := range 130 {
		k := wire.Key{0x80, byte(i)}
		inbound = append(inbound, k)
		p.Open(k) // session up (they dialed), never vouched for
		work(p)
		offer(p, k)
	}
	n, _ := directs(p)
	if n != 64 {
		t.Fatalf("%d ICE agents for peers that only dialed us, want the strangers' cap 64", n)
	}
	// A peer we dial (session.Options.OnOurs after its up).
	dialed := wire.Key{0x90}
	p.Open(dialed)
	p.Vouch(dialed)
	work(p)
	if n2, has := directs(p); !has(dialed) || n2 != n+1 {
		t.Fatalf("a peer we dialed got no ICE agent (%d agents)", n2)
	}
	// One of the refused peers we come to talk with (answered, or the
	// messenger accepted its chat) gets one now.
	late := inbound[len(inbound)-1]
	if _, has := directs(p); has(late) {
		t.Fatal("the last inbound peer was not refused")
	}
	p.Vouch(late)
	work(p)
	if n3, has := directs(p); !has(late) || n3 != n+2 {
		t.Fatalf("a peer vouched for after its session came up got no ICE agent (%d agents)", n3)
	}
	// Vouching is for the session: after it ends and comes back, the peer
	// is a stranger again (and Vouch for a peer not open does nothing).
	p.Close(late)
	p.Vouch(wire.Key{0x91})
	work(p)
	p.mu.Lock()
	ours := len(p.ours)
	p.mu.Unlock()
	if ours != 1 {
		t.Fatalf("%d peers ours, want 1 (the dialed one)", ours)
	}
}

func itoa(i int) string {
	b := []byte{}
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}
