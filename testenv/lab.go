package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
)

// Addressing plan. The internet is one Ethernet segment (a bridge in the
// "inet" namespace) carrying two documentation networks: routers' WAN
// addresses come from 198.51.100.0/24, public hosts (the rendezvous and
// NAT type None) from 203.0.113.0/24. Every internet attachment gets an
// on-link route to the other /24, so no internet router is needed. Router
// LANs are 192.168.N.0/24 (router .1, hosts from .10); a carrier-grade NAT's
// LAN is 100.64.N.0/24 (RFC 6598 shared address space).
var (
	RouterNet = netip.MustParsePrefix("198.51.100.0/24")
	PublicNet = netip.MustParsePrefix("203.0.113.0/24")
)

// RendezvousAddr is the address AddRendezvousHost gives the rendezvous host.
var RendezvousAddr = netip.MustParseAddr("203.0.113.10")

// Options configures a Lab. The zero value is ready to use.
type Options struct {
	// Prefix starts every namespace name; at most 8 characters. Default:
	// "nl" and 4 random hex digits, so two runs never collide.
	Prefix string
	// Dir receives process logs and data directories. Default: a new
	// directory under os.TempDir, removed by Close unless KeepDir.
	Dir     string
	KeepDir bool
	// StateDir holds the lab's state file, used by `natlab down` and to
	// sweep labs whose process died. Default: DefaultStateDir().
	StateDir string
	// Seed seeds the wires' random loss and jitter. 0 picks one at random.
	Seed uint64
	// Log receives harness progress. Default: no logging.
	Log zerolog.Logger
}

// Lab is one virtual network: an internet segment, routers, hosts and the
// processes running on them. All methods are safe for concurrent use.
// Close removes everything the lab created.
type Lab struct {
	ID       string // the namespace prefix
	Dir      string
	log      zerolog.Logger
	stateDir string
	seed     uint64
	ownDir   bool

	inet     *Namespace
	internet *Network

	mu sync.Mutex // guards the fields below
	// namespaces in creation order; names maps short name -> namespace.
	namespaces []*Namespace
	names      map[string]*Namespace
	routers    map[string]*Router
	hosts      map[string]*Host
	wires      []*Wire
	procs      map[*Proc]struct{}
	nextWire   int
	nextLAN    int
	nextCGN    int
	nextRouter netip.Addr // next free address in RouterNet
	nextPublic netip.Addr // next free address in PublicNet
	closed     bool
	extra      map[string]string // free-form state for the natlab command
}

// Network is an Ethernet segment: the internet or a router's LAN.
type Network struct {
	// Name is "internet" or the owning router's name.
	Name string
	// Prefix is the IPv4 network; for the internet, RouterNet.
	Prefix netip.Prefix
	// Gateway is the router's LAN address; invalid for the internet.
	Gateway netip.Addr
	// Router owns a LAN; nil for the internet.
	Router *Router

	lab    *Lab
	ns     *Namespace // namespace holding the bridge
	bridge string
	next   netip.Addr // next free host address, under lab.mu
	ports  int        // bridge ports created, under lab.mu
}

// IsInternet reports whether n is the internet segment.
func (n *Network) IsInternet() bool { return n.Router == nil }

// Host is a namespace with one interface, eth0, on a network. Processes
// and sockets of a host run in its namespace.
type Host struct {
	Name    string
	NS      *Namespace
	Network *Network
	// Addr is the host's address on its network.
	Addr netip.Addr

	wire *Wire // set for public hosts
	lab  *Lab
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,19}$`)

// New builds an empty lab: the internet namespace with its bridge. It
// first sweeps labs left behind by processes that died.
func New(opts Options) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	l := &Lab{
		ID:         opts.Prefix,
		Dir:        opts.Dir,
		log:        opts.Log,
		stateDir:   opts.StateDir,
		seed:       opts.Seed,
		names:      map[string]*Namespace{},
		routers:    map[string]*Router{},
		hosts:      map[string]*Host{},
		procs:      map[*Proc]struct{}{},
		nextRouter: RouterNet.Addr().Next().Next(),
		nextPublic: RendezvousAddr.Next(),
		extra:      map[string]string{},
	}
	for i := 0; l.ID == "" && i < 100; i++ {
		var b [2]byte
		_, _ = rand.Read(b[:])
		l.ID = "nl" + hex.EncodeToString(b[:])
		if taken, _ := filepath.Glob(filepath.Join(netnsDir, l.ID+"-*")); len(taken) > 0 {
			l.ID = "" // another lab's prefix
		}
	}
	if len(l.ID) > 8 || !regexp.MustCompile(`^[a-z0-9]+$`).MatchString(l.ID) {
		return nil, fmt.Errorf("lab prefix %q: want 1-8 lower-case letters or digits", l.ID)
	}
	if l.seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		for _, x := range b {
			l.seed = l.seed<<8 | uint64(x)
		}
	}
	if l.stateDir == "" {
		l.stateDir = DefaultStateDir()
	}
	_ = SweepStale(l.stateDir)
	if l.Dir == "" {
		d, err := os.MkdirTemp("", "natlab-"+l.ID+"-")
		if err != nil {
			return nil, err
		}
		l.Dir, l.ownDir = d, !opts.KeepDir
	}
	l.log = l.log.With().Str("lab", l.ID).Logger()
	if err := l.writeState(); err != nil {
		l.Close()
		return nil, err
	}
	inet, err := l.newNamespace("inet")
	if err != nil {
		l.Close()
		return nil, err
	}
	l.inet = inet
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := inet.nl.LinkAdd(br); err != nil {
		l.Close()
		return nil, fmt.Errorf("create internet bridge: %w", err)
	}
	if err := inet.nl.LinkSetUp(br); err != nil {
		l.Close()
		return nil, fmt.Errorf("internet bridge up: %w", err)
	}
	l.internet = &Network{Name: "internet", Prefix: RouterNet, lab: l, ns: inet, bridge: "br0"}
	l.log.Debug().Str("dir", l.Dir).Uint64("seed", l.seed).Msg("lab created")
	return l, nil
}

// ErrNotRoot is returned by New when the process is not root: the lab
// needs CAP_SYS_ADMIN and CAP_NET_ADMIN.
var ErrNotRoot = errors.New("testenv: network namespaces need root")

// Internet returns the internet segment.
func (l *Lab) Internet() *Network { return l.internet }

// Seed returns the seed of the wires' random loss and jitter.
func (l *Lab) Seed() uint64 { return l.seed }

// StateDir returns the directory holding the lab's state file.
func (l *Lab) StateDir() string { return l.stateDir }

// Namespace returns the namespace with the given short name, or nil.
func (l *Lab) Namespace(short string) *Namespace {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.names[short]
}

// Host returns the host with the given name, or nil.
func (l *Lab) Host(name string) *Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hosts[name]
}

// Router returns the router with the given name, or nil.
func (l *Lab) Router(name string) *Router {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.routers[name]
}

// NamespaceNames returns the full names of the lab's namespaces.
func (l *Lab) NamespaceNames() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, ns := range l.namespaces {
		out = append(out, ns.Name)
	}
	return out
}

// newNamespace creates and registers the namespace PREFIX-short.
func (l *Lab) newNamespace(short string) (*Namespace, error) {
	if !nameRE.MatchString(short) {
		return nil, fmt.Errorf("name %q: want a lower-case letter, then up to 19 letters, digits or '-'", short)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errors.New("lab is closed")
	}
	if _, dup := l.names[short]; dup {
		l.mu.Unlock()
		return nil, fmt.Errorf("name %q already used in this lab", short)
	}
	l.names[short] = nil // reserve
	l.mu.Unlock()

	ns, err := newNamespace(l.ID+"-"+short, short)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		delete(l.names, short)
		return nil, err
	}
	l.names[short] = ns
	l.namespaces = append(l.namespaces, ns)
	return ns, l.writeStateLocked()
}

// allocAddr hands out the next address on n.
func (l *Lab) allocAddr(n *Network, public bool) (netip.Prefix, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var a *netip.Addr
	var p netip.Prefix
	switch {
	case n.IsInternet() && public:
		a, p = &l.nextPublic, PublicNet
	case n.IsInternet():
		a, p = &l.nextRouter, RouterNet
	default:
		a, p = &n.next, n.Prefix
	}
	addr := *a
	if !p.Contains(addr) || addr == lastAddr(p) {
		return netip.Prefix{}, fmt.Errorf("network %s (%s) is full", n.Name, p)
	}
	*a = addr.Next()
	return netip.PrefixFrom(addr, p.Bits()), nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// attach connects interface ifname of ns to network n and configures
// addr on it. An internet attachment goes through a Wire; the returned
// wire is nil for a LAN attachment.
func (l *Lab) attach(ns *Namespace, ifname string, n *Network, addr netip.Prefix) (*Wire, error) {
	l.mu.Lock()
	n.ports++
	port := n.ports
	wireNo := 0
	if n.IsInternet() {
		l.nextWire++
		wireNo = l.nextWire
	}
	l.mu.Unlock()

	var wire *Wire
	if n.IsInternet() {
		// ns:ifname <-veth-> inet:wNi  ~wire~  inet:wNo <-veth-> inet:wNb (on br0)
		inner, outer, bport := fmt.Sprintf("w%di", wireNo), fmt.Sprintf("w%do", wireNo), fmt.Sprintf("w%db", wireNo)
		if err := addVeth(ns, ifname, l.inet, inner); err != nil {
			return nil, err
		}
		if err := addVeth(l.inet, outer, l.inet, bport); err != nil {
			return nil, err
		}
		if err := l.inet.bridgePort(bport, n.bridge); err != nil {
			return nil, err
		}
		for _, name := range []string{inner, outer} {
			if err := l.inet.linkUp(name, true); err != nil {
				return nil, err
			}
		}
		w, err := newWire(l.inet, ns.Short, inner, outer, l.seed+uint64(wireNo))
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		l.wires = append(l.wires, w)
		l.mu.Unlock()
		wire = w
	} else {
		bport := fmt.Sprintf("lp%d", port)
		if err := addVeth(ns, ifname, n.ns, bport); err != nil {
			return nil, err
		}
		if err := n.ns.bridgePort(bport, n.bridge); err != nil {
			return nil, err
		}
	}
	if err := ns.linkUp(ifname, false); err != nil {
		return nil, err
	}
	if err := ns.setAddr(ifname, addr); err != nil {
		return nil, err
	}
	if n.IsInternet() {
		for _, p := range []netip.Prefix{RouterNet, PublicNet} {
			if p.Contains(addr.Addr()) {
				continue
			}
			if err := ns.onLinkRoute(ifname, p); err != nil {
				return nil, err
			}
		}
	} else if err := ns.defaultRoute(n.Gateway); err != nil {
		return nil, err
	}
	return wire, nil
}

// AddHost creates a host on network n (the internet makes it a public
// host with an address in PublicNet).
func (l *Lab) AddHost(name string, n *Network) (*Host, error) {
	ns, err := l.newNamespace(name)
	if err != nil {
		return nil, err
	}
	return l.addHostIn(ns, name, n)
}

func (l *Lab) addHostIn(ns *Namespace, name string, n *Network) (*Host, error) {
	addr, err := l.allocAddr(n, true)
	if err != nil {
		return nil, err
	}
	return l.addHostAt(ns, name, n, addr)
}

func (l *Lab) addHostAt(ns *Namespace, name string, n *Network, addr netip.Prefix) (*Host, error) {
	w, err := l.attach(ns, "eth0", n, addr)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", name, err)
	}
	h := &Host{Name: name, NS: ns, Network: n, Addr: addr.Addr(), wire: w, lab: l}
	l.mu.Lock()
	l.hosts[name] = h
	err = l.writeStateLocked()
	l.mu.Unlock()
	l.log.Debug().Str("host", name).Stringer("addr", h.Addr).Str("net", n.Name).Msg("host added")
	return h, err
}

// AddRendezvousHost adds the public host "rv" at RendezvousAddr.
func (l *Lab) AddRendezvousHost() (*Host, error) {
	ns, err := l.newNamespace("rv")
	if err != nil {
		return nil, err
	}
	return l.addHostAt(ns, "rv", l.internet, netip.PrefixFrom(RendezvousAddr, PublicNet.Bits()))
}

// WAN returns the wire between a public host and the internet, or nil for
// a host on a LAN.
func (h *Host) WAN() *Wire { return h.wire }

// ListenUDP opens a UDP socket in the host's namespace. port 0 picks one.
func (h *Host) ListenUDP(port int) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := h.NS.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen udp on %s: %w", h.Name, err)
	}
	return c, nil
}

// Site is a router with its LAN hosts, or, for NAT type None, public hosts.
type Site struct {
	Name   string
	NAT    NATType
	Router *Router // nil for None
	Hosts  []*Host
}

// AddSite adds hosts behind a new router called name with the given NAT
// type, or, for None, the hosts as public hosts.
func (l *Lab) AddSite(name string, nat NATType, naive bool, hosts ...string) (*Site, error) {
	s := &Site{Name: name, NAT: nat}
	on := l.internet
	if nat != None {
		r, err := l.AddRouter(name, RouterConfig{NAT: nat, Naive: naive})
		if err != nil {
			return nil, err
		}
		s.Router, on = r, r.LAN()
	}
	for _, hn := range hosts {
		h, err := l.AddHost(hn, on)
		if err != nil {
			return nil, err
		}
		s.Hosts = append(s.Hosts, h)
	}
	return s, nil
}

// AddDoubleNAT adds a carrier-grade NAT router "name-cgn" on the internet
// (LAN in 100.64.0.0/10), a home router "name" behind it, and host behind
// the home router.
func (l *Lab) AddDoubleNAT(name string, carrier, home NATType, host string) (*Site, error) {
	cgn, err := l.AddRouter(name+"-cgn", RouterConfig{NAT: carrier, CarrierGrade: true})
	if err != nil {
		return nil, err
	}
	r, err := l.AddRouter(name, RouterConfig{NAT: home, Upstream: cgn.LAN()})
	if err != nil {
		return nil, err
	}
	h, err := l.AddHost(host, r.LAN())
	if err != nil {
		return nil, err
	}
	return &Site{Name: name, NAT: home, Router: r, Hosts: []*Host{h}}, nil
}

// Close stops every process, wire and namespace of the lab and removes its
// state file (and Dir, when the lab created it). It is idempotent.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs := make([]*Proc, 0, len(l.procs))
	for p := range l.procs {
		procs = append(procs, p)
	}
	wires := l.wires
	nss := l.namespaces
	l.mu.Unlock()

	var errs []error
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = p.Stop(2 * time.Second)
		}()
	}
	wg.Wait()
	for _, w := range wires {
		errs = append(errs, w.Close())
	}
	// Children of children, or anything started with `ip netns exec`.
	for _, ns := range nss {
		killNamespaceProcesses(ns.Name)
	}
	sort.SliceStable(nss, func(i, j int) bool { return nss[i].Short != "inet" && nss[j].Short == "inet" })
	for _, ns := range nss {
		errs = append(errs, ns.close())
	}
	errs = append(errs, removeState(l.stateDir, l.ID))
	if l.ownDir {
		errs = append(errs, os.RemoveAll(l.Dir))
	}
	l.log.Debug().Msg("lab closed")
	return errors.Join(errs...)
}
