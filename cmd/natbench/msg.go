package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"natchat/headless"
)

// The message rows: two real nodes (cmd/node -headless) on our
// rendezvous, alice sending to bob through the headless interface with a
// window of messages outstanding; a message counts when alice reports it
// delivered (bob's end-to-end receipt, sent once bob has written it out).

// nodeProc is one headless node.
type nodeProc struct {
	name  string
	home  string // its files
	cmd   *exec.Cmd
	stdin io.WriteCloser
	wmu   sync.Mutex // serialises writes to stdin
	done  chan struct{}
}

func (n *nodeProc) pid() int { return n.cmd.Process.Pid }

// stderrTail is the end of what the node wrote on stderr.
func (n *nodeProc) stderrTail() string {
	b, _ := os.ReadFile(filepath.Join(n.home, "stderr"))
	return tail(string(b), 5)
}

// command writes one line to the node's stdin.
func (n *nodeProc) command(line string) error {
	n.wmu.Lock()
	defer n.wmu.Unlock()
	_, err := io.WriteString(n.stdin, line+"\n")
	return err
}

// stop asks the node to quit, then kills it after 3 s, and waits for its
// stdout reader.
func (n *nodeProc) stop() {
	if n == nil {
		return
	}
	n.command("/quit")
	n.stdin.Close()
	exited := make(chan struct{})
	go func() { n.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(3 * time.Second):
		n.cmd.Process.Kill()
		<-exited
	}
	<-n.done
}

// startNode starts bin (cmd/node) as name, headless, on rv, its files
// (identity, state, downloads, log) under dir; onEvent gets every event
// with the time natbench read it, from one goroutine.
func startNode(bin, dir, name, rv string, noDirect bool, onEvent func(headless.Event, time.Time)) (*nodeProc, error) {
	home := filepath.Join(dir, name)
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, err
	}
	args := []string{"-name", name, "-rv", rv, "-headless", "-listen", "127.0.0.1:0",
		"-identity", filepath.Join(home, "node.key"), "-state", filepath.Join(home, "state"),
		"-downloads", filepath.Join(home, "downloads"), "-log-file", filepath.Join(home, "node.log"), "-log-level", "warn"}
	if noDirect {
		args = append(args, "-no-direct")
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_STATE_HOME="+home, "XDG_CONFIG_HOME="+home)
	killWithParent(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	errf, err := os.Create(filepath.Join(home, "stderr"))
	if err != nil {
		return nil, err
	}
	defer errf.Close()
	cmd.Stderr = errf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	n := &nodeProc{name: name, home: home, cmd: cmd, stdin: stdin, done: make(chan struct{})}
	go func() {
		defer close(n.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if ev, err := headless.Parse(sc.Bytes()); err == nil {
				onEvent(ev, time.Now())
			}
		}
	}()
	return n, nil
}

// msgResult is one repetition of a message row.
type msgResult struct {
	rate       float64 // delivered per second in the window
	p50, p99   time.Duration
	nodesPerOp time.Duration // both nodes' CPU per message delivered
	rvPerOp    time.Duration // the rendezvous's
	failed     int64
	steal      float64
}

// msgPair is alice sending to bob with a window of w messages.
type msgPair struct {
	alice, bob *nodeProc
	peer       string // bob's name: names are bound to keys, so one per row
	w          int

	mu                   sync.Mutex
	writtenAt            map[string]time.Time // text → when natbench wrote its /msg
	textOf               map[string]string    // message ID → text, from the sent event
	lat                  []time.Duration      // in the window
	measuring            atomic.Bool
	count                atomic.Int64 // delivered in the window
	failed               atomic.Int64
	tokens               chan struct{} // one per message outstanding
	joined               chan struct{} // closed when alice has seen bob join
	direct               chan struct{} // closed when alice reports a direct path to bob
	joinOnce, directOnce sync.Once
}

func (p *msgPair) onAlice(ev headless.Event, at time.Time) {
	switch ev.Type {
	case "peer_joined":
		if ev.Name == p.peer {
			p.joinOnce.Do(func() { close(p.joined) })
		}
	case "path":
		if ev.Peer == p.peer && ev.Path == "direct" {
			p.directOnce.Do(func() { close(p.direct) })
		}
	case "sent":
		p.mu.Lock()
		p.textOf[ev.ID] = ev.Text
		p.mu.Unlock()
	case "delivered", "error", "stored":
		if ev.ID == "" {
			return
		}
		p.mu.Lock()
		text := p.textOf[ev.ID]
		t0, ok := p.writtenAt[text]
		delete(p.textOf, ev.ID)
		delete(p.writtenAt, text)
		if ok && ev.Type == "delivered" && p.measuring.Load() {
			p.lat = append(p.lat, at.Sub(t0))
			p.count.Add(1)
		}
		p.mu.Unlock()
		if ev.Type != "delivered" {
			p.failed.Add(1) // an error, or bob seemed offline: stored
		}
		if ok {
			<-p.tokens
		}
	}
}

// send writes messages while fewer than w are outstanding, until stop.
func (p *msgPair) send(stop <-chan struct{}) error {
	for seq := 0; ; seq++ {
		select {
		case p.tokens <- struct{}{}:
		case <-stop:
			return nil
		}
		text := "natbench " + strconv.Itoa(seq)
		p.mu.Lock()
		p.writtenAt[text] = time.Now()
		p.mu.Unlock()
		if err := p.alice.command("/msg " + p.peer + " " + text); err != nil {
			return err
		}
	}
}

// msgMode is one message row's path.
type msgMode struct {
	label    string
	noDirect bool
}

var msgModes = []msgMode{{"direct", false}, {"relay", true}}

var msgMetrics = []metricDef{
	{name: "messages/s"}, {name: "p50 ms"}, {name: "p99 ms"},
	{name: "nodes CPU µs/message"}, {name: "rendezvous CPU µs/message"},
	{name: "failed or stored", noRatio: true},
}

// msgRows runs the message rows, direct and relayed, on our relay
// rendezvous (relay limits off): ours only (coturn carries no messages).
func (b *bench) msgRows(ctx context.Context, dir string) error {
	b.log("building the node")
	bin, err := goBuild(ctx, filepath.Join(dir, "node"), "natchat/cmd/node")
	if err != nil {
		return err
	}
	for _, mode := range msgModes {
		r := newRow("msg", fmt.Sprintf("messages %s W=%d", mode.label, b.cfg.msgW), msgMetrics...)
		b.rows = append(b.rows, r)
		if err := b.msgRow(ctx, r, bin, filepath.Join(dir, "msg-"+mode.label), mode); err != nil {
			return fmt.Errorf("%s: %w", r.label, err)
		}
	}
	return nil
}

func (b *bench) msgRow(ctx context.Context, r *row, bin, dir string, mode msgMode) error {
	p := &msgPair{w: b.cfg.msgW, peer: "bob-" + mode.label, writtenAt: map[string]time.Time{}, textOf: map[string]string{},
		tokens: make(chan struct{}, b.cfg.msgW), joined: make(chan struct{}), direct: make(chan struct{})}
	rv := b.relayRV.addr.String()
	var received atomic.Int64
	var err error
	if p.bob, err = startNode(bin, dir, p.peer, rv, mode.noDirect, func(ev headless.Event, _ time.Time) {
		if ev.Type == "message" {
			received.Add(1)
		}
	}); err != nil {
		return err
	}
	defer p.bob.stop()
	if p.alice, err = startNode(bin, dir, "alice-"+mode.label, rv, mode.noDirect, p.onAlice); err != nil {
		return err
	}
	defer p.alice.stop()
	select {
	case <-p.joined:
	case <-p.alice.done:
		return fmt.Errorf("alice exited: %s", p.alice.stderrTail())
	case <-p.bob.done:
		return fmt.Errorf("bob exited: %s", p.bob.stderrTail())
	case <-time.After(20 * time.Second):
		return fmt.Errorf("alice did not see bob join within 20 s (logs in %s with -keep)", dir)
	case <-ctx.Done():
		return ctx.Err()
	}
	stop := make(chan struct{})
	sendErr := make(chan error, 1)
	go func() { sendErr <- p.send(stop) }()
	defer func() {
		close(stop)
		<-sendErr
	}()
	if !mode.noDirect {
		select {
		case <-p.direct:
		case <-time.After(15 * time.Second):
			return errors.New("no direct path between the nodes within 15 s")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	pids := []int{p.alice.pid(), p.bob.pid()}
	cpu := func() (nodes, rvCPU time.Duration, err error) {
		for _, pid := range pids {
			c, err := procCPU(pid)
			if err != nil {
				return 0, 0, err
			}
			nodes += c
		}
		rvCPU, err = procCPU(b.relayRV.pid())
		return nodes, rvCPU, err
	}
	for rep := range b.cfg.reps {
		time.Sleep(b.cfg.warm)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		n0, r0, err := cpu()
		if err != nil {
			return err
		}
		s0, t0, f0 := readSteal(), time.Now(), p.failed.Load()
		p.mu.Lock()
		p.lat = p.lat[:0]
		p.mu.Unlock()
		p.count.Store(0)
		p.measuring.Store(true)
		time.Sleep(b.cfg.msgWindow)
		p.measuring.Store(false)
		el := time.Since(t0)
		n1, r1, err := cpu()
		if err != nil {
			return err
		}
		res := msgResult{steal: stealFraction(s0, readSteal()), failed: p.failed.Load() - f0}
		p.mu.Lock()
		lat := slices.Clone(p.lat)
		p.mu.Unlock()
		slices.Sort(lat)
		ops := p.count.Load()
		res.rate = float64(ops) / el.Seconds()
		res.p50, res.p99 = percentile(lat, 50), percentile(lat, 99)
		if ops > 0 {
			res.nodesPerOp = (n1 - n0) / time.Duration(ops)
			res.rvPerOp = (r1 - r0) / time.Duration(ops)
		}
		select {
		case err := <-sendErr:
			return fmt.Errorf("writing to alice: %v", err)
		default:
		}
		b.noteSteal(res.steal)
		b.log("%s rep %d  %.0f messages/s  p50 %v  p99 %v  nodes %v/message  rendezvous %v/message  failed or stored %d  steal %.0f%%",
			r.label, rep+1, res.rate, res.p50.Round(time.Microsecond), res.p99.Round(time.Microsecond),
			res.nodesPerOp.Round(100*time.Nanosecond), res.rvPerOp.Round(100*time.Nanosecond), res.failed, 100*res.steal)
		r.add(true, map[string]float64{
			"messages/s": res.rate, "p50 ms": ms(res.p50), "p99 ms": ms(res.p99),
			"nodes CPU µs/message": us(res.nodesPerOp), "rendezvous CPU µs/message": us(res.rvPerOp),
			"failed or stored": float64(res.failed),
		})
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (b *bench) writeMsgNote(w io.Writer) {
	fmt.Fprintf(w, "Message rows, ours only (coturn carries no messages: no counterpart): two cmd/node -headless "+
		"(alice, bob; default flags, state on %s) on cmd/rendezvous -relay-pps -1 -relay-bps -1 -relay-small-pps -1 "+
		"-new-names -1 (the relay rows' server); alice keeps %d `/msg bob` outstanding "+
		"and a message counts when alice reports it `delivered` (bob's end-to-end receipt, sent once bob wrote the "+
		"message out and recorded it). Latency: natbench writing the /msg line to alice's stdin → reading alice's "+
		"`delivered` line; it includes alice's outbox fsync. Direct: measured once alice reports a direct path; relay: "+
		"both nodes -no-direct. %v warm-up, %v window, repetitions over one pair. CPU: both nodes' together, and "+
		"the rendezvous's, per message delivered.\n", fsOf(os.TempDir()), b.cfg.msgW, b.cfg.warm, b.cfg.msgWindow)
}

// fsOf names the file system type of path, as /proc/mounts has it (the
// longest mount point that holds it).
func fsOf(path string) string {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return path
	}
	best, typ := "", "?"
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && strings.HasPrefix(path, f[1]) && len(f[1]) > len(best) {
			best, typ = f[1], f[2]
		}
	}
	return fmt.Sprintf("%s, %s", path, typ)
}
