package peernet

import (
	"net/netip"
	"testing"

	"natchat/wire"
)

// TestStrangerIntroductionsCapped: offers from peers we never had a session
// with each cost an ICE agent, so they are taken only up to half of
// MaxDirect; a peer we do have a session with still gets one beyond that,
// up to MaxDirect.
func TestStrangerIntroductionsCapped(t *testing.T) {
	rv := &fakeRV{}
	sock := newSock()
	p, err := New(Options{Conn: sock, Rendezvous: netip.MustParseAddrPort("127.0.0.1:3478"), Local: wire.Key{1}, RV: rv, MaxDirect: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.mu.Lock()
		ds := make([]*direct, 0, len(p.directs))
		for _, d := range p.directs {
			ds = append(ds, d)
		}
		p.directs = map[wire.Key]*direct{}
		p.mu.Unlock()
		for _, d := range ds {
			p.stopDirect(d)
		}
		p.link.Close()
	})
	offer := func(k wire.Key) {
		// 32 candidates, most of them pointing at one third party: the
		// agent gets at most maxOfferCandidates, duplicates dropped.
		var cs []string
		for i := range 32 {
			cs = append(cs, "candidate:1 1 udp 2130706431 198.51.100.9 "+itoa(4000+i%3)+" typ host")
		}
		p.onSignal(k, wire.AppendPeerSignal(nil, &wire.PeerSignal{Kind: wire.SignalOffer, Seq: 1, Generation: 1,
			Ufrag: "abcdefghijklmnop", Pwd: "abcdefghijklmnopqrstuvwxyz012345", Candidates: cs}))
	}
	for i := range 20 {
		offer(wire.Key{0x80, byte(i)})
	}
	p.mu.Lock()
	n := len(p.directs)
	p.mu.Unlock()
	if n != 4 {
		t.Fatalf("%d strangers' offers taken, want MaxDirect/2 = 4", n)
	}
	friend := wire.Key{0x90}
	p.mu.Lock()
	p.opened[friend] = true // we have a session with it
	p.mu.Unlock()
	offer(friend)
	p.mu.Lock()
	_, ok := p.directs[friend]
	p.mu.Unlock()
	if !ok {
		t.Fatal("a peer we talk with was refused along with the strangers")
	}
}

func itoa(i int) string {
	b := []byte{}
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}
