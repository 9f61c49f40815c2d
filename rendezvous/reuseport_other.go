//go:build !linux

package rendezvous

import (
	"errors"
	"syscall"
)

// reusePort refuses: only Linux spreads a port's datagrams over the
// sockets sharing it.
func reusePort(_, _ string, _ syscall.RawConn) error {
	return errors.New("more than one socket per port (SO_REUSEPORT) is for Linux only")
}
