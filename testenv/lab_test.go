package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"natchat/headless"
)

func helperCmd(mode string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	return cmd
}

// threadsInRootNamespace reports whether every thread of this process is
// in the root network namespace.
func threadsInRootNamespace(t *testing.T) bool {
	t.Helper()
	if rootNetNS == "" {
		t.Fatal("root namespace unknown")
	}
	root := rootNetNS
	tasks, err := os.ReadDir("/proc/self/task")
	noErr(t, err)
	for _, task := range tasks {
		l, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns/net"))
		if err == nil && l != root {
			t.Logf("thread %s is in %s", task.Name(), l)
			return false
		}
	}
	return true
}

// TestStartInNamespace checks that Lab.Start runs the child in the
// namespace (it reports its own /proc/self/ns/net), also when many start
// at once, and that no harness thread is left in a lab namespace.
func TestStartInNamespace(t *testing.T) {
	l := newLab(t)
	h1 := must(l.AddHost("h1", l.Internet()))(t)
	r := must(l.AddRouter("r1", RouterConfig{NAT: PortRestricted}))(t)
	h2 := must(l.AddHost("h2", r.LAN()))(t)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		ns := []*Namespace{h1.NS, h2.NS, r.NS}[i%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out bytes.Buffer
			cmd := helperCmd("netns")
			cmd.Stdout = &out
			p, err := l.Start(ns, "netns", cmd)
			if err != nil {
				t.Error(err)
				return
			}
			if err := p.Wait(10 * time.Second); err != nil {
				t.Error(err)
				return
			}
			ino, err := ns.Inode()
			if err != nil {
				t.Error(err)
				return
			}
			if got, want := strings.TrimSpace(out.String()), fmt.Sprintf("net:[%d]", ino); got != want {
				t.Errorf("child in %s reports %s, want %s", ns.Short, got, want)
			}
		}()
	}
	wg.Wait()
	if !threadsInRootNamespace(t) {
		t.Error("a harness thread was left in a lab namespace")
	}
	if _, err := l.Start(h1.NS, "missing", exec.Command("/nonexistent/binary")); err == nil {
		t.Error("Start of a missing binary succeeded")
	}
	if !threadsInRootNamespace(t) {
		t.Error("a failed Start left a thread in a lab namespace")
	}
}

// TestCleanup builds a lab with every kind of part, then closes it and
// checks that nothing is left: no namespace name, no namespace (each gets a
// canary veth whose root-namespace end disappears only when the namespace
// is destroyed), no process, no state file, no goroutine.
func TestCleanup(t *testing.T) {
	RequireRoot(t)
	g0 := GoroutineCount()
	l, err := New(Options{})
	noErr(t, err)
	closed := false
	defer func() {
		if !closed {
			l.Close()
		}
	}()
	rv := must(l.AddRendezvousHost())(t)
	must(l.AddSite("a", PortRestricted, false, "a1", "a2"))(t)
	must(l.AddSite("b", FullCone, true, "b1"))(t)
	must(l.AddDoubleNAT("c", AddressRestricted, Symmetric, "c1"))(t)
	noErr(t, l.Router("a").Impair(Impairment{Delay: 20 * time.Millisecond, Loss: 5}))
	var procs []*Proc
	for _, short := range []string{"a1", "c1"} {
		procs = append(procs, must(l.Start(l.Namespace(short), "sleep", helperCmd("sleep")))(t))
	}
	n := must(l.StartNode(rv, NodeConfig{Bin: os.Args[0], RV: netip.AddrPortFrom(rv.Addr, 3478), Env: []string{helperEnv + "=fakenode"}}))(t)
	must(n.Wait(5*time.Second, Registered()))(t)
	procs = append(procs, n.Proc())
	// One process started behind the harness's back.
	outside := exec.Command("ip", "netns", "exec", l.Namespace("b1").Name, os.Args[0])
	outside.Env = append(os.Environ(), helperEnv+"=sleep")
	if err := outside.Start(); err == nil {
		defer outside.Wait()
		eventually(t, 5*time.Second, "process started with ip netns exec", func() bool {
			return len(pidsInNamespace(namespaceInode(l.Namespace("b1").Name))) > 0
		})
	} else {
		t.Logf("no ip command, skipping the outside process: %v", err)
	}

	names := l.NamespaceNames()
	if len(names) != 10 {
		t.Errorf("%d namespaces, want 10: %v", len(names), names)
	}
	var canaries []string
	for i, full := range names {
		ns := l.Namespace(strings.TrimPrefix(full, l.ID+"-"))
		name := fmt.Sprintf("c%s%d", l.ID, i)
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "canary", PeerNamespace: netlink.NsFd(int(ns.h))}
		noErr(t, netlink.LinkAdd(v))
		canaries = append(canaries, name)
	}
	stateFile := filepath.Join(l.StateDir(), l.ID+".json")
	if _, err := os.Stat(stateFile); err != nil {
		t.Errorf("state file: %v", err)
	}
	dir := l.Dir

	closed = true
	noErr(t, l.Close())
	noErr(t, l.Close()) // idempotent

	for _, p := range procs {
		if done, _ := p.Exited(); !done {
			t.Errorf("%s still running", p.Name)
		}
	}
	for _, full := range names {
		if _, err := os.Stat(filepath.Join(netnsDir, full)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s still named: %v", full, err)
		}
	}
	eventually(t, 20*time.Second, "every lab namespace destroyed (canary veths gone)", func() bool {
		for _, c := range canaries {
			if _, err := netlink.LinkByName(c); err == nil {
				return false
			}
		}
		return true
	})
	if _, err := os.Stat(stateFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file left: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lab dir left: %v", err)
	}
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil && strings.Contains(string(out), l.ID) {
		t.Errorf("ip netns list still shows the lab:\n%s", out)
	}
	noErr(t, WaitGoroutines(g0, 10*time.Second))
	if !threadsInRootNamespace(t) {
		t.Error("a harness thread is in a lab namespace")
	}
}

// TestSweepStale checks that a lab whose owner died is found through its
// state file and removed, processes included.
func TestSweepStale(t *testing.T) {
	RequireRoot(t)
	stateDir := t.TempDir()
	l := NewT(t, Options{StateDir: stateDir})
	h := must(l.AddHost("h", l.Internet()))(t)
	p := must(l.Start(h.NS, "sleep", helperCmd("sleep")))(t)

	sts := must(ReadStates(stateDir))(t)
	if len(sts) != 1 || sts[0].ID != l.ID || !sts[0].Alive() {
		t.Fatalf("states %+v, want one live lab %s", sts, l.ID)
	}
	noErr(t, SweepStale(stateDir))
	if _, err := os.Stat(filepath.Join(netnsDir, h.NS.Name)); err != nil {
		t.Fatalf("SweepStale removed a live lab: %v", err)
	}

	// Pretend the owner died: a pid that has exited.
	dead := helperCmd("netns")
	noErr(t, dead.Run())
	st := sts[0]
	st.PID = dead.Process.Pid
	b := must(jsonMarshal(st))(t)
	noErr(t, os.WriteFile(filepath.Join(stateDir, st.ID+".json"), b, 0o644))
	noErr(t, SweepStale(stateDir))
	if _, err := os.Stat(filepath.Join(netnsDir, h.NS.Name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace of the dead lab still named: %v", err)
	}
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Error("process of the dead lab still running")
	}
	if sts := must(ReadStates(stateDir))(t); len(sts) != 0 {
		t.Errorf("state files left: %+v", sts)
	}
}

// TestNodeHandle drives the Node handle with a fake node that speaks the
// event contract.
func TestNodeHandle(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	h := must(l.AddHost("h", l.Internet()))(t)
	cfg := NodeConfig{Bin: os.Args[0], Name: "alice", RV: netip.MustParseAddrPort("203.0.113.10:3478"),
		Env: []string{helperEnv + "=fakenode"}}
	n := must(l.StartNode(h, cfg))(t)
	reg := must(n.Wait(5*time.Second, Registered()))(t)
	if reg.Name != "alice" || reg.Public != "198.51.100.2:40000" || n.Public() != reg.Public || reg.TS.IsZero() {
		t.Errorf("registered event %+v", reg)
	}
	if ev := must(n.Wait(5*time.Second, OfType(EventInvalid)))(t); ev.Raw != "this line is not json" {
		t.Errorf("invalid event %+v", ev)
	}
	sent := must(n.Send("bob", "hello there"))(t)
	if sent.ID != "1" || sent.To != "bob" {
		t.Errorf("sent event %+v", sent)
	}
	must(n.Wait(5*time.Second, Delivered(sent.ID)))(t)
	if _, err := n.Send("nobody", "x"); err == nil || !strings.Contains(err.Error(), "unknown_peer") {
		t.Errorf("Send to an unknown peer: %v", err)
	}
	peers := must(n.Who(5 * time.Second))(t)
	if len(peers) != 1 || peers[0] != (headless.PeerInfo{Name: "bob", Path: "direct", RTTMS: 1.5, Online: true}) {
		t.Errorf("peers %+v", peers)
	}
	if _, err := n.WaitFrom(n.Mark(), 50*time.Millisecond, OfType("never")); err == nil || !strings.Contains(err.Error(), "no type never within") {
		t.Errorf("WaitFrom timeout error: %v", err)
	}
	if !strings.Contains(n.Stderr(), "fakenode starting alice") {
		t.Errorf("stderr %q", n.Stderr())
	}
	noErr(t, n.Quit(5*time.Second))
	must(n.Wait(5*time.Second, OfType(EventExit)))(t)
	start := time.Now()
	if _, err := n.WaitFrom(n.Mark(), time.Minute, OfType("never")); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("WaitFrom on an exited node: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Error("WaitFrom on an exited node waited for its timeout")
	}

	cfg.Name = "carol"
	c := must(l.StartNode(h, cfg))(t)
	noErr(t, c.Command("/crash"))
	if ev := must(c.Wait(5*time.Second, OfType(EventExit)))(t); !strings.Contains(ev.Message, "exit status 3") {
		t.Errorf("exit event %+v", ev)
	}
}

// TestRendezvousStart checks that StartRendezvous waits for the UDP port
// and reports a server that dies at once.
func TestRendezvousStart(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	h := must(l.AddRendezvousHost())(t)
	rv := must(l.StartRendezvous(h, RendezvousConfig{Bin: os.Args[0], Env: []string{helperEnv + "=udp"}}))(t)
	if rv.Addr != netip.AddrPortFrom(RendezvousAddr, 3478) {
		t.Errorf("rendezvous address %v", rv.Addr)
	}
	first := rv.Proc()
	noErr(t, rv.Restart())
	if done, _ := first.Exited(); !done || rv.Proc() == first {
		t.Error("Restart did not replace the process")
	}
	if _, err := l.StartRendezvous(h, RendezvousConfig{Bin: os.Args[0], Port: 4000, Env: []string{helperEnv + "=netns"}}); err == nil ||
		!strings.Contains(err.Error(), "exited before binding") {
		t.Errorf("StartRendezvous of a server that exits: %v", err)
	}
}
