package testenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// State is what a lab records in its state file, so that another process
// (`natlab exec`, `natlab down`, or the next lab after a crash) can find
// and remove it.
type State struct {
	ID      string    `json:"id"`
	PID     int       `json:"pid"`
	Start   uint64    `json:"start"` // owner's start time in clock ticks since boot
	Created time.Time `json:"created"`
	Dir     string    `json:"dir"`
	// Namespaces maps short names ("alice", "r1", "inet") to full names.
	Namespaces map[string]string `json:"namespaces"`
	// Addrs maps host and router names to their address (routers: WAN).
	Addrs map[string]string `json:"addrs"`
	// Extra is free-form information set with Lab.SetInfo.
	Extra map[string]string `json:"extra,omitempty"`
}

// DefaultStateDir is /run/natlab, or natlab under os.TempDir when /run is
// missing.
func DefaultStateDir() string {
	if fi, err := os.Stat("/run"); err == nil && fi.IsDir() {
		return "/run/natlab"
	}
	return filepath.Join(os.TempDir(), "natlab")
}

// SetInfo records a key/value pair in the lab's state file.
func (l *Lab) SetInfo(key, value string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.extra[key] = value
	return l.writeStateLocked()
}

func (l *Lab) writeState() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.writeStateLocked()
}

func (l *Lab) writeStateLocked() error {
	st := State{
		ID: l.ID, PID: os.Getpid(), Start: procStart(os.Getpid()), Created: time.Now().UTC(), Dir: l.Dir,
		Namespaces: map[string]string{}, Addrs: map[string]string{}, Extra: l.extra,
	}
	for short, ns := range l.names {
		if ns != nil {
			st.Namespaces[short] = ns.Name
		}
	}
	for name, h := range l.hosts {
		st.Addrs[name] = h.Addr.String()
	}
	for name, r := range l.routers {
		r.mu.Lock()
		st.Addrs[name] = r.wan.Addr().String()
		r.mu.Unlock()
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(l.stateDir, 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	p := filepath.Join(l.stateDir, l.ID+".json")
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return os.Rename(tmp, p)
}

func removeState(dir, id string) error {
	err := os.Remove(filepath.Join(dir, id+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// ReadStates returns the state of every lab recorded in dir, newest first.
func ReadStates(dir string) ([]State, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []State
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		var st State
		if json.Unmarshal(b, &st) == nil && st.ID != "" {
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// Alive reports whether the process that owns the lab still runs.
func (st State) Alive() bool {
	if st.PID <= 0 || syscall.Kill(st.PID, 0) != nil {
		return false
	}
	return st.Start == 0 || procStart(st.PID) == st.Start
}

// Destroy removes what the state file records: it SIGKILLs every process
// in the lab's namespaces, removes the namespaces and the state file. Use
// it only for labs whose owner is dead (or on the owner's behalf).
func (st State) Destroy(dir string) error {
	var errs []error
	for _, full := range st.Namespaces {
		killNamespaceProcesses(full)
	}
	for _, full := range st.Namespaces {
		errs = append(errs, removeNamedNamespace(full))
	}
	errs = append(errs, removeState(dir, st.ID))
	return errors.Join(errs...)
}

// SweepStale destroys the labs in dir whose owning process is gone, such
// as those of a test binary killed by a timeout.
func SweepStale(dir string) error {
	sts, err := ReadStates(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, st := range sts {
		if !st.Alive() {
			errs = append(errs, st.Destroy(dir))
		}
	}
	return errors.Join(errs...)
}

// CleanupOnSignal makes SIGINT and SIGTERM destroy every lab this process
// owns in dir ("" for DefaultStateDir) and then exit with status 130. Test
// binaries call it from TestMain, since an interrupted test runs no
// t.Cleanup. The returned function undoes it.
func CleanupOnSignal(dir string) (stop func()) {
	if dir == "" {
		dir = DefaultStateDir()
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case sig := <-ch:
			fmt.Fprintf(os.Stderr, "testenv: %v: removing labs\n", sig)
			sts, _ := ReadStates(dir)
			for _, st := range sts {
				if st.PID == os.Getpid() {
					_ = st.Destroy(dir)
				}
			}
			os.Exit(130)
		case <-quit:
		}
	}()
	return func() {
		signal.Stop(ch)
		close(quit)
		<-done
	}
}

// procStart returns a process's start time (field 22 of /proc/PID/stat),
// which tells a live owner from a recycled pid; 0 if unknown.
func procStart(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}
