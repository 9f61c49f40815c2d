package e2e

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"natchat/headless"
	"natchat/wire"
)

// Timing every test runs with. The rendezvous expires a node after
// expiry of silence; nodes heartbeat every heartbeat.
const (
	heartbeat = 2 * time.Second
	expiry    = 6 * time.Second
	// waitLong bounds waits for things that take a few round trips
	// (registration, presence, delivery) on a loaded machine.
	waitLong = 20 * time.Second
)

// bins are the binaries TestMain builds.
var bins struct {
	rendezvous, node string
	race             bool // built with -race: reported races fail tests
}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "natchat-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	args := []string{"build"}
	if os.Getenv("NATCHAT_E2E_RACE") != "" {
		args = append(args, "-race")
		bins.race = true
	}
	args = append(args, "-o", dir+string(filepath.Separator), "natchat/cmd/rendezvous", "natchat/cmd/node")
	build := exec.Command("go", args...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: go build:", err)
		return 1
	}
	bins.rendezvous = filepath.Join(dir, "rendezvous")
	bins.node = filepath.Join(dir, "node")
	code := m.Run()
	if code == 0 && !checkGoroutines() {
		code = 1
	}
	return code
}

// checkGoroutines reports whether every goroutine the suite started (pipe
// readers, process waiters, proxies) has ended, waiting a little for them.
func checkGoroutines() bool {
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "natchat/e2e.") && !strings.Contains(g, "natchat/e2e.checkGoroutines") &&
				!strings.Contains(g, "natchat/e2e.testMain") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return true
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "e2e: %d goroutines leaked:\n%s\n", len(leaked), strings.Join(leaked, "\n\n"))
			return false
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
}

// --- logs of a process ---

// entry is one line a process wrote.
type entry struct {
	at   time.Time // when the test read it
	text string
	ev   *event // the parsed event, for a node's stdout
}

// lineLog collects the lines of one output stream and wakes waiters.
type lineLog struct {
	mu      sync.Mutex
	entries []entry
	eof     bool
	changed chan struct{} // closed and replaced on every change
}

func newLineLog() *lineLog { return &lineLog{changed: make(chan struct{})} }

func (l *lineLog) add(e entry) {
	l.mu.Lock()
	l.entries = append(l.entries, e)
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

func (l *lineLog) close() {
	l.mu.Lock()
	l.eof = true
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// since returns the entries from index i on, a channel closed at the next
// change, and whether the stream has ended.
func (l *lineLog) since(i int) ([]entry, <-chan struct{}, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.entries[min(i, len(l.entries)):len(l.entries):len(l.entries)], l.changed, l.eof
}

func (l *lineLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// waitFor waits until an entry at index ≥ from satisfies pred, and returns
// it and its index. ok is false on timeout or when the stream ended first.
func (l *lineLog) waitFor(from int, timeout time.Duration, pred func(entry) bool) (e entry, idx int, ok bool) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for i := from; ; {
		es, changed, eof := l.since(i)
		for j, e := range es {
			if pred(e) {
				return e, i + j, true
			}
		}
		i += len(es)
		if eof {
			return entry{}, -1, false
		}
		select {
		case <-changed:
		case <-t.C:
			return entry{}, -1, false
		}
	}
}

// waitCount waits until at least n entries from index from on satisfy pred
// and returns all that do.
func (l *lineLog) waitCount(from, n int, timeout time.Duration, pred func(entry) bool) ([]entry, bool) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		es, changed, eof := l.since(from)
		var got []entry
		for _, e := range es {
			if pred(e) {
				got = append(got, e)
			}
		}
		if len(got) >= n {
			return got, true
		}
		if eof {
			return got, false
		}
		select {
		case <-changed:
		case <-t.C:
			return got, false
		}
	}
}

func (l *lineLog) read(r io.Reader, parse bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		e := entry{at: time.Now(), text: sc.Text()}
		if parse {
			if ev, err := headless.Parse(sc.Bytes()); err == nil {
				e.ev = &event{Event: ev, at: e.at}
			}
		}
		l.add(e)
	}
	if err := sc.Err(); err != nil {
		// A line too long for the scanner: note it, keep the pipe drained.
		l.add(entry{at: time.Now(), text: "<<e2e: " + err.Error() + ">>"})
		io.Copy(io.Discard, r)
	}
	l.close()
}

// --- processes ---

// proc is a running binary with its stdin, and its stdout and stderr lines.
type proc struct {
	label string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *lineLog
	errs  *lineLog
	done  chan struct{} // closed once the process has exited and its pipes drained
	state *os.ProcessState
}

// startProc starts bin. The process is killed, and its logs are printed
// when the test failed, in t.Cleanup.
func startProc(t *testing.T, label, bin string, args ...string) *proc {
	t.Helper()
	return startProcGated(t, label, bin, nil, args...)
}

// startProcGated is startProc; with st not nil, the process's stdout is
// not read at all before st.resume (or the end of the test), while its
// stderr is read all along.
func startProcGated(t *testing.T, label, bin string, st *stall, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	home := t.TempDir()
	// Defaults (identity files, the rendezvous's data dir) land in a
	// temporary home, never in the real one.
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_STATE_HOME="+home)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", label, err)
	}
	p := &proc{label: label, cmd: cmd, stdin: stdin, out: newLineLog(), errs: newLineLog(), done: make(chan struct{})}
	ending := make(chan struct{}) // closed in Cleanup: read stdout whatever the stall says
	if st != nil {
		f, ok := stdout.(*os.File)
		if !ok {
			t.Fatalf("stdout pipe is a %T, want an *os.File", stdout)
		}
		st.pipe = f
	}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() {
		defer readers.Done()
		if st != nil {
			select {
			case <-st.gate:
			case <-ending:
			}
		}
		p.out.read(stdout, true)
	}()
	go func() { defer readers.Done(); p.errs.read(stderr, false) }()
	go func() {
		readers.Wait() // Wait closes the pipes: read them to the end first
		cmd.Wait()
		p.state = cmd.ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		close(ending)
		p.kill(t)
		if bins.race {
			if _, _, ok := p.errs.waitFor(0, 0, func(e entry) bool { return strings.Contains(e.text, "DATA RACE") }); ok {
				t.Errorf("%s reported a data race", label)
			}
		}
		if t.Failed() {
			p.dump(t)
		}
	})
	return p
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// status describes the process for a failure message: whether it is
// running, and how it exited.
func (p *proc) status() string {
	_, _, eof := p.out.since(0)
	if eof {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
	if p.exited() {
		return "exited: " + p.state.String()
	}
	return "running"
}

// kill sends SIGKILL unless the process has exited, and waits for it.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	if !p.exited() {
		p.cmd.Process.Kill() // before closing stdin: end of input is a notified leave
	}
	p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Errorf("%s: did not exit 10s after SIGKILL", p.label)
	}
}

// exitCode waits for the process to exit on its own and returns its status.
func (p *proc) exitCode(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.state.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("%s: still running after %v", p.label, timeout)
		return 0
	}
}

// waitStderr waits for a stderr line containing s and returns it.
func (p *proc) waitStderr(t *testing.T, timeout time.Duration, s string) entry {
	t.Helper()
	e, _, ok := p.errs.waitFor(0, timeout, func(e entry) bool { return strings.Contains(e.text, s) })
	if !ok {
		t.Fatalf("%s: no stderr line with %q within %v (%s)", p.label, s, timeout, p.status())
	}
	return e
}

// dump prints the process's last log lines and its stdout.
func (p *proc) dump(t *testing.T) {
	const keep = 150
	for _, s := range []struct {
		name string
		l    *lineLog
	}{{"stdout", p.out}, {"stderr", p.errs}} {
		es, _, _ := s.l.since(0)
		if len(es) == 0 {
			continue
		}
		var b strings.Builder
		if len(es) > keep {
			fmt.Fprintf(&b, "... %d earlier lines\n", len(es)-keep)
			es = es[len(es)-keep:]
		}
		for _, e := range es {
			b.WriteString(e.at.Format("15:04:05.000 "))
			b.WriteString(e.text)
			b.WriteByte('\n')
		}
		t.Logf("--- %s %s (exit: %v):\n%s", p.label, s.name, p.state, b.String())
	}
}

// --- the rendezvous ---

type rendezvous struct {
	*proc
	addr    string // UDP host:port
	data    string // data directory
	metrics string // TCP host:port of /metrics; "" when off
	extra   []string
	ready   time.Time
}

type rvOptions struct {
	addr    string // "": a free loopback port
	data    string // "": a new temporary directory
	metrics bool
	extra   []string // more flags
}

// startRendezvous starts a rendezvous and waits until it listens.
func startRendezvous(t *testing.T, o rvOptions) *rendezvous {
	t.Helper()
	if o.addr == "" {
		o.addr = freeUDPAddr(t)
	}
	if o.data == "" {
		o.data = t.TempDir()
	}
	rv := &rendezvous{addr: o.addr, data: o.data, extra: o.extra}
	args := []string{"-addr", o.addr, "-data", o.data, "-expiry", expiry.String(),
		"-heartbeat", heartbeat.String(), "-log-level", "debug"}
	if o.metrics {
		rv.metrics = freeTCPAddr(t)
		args = append(args, "-metrics", rv.metrics)
	}
	args = append(args, o.extra...)
	rv.proc = startProc(t, "rendezvous "+o.addr, bins.rendezvous, args...)
	rv.ready = rv.waitStderr(t, 10*time.Second, "rendezvous listening").at
	return rv
}

// restart starts a new rendezvous on the same address and data directory,
// after this one has exited.
func (rv *rendezvous) restart(t *testing.T) *rendezvous {
	t.Helper()
	if !rv.exited() {
		t.Fatal("restart: the rendezvous is still running")
	}
	return startRendezvous(t, rvOptions{addr: rv.addr, data: rv.data, metrics: rv.metrics != "", extra: rv.extra})
}

// scrape fetches the Prometheus metrics: series (name{labels}) → value.
func (rv *rendezvous) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + rv.metrics + "/metrics")
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape metrics: status %d, %v", resp.StatusCode, err)
	}
	m := make(map[string]float64)
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m
}

// dropped returns the dropped-packets counter for reason.
func dropped(m map[string]float64, reason string) float64 {
	return m[`natchat_rendezvous_dropped_packets_total{reason="`+reason+`"}`]
}

// droppedTotal sums the dropped-packets counter over all reasons.
func droppedTotal(m map[string]float64) float64 {
	var sum float64
	for k, v := range m {
		if strings.HasPrefix(k, "natchat_rendezvous_dropped_packets_total{") {
			sum += v
		}
	}
	return sum
}

// --- nodes ---

// event is one headless event and when the test read it.
type event struct {
	headless.Event
	at time.Time // when the test read it
}

func (e *event) String() string {
	b, _ := json.Marshal(e)
	return string(b)
}

type node struct {
	*proc
	name     string
	identity string
}

type nodeOptions struct {
	identity string        // "": a new key file in a temporary directory
	delivery time.Duration // -delivery-timeout; 0: the default
	noDirect bool          // -no-direct
	listen   string        // -listen; "": 127.0.0.1:0
	state    string        // -state; "": the default, in the process's temporary home
	label    string        // the label in failure logs; "": "node NAME"
	extra    []string      // more flags
	// stalled, when non-nil, holds back the reading of the node's stdout
	// until stalled.resume: the node's writes fill the pipe and then block.
	stalled *stall
}

// startNode starts a headless node called name using the rendezvous at rv.
func startNode(t *testing.T, name, rv string, o nodeOptions) *node {
	t.Helper()
	if o.identity == "" {
		o.identity = filepath.Join(t.TempDir(), "node.key")
	}
	args := []string{"-name", name, "-rv", rv, "-identity", o.identity, "-headless",
		"-heartbeat", heartbeat.String(), "-log-level", "debug", "-listen", cmp.Or(o.listen, "127.0.0.1:0")}
	if o.delivery > 0 {
		args = append(args, "-delivery-timeout", o.delivery.String())
	}
	if o.noDirect {
		args = append(args, "-no-direct")
	}
	if o.state != "" {
		args = append(args, "-state", o.state)
	}
	args = append(args, o.extra...)
	n := &node{name: name, identity: o.identity}
	n.proc = startProcGated(t, cmp.Or(o.label, "node "+name), bins.node, o.stalled, args...)
	t.Cleanup(func() {
		// Every stdout line is a JSON event with a type and a timestamp.
		es, _, _ := n.out.since(0)
		for _, e := range es {
			if e.ev == nil {
				t.Errorf("%s: stdout line is not a JSON event: %q", n.label, e.text)
			}
		}
	})
	return n
}

// command writes one line to the node's stdin.
func (n *node) command(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(n.stdin, line+"\n"); err != nil {
		t.Fatalf("%s: write %q: %v", n.label, line, err)
	}
}

// mark returns the position after the events read so far, for waitEventFrom.
func (n *node) mark() int { return n.out.len() }

// waitEvent waits for an event (since the node started) satisfying pred.
func (n *node) waitEvent(t *testing.T, timeout time.Duration, what string, pred func(*event) bool) *event {
	t.Helper()
	e, _ := n.waitEventFrom(t, 0, timeout, what, pred)
	return e
}

// waitEventFrom waits for an event at position ≥ from satisfying pred and
// returns it and its position.
func (n *node) waitEventFrom(t *testing.T, from int, timeout time.Duration, what string, pred func(*event) bool) (*event, int) {
	t.Helper()
	e, i, ok := n.out.waitFor(from, timeout, func(e entry) bool { return e.ev != nil && pred(e.ev) })
	if !ok {
		t.Fatalf("%s: no %s within %v (%s)", n.label, what, timeout, n.status())
	}
	return e.ev, i
}

// waitEvents waits until count events at position ≥ from satisfy pred, and
// returns all that do, in order.
func (n *node) waitEvents(t *testing.T, from, count int, timeout time.Duration, what string, pred func(*event) bool) []*event {
	t.Helper()
	es, ok := n.out.waitCount(from, count, timeout, func(e entry) bool { return e.ev != nil && pred(e.ev) })
	if !ok {
		t.Fatalf("%s: %d of %d %s within %v (%s)", n.label, len(es), count, what, timeout, n.status())
	}
	evs := make([]*event, len(es))
	for i, e := range es {
		evs[i] = e.ev
	}
	return evs
}

// events returns the events at position ≥ from satisfying pred.
func (n *node) events(from int, pred func(*event) bool) []*event {
	es, _, _ := n.out.since(from)
	var evs []*event
	for _, e := range es {
		if e.ev != nil && pred(e.ev) {
			evs = append(evs, e.ev)
		}
	}
	return evs
}

func (n *node) waitRegistered(t *testing.T) *event {
	t.Helper()
	return n.waitEvent(t, waitLong, "registered event", isType("registered"))
}

// waitPeerJoined waits until the node has seen peer join.
func (n *node) waitPeerJoined(t *testing.T, peer string) {
	t.Helper()
	n.waitEvent(t, waitLong, "peer_joined "+peer, func(e *event) bool { return e.Type == "peer_joined" && e.Name == peer })
}

func isType(typ string) func(*event) bool { return func(e *event) bool { return e.Type == typ } }

// startPair starts nodes alice and bob on rv and waits until each has
// registered and seen the other join.
func startPair(t *testing.T, rv string, o nodeOptions) (alice, bob *node) {
	t.Helper()
	alice = startNode(t, "alice", rv, o)
	bob = startNode(t, "bob", rv, o)
	alice.waitRegistered(t)
	bob.waitRegistered(t)
	alice.waitPeerJoined(t, "bob")
	bob.waitPeerJoined(t, "alice")
	return alice, bob
}

// --- messages ---

// batch is messages sent by one node to another, tracked by ID.
type batch struct {
	from, to *node
	mark     int      // receiver's position before the batch was sent
	texts    []string // in the order sent
	ids      []string // IDs from the sender's sent events, same order
}

// sendBatch sends count numbered messages from→to, prefixed with tag, and
// waits for their sent events.
func sendBatch(t *testing.T, from, to *node, tag string, count int) *batch {
	t.Helper()
	b := &batch{from: from, to: to, mark: to.mark()}
	start := from.mark()
	for i := range count {
		text := fmt.Sprintf("%s %s→%s #%03d ✓", tag, from.name, to.name, i)
		b.texts = append(b.texts, text)
		from.command(t, "/msg "+to.name+" "+text)
	}
	sent := from.waitEvents(t, start, count, waitLong, "sent events for "+tag, func(e *event) bool {
		return e.Type == "sent" && e.To == to.name && strings.HasPrefix(e.Text, tag+" ")
	})
	for i, e := range sent[:count] {
		if e.Text != b.texts[i] || e.ID == "" {
			t.Fatalf("%s: sent event %d is %v, want text %q and an id", from.label, i, e, b.texts[i])
		}
		b.ids = append(b.ids, e.ID)
	}
	return b
}

// checkDelivered waits until every message of b is delivered, then checks
// that each was shown by the receiver exactly once, intact, in order, with
// the sender's ID, and that the sender got exactly one outcome per ID.
func (b *batch) checkDelivered(t *testing.T, timeout time.Duration) {
	t.Helper()
	want := make(map[string]int, len(b.ids))
	for i, id := range b.ids {
		want[id] = i
	}
	outcome := func(e *event) bool {
		_, ok := want[e.ID]
		return ok && (e.Type == "delivered" || e.Type == "error")
	}
	outs := b.from.waitEvents(t, 0, len(b.ids), timeout, "outcomes for "+strings.Fields(b.texts[0])[0], outcome)
	for _, e := range outs {
		if e.Type != "delivered" || e.To != b.to.name {
			t.Errorf("%s: message %q: outcome %v, want delivered to %s", b.from.label, b.texts[want[e.ID]], e, b.to.name)
		}
	}
	msgs := b.to.waitEvents(t, b.mark, len(b.ids), timeout, "messages from "+b.from.name, func(e *event) bool {
		_, ok := want[e.ID]
		return e.Type == "message" && ok
	})
	checkBatchMessages(t, b, msgs)
	// Exactly one outcome per ID: none came twice (checked again now that
	// the receiver has shown everything).
	seen := make(map[string]int)
	for _, e := range b.from.events(0, outcome) {
		seen[e.ID]++
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s: message %q has %d outcomes, want 1", b.from.label, b.texts[want[id]], n)
		}
	}
}

func checkBatchMessages(t *testing.T, b *batch, msgs []*event) {
	t.Helper()
	if len(msgs) != len(b.ids) {
		t.Errorf("%s: %d messages shown for %d sent (duplicates?)", b.to.label, len(msgs), len(b.ids))
	}
	for i, m := range msgs {
		if i >= len(b.ids) {
			break
		}
		if m.ID != b.ids[i] || m.Text != b.texts[i] || m.From != b.from.name {
			t.Errorf("%s: message %d is %v, want id %s text %q from %s", b.to.label, i, m, b.ids[i], b.texts[i], b.from.name)
		}
	}
}

// chat sends count messages each way between a and b at once and checks
// that all are delivered, exactly once and in order.
func chat(t *testing.T, a, b *node, tag string, count int) {
	t.Helper()
	ab := sendBatch(t, a, b, tag+"-ab", count)
	ba := sendBatch(t, b, a, tag+"-ba", count)
	ab.checkDelivered(t, waitLong)
	ba.checkDelivered(t, waitLong)
}

// --- network ---

// freeUDPAddr returns a loopback UDP address that was free a moment ago.
func freeUDPAddr(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// freeTCPAddr returns a loopback TCP address that was free a moment ago.
func freeTCPAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// udpSocket returns a loopback UDP socket closed in t.Cleanup.
func udpSocket(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mustAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatalf("address %q: %v", s, err)
	}
	return ap
}

// datagram is one datagram a proxy forwarded.
type datagram struct {
	toRV   bool // client → rendezvous
	client netip.AddrPort
	b      []byte
}

// udpProxy forwards datagrams between clients and a rendezvous and records
// them. It keeps one upstream socket per client source, so the rendezvous
// sees each client as a distinct source.
type udpProxy struct {
	front    *net.UDPConn
	upstream *net.UDPAddr
	drop     func(d datagram) bool // datagrams not forwarded (nil: none)
	wg       sync.WaitGroup

	mu sync.Mutex
	// Guarded by mu:
	ups      map[netip.AddrPort]*net.UDPConn
	captured []datagram
	closed   bool
}

// startProxy starts a proxy to the rendezvous at upstream, stopped in
// t.Cleanup. It forwards every datagram but those drop reports (drop may
// be nil).
func startProxy(t *testing.T, upstream string, drop func(datagram) bool) *udpProxy {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp4", upstream)
	if err != nil {
		t.Fatal(err)
	}
	front, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := &udpProxy{front: front, upstream: ua, drop: drop, ups: make(map[netip.AddrPort]*net.UDPConn)}
	p.wg.Add(1)
	go func() { defer p.wg.Done(); p.serveFront() }()
	t.Cleanup(p.close)
	return p
}

// addr is the address clients use as their rendezvous.
func (p *udpProxy) addr() string { return p.front.LocalAddr().String() }

func (p *udpProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.front.Close()
	for _, u := range p.ups {
		u.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *udpProxy) record(d datagram) {
	p.mu.Lock()
	p.captured = append(p.captured, d)
	p.mu.Unlock()
}

func (p *udpProxy) serveFront() {
	buf := make([]byte, 64<<10)
	for {
		n, src, err := p.front.ReadFromUDPAddrPort(buf)
		if err != nil {
			if isClosed(err) {
				return
			}
			continue
		}
		d := datagram{toRV: true, client: src, b: append([]byte(nil), buf[:n]...)}
		up := p.upFor(src)
		if up == nil {
			return
		}
		if p.drop != nil && p.drop(d) {
			continue
		}
		p.record(d)
		up.Write(d.b) // a refusal (rendezvous down) is a lost datagram
	}
}

// upFor returns the upstream socket of client src, starting it if new.
func (p *udpProxy) upFor(src netip.AddrPort) *net.UDPConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	if up := p.ups[src]; up != nil {
		return up
	}
	up, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, p.upstream)
	if err != nil {
		return nil
	}
	p.ups[src] = up
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, err := up.Read(buf)
			if err != nil {
				if isClosed(err) {
					return
				}
				continue // ECONNREFUSED while the rendezvous is down
			}
			d := datagram{client: src, b: append([]byte(nil), buf[:n]...)}
			if p.drop != nil && p.drop(d) {
				continue
			}
			p.record(d)
			p.front.WriteToUDPAddrPort(d.b, src)
		}
	}()
	return up
}

// clients returns the client sources seen so far.
func (p *udpProxy) clients() []netip.AddrPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []netip.AddrPort
	for c := range p.ups {
		out = append(out, c)
	}
	return out
}

// datagrams returns a copy of the datagrams forwarded so far.
func (p *udpProxy) datagrams() []datagram {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]datagram(nil), p.captured...)
}

// inject sends b to a client from the proxy's address, as if the
// rendezvous had sent it.
func (p *udpProxy) inject(b []byte, to netip.AddrPort) {
	p.front.WriteToUDPAddrPort(b, to)
}

// typ returns the wire type of a rendezvous-protocol datagram, or 0.
func (d datagram) typ() wire.Type {
	if !wire.IsProtocol(d.b) {
		return 0
	}
	return wire.Type(d.b[2])
}

func isClosed(err error) bool { return errors.Is(err, net.ErrClosed) }

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		<-tick.C
	}
}
