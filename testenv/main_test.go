package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// helperEnv selects a helper mode of the test binary: the self-tests run
// the test binary itself inside namespaces instead of depending on
// programs that may not be installed.
const helperEnv = "TESTENV_HELPER"

// rootNetNS is the test process's namespace link before any test ran.
var rootNetNS string

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode, os.Args[1:]))
	}
	rootNetNS, _ = os.Readlink("/proc/thread-self/ns/net")
	base := GoroutineCount()
	stop := CleanupOnSignal("")
	code := m.Run()
	stop()
	if err := WaitGoroutines(base, 5*time.Second); code == 0 && err != nil {
		fmt.Fprintln(os.Stderr, "testenv: goroutine leak:", err)
		code = 1
	}
	os.Exit(code)
}

// runHelper implements the helper modes:
//
//	netns     print the process's network namespace link and exit
//	sleep     block until killed
//	udp       bind the UDP port of -addr :PORT and block until killed
//	fakenode  a minimal headless node speaking the event contract
func runHelper(mode string, args []string) int {
	switch mode {
	case "netns":
		l, err := os.Readlink("/proc/self/ns/net")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(l)
		return 0
	case "sleep":
		select {}
	case "udp":
		port := 0
		for i, a := range args {
			if a == "-addr" && i+1 < len(args) {
				port = atoi(strings.TrimPrefix(args[i+1], ":"))
			}
		}
		c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: port})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer c.Close()
		select {}
	case "fakenode":
		return fakeNode(args)
	}
	fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", mode)
	return 2
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// fakeNode answers the headless command set with contract events.
func fakeNode(args []string) int {
	name := "?"
	for i, a := range args {
		if a == "-name" && i+1 < len(args) {
			name = args[i+1]
		}
	}
	emit := func(typ, rest string) {
		ts := time.Now().UTC().Format(time.RFC3339Nano)
		if rest != "" {
			rest = "," + rest
		}
		fmt.Printf(`{"type":%q,"ts":%q%s}`+"\n", typ, ts, rest)
	}
	fmt.Fprintln(os.Stderr, "fakenode starting", name)
	emit("registered", fmt.Sprintf(`"name":%q,"public":"198.51.100.2:40000"`, name))
	fmt.Println("this line is not json")
	sc := bufio.NewScanner(os.Stdin)
	id := 0
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), " ", 3)
		switch f[0] {
		case "/msg":
			if len(f) < 3 || f[1] == "nobody" {
				emit("error", `"code":"unknown_peer","message":"no such peer"`)
				continue
			}
			id++
			emit("sent", fmt.Sprintf(`"id":"%d","to":%q`, id, f[1]))
			emit("delivered", fmt.Sprintf(`"id":"%d","to":%q`, id, f[1]))
		case "/who":
			emit("peers", `"peers":[{"name":"bob","path":"direct","rtt_ms":1.5,"online":true}]`)
		case "/quit":
			return 0
		case "/crash":
			return 3
		}
	}
	return 0
}

// newLab creates a lab for a self-test.
func newLab(t *testing.T) *Lab {
	t.Helper()
	return NewT(t, Options{})
}

// must turns a (value, error) result into the value, failing the test on
// error: must(f())(t).
func must[T any](v T, err error) func(testing.TB) T {
	return func(t testing.TB) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// noErr fails the test on err.
func noErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond every 10ms until it holds or timeout passes: a wait
// on a condition, not a sleep.
func eventually(t testing.TB, timeout time.Duration, desc string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, desc)
		}
		<-tick.C
	}
}

type packet struct {
	data string
	from netip.AddrPort
	at   time.Time
}

// probe is a UDP socket in a lab namespace whose reader goroutine queues
// what arrives.
type probe struct {
	t    testing.TB
	name string
	c    *net.UDPConn
	ch   chan packet
	wg   sync.WaitGroup

	mu    sync.Mutex // guards stash
	stash []packet   // packets read by expect that did not match
}

func newProbe(t testing.TB, h *Host, port int) *probe {
	t.Helper()
	c := must(h.ListenUDP(port))(t)
	p := &probe{t: t, name: h.Name, c: c, ch: make(chan packet, 4096)}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(p.ch)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // ICMP errors surface as read errors on Linux
			}
			p.ch <- packet{data: string(buf[:n]), from: netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), at: time.Now()}
		}
	}()
	t.Cleanup(func() {
		c.Close()
		p.wg.Wait()
	})
	return p
}

func (p *probe) port() int { return p.c.LocalAddr().(*net.UDPAddr).Port }

func (p *probe) send(to netip.AddrPort, data string) {
	p.t.Helper()
	if _, err := p.c.WriteToUDPAddrPort([]byte(data), to); err != nil {
		p.t.Fatalf("%s: send to %v: %v", p.name, to, err)
	}
}

// expect waits for a packet carrying data.
func (p *probe) expect(data string, timeout time.Duration) packet {
	p.t.Helper()
	p.mu.Lock()
	for i, pk := range p.stash {
		if pk.data == data {
			p.stash = append(p.stash[:i], p.stash[i+1:]...)
			p.mu.Unlock()
			return pk
		}
	}
	p.mu.Unlock()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case pk, ok := <-p.ch:
			if !ok {
				p.t.Fatalf("%s: socket closed waiting for %q", p.name, data)
			}
			if pk.data == data {
				return pk
			}
			p.mu.Lock()
			p.stash = append(p.stash, pk)
			p.mu.Unlock()
		case <-timer.C:
			p.t.Fatalf("%s: no packet %q within %v", p.name, data, timeout)
		}
	}
}

// got reports whether a packet carrying data has arrived, without waiting.
func (p *probe) got(data string) bool {
	for {
		select {
		case pk := <-p.ch:
			p.mu.Lock()
			p.stash = append(p.stash, pk)
			p.mu.Unlock()
			continue
		default:
		}
		break
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pk := range p.stash {
		if pk.data == data {
			return true
		}
	}
	return false
}
