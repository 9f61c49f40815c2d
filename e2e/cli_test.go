package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"natchat/wire"
)

// runOnce runs bin to completion and returns its exit code, stdout and
// stderr.
func runOnce(t *testing.T, bin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	home := t.TempDir()
	cmd.Env = append(cmd.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_STATE_HOME="+home)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		code = ee.ExitCode()
	default:
		t.Fatalf("%s %q: %v (stderr %q)", filepath.Base(bin), args, err, errb.String())
	}
	return code, out.String(), errb.String()
}

// oneLine reports whether s is exactly one non-empty line.
func oneLine(s string) bool {
	return strings.HasSuffix(s, "\n") && strings.Count(s, "\n") == 1 && strings.TrimSpace(s) != ""
}

// TestBadFlags: every command-line mistake exits 2 with one line on stderr
// that names the program, and nothing on stdout.
func TestBadFlags(t *testing.T) {
	t.Parallel()
	key := func(t *testing.T) string { return filepath.Join(t.TempDir(), "k.key") }
	cases := []struct {
		name string
		bin  string
		args func(t *testing.T) []string
	}{
		{"node/empty name", "node", func(t *testing.T) []string { return []string{"-name", "", "-rv", "127.0.0.1:9", "-identity", key(t)} }},
		{"node/name of 33 characters", "node", func(t *testing.T) []string {
			return []string{"-name", strings.Repeat("n", 33), "-rv", "127.0.0.1:9", "-identity", key(t)}
		}},
		{"node/name with a space", "node", func(t *testing.T) []string {
			return []string{"-name", "al ice", "-rv", "127.0.0.1:9", "-identity", key(t)}
		}},
		{"node/room name", "node", func(t *testing.T) []string {
			return []string{"-name", "#room", "-rv", "127.0.0.1:9", "-identity", key(t)}
		}},
		{"node/command name", "node", func(t *testing.T) []string {
			return []string{"-name", "/quit", "-rv", "127.0.0.1:9", "-identity", key(t)}
		}},
		{"node/rv without port", "node", func(t *testing.T) []string {
			return []string{"-name", "alice", "-rv", "127.0.0.1", "-identity", key(t)}
		}},
		{"node/rv port 70000", "node", func(t *testing.T) []string {
			return []string{"-name", "alice", "-rv", "127.0.0.1:70000", "-identity", key(t)}
		}},
		{"node/rv port 0", "node", func(t *testing.T) []string {
			return []string{"-name", "alice", "-rv", "127.0.0.1:0", "-identity", key(t)}
		}},
		{"node/rv port not a number", "node", func(t *testing.T) []string {
			return []string{"-name", "alice", "-rv", "127.0.0.1:x", "-identity", key(t)}
		}},
		{"node/rv with an empty key", "node", func(t *testing.T) []string {
			return []string{"-name", "alice", "-rv", "127.0.0.1:9#", "-identity", key(t)}
		}},
		{"node/missing name", "node", func(t *testing.T) []string { return []string{"-rv", "127.0.0.1:9", "-identity", key(t)} }},
		{"node/missing rv", "node", func(t *testing.T) []string { return []string{"-name", "alice", "-identity", key(t)} }},
		{"node/bad log level", "node", func(t *testing.T) []string {
			return []string{"-name", "alice", "-rv", "127.0.0.1:9", "-identity", key(t), "-log-level", "loud"}
		}},
		{"node/unknown ui", "node", func(t *testing.T) []string {
			return []string{"-name", "alice", "-rv", "127.0.0.1:9", "-identity", key(t), "-ui", "bogus"}
		}},
		{"node/unknown flag", "node", func(t *testing.T) []string { return []string{"-name", "alice", "-rv", "127.0.0.1:9", "-bogus"} }},
		{"node/stray argument", "node", func(t *testing.T) []string { return []string{"-name", "alice", "-rv", "127.0.0.1:9", "extra"} }},
		{"node/zero heartbeat", "node", func(t *testing.T) []string {
			return []string{"-name", "alice", "-rv", "127.0.0.1:9", "-identity", key(t), "-heartbeat", "0s"}
		}},
		{"node/zero room rate", "node", func(t *testing.T) []string {
			return []string{"-name", "alice", "-rv", "127.0.0.1:9", "-identity", key(t), "-room-rate", "0"}
		}},
		{"node/room rate NaN", "node", func(t *testing.T) []string {
			return []string{"-name", "alice", "-rv", "127.0.0.1:9", "-identity", key(t), "-room-rate", "NaN"}
		}},
		{"node/negative room burst", "node", func(t *testing.T) []string {
			return []string{"-name", "alice", "-rv", "127.0.0.1:9", "-identity", key(t), "-room-burst", "-1"}
		}},
		{"rendezvous/zero room members", "rendezvous", func(t *testing.T) []string {
			return []string{"-addr", freeUDPAddr(t), "-data", t.TempDir(), "-room-members", "0"}
		}},
		{"node/listen port 70000", "node", func(t *testing.T) []string {
			return []string{"-name", "alice", "-rv", "127.0.0.1:9", "-identity", key(t), "-listen", "127.0.0.1:70000"}
		}},
		{"rendezvous/addr port 70000", "rendezvous", func(t *testing.T) []string { return []string{"-addr", ":70000", "-data", t.TempDir()} }},
		{"rendezvous/addr port 0", "rendezvous", func(t *testing.T) []string { return []string{"-addr", "127.0.0.1:0", "-data", t.TempDir()} }},
		{"rendezvous/addr without port", "rendezvous", func(t *testing.T) []string { return []string{"-addr", "127.0.0.1", "-data", t.TempDir()} }},
		{"rendezvous/bad log level", "rendezvous", func(t *testing.T) []string {
			return []string{"-addr", freeUDPAddr(t), "-data", t.TempDir(), "-log-level", "loud"}
		}},
		{"rendezvous/unknown flag", "rendezvous", func(t *testing.T) []string { return []string{"-bogus"} }},
		{"rendezvous/negative sockets", "rendezvous", func(t *testing.T) []string { return []string{"-sockets", "-1", "-data", t.TempDir()} }},
		{"rendezvous/gc percent 0", "rendezvous", func(t *testing.T) []string { return []string{"-gc-percent", "0", "-data", t.TempDir()} }},
		{"rendezvous/gc percent -2", "rendezvous", func(t *testing.T) []string { return []string{"-gc-percent", "-2", "-data", t.TempDir()} }},
		{"rendezvous/too many sockets", "rendezvous", func(t *testing.T) []string { return []string{"-sockets", "65", "-data", t.TempDir()} }},
		{"rendezvous/heartbeat not under expiry", "rendezvous", func(t *testing.T) []string {
			return []string{"-addr", freeUDPAddr(t), "-data", t.TempDir(), "-expiry", "5s", "-heartbeat", "5s"}
		}},
		{"rendezvous/metrics port 70000", "rendezvous", func(t *testing.T) []string {
			return []string{"-addr", freeUDPAddr(t), "-data", t.TempDir(), "-metrics", "127.0.0.1:70000"}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bin := bins.node
			if tc.bin == "rendezvous" {
				bin = bins.rendezvous
			}
			args := tc.args(t)
			code, stdout, stderr := runOnce(t, bin, args...)
			if code != 2 {
				t.Errorf("%s %q: exit %d, want 2 (stderr %q)", tc.bin, args, code, stderr)
			}
			if !oneLine(stderr) || !strings.HasPrefix(stderr, tc.bin+": ") {
				t.Errorf("%s %q: stderr %q, want one line starting %q", tc.bin, args, stderr, tc.bin+": ")
			}
			if stdout != "" {
				t.Errorf("%s %q: stdout %q, want nothing", tc.bin, args, stdout)
			}
		})
	}
}

// TestVersion: -version prints one line naming the program and exits 0.
func TestVersion(t *testing.T) {
	t.Parallel()
	for _, prog := range []string{"node", "rendezvous"} {
		bin := bins.node
		if prog == "rendezvous" {
			bin = bins.rendezvous
		}
		code, stdout, stderr := runOnce(t, bin, "-version")
		if code != 0 || !oneLine(stdout) || !strings.HasPrefix(stdout, prog+" ") || stderr != "" {
			t.Errorf("%s -version: exit %d, stdout %q, stderr %q; want 0, one line %q..., nothing", prog, code, stdout, stderr, prog+" ")
		}
	}
}

// TestRegistrationRefused: a name is bound to the first key that registers
// it, case-insensitively, and a key to one name. A node refused for either
// reports the error code and exits 1; a refusal does not disturb the node
// that holds the name.
func TestRegistrationRefused(t *testing.T) {
	t.Parallel()
	rv := startRendezvous(t, rvOptions{})
	alice := startNode(t, "alice", rv.addr, nodeOptions{})
	alice.waitRegistered(t)
	// The longest name allowed (32 characters, not all ASCII) registers.
	long := strings.Repeat("é", 2) + strings.Repeat("x", 30)
	startNode(t, long, rv.addr, nodeOptions{}).waitRegistered(t)
	alice.waitPeerJoined(t, long)

	cases := []struct {
		name, identity, code string
	}{
		{"alice", "", "name_taken"},             // another key
		{"ALICE", "", "name_taken"},             // a case variant, another key
		{"carol", alice.identity, "key_in_use"}, // alice's key under another name
	}
	for _, tc := range cases {
		n := startNode(t, tc.name, rv.addr, nodeOptions{identity: tc.identity})
		e := n.waitEvent(t, waitLong, "error event", isType("error"))
		if e.Code != tc.code {
			t.Errorf("%s: error %v, want code %s", n.label, e, tc.code)
		}
		if code := n.exitCode(t, waitLong); code != 1 {
			t.Errorf("%s: exit %d after %s, want 1", n.label, code, tc.code)
		}
		if r := n.events(0, isType("registered")); len(r) > 0 {
			t.Errorf("%s: %v, want no registration", n.label, r[0])
		}
	}
	if alice.exited() {
		t.Fatal("alice exited")
	}
	if left := alice.events(0, isType("peer_left")); len(left) > 0 {
		t.Errorf("%s: %v, want nobody leaving", alice.label, left[0])
	}
	// alice keeps her name: /who still works and the rendezvous answers for her.
	mark := alice.mark()
	alice.command(t, "/who")
	alice.waitEventFrom(t, mark, waitLong, "peers event", isType("peers"))
}

// TestVersionMismatch: both ends say clearly when they speak different
// protocol versions. A rendezvous of a future version (faked here: it
// answers every datagram with an Error of the next version) makes the
// node report version_mismatch, naming both versions, and exit 1; the real
// rendezvous answers a datagram of the next version with a
// version_mismatch Error of its own version.
func TestVersionMismatch(t *testing.T) {
	t.Parallel()
	fake := udpSocket(t)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := fake.ReadFrom(buf)
			if err != nil {
				return
			}
			if !wire.IsProtocol(buf[:n]) {
				continue // the node's STUN query
			}
			// It echoes a Hello's nonce (the first 8 body bytes in every
			// version), as a rendezvous does: the node believes a version
			// mismatch only in answer to its own Hello.
			var tx uint32
			if wire.Type(buf[2]) == wire.TypeHello && n >= wire.HeaderLen+8 {
				tx = binary.BigEndian.Uint32(buf[wire.HeaderLen+4 : wire.HeaderLen+8])
			}
			e := wire.Marshal(&wire.Error{Code: wire.CodeVersion, Request: wire.Type(buf[2]), TxID: tx,
				Message: fmt.Sprintf("rendezvous speaks v%d", wire.Version+1)})
			e[1] = wire.Version + 1
			fake.WriteTo(e, from)
		}
	}()
	n := startNode(t, "alice", fake.LocalAddr().String(), nodeOptions{})
	ev := n.waitEvent(t, waitLong, "version_mismatch error", func(e *event) bool {
		return e.Type == "error" && e.Code == "version_mismatch"
	})
	if !strings.Contains(ev.Message, fmt.Sprintf("v%d", wire.Version+1)) || !strings.Contains(ev.Message, fmt.Sprintf("v%d", wire.Version)) {
		t.Errorf("message %q does not name both versions", ev.Message)
	}
	if code := n.exitCode(t, waitLong); code != 1 {
		t.Errorf("node exit %d, want 1", code)
	}

	rv := startRendezvous(t, rvOptions{})
	c := udpSocket(t)
	hello := wire.Marshal(&wire.Hello{Nonce: 1})
	hello[1] = wire.Version + 1
	ua, _ := net.ResolveUDPAddr("udp", rv.addr)
	c.WriteTo(hello, ua)
	c.SetReadDeadline(time.Now().Add(waitLong))
	buf := make([]byte, 2048)
	sz, _, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no answer from the rendezvous to a v%d Hello: %v", wire.Version+1, err)
	}
	m, err := wire.Parse(buf[:sz])
	if e, ok := m.(*wire.Error); err != nil || !ok || e.Code != wire.CodeVersion || sz > len(hello) {
		t.Fatalf("rendezvous answered %x (%v, %v), want a version_mismatch Error no larger than the request", buf[:sz], m, err)
	}
	rv.proc.waitStderr(t, waitLong, "protocol version mismatch")
}
