package benchnode

import (
	"net/netip"
	"testing"
)

func TestSocketIPs(t *testing.T) {
	seen := map[netip.Addr]bool{}
	for _, j := range []int{0, 1, 253, 254, 255, 507, 508, 70000, MaxSockets - 1} {
		a := SocketIP(j)
		b := a.As4()
		if b[0] != 127 || b[1] < 64 || b[1] > 127 || b[3] == 0 || b[3] == 255 {
			t.Errorf("socket %d: %v", j, a)
		}
		if seen[a] {
			t.Errorf("socket %d: %v again", j, a)
		}
		seen[a] = true
	}
	if got, want := SocketIP(0), netip.MustParseAddr("127.64.0.1"); got != want {
		t.Errorf("socket 0 is %v, want %v", got, want)
	}
	if got, want := SocketIP(254), netip.MustParseAddr("127.64.1.1"); got != want {
		t.Errorf("socket 254 is %v, want %v", got, want)
	}
	if got, want := Addr(1001, 1000, 9), netip.MustParseAddrPort("127.64.0.2:9"); got != want {
		t.Errorf("node 1001 of 1000 sockets: %v, want %v", got, want)
	}
}
