package node

import (
	"testing"
	"time"

	"natchat/node/api"
	"natchat/node/link"
	"natchat/node/rvclient"
	"natchat/wire"
)

func TestPathLog(t *testing.T) {
	var l pathLog
	a, b := wire.Key{1}, wire.Key{2}
	t0 := time.Unix(1_700_000_000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	check := func(step string, want map[wire.Key]time.Time) {
		t.Helper()
		got := l.keys()
		if len(got) != len(want) {
			t.Fatalf("%s: %v, want %v", step, got, want)
		}
		for k, w := range want {
			if !got[k].Equal(w) {
				t.Fatalf("%s: %s changed %v, want %v", step, k.Short(), got[k], w)
			}
		}
	}
	check("empty", nil)
	l.note(a, link.Path{Kind: link.Relay, Remote: "192.0.2.1:3478"}, at(0))
	l.note(b, link.Path{Kind: link.Relay, Remote: "192.0.2.1:3478"}, at(1))
	check("opened", map[wire.Key]time.Time{a: at(0), b: at(1)})
	l.note(a, link.Path{Kind: link.Direct, Remote: "198.51.100.7:4000", RTT: time.Millisecond}, at(2))
	check("direct", map[wire.Key]time.Time{a: at(2), b: at(1)})
	// An RTT change is no path change.
	l.note(a, link.Path{Kind: link.Direct, Remote: "198.51.100.7:4000", RTT: 2 * time.Millisecond}, at(3))
	check("rtt", map[wire.Key]time.Time{a: at(2), b: at(1)})
	// Another remote is.
	l.note(a, link.Path{Kind: link.Direct, Remote: "198.51.100.7:4001"}, at(4))
	check("remote", map[wire.Key]time.Time{a: at(4), b: at(1)})
	// Forgotten peers leave the log.
	l.note(b, link.Path{Kind: link.None}, at(5))
	check("forgotten", map[wire.Key]time.Time{a: at(4)})
	l.note(a, link.Path{Kind: link.None}, at(6))
	check("all forgotten", nil)
}

func TestMappingName(t *testing.T) {
	for m, want := range map[rvclient.Mapping]string{
		rvclient.MappingUnknown:     api.MappingUnknown,
		rvclient.MappingIndependent: api.MappingIndependent,
		rvclient.MappingDependent:   api.MappingDependent,
	} {
		if got := mappingName(m); got != want || m.String() != want {
			t.Errorf("%d: %q (String %q), want %q", m, got, m.String(), want)
		}
	}
}
