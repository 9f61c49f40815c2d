package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"math"
	"net/netip"
	"strings"
	"testing"
)

func TestParseProcNetUDP(t *testing.T) {
	// As Linux 6.x writes it; the addresses as a little-endian host does.
	const in = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  133: 0100007F:A4B5 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 123456 2 0000000000000000 0
 1012: 0140407F:9C40 0100007F:0D96 01 00000000:00000A00 00:00000000 00000000     0        0 7890 2 0000000000000000 4321
`
	got, err := parseProcNetUDP([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	ip := func(s string) netip.Addr {
		a := netip.MustParseAddr(s).As4()
		if binary.NativeEndian.Uint32([]byte{1, 0, 0, 0}) != 1 { // big-endian host: the kernel writes the other order
			a[0], a[1], a[2], a[3] = a[3], a[2], a[1], a[0]
		}
		return netip.AddrFrom4(a)
	}
	want := []udpSocket{
		{Local: netip.AddrPortFrom(ip("127.0.0.1"), 0xA4B5)},
		{Local: netip.AddrPortFrom(ip("127.64.64.1"), 40000), RxQueue: 0xA00, Drops: 4321},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d sockets, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("socket %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{
		"",
		"sl local_address\n",
		"   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n  1: nothex:0000 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 1 2 0 0\n",
		"   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n  1: 0100007F:A4B5 short\n",
	} {
		if _, err := parseProcNetUDP([]byte(bad)); !errors.Is(err, errProcFormat) {
			t.Errorf("%q: err %v, want errProcFormat", bad, err)
		}
	}
}

// TestUDPDropsSeesOwnSocket reads the real /proc/net/udp: a socket natbench
// opens is there, with no drops.
func TestUDPDropsSeesOwnSocket(t *testing.T) {
	port, err := freeUDPPort()
	if err != nil {
		t.Fatal(err)
	}
	c, err := listenUDP(netip.AddrPortFrom(netip.MustParseAddr("127.64.0.1"), uint16(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d, n, err := udpDrops(uint16(port))
	if err != nil {
		t.Skip("no /proc/net/udp:", err)
	}
	if n != 1 || d != 0 {
		t.Errorf("port %d: %d sockets, %d drops; want 1, 0", port, n, d)
	}
}

func TestParseMallocs(t *testing.T) {
	text := "# HELP go_memstats_mallocs_total Total number of heap objects allocated.\n" +
		"# TYPE go_memstats_mallocs_total counter\n" +
		"go_memstats_mallocs_total 1.234567e+06\n" +
		"go_memstats_mallocs_total_other 9\n"
	n, err := parseMallocs(bufio.NewScanner(strings.NewReader(text)))
	if err != nil || n != 1234567 {
		t.Fatalf("parseMallocs = %d, %v", n, err)
	}
	if _, err := parseMallocs(bufio.NewScanner(strings.NewReader("go_gc_duration_seconds 1\n"))); err == nil {
		t.Fatal("no counter, no error")
	}
	if got := perOp(-1, 10); !math.IsNaN(got) {
		t.Errorf("perOp of unknown allocations = %v", got)
	}
	if got := perOp(5, 10); got != 0.5 {
		t.Errorf("perOp(5, 10) = %v", got)
	}
}
