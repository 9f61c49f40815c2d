//go:build !linux

package main

import "os/exec"

// killWithParent does nothing here; natbench needs Linux's /proc anyway.
func killWithParent(*exec.Cmd) {}
