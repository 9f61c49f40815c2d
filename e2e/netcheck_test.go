package e2e

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// netcheckEvent is a netcheck event as docs/HEADLESS.md describes it
// (decoded here: package headless's Event has a peers list of another
// shape).
type netcheckEvent struct {
	Type    string    `json:"type"`
	TS      time.Time `json:"ts"`
	Public  []string  `json:"public"`
	Mapping string    `json:"mapping"`
	Detail  string    `json:"detail"`
	Peers   []struct {
		Name    string    `json:"name"`
		Path    string    `json:"path"`
		Remote  string    `json:"remote"`
		RTTMS   float64   `json:"rtt_ms"`
		Changed time.Time `json:"changed"`
	} `json:"peers"`
}

// netcheck runs /netcheck on n and returns its answer.
func netcheck(t *testing.T, n *node) *netcheckEvent {
	t.Helper()
	mark := n.mark()
	n.command(t, "/netcheck")
	// The probe gives up on a silent address after 3 s.
	e, _, ok := n.out.waitFor(mark, waitLong, func(e entry) bool { return e.ev != nil && e.ev.Type == "netcheck" })
	if !ok {
		t.Fatalf("%s: no netcheck event within %v (%s)", n.label, waitLong, n.status())
	}
	var nc netcheckEvent
	if err := json.Unmarshal([]byte(e.text), &nc); err != nil {
		t.Fatalf("%s: netcheck event %q: %v", n.label, e.text, err)
	}
	if nc.Public == nil || nc.Peers == nil {
		t.Errorf("%s: netcheck event %q: public and peers must be lists", n.label, e.text)
	}
	return &nc
}

// TestNetCheck: on loopback, with a rendezvous that has a second STUN
// address, /netcheck finds the node's endpoint the same toward both
// (endpoint-independent), and once alice and bob have chatted and moved
// to a direct path, lists bob on it with his endpoint and when the path
// changed. Without the second address the mapping is unknown, and says
// why.
func TestNetCheck(t *testing.T) {
	t.Parallel()
	start := time.Now()
	rv := startRendezvous(t, rvOptions{extra: []string{"-stun-alt", "127.0.0.1:0"}})
	alice, bob := startPair(t, rv.addr, nodeOptions{})
	public := alice.waitRegistered(t).Public
	if ap, err := netip.ParseAddrPort(public); err != nil || ap.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("alice registered as %q", public)
	}

	nc := netcheck(t, alice)
	if nc.Mapping != "endpoint-independent" || !slices.Equal(nc.Public, []string{public}) {
		t.Fatalf("alice's netcheck %+v, want endpoint-independent at %s", nc, public)
	}
	if !strings.Contains(nc.Detail, public) || !strings.Contains(nc.Detail, rv.addr) {
		t.Errorf("detail %q names neither alice's endpoint nor the rendezvous", nc.Detail)
	}

	chat(t, alice, bob, "nc", 3)
	waitPath(t, alice, "bob", "direct")
	path := alice.waitEvent(t, waitLong, "path direct to bob", func(e *event) bool {
		return e.Type == "path" && e.Peer == "bob" && e.Path == "direct"
	})
	// Every path event comes after the change it reports; so does the
	// netcheck that follows the last one.
	nc = netcheck(t, alice)
	if nc.Mapping != "endpoint-independent" || len(nc.Peers) != 1 {
		t.Fatalf("alice's netcheck after the chat %+v, want bob's row", nc)
	}
	p := nc.Peers[0]
	if p.Name != "bob" || p.Path != "direct" || p.Remote == "" || p.RTTMS <= 0 {
		t.Fatalf("bob's row %+v, want direct with a remote and an RTT", p)
	}
	if last := alice.events(0, func(e *event) bool { return e.Type == "path" && e.Peer == "bob" }); last[len(last)-1].Path == "direct" &&
		last[len(last)-1].Remote != p.Remote {
		t.Errorf("bob's remote %q, the last path event says %q", p.Remote, last[len(last)-1].Remote)
	}
	if p.Changed.IsZero() || p.Changed.Before(start) || p.Changed.After(nc.TS) {
		t.Errorf("bob's path changed at %v; want after the test's start %v and before the answer %v (the direct path event: %v)",
			p.Changed, start, nc.TS, path.TS)
	}

	// A rendezvous without -stun-alt announces no second address.
	rv2 := startRendezvous(t, rvOptions{})
	carol := startNode(t, "carol", rv2.addr, nodeOptions{})
	carol.waitRegistered(t)
	nc = netcheck(t, carol)
	if nc.Mapping != "unknown" || !strings.Contains(nc.Detail, "-stun-alt") || len(nc.Public) != 1 || len(nc.Peers) != 0 {
		t.Fatalf("carol's netcheck %+v, want unknown for want of -stun-alt", nc)
	}
}
