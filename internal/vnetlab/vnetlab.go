// Package vnetlab builds small virtual internets for tests, on
// pion/transport/v2's vnet: one WAN router (WANCIDR) whose every crossing
// costs a fixed one-way delay and loses packets at random (seeded), public
// hosts on it, and LANs (10.0.N.0/24), each behind one NAT router with the
// mapping and filtering behaviour of an RFC 4787 NAT kind. A test can also
// black-hole WAN traffic it picks (Cut), and count what the WAN dropped.
// Pairs, Impairments and RunMatrix are the matrix of NAT pairs and WAN
// conditions that traversal tests run through, with the expected outcome
// of each pair; Bubble runs a test in a testing/synctest bubble.
//
// It models UDP over IPv4 only. It does not model: jitter, reordering
// (other than by loss and retransmission), bandwidth, queues or MTU; loss
// or delay inside a LAN; hairpinning or port preservation (vnet has
// neither), NATs behind NATs, NAT mapping expiry other than vnet's
// (30 s, refreshed by outbound packets); TCP, ICMP or IPv6. The netns lab
// (testenv) covers real kernels' NATs.
//
// vnet's timers are Go timers, so a World built inside a testing/synctest
// bubble runs on the bubble's fake clock; build it inside the bubble, or
// its goroutines and timers belong to no bubble.
//
// vnetlab imports nothing of natchat, so that any package's internal
// tests can use it.
package vnetlab

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pion/logging"
	"github.com/pion/transport/v2/vnet"
)

// NAT is the behaviour of the NAT in front of a host, in RFC 4787 terms.
type NAT int

// NAT kinds.
const (
	NoNAT          NAT = iota // a public host on the WAN
	FullCone                  // endpoint-independent mapping and filtering
	AddrRestricted            // endpoint-independent mapping, address-dependent filtering
	PortRestricted            // endpoint-independent mapping, address+port-dependent filtering
	Symmetric                 // address+port-dependent mapping and filtering
)

func (k NAT) String() string {
	switch k {
	case NoNAT:
		return "public"
	case FullCone:
		return "full cone"
	case AddrRestricted:
		return "address-restricted"
	case PortRestricted:
		return "port-restricted"
	case Symmetric:
		return "symmetric"
	}
	return fmt.Sprintf("NAT(%d)", int(k))
}

// NATType is the vnet NAT type of kind k, for a vnet.RouterConfig; nil for
// NoNAT (and unknown kinds).
func (k NAT) NATType() *vnet.NATType {
	switch k {
	case FullCone:
		return &vnet.NATType{MappingBehavior: vnet.EndpointIndependent, FilteringBehavior: vnet.EndpointIndependent}
	case AddrRestricted:
		return &vnet.NATType{MappingBehavior: vnet.EndpointIndependent, FilteringBehavior: vnet.EndpointAddrDependent}
	case PortRestricted:
		return &vnet.NATType{MappingBehavior: vnet.EndpointIndependent, FilteringBehavior: vnet.EndpointAddrPortDependent}
	case Symmetric:
		return &vnet.NATType{MappingBehavior: vnet.EndpointAddrPortDependent, FilteringBehavior: vnet.EndpointAddrPortDependent}
	}
	return nil
}

// Impairment is what the WAN does to every packet crossing it. LANs are
// clean.
type Impairment struct {
	Delay time.Duration // one way, per WAN crossing
	Loss  float64       // probability a packet crossing the WAN is lost
}

func (i Impairment) String() string {
	return fmt.Sprintf("delay=%v,loss=%g%%", i.Delay, i.Loss*100)
}

// WANCIDR is a World's public internet; NAT routers' LANs are
// 10.0.N.0/24.
const WANCIDR = "1.2.3.0/24"

// vnetMu serialises vnet constructors: they bump an unguarded global MAC
// address counter (pion/transport/v2 vnet.newMACAddress), a data race when
// worlds are built in parallel.
var vnetMu sync.Mutex

// NewRouter is vnet.NewRouter, serialised with every other vnet
// constructor of this package (see NewNet).
func NewRouter(c *vnet.RouterConfig) (*vnet.Router, error) {
	vnetMu.Lock()
	defer vnetMu.Unlock()
	return vnet.NewRouter(c)
}

// NewNet is vnet.NewNet, serialised: vnet's constructors bump an unguarded
// global MAC address counter, a data race when tests build networks in
// parallel. A test binary that builds vnet routers or nets outside a World
// must build them with NewRouter and NewNet.
func NewNet(c *vnet.NetConfig) (*vnet.Net, error) {
	vnetMu.Lock()
	defer vnetMu.Unlock()
	return vnet.NewNet(c)
}

// quietPion discards vnet's logs.
var quietPion = &logging.DefaultLoggerFactory{Writer: io.Discard, DefaultLogLevel: logging.LogLevelDisabled}

// World is one virtual internet. Build it (PublicHost, LAN, LAN.Host),
// then Start it; it stops at Close or when the test ends. Its methods
// fail the test (tb.Fatal) on a vnet error, so call them from the test's
// goroutine; Cut, Drops and Chance may be called from any goroutine.
type World struct {
	tb  testing.TB
	imp Impairment
	wan *vnet.Router

	cut     atomic.Pointer[func(src, dst *net.UDPAddr, payload []byte) bool]
	lost    atomic.Int64
	dropped atomic.Int64

	mu  sync.Mutex // guards rng
	rng *rand.Rand

	lans      int
	closeOnce sync.Once
}

// NewWorld returns an empty World whose WAN has impairment imp; seed makes
// its losses repeatable (given the same packets in the same order).
func NewWorld(tb testing.TB, imp Impairment, seed uint64) *World {
	tb.Helper()
	w := &World{tb: tb, imp: imp, rng: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))}
	w.wan = w.newRouter(&vnet.RouterConfig{CIDR: WANCIDR, MinDelay: imp.Delay, LoggerFactory: quietPion})
	w.wan.AddChunkFilter(w.filter)
	return w
}

// Impairment returns the WAN's impairment.
func (w *World) Impairment() Impairment { return w.imp }

func (w *World) newRouter(c *vnet.RouterConfig) *vnet.Router {
	w.tb.Helper()
	r, err := NewRouter(c)
	if err != nil {
		w.tb.Fatal(err)
	}
	return r
}

func (w *World) newNet(ip string) *vnet.Net {
	w.tb.Helper()
	n, err := NewNet(&vnet.NetConfig{StaticIPs: []string{ip}})
	if err != nil {
		w.tb.Fatal(err)
	}
	return n
}

// Host is one machine of a World.
type Host struct {
	Net *vnet.Net // its network stack: a transport.Net
	IP  string    // its own address: private behind a NAT
	tb  testing.TB
}

// Listen opens a udp4 socket on the host's address (port 0: any). Its
// ReadFrom returns *net.UDPAddr sources. The socket hides vnet's
// SetReadBuffer and SetWriteBuffer, which only fail ("not supported"):
// a library that sizes socket buffers when it can (quic-go) would warn
// on stderr, and a vnet socket has no kernel buffer to size.
func (h *Host) Listen(port int) net.PacketConn {
	h.tb.Helper()
	c, err := h.Net.ListenPacket("udp4", fmt.Sprintf("%s:%d", h.IP, port))
	if err != nil {
		h.tb.Fatal(err)
	}
	return bufferless{c}
}

// bufferless is a PacketConn without the buffer setters of the one it
// wraps.
type bufferless struct{ net.PacketConn }

// PublicHost adds a host on the WAN at ip (in WANCIDR; 1.2.3.1–9 are free
// for this: NATs take 1.2.3.10+, LAN(NoNAT) hosts 1.2.3.100+).
func (w *World) PublicHost(ip string) *Host {
	w.tb.Helper()
	n := w.newNet(ip)
	if err := w.wan.AddNet(n); err != nil {
		w.tb.Fatal(err)
	}
	return &Host{Net: n, IP: ip, tb: w.tb}
}

// LAN is where hosts of one kind of NAT live: behind one NAT router, or
// on the WAN itself for NoNAT.
type LAN struct {
	w        *World
	kind     NAT
	idx      int
	hosts    int
	router   *vnet.Router // nil for NoNAT
	PublicIP string       // the NAT's address, 1.2.3.10+N ("" for NoNAT)
}

// LAN adds the World's Nth LAN (N from 1), with a NAT of kind k (NoNAT:
// its hosts go on the WAN).
func (w *World) LAN(k NAT) *LAN {
	w.tb.Helper()
	w.lans++
	l := &LAN{w: w, kind: k, idx: w.lans}
	if k == NoNAT {
		return l
	}
	l.PublicIP = fmt.Sprintf("1.2.3.%d", 10+l.idx)
	l.router = w.newRouter(&vnet.RouterConfig{
		CIDR:          fmt.Sprintf("10.0.%d.0/24", l.idx),
		StaticIPs:     []string{l.PublicIP},
		NATType:       k.NATType(),
		LoggerFactory: quietPion,
	})
	if err := w.wan.AddRouter(l.router); err != nil {
		w.tb.Fatal(err)
	}
	return l
}

// Host adds a host to the LAN: 1.2.3.(100+N), then +10 for each further
// host, on the WAN for NoNAT; 10.0.N.2, .3... behind a NAT.
func (l *LAN) Host() *Host {
	w := l.w
	w.tb.Helper()
	l.hosts++
	if l.kind == NoNAT {
		return w.PublicHost(fmt.Sprintf("1.2.3.%d", 100+10*(l.hosts-1)+l.idx))
	}
	ip := fmt.Sprintf("10.0.%d.%d", l.idx, 1+l.hosts)
	n := w.newNet(ip)
	if err := l.router.AddNet(n); err != nil {
		w.tb.Fatal(err)
	}
	return &Host{Net: n, IP: ip, tb: w.tb}
}

// Start starts the routers, after every host is added. They stop at Close
// or when the test ends, whichever is first.
func (w *World) Start() {
	w.tb.Helper()
	if err := w.wan.Start(); err != nil {
		w.tb.Fatal(err)
	}
	w.tb.Cleanup(w.Close)
}

// Close stops the routers and their goroutines: no packet moves after it.
// Sockets stay open (close them, and stop what reads them, first). Later
// calls do nothing.
func (w *World) Close() {
	w.closeOnce.Do(func() { _ = w.wan.Stop() })
}

// Cut makes the WAN drop every packet drop returns true for (addresses as
// seen on the WAN, after NAT; payload only valid during the call); nil
// heals. drop runs on the WAN's goroutine, before the impairment's loss.
func (w *World) Cut(drop func(src, dst *net.UDPAddr, payload []byte) bool) {
	if drop == nil {
		w.cut.Store(nil)
		return
	}
	w.cut.Store(&drop)
}

// Drops returns how many packets the WAN lost to its impairment and to
// the cut so far.
func (w *World) Drops() (lost, cut int64) { return w.lost.Load(), w.dropped.Load() }

// Chance returns true with probability p, drawn from the World's seeded
// source, which the WAN's losses also draw from: for a test's own model
// of a lossy path (a signal through a server, say) under the same seed.
func (w *World) Chance(p float64) bool {
	if p <= 0 {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rng.Float64() < p
}

// filter is the WAN's chunk filter: the cut, then the loss. Non-UDP
// chunks pass.
func (w *World) filter(c vnet.Chunk) bool {
	src, _ := c.SourceAddr().(*net.UDPAddr)
	dst, _ := c.DestinationAddr().(*net.UDPAddr)
	if src == nil || dst == nil {
		return true
	}
	if cut := w.cut.Load(); cut != nil && (*cut)(src, dst, c.UserData()) {
		w.dropped.Add(1)
		return false
	}
	if w.Chance(w.imp.Loss) {
		w.lost.Add(1)
		return false
	}
	return true
}

// Bubble runs f in a testing/synctest bubble, where vnet, and everything
// the test runs on it, share the bubble's fake clock: a 30 ms WAN or a
// 20 s wait costs no wall time, and the bubble fails the test if a
// goroutine is left behind (a leak check). Build the World inside f. When
// the environment variable realtime is set (non-empty), f runs on the real
// clock instead, to tell a bubble artefact from a bug: slow, and without
// the leak check.
func Bubble(t *testing.T, realtime string, f func(*testing.T)) {
	if os.Getenv(realtime) != "" {
		f(t)
		return
	}
	synctest.Test(t, f)
}
