package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// udpSocket is one line of /proc/net/udp: a socket's local address, the
// bytes waiting in its receive queue and the datagrams the kernel dropped
// for it (receive buffer full, or a filter) since it was opened.
type udpSocket struct {
	Local   netip.AddrPort
	RxQueue uint64
	Drops   uint64
}

// parseProcNetUDP reads /proc/net/udp (IPv4 sockets). Addresses are hex
// in the kernel's byte order (the host's: 0100007F is 127.0.0.1 on a
// little-endian machine), ports hex; drops is the last column.
func parseProcNetUDP(b []byte) ([]udpSocket, error) {
	var out []udpSocket
	sc := bufio.NewScanner(bytes.NewReader(b))
	first := true
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if first {
			first = false
			if len(f) == 0 || f[0] != "sl" || f[len(f)-1] != "drops" {
				return nil, fmt.Errorf("%w: /proc/net/udp header %q", errProcFormat, sc.Text())
			}
			continue
		}
		if len(f) == 0 {
			continue
		}
		if len(f) < 13 {
			return nil, fmt.Errorf("%w: /proc/net/udp line %q", errProcFormat, sc.Text())
		}
		ip, port, ok := strings.Cut(f[1], ":")
		_, rx, ok2 := strings.Cut(f[4], ":")
		a, err1 := strconv.ParseUint(ip, 16, 32)
		p, err2 := strconv.ParseUint(port, 16, 16)
		q, err3 := strconv.ParseUint(rx, 16, 64)
		d, err4 := strconv.ParseUint(f[len(f)-1], 10, 64)
		if !ok || !ok2 || err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			return nil, fmt.Errorf("%w: /proc/net/udp line %q", errProcFormat, sc.Text())
		}
		var ab [4]byte
		binary.NativeEndian.PutUint32(ab[:], uint32(a))
		out = append(out, udpSocket{Local: netip.AddrPortFrom(netip.AddrFrom4(ab), uint16(p)), RxQueue: q, Drops: d})
	}
	if first {
		return nil, fmt.Errorf("%w: /proc/net/udp is empty", errProcFormat)
	}
	return out, sc.Err()
}

// udpDrops sums the drops of the IPv4 UDP sockets bound to port, and
// says how many there are.
func udpDrops(port uint16) (drops uint64, sockets int, err error) {
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return 0, 0, err
	}
	ss, err := parseProcNetUDP(b)
	if err != nil {
		return 0, 0, err
	}
	for _, s := range ss {
		if s.Local.Port() == port {
			drops += s.Drops
			sockets++
		}
	}
	return drops, sockets, nil
}
