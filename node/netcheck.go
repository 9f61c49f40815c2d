package node

import (
	"context"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"natchat/node/api"
	"natchat/node/link"
	"natchat/node/rvclient"
	"natchat/wire"
)

// netCheck answers api.CheckNet: the rendezvous client's probe of the
// rendezvous's two STUN addresses (at most about 3 s, on the caller's
// goroutine), then a row per peer on the link or with a session.
func (n *Node) netCheck(ctx context.Context) {
	r := n.rv.NetCheck(ctx)
	e := &api.NetCheck{Public: []string{}, Mapping: mappingName(r.Mapping), Detail: r.Detail, Peers: n.netPeers()}
	for _, a := range r.Public() {
		e.Public = append(e.Public, a.String())
	}
	n.bus.Publish(e)
}

func mappingName(m rvclient.Mapping) string {
	switch m {
	case rvclient.MappingIndependent:
		return api.MappingIndependent
	case rvclient.MappingDependent:
		return api.MappingDependent
	default:
		return api.MappingUnknown
	}
}

// netPeers returns a row per peer tracked on the link or with a session
// (whose name is known), by name.
func (n *Node) netPeers() []api.NetPeer {
	keys := n.paths.keys()
	for _, k := range n.sess.Peers() {
		if _, ok := keys[k]; !ok {
			keys[k] = time.Time{}
		}
	}
	out := make([]api.NetPeer, 0, len(keys))
	for k, changed := range keys {
		name, ok := n.rv.KnownName(k)
		if !ok {
			continue
		}
		p := n.pn.PathOf(k)
		row := api.NetPeer{Name: name, Path: p.Kind.String(), Changed: changed}
		if p.Kind == link.Direct {
			row.Remote = p.Remote
		}
		if p.Kind != link.None {
			rtt := n.sess.RTT(k)
			if rtt == 0 {
				rtt = p.RTT
			}
			row.RTTMS = api.RTTMS(rtt)
		}
		out = append(out, row)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// sendTo writes b to another address of the rendezvous's (its second STUN
// address) from the node's socket, as the peer network writes to the
// rendezvous (rvclient.Options.SendTo).
func (n *Node) sendTo(b []byte, to netip.AddrPort) {
	if _, err := n.opts.Conn.WriteTo(b, net.UDPAddrFromAddrPort(to)); err != nil {
		n.log.Debug().Err(err).Stringer("to", to).Msg("write to the rendezvous's second STUN address")
	}
}

// pathLog keeps when each peer's path last changed kind or remote (an
// RTT change is not a path change), from the link's OnPath reports, which
// come in order: a peer is in it from the link's Open (relay) to its
// Forget (none). The zero value is ready to use.
type pathLog struct {
	mu sync.Mutex
	// Guarded by mu:
	m map[wire.Key]pathSeen
}

type pathSeen struct {
	kind   link.Kind
	remote string
	at     time.Time
}

// note records peer k's path p, reported at now.
func (l *pathLog) note(k wire.Key, p link.Path, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.Kind == link.None {
		delete(l.m, k)
		return
	}
	if l.m == nil {
		l.m = make(map[wire.Key]pathSeen)
	}
	if old, ok := l.m[k]; ok && old.kind == p.Kind && old.remote == p.Remote {
		return
	}
	l.m[k] = pathSeen{kind: p.Kind, remote: p.Remote, at: now}
}

// keys returns the peers in the log and when each one's path last
// changed.
func (l *pathLog) keys() map[wire.Key]time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[wire.Key]time.Time, len(l.m))
	for k, s := range l.m {
		out[k] = s.at
	}
	return out
}
