package rendezvous

import (
	"time"

	"natchat/relay"
	"natchat/wire"
)

// forwardableLocked returns the online node with key dst if c may send it
// n more bytes now, counting the drop otherwise.
func (s *Server) forwardableLocked(c *client, dst wire.Key, n int, now time.Time) *client {
	if !s.relayLimiter(c).Allow(now, n) {
		s.drop(relay.DropRateLimited)
		return nil
	}
	d := s.byKey.get(dst)
	if d == nil {
		s.drop(relay.DropOffline)
		return nil
	}
	return d
}

func (s *Server) lookupLocked(m *wire.Lookup) *wire.LookupReply {
	r := &wire.LookupReply{TxID: m.TxID, Status: wire.LookupUnknown}
	var ok bool
	if m.Name != "" {
		r.Key, r.Name, ok = s.opts.Store.ByName(m.Name)
	} else {
		r.Key = m.Key
		r.Name, ok = s.opts.Store.ByKey(m.Key)
	}
	if !ok {
		return &wire.LookupReply{TxID: m.TxID, Status: wire.LookupUnknown, Key: m.Key, Name: m.Name}
	}
	r.Status = wire.LookupOffline
	if online := s.byKey.get(r.Key) != nil; online {
		r.Status = wire.LookupOnline
	}
	return r
}
