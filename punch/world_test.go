package punch

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun"
	"github.com/pion/transport/v2/vnet"
	"github.com/rs/zerolog"
)

func init() { zerolog.TimeFieldFormat = "15:04:05.000" }

// testLogger logs to t when PUNCH_LOG is a zerolog level ("debug", "trace").
func testLogger(t testing.TB) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(os.Getenv("PUNCH_LOG"))
	if err != nil || os.Getenv("PUNCH_LOG") == "" {
		return zerolog.Nop()
	}
	return zerolog.New(zerolog.NewTestWriter(t)).Level(lvl).With().Timestamp().Logger()
}

// natKind is the behaviour of the NAT in front of a node (RFC 4787 terms).
type natKind int

const (
	natPublic         natKind = iota // no NAT
	natFullCone                      // EI mapping, EI filtering
	natAddrRestricted                // EI mapping, address-dependent filtering
	natPortRestricted                // EI mapping, address+port-dependent filtering
	natSymmetric                     // address+port-dependent mapping and filtering
)

func (k natKind) String() string {
	return [...]string{"public", "full cone", "address-restricted", "port-restricted", "symmetric"}[k]
}

func (k natKind) vnetType() *vnet.NATType {
	switch k {
	case natFullCone:
		return &vnet.NATType{MappingBehavior: vnet.EndpointIndependent, FilteringBehavior: vnet.EndpointIndependent}
	case natAddrRestricted:
		return &vnet.NATType{MappingBehavior: vnet.EndpointIndependent, FilteringBehavior: vnet.EndpointAddrDependent}
	case natPortRestricted:
		return &vnet.NATType{MappingBehavior: vnet.EndpointIndependent, FilteringBehavior: vnet.EndpointAddrPortDependent}
	case natSymmetric:
		return &vnet.NATType{MappingBehavior: vnet.EndpointAddrPortDependent, FilteringBehavior: vnet.EndpointAddrPortDependent}
	}
	return nil
}

// impairment of the internet (the WAN router). A LAN is clean.
type impairment struct {
	delay time.Duration // one way, per WAN crossing
	loss  float64       // per packet crossing the WAN
}

func (i impairment) String() string {
	return fmt.Sprintf("delay=%v,loss=%g%%", i.delay, i.loss*100)
}

const stunIP = "1.2.3.4"

// vnetMu serialises vnet constructors: they bump an unguarded global MAC
// address counter (pion/transport/v2 vnet.newMACAddress), a data race when
// worlds are built in parallel.
var vnetMu sync.Mutex

func newRouter(c *vnet.RouterConfig) (*vnet.Router, error) {
	vnetMu.Lock()
	defer vnetMu.Unlock()
	return vnet.NewRouter(c)
}

func newNet(c *vnet.NetConfig) (*vnet.Net, error) {
	vnetMu.Lock()
	defer vnetMu.Unlock()
	return vnet.NewNet(c)
}

// world is one virtual internet: a WAN router with a STUN responder, and
// nodes either on the WAN (public) or behind NAT routers.
type world struct {
	t    testing.TB
	imp  impairment
	logs pionLogs
	wan  *vnet.Router

	// cut, when set, drops the node-to-node WAN packets it returns true
	// for (STUN always passes).
	cut atomic.Pointer[func(src, dst net.IP) bool]

	mu  sync.Mutex // guards rng
	rng *rand.Rand

	lans    int
	stunWG  sync.WaitGroup
	closers []func()
}

func newWorld(t testing.TB, imp impairment, seed uint64) *world {
	w := &world{
		t:    t,
		imp:  imp,
		logs: pionLogs{zerolog.Nop()},
		rng:  rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)),
	}
	wan, err := newRouter(&vnet.RouterConfig{CIDR: "1.2.3.0/24", MinDelay: imp.delay, LoggerFactory: w.logs})
	must(t, err)
	wan.AddChunkFilter(w.filter)
	w.wan = wan

	sn, err := newNet(&vnet.NetConfig{StaticIPs: []string{stunIP}})
	must(t, err)
	must(t, wan.AddNet(sn))
	sc, err := sn.ListenPacket("udp4", stunIP+":3478")
	must(t, err)
	w.stunWG.Add(1)
	go func() {
		defer w.stunWG.Done()
		serveSTUN(sc)
	}()
	w.closers = append(w.closers, func() { _ = sc.Close(); w.stunWG.Wait() })
	return w
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// serveSTUN answers Binding requests with the source address, like the
// rendezvous does.
func serveSTUN(c net.PacketConn) {
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if req.Decode() != nil || req.Type != stun.BindingRequest {
			continue
		}
		ua := from.(*net.UDPAddr)
		resp, err := stun.Build(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
			&stun.XORMappedAddress{IP: ua.IP, Port: ua.Port}, stun.Fingerprint)
		if err == nil {
			_, _ = c.WriteTo(resp.Raw, from)
		}
	}
}

func (w *world) chance(p float64) bool {
	if p <= 0 {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rng.Float64() < p
}

func (w *world) filter(c vnet.Chunk) bool {
	src, _ := c.SourceAddr().(*net.UDPAddr)
	dst, _ := c.DestinationAddr().(*net.UDPAddr)
	if src == nil || dst == nil {
		return true
	}
	if cut := w.cut.Load(); cut != nil && src.IP.String() != stunIP && dst.IP.String() != stunIP && (*cut)(src.IP, dst.IP) {
		return false
	}
	return !w.chance(w.imp.loss)
}

// lan adds a NAT router of kind k (public: none) and returns the function
// that adds a host to it.
func (w *world) lan(k natKind) func() (*vnet.Net, string) {
	w.lans++
	idx := w.lans
	if k == natPublic {
		return func() (*vnet.Net, string) {
			ip := fmt.Sprintf("1.2.3.%d", 100+idx)
			idx += 10
			n, err := newNet(&vnet.NetConfig{StaticIPs: []string{ip}})
			must(w.t, err)
			must(w.t, w.wan.AddNet(n))
			return n, ip
		}
	}
	r, err := newRouter(&vnet.RouterConfig{
		CIDR:          fmt.Sprintf("10.0.%d.0/24", idx),
		StaticIPs:     []string{fmt.Sprintf("1.2.3.%d", 10+idx)},
		NATType:       k.vnetType(),
		LoggerFactory: w.logs,
	})
	must(w.t, err)
	must(w.t, w.wan.AddRouter(r))
	host := 1
	return func() (*vnet.Net, string) {
		host++
		ip := fmt.Sprintf("10.0.%d.%d", idx, host)
		n, err := newNet(&vnet.NetConfig{StaticIPs: []string{ip}})
		must(w.t, err)
		must(w.t, r.AddNet(n))
		return n, ip
	}
}

// start starts the routers; call after every lan and host is added.
func (w *world) start() {
	must(w.t, w.wan.Start())
}

func (w *world) close() {
	for i := len(w.closers) - 1; i >= 0; i-- {
		w.closers[i]()
	}
	_ = w.wan.Stop()
}

// node is one side of a test pair.
type node struct {
	name string
	ip   string
	m    *Manager
	p    *Peer
	h    *testHandler
}

// newNode opens a socket on n (unspecified address, like a node does) and
// starts a Manager on it.
func (w *world) newNode(name string, n *vnet.Net, ip string, o Options) *node {
	c, err := n.ListenPacket("udp4", "0.0.0.0:0")
	must(w.t, err)
	o.Conn = c
	o.Net = n
	switch o.STUNServer {
	case "":
		o.STUNServer = stunIP + ":3478"
	case "-":
		o.STUNServer = ""
	}
	o.Logger = testLogger(w.t).With().Str("node", name).Logger()
	m, err := NewManager(o)
	must(w.t, err)
	return &node{name: name, ip: ip, m: m}
}

// connect creates the Peers of a and b for each other, a controlling, with
// signalling between them through sig. Handlers already set are kept.
func connect(t testing.TB, a, b *node, sig *signalling, id string) {
	if a.h == nil {
		a.h = newTestHandler(1024)
	}
	if b.h == nil {
		b.h = newTestHandler(1024)
	}
	a.h.sig, b.h.sig = sig, sig
	var err error
	a.p, err = a.m.Peer(id+"-"+b.name, true, a.h)
	must(t, err)
	b.p, err = b.m.Peer(id+"-"+a.name, false, b.h)
	must(t, err)
	a.h.to.Store(b.p)
	b.h.to.Store(a.p)
}

// signalling models the node-rendezvous-node path: a signal takes two WAN
// crossings one way; each crossing (and the ack's) is lost with the WAN loss;
// the sender retransmits every rto until acked, so the receiver may get
// duplicates, and signals may overtake each other.
type signalling struct {
	w   *world
	rto time.Duration
}

func (s *signalling) send(sig Signal, deliver func(Signal)) {
	sig.Candidates = slices.Clone(sig.Candidates)
	oneWay := 2*s.w.imp.delay + 5*time.Millisecond
	lost := func() bool { return s.w.chance(1 - (1-s.w.imp.loss)*(1-s.w.imp.loss)) }
	at := time.Duration(0)
	for range 50 {
		if !lost() {
			time.AfterFunc(at+oneWay, func() { deliver(sig) })
			if !lost() {
				return // acked
			}
		}
		at += s.rto
	}
}

type directEv struct {
	at     time.Time
	up     bool
	remote net.Addr
	rtt    time.Duration
}

type testHandler struct {
	sig    *signalling          // nil: signals go nowhere
	to     atomic.Pointer[Peer] // the remote Peer
	direct chan directEv
	recv   chan string
	sigs   chan Signal
}

var _ Handler = (*testHandler)(nil)

func newTestHandler(size int) *testHandler {
	return &testHandler{
		direct: make(chan directEv, size),
		recv:   make(chan string, size),
		sigs:   make(chan Signal, size),
	}
}

func (h *testHandler) SendSignal(s Signal) {
	if to := h.to.Load(); to != nil && h.sig != nil {
		h.sig.send(s, to.HandleSignal)
	}
	select {
	case h.sigs <- s:
	default:
	}
}

func (h *testHandler) Direct(up bool, remote net.Addr, rtt time.Duration) {
	select {
	case h.direct <- directEv{at: time.Now(), up: up, remote: remote, rtt: rtt}:
	default:
	}
}

func (h *testHandler) Receive(b []byte) {
	select {
	case h.recv <- string(b):
	default:
	}
}

// waitDirect waits for a Direct report with the given state.
func waitDirect(t testing.TB, n *node, up bool, within time.Duration) (directEv, bool) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case ev := <-n.h.direct:
			if ev.up == up {
				return ev, true
			}
		case <-deadline:
			return directEv{}, false
		}
	}
}

// exchange sends datagrams from a to b on the direct path until one
// arrives (the WAN may be lossy).
func exchange(t testing.TB, from, to *node, within time.Duration) bool {
	t.Helper()
	deadline := time.After(within)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		msg := fmt.Sprintf("%s->%s #%d", from.name, to.name, i)
		if err := from.p.Write([]byte(msg)); err != nil {
			t.Logf("%s write: %v", from.name, err)
		}
		for {
			select {
			case got := <-to.h.recv:
				if len(got) > len(from.name) && got[:len(from.name)] == from.name {
					return true
				}
				continue
			case <-tick.C:
			case <-deadline:
				return false
			}
			break
		}
	}
}
