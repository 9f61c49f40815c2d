package peernet

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"natchat/wire"
)

func hostCand(addr string, port int) string {
	return fmt.Sprintf("candidate:1 1 udp 2130706431 %s %d typ host", addr, port)
}

func srflxCand(addr string, port int) string {
	return fmt.Sprintf("candidate:2 1 udp 1694498815 %s %d typ srflx raddr 0.0.0.0 rport 50000", addr, port)
}

func TestFilterCandidates(t *testing.T) {
	rv := netip.MustParseAddrPort("192.0.2.1:3478")
	for _, tc := range []struct {
		name string
		rv   netip.AddrPort // zero: rv above
		in   []string
		keep []int // indexes into in, in order
	}{
		{"private host and public", netip.AddrPort{}, []string{
			hostCand("192.168.1.10", 50000), hostCand("10.0.0.5", 50000), hostCand("172.16.3.4", 50000),
			hostCand("fd00::1", 50000), hostCand("2001:db8::7", 50000), srflxCand("203.0.113.7", 40000),
			"candidate:3 1 udp 16777215 198.51.100.3 3478 typ relay raddr 203.0.113.7 rport 40000",
			"candidate:4 1 udp 1862270975 198.51.100.4 5000 typ prflx raddr 0.0.0.0 rport 0",
		}, []int{0, 1, 2, 3, 4, 5, 6, 7}},
		{"duplicates", netip.AddrPort{}, []string{
			hostCand("203.0.113.7", 40000), srflxCand("203.0.113.7", 40000), // same address, other type
			hostCand("203.0.113.7", 40001),        // other port
			hostCand("::ffff:203.0.113.7", 40000), // IPv4-mapped is IPv4
			"candidate:9 1 tcp 2130706431 203.0.113.7 40000 typ host tcptype passive",
			hostCand("2001:db8::7", 40000), hostCand("2001:db8:0:0::7", 40000),
		}, []int{0, 2, 5}},
		{"unparseable", netip.AddrPort{}, []string{
			"", "garbage", "candidate:1 1 udp 2130706431 203.0.113.7 40000", // too short
			"candidate:1 1 udp notanumber 203.0.113.7 40000 typ host",
			"candidate:1 1 udp 2130706431 203.0.113.7 70000 typ host",
			"candidate:1 1 udp 2130706431 203.0.113.7 40000 typ weird",
			"candidate:1 1 udp 2130706431 203.0.113.7 40000 typ srflx raddr",
			hostCand("203.0.113.7", 0),
			hostCand("0123abcd-0123.local", 40000), // mDNS
			hostCand("example.com", 40000),
			hostCand("203.0.113.7", 40002),
		}, []int{10}},
		{"unspecified", netip.AddrPort{}, []string{
			hostCand("0.0.0.0", 1), hostCand("::", 1), hostCand("0.1.2.3", 1), hostCand("::ffff:0.0.0.0", 1), hostCand("1.0.0.0", 1),
		}, []int{4}},
		{"loopback", netip.AddrPort{}, []string{
			hostCand("127.0.0.1", 1), hostCand("127.5.5.5", 1), hostCand("::1", 1), hostCand("::ffff:127.0.0.1", 2), hostCand("128.0.0.1", 1),
		}, []int{4}},
		{"loopback with a loopback rendezvous", netip.MustParseAddrPort("127.0.0.1:3478"), []string{
			hostCand("127.0.0.1", 50000), hostCand("::1", 50000), hostCand("127.0.0.1", 3478), // the rendezvous
			hostCand("169.254.1.1", 1),
		}, []int{0, 1}},
		{"link-local", netip.AddrPort{}, []string{
			hostCand("169.254.169.254", 80), hostCand("169.254.1.1", 50000), hostCand("fe80::1", 50000),
			hostCand("fe80::1%eth0", 50001), hostCand("febf::1", 1), hostCand("fec0::1", 1),
		}, []int{5}},
		{"link-local with a link-local rendezvous", netip.MustParseAddrPort("169.254.0.1:3478"), []string{
			hostCand("169.254.1.1", 50000), hostCand("fe80::1", 50000), hostCand("127.0.0.1", 1),
		}, []int{0, 1}},
		{"multicast", netip.AddrPort{}, []string{
			hostCand("224.0.0.1", 1), hostCand("224.0.0.251", 5353), hostCand("239.1.1.1", 1),
			hostCand("ff02::1", 1), hostCand("ff02::fb", 5353), hostCand("ff05::2", 1), hostCand("ff0e::1", 1),
			hostCand("223.255.255.255", 1),
		}, []int{7}},
		{"broadcast", netip.AddrPort{}, []string{
			hostCand("255.255.255.255", 1), hostCand("::ffff:255.255.255.255", 1), hostCand("255.255.255.254", 1),
		}, []int{2}},
		{"rendezvous", netip.AddrPort{}, []string{
			srflxCand("192.0.2.1", 3478), hostCand("::ffff:192.0.2.1", 3478), hostCand("192.0.2.1", 3479),
		}, []int{2}},
		{"IPv4-mapped rendezvous", netip.MustParseAddrPort("[::ffff:192.0.2.1]:3478"), []string{
			srflxCand("192.0.2.1", 3478), hostCand("192.0.2.1", 3479),
		}, []int{1}},
		{"order kept", netip.AddrPort{}, []string{
			hostCand("2001:db8::9", 9), hostCand("127.0.0.1", 1), srflxCand("203.0.113.1", 1),
			hostCand("10.0.0.1", 1), hostCand("203.0.113.1", 1), hostCand("198.51.100.1", 1),
		}, []int{0, 2, 3, 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.rv
			if !r.IsValid() {
				r = rv
			}
			in := slices.Clone(tc.in)
			got := filterCandidates(in, r, wire.MaxCandidates)
			var want []string
			for _, i := range tc.keep {
				want = append(want, tc.in[i])
			}
			if !slices.Equal(got, want) {
				t.Errorf("filterCandidates:\n got  %q\n want %q", got, want)
			}
			if !slices.Equal(in, tc.in) {
				t.Errorf("input modified")
			}
		})
	}
}

// TestFilterCandidatesVictim: an offer pointing all its 32 candidates at
// one third party, port by port, yields at most maxOfferCandidates.
func TestFilterCandidatesVictim(t *testing.T) {
	rv := netip.MustParseAddrPort("192.0.2.1:3478")
	var cs []string
	for i := range wire.MaxCandidates {
		cs = append(cs, srflxCand("198.51.100.9", 1000+i))
	}
	got := filterCandidates(cs, rv, maxOfferCandidates)
	if !slices.Equal(got, cs[:maxOfferCandidates]) {
		t.Errorf("got %d candidates %q, want the first %d", len(got), got, maxOfferCandidates)
	}
	// Junk first does not use up the budget.
	junk := []string{"garbage", hostCand("127.0.0.1", 1), hostCand("224.0.0.1", 1), cs[0], cs[0]}
	got = filterCandidates(append(junk, cs...), rv, maxOfferCandidates)
	if !slices.Equal(got, cs[:maxOfferCandidates]) {
		t.Errorf("after junk: got %q, want the first %d", got, maxOfferCandidates)
	}
}

func TestFilterCandidatesMax(t *testing.T) {
	rv := netip.MustParseAddrPort("192.0.2.1:3478")
	cs := []string{hostCand("10.0.0.1", 1), hostCand("10.0.0.2", 1), hostCand("10.0.0.3", 1)}
	for _, tc := range []struct {
		max  int
		want []string
	}{
		{-1, nil}, {0, nil}, {1, cs[:1]}, {2, cs[:2]}, {3, cs}, {8, cs},
	} {
		if got := filterCandidates(cs, rv, tc.max); !slices.Equal(got, tc.want) {
			t.Errorf("max %d: got %q, want %q", tc.max, got, tc.want)
		}
	}
	if got := filterCandidates(nil, rv, 8); len(got) != 0 {
		t.Errorf("no candidates: got %q", got)
	}
	// No rendezvous known: no candidate is dropped as the rendezvous, and
	// loopback stays out.
	if got := filterCandidates([]string{hostCand("0.0.0.0", 0), hostCand("127.0.0.1", 1), cs[0]}, netip.AddrPort{}, 8); !slices.Equal(got, cs[:1]) {
		t.Errorf("zero rv: got %q", got)
	}
}
