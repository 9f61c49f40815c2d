package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// server is one server process under test.
type server struct {
	name string // "ours" or "coturn"
	addr *net.UDPAddr
	cmd  *exec.Cmd
	log  string // file with its output
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// stop ends the process (SIGTERM, then SIGKILL after 3 s) and waits.
func (s *server) stop() {
	if s == nil || s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
}

// freeUDPPort returns a loopback UDP port free at the moment of asking.
func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// buildRendezvous builds cmd/rendezvous into dir and returns its path.
func buildRendezvous(ctx context.Context, dir string) (string, error) {
	return goBuild(ctx, filepath.Join(dir, "rendezvous"), "natchat/cmd/rendezvous")
}

// goBuild builds pkg into the file out with go build's extra args (-tags
// ...) and returns out.
func goBuild(ctx context.Context, out, pkg string, extra ...string) (string, error) {
	args := append(append([]string{"build", "-o", out}, extra...), pkg)
	cmd := exec.CommandContext(ctx, "go", args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return out, nil
}

// startProcess runs bin with args, its output to a file in dir, and waits
// (at most wait) until addr answers a STUN Binding request.
func startProcess(name, dir, bin string, addr *net.UDPAddr, wait time.Duration, args ...string) (*server, error) {
	logf := filepath.Join(dir, name+".log")
	f, err := os.Create(logf)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	killWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{name: name, addr: addr, cmd: cmd, log: logf}
	if err := waitSTUN(addr, wait); err != nil {
		s.stop()
		out, _ := os.ReadFile(logf)
		return nil, fmt.Errorf("%s did not answer STUN on %s: %v; its log:\n%s", name, addr, err, tail(string(out), 20))
	}
	return s, nil
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// startOurs starts bin (cmd/rendezvous) on a free loopback
// port with a throwaway data directory under dir, and extra flags.
func startOurs(name, dir, bin string, extra ...string) (*server, error) {
	return startOursWait(name, dir, bin, 10*time.Second, extra...)
}

// startOursWait is startOurs giving the server wait to answer STUN (a
// preload of a million nodes takes a while).
func startOursWait(name, dir, bin string, wait time.Duration, extra ...string) (*server, error) {
	port, err := freeUDPPort()
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, name+"-data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	addr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	mport, err := freeTCPPort()
	if err != nil {
		return nil, err
	}
	maddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(mport))
	args := append([]string{"-addr", addr.String(), "-data", data, "-log-level", "warn", "-metrics", maddr}, extra...)
	s, err := startProcess(name, dir, bin, addr, wait, args...)
	if err == nil {
		metricsURLs.Store(s.pid(), "http://"+maddr+"/metrics")
	}
	return s, err
}

// Credentials of the coturn the tool starts.
const (
	turnUser  = "user"
	turnPass  = "pass"
	turnRealm = "natbench"
)

// ensureCoturn returns turnserver's path, installing the Debian package
// coturn when it is missing and the tool runs as root.
func ensureCoturn(ctx context.Context, logf func(string, ...any)) (string, error) {
	if p, err := exec.LookPath("turnserver"); err == nil {
		return p, nil
	}
	if os.Geteuid() != 0 {
		return "", errors.New("turnserver not installed and not root (apt-get install coturn, or scripts/coturn.sh install)")
	}
	logf("coturn: installing the Debian package (apt-get install -y coturn)")
	cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "--no-install-recommends", "coturn")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get install coturn: %v: %s", err, tail(string(out), 5))
	}
	return exec.LookPath("turnserver")
}

// startCoturn starts turnserver on a free loopback port: no TLS, no
// configuration file, long-term credentials user/pass in realm natbench,
// no CLI, loopback peers allowed (the relay row's peers are on
// loopback), its log and database under dir.
func startCoturn(bin, dir string) (*server, error) {
	port, err := freeUDPPort()
	if err != nil {
		return nil, err
	}
	addr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	return startProcess("coturn", dir, bin, addr, 10*time.Second,
		"-n", "--listening-ip=127.0.0.1", "--listening-port="+strconv.Itoa(port),
		"--relay-ip=127.0.0.1", "--no-tls", "--no-dtls", "--no-tcp-relay",
		"--lt-cred-mech", "--user="+turnUser+":"+turnPass, "--realm="+turnRealm,
		"--no-cli", "--allow-loopback-peers", "--simple-log",
		"--log-file="+filepath.Join(dir, "turnserver.log"),
		"--pidfile="+filepath.Join(dir, "turnserver.pid"),
		"--userdb="+filepath.Join(dir, "turndb"))
}
