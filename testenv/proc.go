package testenv

import (
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// Proc is a process running inside a lab namespace. The lab stops it on
// Close if it is still running.
type Proc struct {
	// Name labels the process in errors and logs.
	Name string
	// Cmd is the started command; do not call its Wait.
	Cmd *exec.Cmd

	lab  *Lab
	done chan struct{} // closed when the process has been reaped
	err  error         // Wait's result, valid once done is closed
}

// Start starts cmd inside the namespace ns and registers it with the lab.
//
// Go's SysProcAttr cannot setns, so Start locks a goroutine to its OS
// thread, moves that thread into ns and calls cmd.Start there: fork clones
// the calling thread, so the child begins life in ns. The thread goes back
// to its namespace right after the fork but stays locked, blocked in Wait,
// until the child exits, because the child's parent-death signal (SIGKILL,
// set here) is tied to the thread that forked it: if the harness process
// dies for any reason, its children die with it.
//
// The child gets its own process group, so Signal reaches its children too.
func (l *Lab) Start(ns *Namespace, name string, cmd *exec.Cmd) (*Proc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	p := &Proc{Name: name, Cmd: cmd, lab: l, done: make(chan struct{})}

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errors.New("lab is closed")
	}
	l.procs[p] = struct{}{}
	l.mu.Unlock()

	started := make(chan error, 1)
	go func() {
		defer func() {
			l.mu.Lock()
			delete(l.procs, p)
			l.mu.Unlock()
			close(p.done)
		}()
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			started <- fmt.Errorf("get thread namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns.h); err != nil {
			started <- fmt.Errorf("enter namespace %s: %w", ns.Name, err)
			return
		}
		err = cmd.Start()
		restored := netns.Set(orig) == nil
		started <- err
		if err != nil {
			p.err = err
			if restored {
				runtime.UnlockOSThread()
			}
			return
		}
		p.err = cmd.Wait()
		if restored {
			runtime.UnlockOSThread()
		}
	}()
	if err := <-started; err != nil {
		<-p.done
		return nil, fmt.Errorf("start %s in %s: %w", name, ns.Short, err)
	}
	l.log.Debug().Str("proc", name).Str("ns", ns.Short).Int("pid", cmd.Process.Pid).Msg("started")
	return p, nil
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Done is closed once the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited, and if so its Wait error.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Wait waits up to timeout for the process to exit and returns its exit
// error (nil for status 0).
func (p *Proc) Wait(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.err
	case <-t.C:
		return fmt.Errorf("%s (pid %d) still running after %v", p.Name, p.Pid(), timeout)
	}
}

// Signal sends sig to the process's group.
func (p *Proc) Signal(sig syscall.Signal) error {
	if done, _ := p.Exited(); done {
		return nil
	}
	if err := syscall.Kill(-p.Pid(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v to %s: %w", sig, p.Name, err)
	}
	return nil
}

// Kill sends SIGKILL to the process group and waits for the process.
func (p *Proc) Kill() error {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.done
	return nil
}

// Stop sends SIGTERM, waits up to grace, then SIGKILLs. It returns once
// the process has been reaped.
func (p *Proc) Stop(grace time.Duration) error {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if p.Wait(grace) == nil {
		return nil
	}
	if done, _ := p.Exited(); done {
		return nil
	}
	return p.Kill()
}
