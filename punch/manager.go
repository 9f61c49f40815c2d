package punch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/stun"
	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"
	"github.com/rs/zerolog"
)

// Sentinel errors.
var (
	// ErrClosed is returned by methods of a closed Manager or Peer.
	ErrClosed = errors.New("punch: closed")
	// ErrNoDirectPath is returned by Peer.Write while no direct path is up.
	ErrNoDirectPath = errors.New("punch: no direct path")
	// ErrPeerExists is returned by Manager.Peer for an id that has a live
	// Peer: one remote must never have two agents on the same mux.
	ErrPeerExists = errors.New("punch: peer already exists")
	// ErrBadConn is returned by NewManager when Options.Conn is nil or its
	// LocalAddr is not a *net.UDPAddr.
	ErrBadConn = errors.New("punch: Options.Conn must be a UDP PacketConn")
)

// STUN query retransmission: first wait, cap, and attempts per refresh round.
const (
	stunFirstWait   = 250 * time.Millisecond
	stunMaxWait     = 500 * time.Millisecond
	stunMaxAttempts = 12
)

// Manager runs ICE for every peer of a node over the node's one socket. It
// owns the socket view (Options.Conn), the UniversalUDPMux over it and a
// goroutine keeping the STUN mapped address fresh. Close cancels and waits
// for every goroutine it started, Peers included.
type Manager struct {
	opts     Options
	log      zerolog.Logger
	net      transport.Net
	mux      *udpMux
	urls     []*stun.URI
	netTypes []ice.NetworkType

	ctx    context.Context // lifetime of the Manager
	cancel context.CancelFunc
	wg     sync.WaitGroup // refresher

	mu     sync.Mutex       // guards the fields below
	peers  map[string]*Peer // live peers by id
	closed bool
}

// releaseSrflx closes the mux's server-reflexive connections for ufrags,
// after their agent closed. pion/ice v2.3.38 leaks one when an agent is
// closed (or restarted) while gathering: its srflx gatherer takes a muxed
// connection (GetConnForURL) and, when adding the candidate fails because
// the agent is gone, closes the candidate but not the connection, so the
// connection, its buffer and the mux goroutine waiting for its close stay
// for good (the host gatherer closes it; RemoveConnByUfrag only drops the
// plain ufrag's key). GetConnForURL returns the connection still there (or
// makes one), and closing it ends both.
func (m *Manager) releaseSrflx(ufrags []string) {
	for _, u := range ufrags {
		for _, url := range m.urls {
			for _, a := range m.mux.GetListenAddresses() {
				if c, err := m.mux.GetConnForURL(u, url.String(), a); err == nil {
					c.Close()
				}
			}
		}
	}
}

// udpMux is pion's universal mux with the listen addresses pruned: on an
// unspecified-address socket pion lists every interface address, loopback
// included, and each becomes a host candidate sharing one muxed conn.
type udpMux struct {
	*ice.UniversalUDPMuxDefault
	addrs []net.Addr
}

var _ ice.UniversalUDPMux = (*udpMux)(nil)

func (u *udpMux) GetListenAddresses() []net.Addr { return u.addrs }

func pruneListenAddrs(all []net.Addr) []net.Addr {
	var out []net.Addr
	for _, a := range all {
		ua, ok := a.(*net.UDPAddr)
		if !ok || ua.IP.IsLoopback() || ua.IP.IsLinkLocalUnicast() {
			continue
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return all // a loopback-only host still gets its candidates
	}
	return out
}

// NewManager starts ICE over o.Conn. It fails if Conn is unusable or
// STUNServer does not parse.
func NewManager(o Options) (*Manager, error) {
	if o.Conn == nil {
		return nil, ErrBadConn
	}
	la, ok := o.Conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		return nil, fmt.Errorf("%w: LocalAddr is %T", ErrBadConn, o.Conn.LocalAddr())
	}
	o.setDefaults()
	m := &Manager{
		opts:  o,
		log:   o.Logger.With().Str("component", "punch").Logger(),
		net:   o.Net,
		peers: make(map[string]*Peer),
	}
	if m.net == nil {
		n, err := stdnet.NewNet()
		if err != nil {
			return nil, fmt.Errorf("punch: real network: %w", err)
		}
		m.net = n
	}
	switch {
	case la.IP.To4() != nil:
		m.netTypes = []ice.NetworkType{ice.NetworkTypeUDP4}
	case la.IP.IsUnspecified(): // "[::]": dual stack
		m.netTypes = []ice.NetworkType{ice.NetworkTypeUDP4, ice.NetworkTypeUDP6}
	default:
		m.netTypes = []ice.NetworkType{ice.NetworkTypeUDP6}
	}
	if o.STUNServer != "" {
		u, err := stun.ParseURI("stun:" + o.STUNServer)
		if err != nil {
			return nil, fmt.Errorf("punch: STUN server %q: %w", o.STUNServer, err)
		}
		m.urls = []*stun.URI{u}
	}
	logs := pionLogs{m.log}
	mux := ice.NewUniversalUDPMuxDefault(ice.UniversalUDPMuxParams{
		Logger:                logs.NewLogger("mux"),
		UDPConn:               o.Conn,
		XORMappedAddrCacheTTL: o.STUNRefresh,
		Net:                   m.net,
	})
	m.mux = &udpMux{UniversalUDPMuxDefault: mux, addrs: pruneListenAddrs(mux.GetListenAddresses())}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	if len(m.urls) > 0 {
		m.wg.Add(1)
		go m.refreshSTUN()
	}
	return m, nil
}

// Peer creates the Peer for remote id. controlling must be the opposite on
// the two sides (the node with the smaller public key controls). h receives
// the Peer's signals, path changes and direct datagrams. One live Peer per
// id: after Close the id may be reused.
func (m *Manager) Peer(id string, controlling bool, h Handler) (*Peer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	if _, ok := m.peers[id]; ok {
		return nil, fmt.Errorf("%w: %q", ErrPeerExists, id)
	}
	p, err := newPeer(m, id, controlling, h)
	if err != nil {
		return nil, err
	}
	m.peers[id] = p
	return p, nil
}

func (m *Manager) removePeer(id string, p *Peer) {
	m.mu.Lock()
	if m.peers[id] == p {
		delete(m.peers, id)
	}
	m.mu.Unlock()
}

// Close closes every Peer, the mux and Options.Conn, and waits for the
// goroutines it started. It is idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	peers := make([]*Peer, 0, len(m.peers))
	for _, p := range m.peers {
		peers = append(peers, p)
	}
	m.mu.Unlock()

	for _, p := range peers {
		_ = p.Close()
	}
	m.cancel()
	err := m.mux.Close() // closes Options.Conn, which ends pion's reader
	m.wg.Wait()
	return err
}

// refreshSTUN keeps the mux's mapped-address cache filled, retransmitting
// the Binding request that pion would send only once.
func (m *Manager) refreshSTUN() {
	defer m.wg.Done()
	var last string
	for {
		if a := m.queryMapped(); a != "" && a != last {
			m.log.Debug().Str("mapped", a).Msg("server-reflexive address")
			last = a
		}
		t := time.NewTimer(m.opts.STUNRefresh)
		select {
		case <-m.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// queryMapped asks the STUN server for the mapped address until it answers,
// the Manager closes, or stunMaxAttempts have been sent.
func (m *Manager) queryMapped() string {
	network := "udp4"
	if m.netTypes[0] == ice.NetworkTypeUDP6 {
		network = "udp6"
	}
	wait := stunFirstWait
	for i := 0; i < stunMaxAttempts; i++ {
		if m.ctx.Err() != nil {
			return ""
		}
		srv, err := m.net.ResolveUDPAddr(network, m.opts.STUNServer)
		if err == nil {
			var xa *stun.XORMappedAddress
			if xa, err = m.mux.GetXORMappedAddr(srv, wait); err == nil {
				return xa.String()
			}
		} else {
			t := time.NewTimer(wait)
			select {
			case <-m.ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
		m.log.Trace().Err(err).Int("attempt", i).Msg("stun query")
		wait = min(2*wait, stunMaxWait)
	}
	m.log.Debug().Str("server", m.opts.STUNServer).Msg("stun server not answering")
	return ""
}
