package rendezvous_test

// The socket tests that read Linux's /proc and its SO_RXQ_OVFL counter.

import (
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"natchat/rendezvous"
)

// TestRunSizesSocketBuffers: Run asks for DefaultSocketBuffer on its
// socket (the kernel grants up to net.core.rmem_max, and reports twice
// what it grants).
func TestRunSizesSocketBuffers(t *testing.T) {
	defer checkGoroutines(t)()
	_, conn, _, cancel, done := startLoopback(t, nil)
	defer func() { cancel(); waitRun(t, done) }()
	// A STUN round trip: Run has started (and sized the buffers first).
	cl := newUDPClient(t, conn.LocalAddr())
	cl.write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	cl.read()
	want := rendezvous.DefaultSocketBuffer
	if b, err := os.ReadFile("/proc/sys/net/core/rmem_max"); err == nil {
		if max, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && max < want {
			want = max
		}
	}
	rc, err := conn.(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	rc.Control(func(fd uintptr) { got, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF) })
	if got < want {
		t.Fatalf("receive buffer %d bytes, want at least %d", got, want)
	}
}

// TestRunCountsSocketDrops: what the kernel drops on the rendezvous's
// socket, its receive buffer full, shows in
// natchat_rendezvous_socket_drops_total.
func TestRunCountsSocketDrops(t *testing.T) {
	defer checkGoroutines(t)()
	s, conn, _, cancel, done := startLoopback(t, func(o *rendezvous.Options) { o.SocketBuffer = -1 })
	defer func() { cancel(); waitRun(t, done) }()
	if err := conn.(*net.UDPConn).SetReadBuffer(1); err != nil { // the kernel's least
		t.Fatal(err)
	}
	cl := newUDPClient(t, conn.LocalAddr())
	deadline := time.Now().Add(20 * time.Second)
	for {
		// Junk the loop drops at once, faster than it can read them.
		for range 2000 {
			cl.write(make([]byte, 1000))
		}
		// A datagram after the flood carries the kernel's count.
		cl.write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
		if metric(t, scrapeServer(t, s), "natchat_rendezvous_socket_drops_total") > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no kernel drop counted after floods on a socket with the least buffer")
		}
	}
}
