package sim

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
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

func (k NAT) vnetType() *vnet.NATType {
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

// WANCIDR is the World's public internet; NAT routers' LANs are
// 10.0.N.0/24.
const WANCIDR = "1.2.3.0/24"

// vnetMu serialises vnet constructors: they bump an unguarded global MAC
// address counter (pion/transport/v2 vnet.newMACAddress), a data race when
// worlds are built in parallel.
var vnetMu sync.Mutex

// World is one virtual internet (pion/transport vnet): a WAN router with
// delay and loss, public hosts on it, and LANs behind NAT routers. Build it
// (PublicHost, LAN, LAN.Host), then Start it; it stops when the test ends.
// Timers are vnet's own, so a World inside a testing/synctest bubble runs
// on the bubble's fake clock.
type World struct {
	tb  testing.TB
	imp Impairment
	wan *vnet.Router

	cut     atomic.Pointer[func(src, dst *net.UDPAddr, payload []byte) bool]
	lost    atomic.Int64
	dropped atomic.Int64

	mu  sync.Mutex // guards rng
	rng *rand.Rand

	lans int
}

// quietPion discards vnet's logs.
var quietPion = &logging.DefaultLoggerFactory{Writer: io.Discard, DefaultLogLevel: logging.LogLevelDisabled}

// NewWorld returns an empty World whose WAN has impairment imp; seed makes
// its losses repeatable (given the same packets in the same order).
func NewWorld(tb testing.TB, imp Impairment, seed uint64) *World {
	tb.Helper()
	w := &World{tb: tb, imp: imp, rng: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))}
	wan := w.newRouter(&vnet.RouterConfig{CIDR: WANCIDR, MinDelay: imp.Delay, LoggerFactory: quietPion})
	wan.AddChunkFilter(w.filter)
	w.wan = wan
	return w
}

func (w *World) newRouter(c *vnet.RouterConfig) *vnet.Router {
	w.tb.Helper()
	vnetMu.Lock()
	defer vnetMu.Unlock()
	r, err := vnet.NewRouter(c)
	if err != nil {
		w.tb.Fatal(err)
	}
	return r
}

func (w *World) newNet(ip string) *vnet.Net {
	w.tb.Helper()
	vnetMu.Lock()
	defer vnetMu.Unlock()
	n, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{ip}})
	if err != nil {
		w.tb.Fatal(err)
	}
	return n
}

// Host is one machine of the World.
type Host struct {
	Net *vnet.Net
	IP  string // its own address: private behind a NAT
	tb  testing.TB
}

// Listen opens a udp4 socket on the host's address (port 0: any). Its
// ReadFrom returns *net.UDPAddr sources.
func (h *Host) Listen(port int) net.PacketConn {
	h.tb.Helper()
	c, err := h.Net.ListenPacket("udp4", fmt.Sprintf("%s:%d", h.IP, port))
	if err != nil {
		h.tb.Fatal(err)
	}
	return bufferless{c}
}

// bufferless hides the socket buffer setters of a vnet UDPConn: they fail
// ("not supported"), and quic-go, asked by the node's link to size the
// buffers, would print a warning on stderr. A vnet socket has no kernel
// buffer to size.
type bufferless struct{ net.PacketConn }

// PublicHost adds a host on the WAN at ip (in WANCIDR; 1.2.3.1–9 are
// free for this).
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
	PublicIP string       // the NAT's address ("" for NoNAT)
}

// LAN adds a LAN with a NAT of kind k (NoNAT: hosts go on the WAN).
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
		NATType:       k.vnetType(),
		LoggerFactory: quietPion,
	})
	if err := w.wan.AddRouter(l.router); err != nil {
		w.tb.Fatal(err)
	}
	return l
}

// Host adds a host to the LAN: 1.2.3.100+ on the WAN for NoNAT,
// 10.0.N.2+ behind a NAT.
func (l *LAN) Host() *Host {
	w := l.w
	w.tb.Helper()
	l.hosts++
	if l.kind == NoNAT {
		ip := fmt.Sprintf("1.2.3.%d", 100+10*(l.hosts-1)+l.idx)
		return w.PublicHost(ip)
	}
	ip := fmt.Sprintf("10.0.%d.%d", l.idx, 1+l.hosts)
	n := w.newNet(ip)
	if err := l.router.AddNet(n); err != nil {
		w.tb.Fatal(err)
	}
	return &Host{Net: n, IP: ip, tb: w.tb}
}

// Start starts the routers (after every host is added); they stop when
// the test ends.
func (w *World) Start() {
	w.tb.Helper()
	if err := w.wan.Start(); err != nil {
		w.tb.Fatal(err)
	}
	w.tb.Cleanup(func() { _ = w.wan.Stop() })
}

// Cut makes the WAN drop every packet drop returns true for (addresses
// as seen on the WAN, after NAT; payload only valid during the call); nil
// heals.
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

func (w *World) chance(p float64) bool {
	if p <= 0 {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rng.Float64() < p
}

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
	if w.chance(w.imp.Loss) {
		w.lost.Add(1)
		return false
	}
	return true
}
