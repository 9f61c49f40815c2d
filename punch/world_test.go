package punch

import (
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun"
	"github.com/rs/zerolog"

	"natchat/internal/vnetlab"
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

const stunIP = "1.2.3.4"

// world is a vnetlab.World with a STUN responder at stunIP:3478 (which
// the nodes use by default) and punch's nodes on its hosts.
type world struct {
	*vnetlab.World
	t      testing.TB
	stun   net.PacketConn
	stunWG sync.WaitGroup
}

func newWorld(t testing.TB, imp vnetlab.Impairment, seed uint64) *world {
	w := &world{World: vnetlab.NewWorld(t, imp, seed), t: t}
	w.stun = w.PublicHost(stunIP).Listen(3478)
	w.stunWG.Add(1)
	go func() {
		defer w.stunWG.Done()
		serveSTUN(w.stun)
	}()
	t.Cleanup(w.close)
	return w
}

// close stops the STUN responder, then the network. Later calls do
// nothing.
func (w *world) close() {
	_ = w.stun.Close()
	w.stunWG.Wait()
	w.Close()
}

// cutNodes makes the WAN drop the node-to-node packets cut returns true
// for (STUN always passes); nil heals.
func (w *world) cutNodes(cut func(src, dst net.IP) bool) {
	if cut == nil {
		w.Cut(nil)
		return
	}
	w.Cut(func(src, dst *net.UDPAddr, _ []byte) bool {
		return src.IP.String() != stunIP && dst.IP.String() != stunIP && cut(src.IP, dst.IP)
	})
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

// node is one side of a test pair.
type node struct {
	name string
	m    *Manager
	p    *Peer
	h    *testHandler
}

// newNode opens a socket on h (unspecified address, like a node does) and
// starts a Manager on it.
func (w *world) newNode(name string, h *vnetlab.Host, o Options) *node {
	c, err := h.Net.ListenPacket("udp4", "0.0.0.0:0")
	must(w.t, err)
	o.Conn = c
	o.Net = h.Net
	switch o.STUNServer {
	case "":
		o.STUNServer = stunIP + ":3478"
	case "-":
		o.STUNServer = ""
	}
	o.Logger = testLogger(w.t).With().Str("node", name).Logger()
	m, err := NewManager(o)
	must(w.t, err)
	return &node{name: name, m: m}
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
	w   *world // whose WAN the signals cross; nil: none (no delay, no loss)
	rto time.Duration
}

func (s *signalling) send(sig Signal, deliver func(Signal)) {
	sig.Candidates = slices.Clone(sig.Candidates)
	var imp vnetlab.Impairment // no world: a clean path
	if s.w != nil {
		imp = s.w.Impairment()
	}
	oneWay := 2*imp.Delay + 5*time.Millisecond
	lost := func() bool { return imp.Loss > 0 && s.w.Chance(1-(1-imp.Loss)*(1-imp.Loss)) }
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
