package rendezvous

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"natchat/relay"
	"natchat/wire"
)

func (s *Server) handleRegisterLocked(m *wire.Register, src netip.AddrPort, now time.Time, reqLen int) {
	refuse := func(code wire.Code, reason, msg string) {
		s.drop(reason)
		s.replyErrorLocked(src, now, reqLen, &wire.Error{Code: code, Request: wire.TypeRegister, Message: msg})
	}
	if !s.cookies.valid(now, src, m.Cookie) {
		refuse(wire.CodeBadCookie, relay.DropBadCookie, "cookie invalid or expired")
		return
	}
	if err := wire.ValidateName(m.Name); err != nil {
		refuse(wire.CodeBadName, relay.DropMalformed, err.Error())
		return
	}
	if !ed25519.Verify(ed25519.PublicKey(m.Key[:]), wire.RegisterSigned(m.Cookie, m.Key, m.Name), m.Sig[:]) {
		refuse(wire.CodeBadSignature, relay.DropBadSignature, "signature does not verify")
		return
	}
	// From here the source has proved its address and its key.
	if old := s.byKey[m.Key]; old != nil && old.cookie == m.Cookie && wire.NameKey(old.name) == wire.NameKey(m.Name) {
		// A retransmitted registration: answer it again (at the node's
		// current address, should it have roamed since), change nothing.
		// The same cookie with another name is not a retransmit: it falls
		// through to the store, which refuses it (key_in_use).
		s.sendRegisteredLocked(old)
		return
	}
	if slices.ContainsFunc(s.spent[m.Key], func(r spentCookie) bool { return r.cookie == m.Cookie }) {
		refuse(wire.CodeReplay, relay.DropReplay, "registration replayed")
		return
	}
	name, err := s.opts.Store.Bind(m.Name, m.Key)
	switch {
	case errors.Is(err, ErrNameTaken):
		refuse(wire.CodeNameTaken, relay.DropMalformed, fmt.Sprintf("name %q is taken", m.Name))
		return
	case errors.Is(err, ErrKeyInUse):
		refuse(wire.CodeKeyInUse, relay.DropMalformed, "this identity key is registered under another name")
		return
	case err != nil:
		s.log.Error().Err(err).Msg("store bind")
		return
	}
	s.m.registrations.Inc()
	if c := s.byKey[m.Key]; c != nil {
		// The node registered again (restarted, or its NAT rebound): it
		// stays online; new session, new address.
		delete(s.bySession, c.session)
		s.spendLocked(c, now)
		c.session, c.addr, c.cookie, c.lastSeen = newSession(), src, m.Cookie, now
		s.bySession[c.session] = c
		s.log.Info().Str("peer", c.name).Stringer("addr", src).Msg("re-registered")
		s.sendRegisteredLocked(c)
		s.sendSnapshotLocked(c)
		return
	}
	c := &client{
		key: m.Key, name: name, addr: src, session: newSession(), cookie: m.Cookie, lastSeen: now,
		limiter: relay.NewLimiter(s.opts.Relay),
	}
	s.byKey[c.key] = c
	s.bySession[c.session] = c
	s.m.online.Set(float64(len(s.byKey)))
	s.log.Info().Str("peer", c.name).Stringer("addr", src).Str("key", c.key.Short()).Msg("registered")
	s.sendRegisteredLocked(c)
	if s.opts.DefaultRoom != "" {
		s.joinLocked(c, s.opts.DefaultRoom)
	}
	s.sendSnapshotLocked(c)
}

func newSession() (id wire.SessionID) {
	rand.Read(id[:])
	return id
}

func (s *Server) sendRegisteredLocked(c *client) {
	s.send(wire.Marshal(&wire.Registered{
		Session: c.session, Observed: c.addr,
		HeartbeatMS: uint32(s.opts.Heartbeat / time.Millisecond),
		ExpiryMS:    uint32(s.opts.Expiry / time.Millisecond),
		PresenceSeq: c.seq,
	}), c.addr)
}

// spendLocked remembers c's current cookie as used up.
func (s *Server) spendLocked(c *client, now time.Time) {
	rs := append(s.spent[c.key], spentCookie{cookie: c.cookie, at: now})
	if len(rs) > maxSpent {
		rs = rs[len(rs)-maxSpent:]
	}
	s.spent[c.key] = rs
}
