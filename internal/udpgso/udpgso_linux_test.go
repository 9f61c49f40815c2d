package udpgso

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestSegmentSize reads the UDP_GRO control message as the kernel writes
// it, after another control message, and ignores the rest.
func TestSegmentSize(t *testing.T) {
	cmsg := func(level, typ int32, v int32) []byte {
		b := make([]byte, unix.CmsgSpace(4))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = level, typ
		h.SetLen(unix.CmsgLen(4))
		*(*int32)(unsafe.Pointer(&b[unix.CmsgSpace(0)])) = v
		return b
	}
	gro := cmsg(unix.IPPROTO_UDP, unix.UDP_GRO, 1236)
	other := cmsg(unix.IPPROTO_IP, unix.IP_TOS, 7)
	for _, c := range []struct {
		name string
		oob  []byte
		want int
	}{
		{"none", nil, 0},
		{"gro", gro, 1236},
		{"after another", append(append([]byte(nil), other...), gro...), 1236},
		{"only another", other, 0},
		{"cut short", gro[:unix.CmsgSpace(0)], 0},
	} {
		if got := SegmentSize(c.oob); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
}

// TestGSOToGRO: a run sent with one GSO send comes up in one GRO read, its
// segment size in the control message.
func TestGSOToGRO(t *testing.T) {
	a, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !Supported(a) || !EnableGRO(b) {
		t.Fatal("UDP GSO/GRO unavailable: every kernel since 5.0 has them (or NATCHAT_DISABLE_GSO is set)")
	}
	run := bytes.Repeat([]byte("0123456789"), 250) // 2500 bytes: 1000 + 1000 + 500
	to := b.LocalAddr().(*net.UDPAddr).AddrPort()
	if _, _, err := a.WriteMsgUDPAddrPort(run, AppendSegmentSize(nil, 1000), netip.AddrPortFrom(to.Addr(), to.Port())); err != nil {
		t.Fatal(err)
	}
	buf, oob := make([]byte, 64<<10), make([]byte, OOBLen)
	n, oobn, _, _, err := b.ReadMsgUDPAddrPort(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(run) || !bytes.Equal(buf[:n], run) || SegmentSize(oob[:oobn]) != 1000 {
		t.Fatalf("read %d bytes, segment size %d; want %d in segments of 1000", n, SegmentSize(oob[:oobn]), len(run))
	}
}

// TestAppendSegmentSizeAllocs: with room in b, no allocation (the
// rendezvous's write queue and the node's sender call it per send).
func TestAppendSegmentSizeAllocs(t *testing.T) {
	var arr [32]byte
	if n := testing.AllocsPerRun(100, func() { AppendSegmentSize(arr[:0], 1200) }); n != 0 {
		t.Errorf("%v allocations with room", n)
	}
	b := AppendSegmentSize(arr[:0], 1200)
	if len(b) != SegmentSpace || SegmentSize(b) != 0 { // UDP_SEGMENT, not GRO's
		t.Fatalf("%d bytes", len(b))
	}
	if d := Cmsg(b, unix.IPPROTO_UDP, unix.UDP_SEGMENT); len(d) < 2 || *(*uint16)(unsafe.Pointer(&d[0])) != 1200 {
		t.Fatalf("segment size not found in %x", b)
	}
	// Without room it grows b, keeping what was there.
	b = AppendSegmentSize([]byte{1, 2, 3}, 7)
	if len(b) != 3+SegmentSpace || b[0] != 1 || b[2] != 3 {
		t.Fatalf("%x", b)
	}
}
