//go:build unix

package rendezvous

import "syscall"

// sockBuffers returns the socket's receive and send buffer sizes as the
// kernel reports them (0 when it cannot tell).
func sockBuffers(c interface {
	SyscallConn() (syscall.RawConn, error)
}) (rcv, snd int) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0
	}
	_ = rc.Control(func(fd uintptr) {
		rcv, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
		snd, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
	})
	return rcv, snd
}
