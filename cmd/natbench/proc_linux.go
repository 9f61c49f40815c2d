package main

import (
	"os/exec"
	"syscall"
)

// killWithParent has the kernel kill cmd's process when natbench dies,
// so that no server outlives an interrupted run.
func killWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
