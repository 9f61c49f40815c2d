//go:build !linux

package peernet

import "net"

func gsoSupported(*net.UDPConn) bool              { return false }
func appendSegmentSize(b []byte, _ uint16) []byte { return b }
func isGSOError(error) bool                       { return false }

func enableGRO(*net.UDPConn) bool { return false }

var groOOBLen = 0

func groSegmentSize([]byte) int { return 0 }
