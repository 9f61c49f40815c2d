//go:build !linux

package udpgso

import "syscall"

// Without Linux's offloads every function reports none: see udpgso_linux.go.

func Supported(syscall.Conn) bool                 { return false }
func AppendSegmentSize(b []byte, _ uint16) []byte { return b }

var SegmentSpace = 0

func IsGSOError(error) bool { return false }

func EnableGRO(syscall.Conn) bool { return false }

var OOBLen = 0

func SegmentSize([]byte) int { return 0 }
