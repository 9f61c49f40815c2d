package scenario

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"natchat/headless"
	"natchat/testenv"
)

// netcheck sends /netcheck to n and returns the netcheck event that
// answers it.
func netcheck(t *testing.T, n *testenv.Node, within time.Duration) testenv.Event {
	t.Helper()
	mark := n.Mark()
	if err := n.Command("/netcheck"); err != nil {
		t.Fatal(err)
	}
	ev, err := n.WaitFrom(mark, within, testenv.OfType(headless.TypeNetCheck))
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestNetCheckBehindNATs: /netcheck on a node behind each kind of NAT,
// with a rendezvous that has a second STUN address (-stun-alt :3479).
// Linux masquerade keeps a LAN socket's port whatever the destination, so
// every NAT but the symmetric one (masquerade random) must come out
// endpoint-independent, with the one public endpoint the node registered
// with; the symmetric NAT endpoint-dependent, with a second endpoint on
// the same public address. Then the port-restricted node (alice) writes
// to the one behind the symmetric NAT (bob), a pair that cannot punch,
// and her /netcheck lists him on the relay, with the time the path began.
func TestNetCheckBehindNATs(t *testing.T) {
	t.Parallel()
	needBinaries(t)
	const budget = 60 * time.Second // lab set-up included
	began := time.Now()
	end := began.Add(budget)
	within := func(d time.Duration) time.Duration { return max(0, min(d, time.Until(end))) }

	l := testenv.NewT(t, testenv.Options{})
	h, err := l.AddRendezvousHost()
	if err != nil {
		t.Fatal(err)
	}
	rv, err := l.StartRendezvous(h, testenv.RendezvousConfig{Bin: bins.Rendezvous, Expiry: expiry, Heartbeat: heartbeat,
		Args: []string{"-stun-alt", ":3479"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- rendezvous log (tail):\n%s", tailLines(rv.Stderr(), 40))
		}
	})
	w := &world{lab: l, rv: rv}

	type member struct {
		nat  testenv.NATType
		node *testenv.Node
	}
	members := []*member{
		{nat: testenv.PortRestricted}, {nat: testenv.Symmetric},
		{nat: testenv.FullCone}, {nat: testenv.AddressRestricted}, {nat: testenv.None},
	}
	for i, m := range members {
		name := []string{"alice", "bob", "carol", "dave", "erin"}[i]
		s, err := l.AddSite(fmt.Sprintf("r%d", i+1), m.nat, false, name)
		if err != nil {
			t.Fatal(err)
		}
		m.node = w.node(t, s.Hosts[0], 0)
	}
	for _, m := range members {
		if _, err := m.node.Wait(within(waitShort), testenv.Registered()); err != nil {
			t.Fatal(err)
		}
	}
	rvIP := rv.Addr.Addr().String()
	alt := netip.AddrPortFrom(rv.Addr.Addr(), 3479).String()
	for _, m := range members {
		n := m.node
		ev := netcheck(t, n, within(waitShort))
		public := n.Public()
		t.Logf("%s (%v): registered as %s; %s", n.Name, m.nat, public, ev.Raw)
		if !strings.Contains(ev.Detail, rvIP) {
			t.Errorf("%s: detail %q does not name the rendezvous", n.Name, ev.Detail)
		}
		if m.nat.EndpointIndependentMapping() {
			if ev.Mapping != "endpoint-independent" || !slices.Equal(ev.PublicList, []string{public}) {
				t.Errorf("%s behind %v: mapping %q, public %v; want endpoint-independent at %s", n.Name, m.nat, ev.Mapping, ev.PublicList, public)
			}
			continue
		}
		if ev.Mapping != "endpoint-dependent" || len(ev.PublicList) != 2 || ev.PublicList[0] != public {
			t.Errorf("%s behind %v: mapping %q, public %v; want endpoint-dependent, %s first", n.Name, m.nat, ev.Mapping, ev.PublicList, public)
			continue
		}
		first, second := netip.MustParseAddrPort(ev.PublicList[0]), netip.MustParseAddrPort(ev.PublicList[1])
		if first.Addr() != second.Addr() || first.Port() == second.Port() {
			t.Errorf("%s behind %v: public %v, want two ports of one address", n.Name, m.nat, ev.PublicList)
		}
		if !strings.Contains(ev.Detail, ev.PublicList[1]) || !strings.Contains(ev.Detail, alt) {
			t.Errorf("%s: detail %q does not name %s toward %s", n.Name, ev.Detail, ev.PublicList[1], alt)
		}
	}

	// alice (port-restricted) writes to bob (symmetric): their session
	// starts on the relay, where it stays.
	alice, bob := members[0].node, members[1].node
	wrote := time.Now()
	sent, err := alice.Send(bob.Name, "netcheck hello")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Wait(within(waitShort), testenv.Delivered(sent.ID)); err != nil {
		t.Fatal(err)
	}
	ev := netcheck(t, alice, within(waitShort))
	if len(ev.NetPeers) != 1 {
		t.Fatalf("alice's netcheck peers %+v, want bob's row (%s)", ev.NetPeers, ev.Raw)
	}
	p := ev.NetPeers[0]
	if p.Name != bob.Name || p.Path != "relay" || p.Remote != "" || p.RTTMS <= 0 {
		t.Errorf("bob's row %+v, want on the relay with an RTT (%s)", p, ev.Raw)
	}
	if p.Changed.Before(wrote.Add(-time.Second)) || p.Changed.After(ev.TS) {
		t.Errorf("bob's path changed at %v, want between alice's message (%v) and the answer (%v)", p.Changed, wrote, ev.TS)
	}
	t.Logf("took %v", time.Since(began).Round(time.Millisecond))
}
