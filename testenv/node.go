package testenv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"natchat/headless"
)

// Binaries locates the natchat programs the lab runs.
type Binaries struct {
	Rendezvous string
	Node       string
}

// BuildBinaries builds natchat/cmd/rendezvous and natchat/cmd/node into dir
// with the go command, from the working directory's module. Its error
// includes the compiler output.
func BuildBinaries(ctx context.Context, dir string) (Binaries, error) {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(os.PathSeparator),
		"natchat/cmd/rendezvous", "natchat/cmd/node")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return Binaries{}, fmt.Errorf("go build natchat/cmd/rendezvous natchat/cmd/node: %w\n%s", err, bytes.TrimSpace(out))
	}
	return Binaries{Rendezvous: filepath.Join(dir, "rendezvous"), Node: filepath.Join(dir, "node")}, nil
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex // guards buf
	buf []byte
	max int
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// RendezvousConfig configures StartRendezvous. Bin is required.
type RendezvousConfig struct {
	Bin string
	// Port is the UDP port; default 3478.
	Port int
	// Expiry is -expiry; 0 leaves the binary's default.
	Expiry time.Duration
	// Heartbeat is -heartbeat, the interval suggested to nodes, which must
	// be shorter than the expiry; 0 leaves the binary's default (25s).
	Heartbeat time.Duration
	// DataDir is -data; default a directory in the lab's Dir, kept across
	// restarts.
	DataDir string
	// Metrics is -metrics; empty leaves the flag out.
	Metrics string
	// LogLevel is -log-level; default "debug".
	LogLevel string
	// Args are extra flags.
	Args []string
	// Env is added to the harness's environment.
	Env []string
}

// Rendezvous is a running rendezvous server.
type Rendezvous struct {
	Host *Host
	Addr netip.AddrPort

	lab    *Lab
	cfg    RendezvousConfig
	stderr *tail

	mu   sync.Mutex // guards proc
	proc *Proc
}

// StartRendezvous runs the rendezvous on h and waits until its UDP port is
// bound.
func (l *Lab) StartRendezvous(h *Host, cfg RendezvousConfig) (*Rendezvous, error) {
	if cfg.Bin == "" {
		return nil, errors.New("rendezvous: no binary")
	}
	if cfg.Port == 0 {
		cfg.Port = 3478
	}
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Join(l.Dir, h.Name+"-data")
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "debug"
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, err
	}
	rv := &Rendezvous{Host: h, Addr: netip.AddrPortFrom(h.Addr, uint16(cfg.Port)), lab: l, cfg: cfg,
		stderr: &tail{max: 64 << 10}}
	return rv, rv.start()
}

func (rv *Rendezvous) start() error {
	args := []string{"-addr", ":" + strconv.Itoa(rv.cfg.Port), "-data", rv.cfg.DataDir, "-log-level", rv.cfg.LogLevel}
	if rv.cfg.Expiry > 0 {
		args = append(args, "-expiry", rv.cfg.Expiry.String())
	}
	if rv.cfg.Heartbeat > 0 {
		args = append(args, "-heartbeat", rv.cfg.Heartbeat.String())
	}
	if rv.cfg.Metrics != "" {
		args = append(args, "-metrics", rv.cfg.Metrics)
	}
	args = append(args, rv.cfg.Args...)
	logf, err := os.OpenFile(filepath.Join(rv.lab.Dir, rv.Host.Name+".stderr"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(rv.cfg.Bin, args...)
	cmd.Env = append(os.Environ(), rv.cfg.Env...)
	cmd.Stdout = io.MultiWriter(logf, rv.stderr)
	cmd.Stderr = cmd.Stdout
	cmd.Dir = rv.cfg.DataDir
	p, err := rv.lab.Start(rv.Host.NS, "rendezvous", cmd)
	if err != nil {
		logf.Close()
		return err
	}
	go func() {
		<-p.Done() // exec's copy into logf has finished
		logf.Close()
	}()
	rv.mu.Lock()
	rv.proc = p
	rv.mu.Unlock()
	if err := waitUDPBound(p, rv.cfg.Port, 10*time.Second); err != nil {
		return fmt.Errorf("rendezvous: %w\n%s", err, rv.stderr.String())
	}
	return nil
}

// Proc returns the current rendezvous process.
func (rv *Rendezvous) Proc() *Proc {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return rv.proc
}

// Stop stops the rendezvous with SIGTERM (SIGKILL after 5s).
func (rv *Rendezvous) Stop() error { return rv.Proc().Stop(5 * time.Second) }

// Kill stops the rendezvous with SIGKILL.
func (rv *Rendezvous) Kill() error { return rv.Proc().Kill() }

// Restart stops the rendezvous with SIGTERM and starts it again with the
// same flags and data directory.
func (rv *Rendezvous) Restart() error {
	if err := rv.Stop(); err != nil {
		return err
	}
	return rv.start()
}

// Stderr returns the last 64 KiB of the rendezvous's output.
func (rv *Rendezvous) Stderr() string { return rv.stderr.String() }

// waitUDPBound polls the process's view of /proc/net/udp and udp6 (a
// socket on [::] is dual-stack) until a socket is bound to port, the
// process exits, or the timeout passes.
func waitUDPBound(p *Proc, port int, timeout time.Duration) error {
	want := fmt.Sprintf(":%04X ", port)
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/udp", p.Pid()))
		b6, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/udp6", p.Pid()))
		for _, line := range strings.Split(string(b)+string(b6), "\n") {
			if f := strings.Fields(line); len(f) > 1 && strings.HasSuffix(f[1]+" ", want) {
				return nil
			}
		}
		if done, err := p.Exited(); done {
			return fmt.Errorf("exited before binding UDP port %d: %v", port, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("UDP port %d not bound after %v", port, timeout)
		}
		select {
		case <-tick.C:
		case <-p.Done():
		}
	}
}

// NodeConfig configures StartNode. Bin and RV are required.
type NodeConfig struct {
	Bin string
	// Name is -name; default the host's name.
	Name string
	// RV is the rendezvous address.
	RV netip.AddrPort
	// Heartbeat is -heartbeat; 0 leaves the binary's default.
	Heartbeat time.Duration
	// Identity is -identity; default NAME.identity in the lab's Dir.
	Identity string
	// Listen is -listen; default ":0".
	Listen string
	// LogLevel is -log-level; default "debug".
	LogLevel string
	// Args are extra flags.
	Args []string
	// Env is added to the harness's environment.
	Env []string
}

// Node is a headless natchat node. It records every event the node
// prints; tests wait for events with Wait and WaitFrom.
type Node struct {
	Name string
	Host *Host

	lab    *Lab
	proc   *Proc
	stderr *tail

	inMu  sync.Mutex // serialises commands on stdin
	stdin *os.File

	mu      sync.Mutex // guards the fields below
	events  []Event
	changed chan struct{} // closed and replaced whenever events grows
	exited  bool
}

// StartNode runs a headless node on h.
func (l *Lab) StartNode(h *Host, cfg NodeConfig) (*Node, error) {
	if cfg.Bin == "" {
		return nil, errors.New("node: no binary")
	}
	if cfg.Name == "" {
		cfg.Name = h.Name
	}
	if cfg.Identity == "" {
		cfg.Identity = filepath.Join(l.Dir, cfg.Name+".identity")
	}
	if cfg.Listen == "" {
		cfg.Listen = ":0"
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "debug"
	}
	args := []string{"-name", cfg.Name, "-rv", cfg.RV.String(), "-headless", "-listen", cfg.Listen,
		"-identity", cfg.Identity, "-log-level", cfg.LogLevel}
	if cfg.Heartbeat > 0 {
		args = append(args, "-heartbeat", cfg.Heartbeat.String())
	}
	args = append(args, cfg.Args...)

	n := &Node{Name: cfg.Name, Host: h, lab: l, stderr: &tail{max: 64 << 10}, changed: make(chan struct{})}
	// Own pipes rather than exec's: exec's Wait closes its pipe as soon as
	// the process exits, which could drop the last events unread.
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(l.Dir, cfg.Name+".stderr"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return nil, err
	}
	cmd := exec.Command(cfg.Bin, args...)
	cmd.Env = append(os.Environ(), cfg.Env...)
	cmd.Stdin, cmd.Stdout = inR, outW
	cmd.Stderr = io.MultiWriter(logf, n.stderr)
	p, err := l.Start(h.NS, "node "+cfg.Name, cmd)
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		logf.Close()
		return nil, err
	}
	n.proc, n.stdin = p, inW
	evf, err := os.OpenFile(filepath.Join(l.Dir, cfg.Name+".events"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		evf = nil
	}
	go func() {
		<-p.Done()
		logf.Close()
	}()
	go n.read(outR, evf)
	return n, nil
}

// read parses stdout until EOF, then appends EventExit. It owns out and evf.
func (n *Node) read(out, evf *os.File) {
	defer out.Close()
	if evf != nil {
		defer evf.Close()
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		if evf != nil {
			fmt.Fprintln(evf, line)
		}
		n.add(ParseEvent(line))
	}
	<-n.proc.Done()
	_, err := n.proc.Exited()
	status := "exit status 0"
	if err != nil {
		status = err.Error()
	}
	n.mu.Lock()
	n.exited = true
	n.mu.Unlock()
	n.add(Event{Event: headless.Event{Type: EventExit, Message: status}})
	n.stdin.Close()
}

func (n *Node) add(ev Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ev.Seq = len(n.events)
	ev.Recv = time.Now()
	n.events = append(n.events, ev)
	close(n.changed)
	n.changed = make(chan struct{})
}

// Events returns a copy of the events so far.
func (n *Node) Events() []Event {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]Event(nil), n.events...)
}

// Mark returns the number of events so far: WaitFrom(Mark(), ...) only
// considers events that arrive after the call.
func (n *Node) Mark() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.events)
}

// Wait returns the first event since the node started that matches m,
// waiting up to timeout for it.
func (n *Node) Wait(timeout time.Duration, m Match) (Event, error) {
	return n.WaitFrom(0, timeout, m)
}

// WaitFrom returns the first event with Seq >= from that matches m,
// waiting up to timeout. It fails at once when the node has exited
// without such an event.
func (n *Node) WaitFrom(from int, timeout time.Duration, m Match) (Event, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		n.mu.Lock()
		for i := from; i < len(n.events); i++ {
			if m.F(n.events[i]) {
				ev := n.events[i]
				n.mu.Unlock()
				return ev, nil
			}
		}
		from = len(n.events)
		changed, exited := n.changed, n.exited
		n.mu.Unlock()
		if exited {
			return Event{}, fmt.Errorf("node %s: exited while waiting for %s\n%s", n.Name, m.Desc, n.Dump())
		}
		select {
		case <-changed:
		case <-deadline.C:
			return Event{}, fmt.Errorf("node %s: no %s within %v\n%s", n.Name, m.Desc, timeout, n.Dump())
		}
	}
}

// Count returns how many events since from match m.
func (n *Node) Count(from int, m Match) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for i := from; i < len(n.events); i++ {
		if m.F(n.events[i]) {
			c++
		}
	}
	return c
}

// Last returns the latest event matching m, and whether there is one.
func (n *Node) Last(m Match) (Event, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := len(n.events) - 1; i >= 0; i-- {
		if m.F(n.events[i]) {
			return n.events[i], true
		}
	}
	return Event{}, false
}

// Command writes one command line to the node's stdin.
func (n *Node) Command(line string) error {
	n.inMu.Lock()
	defer n.inMu.Unlock()
	if _, err := io.WriteString(n.stdin, line+"\n"); err != nil {
		return fmt.Errorf("node %s: write %q: %w", n.Name, line, err)
	}
	return nil
}

// Send sends /msg to text and returns the node's sent event for it. It
// fails on an error event that is not about an earlier message (those
// carry an id), or after 5s.
func (n *Node) Send(to, text string) (Event, error) {
	n.inMu.Lock()
	defer n.inMu.Unlock()
	mark := n.Mark()
	if _, err := io.WriteString(n.stdin, "/msg "+to+" "+text+"\n"); err != nil {
		return Event{}, fmt.Errorf("node %s: write /msg: %w", n.Name, err)
	}
	ev, err := n.WaitFrom(mark, 5*time.Second, Any(
		Match{Desc: "sent to " + to, F: func(e Event) bool { return e.Type == "sent" && e.To == to }},
		Match{Desc: "error", F: func(e Event) bool { return e.Type == "error" && e.ID == "" }}))
	if err != nil {
		return Event{}, err
	}
	if ev.Type == "error" {
		return ev, fmt.Errorf("node %s: /msg %s: error %s: %s", n.Name, to, ev.Code, ev.Message)
	}
	return ev, nil
}

// Who sends /who and returns the peers event that answers it.
func (n *Node) Who(timeout time.Duration) ([]headless.PeerInfo, error) {
	n.inMu.Lock()
	defer n.inMu.Unlock()
	mark := n.Mark()
	if _, err := io.WriteString(n.stdin, "/who\n"); err != nil {
		return nil, fmt.Errorf("node %s: write /who: %w", n.Name, err)
	}
	ev, err := n.WaitFrom(mark, timeout, OfType("peers"))
	return ev.Peers, err
}

// Quit sends /quit and waits up to timeout for the node to exit.
func (n *Node) Quit(timeout time.Duration) error {
	if err := n.Command("/quit"); err != nil {
		return err
	}
	return n.proc.Wait(timeout)
}

// Kill SIGKILLs the node: it vanishes without a goodbye.
func (n *Node) Kill() error { return n.proc.Kill() }

// Signal sends sig to the node.
func (n *Node) Signal(sig syscall.Signal) error { return n.proc.Signal(sig) }

// Proc returns the node's process.
func (n *Node) Proc() *Proc { return n.proc }

// Public returns the public address from the node's registered event, or
// "" before it registered.
func (n *Node) Public() string {
	ev, _ := n.Last(Registered())
	return ev.Public
}

// Stderr returns the last 64 KiB of the node's log output.
func (n *Node) Stderr() string { return n.stderr.String() }

// Dump describes the node's recent events and log output, for failure
// messages.
func (n *Node) Dump() string {
	evs := n.Events()
	if len(evs) > 30 {
		evs = evs[len(evs)-30:]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "--- node %s (%s): last %d events:\n", n.Name, n.Host.Addr, len(evs))
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s\n", e)
	}
	log := n.Stderr()
	if len(log) > 4000 {
		log = "..." + log[len(log)-4000:]
	}
	fmt.Fprintf(&b, "--- node %s stderr (tail):\n%s", n.Name, log)
	return b.String()
}
