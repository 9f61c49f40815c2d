package scenario

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"natchat/testenv"
)

// expectedPath is what RFC 4787 behaviour allows between a node behind a
// and a node behind b (docs/NATLAB.md has the same table), with the reason.
func expectedPath(a, b testenv.NATType) (path, reason string) {
	if a > b {
		a, b = b, a // None < FullCone < AddressRestricted < PortRestricted < Symmetric
	}
	switch {
	case a == testenv.None && b == testenv.None:
		return "direct", "both public: no NAT, no filter"
	case a == testenv.None:
		return "direct", "the public host accepts the NATed side's checks from whatever mapping they use and answers to it (peer-reflexive candidate)"
	case a == testenv.FullCone:
		return "direct", "once its mapping exists the full-cone side accepts any sender, even a symmetric peer's fresh port; the answer leaves through the open mapping"
	case b != testenv.Symmetric:
		return "direct", "both map endpoint-independently, so each server-reflexive candidate is the port the checks really come from; simultaneous checks open both filters"
	case a == testenv.AddressRestricted:
		return "direct", "the symmetric side's new port is unknown, but address-dependent filtering admits any port of an address it has sent to; the answer goes to the peer-reflexive port"
	default:
		return "relay", "the symmetric side checks from a fresh, unpredictable port, which the other side's address-and-port-dependent filter drops; its own filter drops checks to the port it showed the rendezvous"
	}
}

type matrixCase struct {
	name, expect, reason string
	// build returns the hosts of alice and bob.
	build func(t *testing.T, l *testenv.Lab) (alice, bob *testenv.Host)
}

func matrixCases() []matrixCase {
	var cases []matrixCase
	for i, na := range testenv.NATTypes {
		for _, nb := range testenv.NATTypes[i:] {
			exp, why := expectedPath(na, nb)
			cases = append(cases, matrixCase{
				name: fmt.Sprintf("%v to %v", na, nb), expect: exp, reason: why,
				build: func(t *testing.T, l *testenv.Lab) (*testenv.Host, *testenv.Host) {
					sa, err := l.AddSite("ra", na, false, "alice")
					if err != nil {
						t.Fatal(err)
					}
					sb, err := l.AddSite("rb", nb, false, "bob")
					if err != nil {
						t.Fatal(err)
					}
					return sa.Hosts[0], sb.Hosts[0]
				},
			})
		}
	}
	cases = append(cases,
		matrixCase{
			name: "same port-restricted router", expect: "direct",
			reason: "host candidates: on one LAN the private addresses reach each other without NAT (the router does not hairpin its public address)",
			build: func(t *testing.T, l *testenv.Lab) (*testenv.Host, *testenv.Host) {
				s, err := l.AddSite("home", testenv.PortRestricted, false, "alice", "bob")
				if err != nil {
					t.Fatal(err)
				}
				return s.Hosts[0], s.Hosts[1]
			},
		},
		matrixCase{
			name: "double NAT (port-restricted behind port-restricted CGN) to port-restricted", expect: "direct",
			reason: "endpoint-independent mapping twice is still endpoint-independent: the carrier's server-reflexive candidate behaves like one port-restricted NAT",
			build: func(t *testing.T, l *testenv.Lab) (*testenv.Host, *testenv.Host) {
				sa, err := l.AddDoubleNAT("ra", testenv.PortRestricted, testenv.PortRestricted, "alice")
				if err != nil {
					t.Fatal(err)
				}
				sb, err := l.AddSite("rb", testenv.PortRestricted, false, "bob")
				if err != nil {
					t.Fatal(err)
				}
				return sa.Hosts[0], sb.Hosts[0]
			},
		},
	)
	return cases
}

type matrixRow struct {
	pair, expect, observed string
	toDirect               time.Duration // 0: never direct
	sent, delivered        int
	failed                 bool
}

// TestNATMatrix runs alice and bob behind every pair of NAT types, plus
// two hosts behind one router and a host behind a double NAT. In each
// pair both exchange messages; the path events must show direct where
// theory allows and relay otherwise, and every message must be delivered.
// The table of results is logged at the end.
func TestNATMatrix(t *testing.T) {
	t.Parallel()
	needBinaries(t)
	var mu sync.Mutex
	var rows []matrixRow
	t.Run("pairs", func(t *testing.T) {
		for _, c := range matrixCases() {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				row := matrixRow{pair: c.name, expect: c.expect, observed: "-"}
				defer func() {
					row.failed = t.Failed()
					mu.Lock()
					rows = append(rows, row)
					mu.Unlock()
				}()
				runMatrixCase(t, c, &row)
			})
		}
	})
	sort.Slice(rows, func(i, j int) bool { return rows[i].pair < rows[j].pair })
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-78s %-8s %-15s %-14s %s\n", "PAIR", "EXPECTED", "OBSERVED (a/b)", "TIME TO DIRECT", "DELIVERED")
	for _, r := range rows {
		td := "-"
		if r.toDirect > 0 {
			td = r.toDirect.Round(10 * time.Millisecond).String()
		}
		mark := ""
		if r.failed {
			mark = "  FAIL"
		}
		fmt.Fprintf(&b, "%-78s %-8s %-15s %-14s %d/%d%s\n", r.pair, r.expect, r.observed, td, r.delivered, r.sent, mark)
	}
	t.Log(b.String())
}

func runMatrixCase(t *testing.T, c matrixCase, row *matrixRow) {
	w := newWorld(t, 0, 0)
	ha, hb := c.build(t, w.lab)
	a, b := w.meet(t, ha, hb, 0)
	t.Logf("expect %s: %s", c.expect, c.reason)

	// The first message opens the session, which starts hole punching.
	first := converse(t, a, b, 1, "hello", sendWait)
	row.sent, row.delivered = first.sent, first.delivered
	sent, err := a.Wait(time.Second, testenv.OfType("sent"))
	if err != nil {
		t.Fatal(err)
	}
	if c.expect == "direct" {
		for _, p := range [][2]*testenv.Node{{a, b}, {b, a}} {
			ev, err := p[0].Wait(waitDirect, testenv.PathIs(p[1].Name, "direct"))
			if err != nil {
				t.Error(err)
				continue
			}
			if p[0] == a {
				row.toDirect = ev.TS.Sub(sent.TS)
			}
		}
	} else if ev, err := a.Wait(relayWindow, testenv.PathIs(b.Name, "direct")); err == nil {
		t.Errorf("alice reported a direct path to bob (%s), which %s should rule out", ev.Raw, c.name)
	}

	res := converse(t, a, b, 10, "batch", sendWait)
	row.sent += res.sent
	row.delivered += res.delivered
	row.observed = lastPath(a, b.Name) + "/" + lastPath(b, a.Name)
	if want := c.expect + "/" + c.expect; row.observed != want {
		t.Errorf("final paths (alice/bob) %s, want %s", row.observed, want)
	}
	if n := res.paths[c.expect]; n != 2*10 {
		t.Errorf("%d of 20 messages came over the %s path (by path: %v)", n, c.expect, res.paths)
	}
}
