package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named network namespaces are bind-mounted; it is the
// directory iproute2 uses, so `ip netns exec NAME` works on lab namespaces.
const netnsDir = "/run/netns"

// Namespace is a named network namespace created by a Lab. Its name is
// globally visible under /run/netns; everything inside it (links, addresses,
// nftables, conntrack) is private to it.
type Namespace struct {
	// Name is the full name under /run/netns, including the lab prefix.
	Name string
	// Short is the name within the lab ("alice", "r1", "inet").
	Short string

	h  netns.NsHandle  // open fd of the namespace, closed by close
	nl *netlink.Handle // rtnetlink + conntrack handle bound to the namespace
}

// inThread runs f on a goroutine locked to its OS thread and returns f's
// error. f may change the thread's network namespace: afterwards the thread
// is moved back to its original namespace and released, and if that fails
// it stays locked, so the Go runtime retires it and no other goroutine can
// ever run in the wrong namespace.
func inThread(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get thread namespace: %w", err)
			return
		}
		defer orig.Close()
		err = f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// newNamespace creates the named namespace and applies the baseline sysctls
// every lab namespace gets: no IPv6 (no router solicitations, DAD or MLD
// noise), no reverse-path filter, and no bridge netfilter (bridged frames
// must not run through the router's NAT rules).
func newNamespace(full, short string) (*Namespace, error) {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", netnsDir, err)
	}
	ns := &Namespace{Name: full, Short: short, h: -1}
	err := inThread(func() error {
		h, err := netns.NewNamed(full)
		if err != nil {
			return err
		}
		ns.h = h
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", full, err)
	}
	nl, err := netlink.NewHandleAt(ns.h)
	if err != nil {
		ns.close()
		return nil, fmt.Errorf("netlink handle in %s: %w", full, err)
	}
	ns.nl = nl
	sysctls := map[string]string{
		"net/ipv6/conf/all/disable_ipv6":     "1",
		"net/ipv6/conf/default/disable_ipv6": "1",
		"net/ipv4/conf/all/rp_filter":        "0",
		"net/ipv4/conf/default/rp_filter":    "0",
		"net/ipv4/ping_group_range":          "0 2147483647",
	}
	for k, v := range sysctls {
		if err := ns.SetSysctl(k, v); err != nil {
			ns.close()
			return nil, err
		}
	}
	// Bridge netfilter is per namespace since Linux 5.3; absent without
	// br_netfilter, which is fine.
	for _, k := range []string{"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-arptables"} {
		if err := ns.SetSysctl(k, "0"); err != nil && !errors.Is(err, os.ErrNotExist) {
			ns.close()
			return nil, err
		}
	}
	lo, err := ns.nl.LinkByName("lo")
	if err == nil {
		err = ns.nl.LinkSetUp(lo)
	}
	if err != nil {
		ns.close()
		return nil, fmt.Errorf("loopback up in %s: %w", full, err)
	}
	return ns, nil
}

// Do runs f on an OS thread that has joined the namespace. Sockets f opens
// stay in the namespace after f returns and may be used from any goroutine.
func (ns *Namespace) Do(f func() error) error {
	return inThread(func() error {
		if err := netns.Set(ns.h); err != nil {
			return fmt.Errorf("enter namespace %s: %w", ns.Name, err)
		}
		return f()
	})
}

// SetSysctl writes a /proc/sys value inside the namespace. key uses slashes,
// as in "net/netfilter/nf_conntrack_udp_timeout". /proc/sys/net resolves to
// the network namespace of the thread that opens the file, which Do provides.
func (ns *Namespace) SetSysctl(key, value string) error {
	return ns.Do(func() error {
		if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s in %s: %w", key, value, ns.Name, err)
		}
		return nil
	})
}

// Sysctl reads a /proc/sys value inside the namespace.
func (ns *Namespace) Sysctl(key string) (string, error) {
	var v string
	err := ns.Do(func() error {
		b, err := os.ReadFile(filepath.Join("/proc/sys", key))
		v = strings.TrimSpace(string(b))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("sysctl %s in %s: %w", key, ns.Name, err)
	}
	return v, nil
}

// Inode returns the namespace's inode number, the value a process inside
// it sees in readlink /proc/self/ns/net ("net:[INODE]").
func (ns *Namespace) Inode() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(ns.h), &st); err != nil {
		return 0, fmt.Errorf("stat namespace %s: %w", ns.Name, err)
	}
	return st.Ino, nil
}

// Netlink returns the rtnetlink/conntrack handle bound to the namespace. It
// is owned by the namespace; do not close it.
func (ns *Namespace) Netlink() *netlink.Handle { return ns.nl }

// close releases the handles and removes the name. The kernel destroys the
// namespace, and every veth end inside it, once no process, socket or fd
// refers to it any more.
func (ns *Namespace) close() error {
	if ns.nl != nil {
		ns.nl.Close()
		ns.nl = nil
	}
	if ns.h >= 0 {
		ns.h.Close()
		ns.h = -1
	}
	return removeNamedNamespace(ns.Name)
}

// removeNamedNamespace unmounts and removes /run/netns/NAME; a missing
// name is not an error.
func removeNamedNamespace(name string) error {
	p := filepath.Join(netnsDir, name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}

// namespaceInode returns the inode of a named namespace, or 0 when it does
// not exist.
func namespaceInode(name string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(netnsDir, name), &st); err != nil {
		return 0
	}
	return st.Ino
}

// pidsInNamespace lists the processes whose network namespace has inode ino
// (what `ip netns pids` does).
func pidsInNamespace(ino uint64) []int {
	if ino == 0 {
		return nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	want := "net:[" + strconv.FormatUint(ino, 10) + "]"
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		link, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns/net"))
		if err == nil && link == want {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killNamespaceProcesses SIGKILLs every process inside the named namespace.
func killNamespaceProcesses(name string) {
	for _, pid := range pidsInNamespace(namespaceInode(name)) {
		if pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
