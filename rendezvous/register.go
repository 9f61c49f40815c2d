package rendezvous

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/time/rate"

	"natchat/ctrl"
	"natchat/relay"
	"natchat/wire"
)

// regJob is a registration waiting for a worker: a Handshake whose cookie
// checked out.
type regJob struct {
	src    netip.AddrPort
	cookie wire.Cookie
	noise  []byte // a copy
	reqLen int
}

// handleHandshakeLocked checks a Handshake's cookie (cheap, on the packet
// path) and hands it to a registration worker (the Diffie-Hellman and the
// name binding are not cheap). A retransmitted Handshake gets the same
// reply again, until the node is heard from on its session (it has the
// reply then, and the server no longer keeps it).
func (s *Server) handleHandshakeLocked(m *wire.Handshake, src netip.AddrPort, now time.Time, reqLen int) {
	if !s.cookies.valid(now, src, m.Cookie) {
		s.drop(relay.DropBadCookie)
		s.replyErrorLocked(src, now, reqLen, &wire.Error{Code: wire.CodeBadCookie, Request: wire.TypeHandshake, Message: "cookie invalid or expired"})
		return
	}
	if c := s.byCookie[m.Cookie]; c != nil {
		// The handshake of the registration in force: from its address, a
		// retransmission, which gets the same reply (while it is kept:
		// until the node is heard on its session). From elsewhere, the
		// node has moved since (the cookie is this address's, so it never
		// sends it from its new one): a replay, which must not run again
		// and reset the session back to the old address.
		if c.addr == src && c.reg != nil && c.reg.reply != nil {
			s.send(c.reg.reply, src)
		}
		return
	}
	if s.inflight[m.Cookie] {
		return // a retransmission of a handshake a worker has: its reply is coming
	}
	j := regJob{src: src, cookie: m.Cookie, noise: append([]byte(nil), m.Noise...), reqLen: reqLen}
	// Fair admission: a network that has registered little of late goes
	// ahead of those that registered more, so a flood of registrations
	// from a few hundred networks delays a newcomer by the fresh queue's
	// length at most, not by the whole backlog. The meter is per prefix,
	// in fixed memory, and is charged only for cookie-proven sources.
	if s.regFresh.allow(src.Addr(), now) {
		select {
		case s.regQ <- j:
			s.inflight[m.Cookie] = true
			return
		default: // full: wait with the others
		}
	}
	select {
	case s.regSlowQ <- j:
		s.inflight[m.Cookie] = true
	default:
		s.drop(relay.DropBusy)
	}
}

// Registrations from one network go to the fresh queue at most freshBurst
// at once and then one per freshEvery: what a household or an office
// does, while a network registering names by the dozen waits behind them.
const (
	freshEvery = 30 * time.Second
	freshBurst = 2
)

func (s *Server) registerWorker(ctx context.Context) {
	for {
		select {
		case j := <-s.regQ:
			s.runJob(j)
			continue
		default:
		}
		select {
		case <-ctx.Done():
			return
		case j := <-s.regQ:
			s.runJob(j)
		case j := <-s.regSlowQ:
			s.runJob(j)
		}
	}
}

func (s *Server) runJob(j regJob) {
	s.register(j)
	s.mu.Lock()
	delete(s.inflight, j.cookie)
	s.mu.Unlock()
}

// DrainRegistrations runs the registrations queued so far on the calling
// goroutine and returns how many it ran. Run's workers do this; in-memory
// tests and benchmarks that call Handle without Run call it instead.
func (s *Server) DrainRegistrations() int {
	n := 0
	for {
		select {
		case j := <-s.regQ:
			s.runJob(j)
			n++
			continue
		default:
		}
		select {
		case j := <-s.regSlowQ:
			s.runJob(j)
			n++
		default:
			return n
		}
	}
}

// register runs one registration: the handshake, the checks, the durable
// name binding, a new key's default room, then (under the lock) the new
// session and the reply.
func (s *Server) register(j regJob) {
	resp, payload, static, err := ctrl.Respond(s.opts.Key, j.cookie, j.noise)
	if err != nil {
		// Not a handshake with our key: nothing authenticated to answer.
		s.drop(relay.DropBadHandshake)
		s.mu.Lock()
		s.replyErrorLocked(j.src, s.now(), j.reqLen, &wire.Error{Code: wire.CodeBadHandshake, Request: wire.TypeHandshake,
			Message: "handshake failed: wrong rendezvous key?"})
		s.mu.Unlock()
		return
	}
	// From here every answer is the handshake's second message: the node
	// knows it comes from us.
	refuse := func(code wire.Code, reason, msg string) {
		s.drop(reason)
		out, _, err := resp.Finish(wire.AppendHandshakeResult(nil, &wire.HandshakeResult{Code: code, Message: msg}))
		if err != nil {
			return
		}
		s.mu.Lock()
		s.send(wire.Marshal(&wire.HandshakeReply{Noise: out}), j.src)
		s.mu.Unlock()
	}
	p, err := wire.ParseRegisterPayload(payload)
	if err != nil {
		refuse(wire.CodeMalformed, relay.DropMalformed, "registration did not parse")
		return
	}
	if want, err := ctrl.StaticOf(p.Key); err != nil || want != static {
		refuse(wire.CodeBadSignature, relay.DropBadSignature, "the handshake's key is not this identity's")
		return
	}
	if err := wire.ValidateName(p.Name); err != nil {
		refuse(wire.CodeBadName, relay.DropMalformed, err.Error())
		return
	}
	now := s.now()
	_, _, bound := s.opts.Store.ByName(p.Name) // a read transaction: not under s.mu
	s.mu.Lock()
	replay := slices.ContainsFunc(s.spent[p.Key], func(r spentCookie) bool { return r.cookie == j.cookie })
	quota := !bound && !s.newNameLocked(j.src.Addr(), now)
	s.mu.Unlock()
	switch {
	case replay:
		refuse(wire.CodeReplay, relay.DropReplay, "registration replayed")
		return
	case quota:
		refuse(wire.CodeQuota, relay.DropQuota, "too many new names from your network this hour; try later")
		return
	}
	name, err := s.bind(p.Name, p.Key)
	switch {
	case errors.Is(err, ErrNameTaken):
		refuse(wire.CodeNameTaken, relay.DropMalformed, fmt.Sprintf("name %q is taken", p.Name))
		return
	case errors.Is(err, ErrKeyInUse):
		refuse(wire.CodeKeyInUse, relay.DropMalformed, "this identity key is registered under another name")
		return
	case err != nil && errors.Is(err, ErrConfusable):
		refuse(wire.CodeNameTaken, relay.DropMalformed, err.Error())
		return
	case err != nil:
		s.log.Error().Err(err).Msg("store bind")
		return
	}
	s.opts.Store.Touch(p.Key, now)
	if s.opts.DefaultRoom != "" {
		// A key not given its default room with its binding (bound
		// before rooms existed, or by a store that cannot): now, durably,
		// before the reply. Otherwise a read.
		s.initRooms(p.Key, name)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	now = s.now()
	c := s.byKey.get(p.Key)
	rejoined := c != nil
	if c != nil {
		// The node registered again (restarted, or lost its session): it
		// stays online; new keys, new session, new address.
		s.bySession.remove(c.session)
		s.spendLocked(c, now)
		s.log.Info().Str("peer", c.name).Stringer("addr", j.src).Msg("re-registered")
	} else {
		c = s.newClient(p.Key, name)
	}
	c.session, c.addr = newSession(), j.src
	if ch := c.challenge(); ch != nil {
		ch.addr = netip.AddrPort{}
	}
	out, keys, err := resp.Finish(wire.AppendHandshakeResult(nil, &wire.HandshakeResult{
		Session: c.session, Observed: c.addr,
		HeartbeatMS: uint32(s.opts.Heartbeat / time.Millisecond),
		ExpiryMS:    uint32(s.opts.Expiry / time.Millisecond),
		PresenceSeq: c.seq,
	}))
	if err != nil {
		s.log.Error().Err(err).Msg("handshake reply")
		return
	}
	c.keys = *keys
	s.admitLocked(c, j.cookie, wire.Marshal(&wire.HandshakeReply{Noise: out}), rejoined, now)
}

// admitLocked puts c, whose session and keys are set, online, registered
// with cookie and answered with reply: indexed,
// filed for expiry, its reply sent, and (unless it rejoined, already
// online) in its rooms and announced; then its snapshot and mail. The
// registration worker and the scale benchmarks' AddRegistered share it.
func (s *Server) admitLocked(c *client, cookie wire.Cookie, reply []byte, rejoined bool, now time.Time) {
	if !rejoined {
		s.memberOnlineLocked(c)
	}
	s.byKey.set(c)
	s.heardLocked(c, now) // files it for expiry: only a client in byKey may be filed
	c.reg = &registration{cookie: cookie, reply: reply}
	s.bySession.set(c)
	s.byCookie[cookie] = c
	s.cookieQ.push(cookie, s.mono(now))
	s.m.registrations.Inc()
	s.m.online.Set(float64(s.byKey.len()))
	s.send(reply, c.addr)
	if !rejoined {
		s.log.Info().Str("peer", c.name).Stringer("addr", c.addr).Str("key", c.key.Short()).Msg("registered")
		for _, r := range c.joined() {
			s.joinLocked(c, r.rk)
		}
		s.announceLocked(c, wire.PresenceJoin, wire.ReasonNone)
	}
	s.sendSnapshotLocked(c)
	s.mailRegisteredLocked(c)
}

// newClient returns the record of a node registering for the first time
// since it was last online.
func (s *Server) newClient(key wire.Key, name string) *client {
	nk := wire.NameKey(name)
	if nk == name {
		nk = name // one copy of the bytes, not two
	}
	return &client{member: member{key: key, name: name, nameKey: nk}}
}

// A node's rate limiters are made at its first use of each: most nodes
// never relay, look up or introduce themselves, and a limiter is ~100
// bytes. Made then, a limiter is full, as one made at the registration
// would be by then (its tokens never exceed its burst): nothing changes
// but the memory.

// relayLimiter returns c's relay budget.
func (s *Server) relayLimiter(c *client) *relay.Limiter {
	x := c.extra()
	if x.limiter == nil {
		x.limiter = relay.NewLimiter(s.opts.Relay)
	}
	return x.limiter
}

// lookupLimiter returns c's budget of lookups and other requests
// answered from the server's state.
func (s *Server) lookupLimiter(c *client) *rate.Limiter {
	x := c.extra()
	if x.lookups == nil {
		x.lookups = rate.NewLimiter(rate.Limit(max(s.opts.LookupRate, 1)), 2*max(s.opts.LookupRate, 1))
	}
	return x.lookups
}

// introLimiter returns c's budget of introductions.
func (s *Server) introLimiter(c *client) *rate.Limiter {
	x := c.extra()
	if x.intros == nil {
		x.intros = rate.NewLimiter(rate.Limit(max(s.opts.IntroRate, 1)), 2*max(s.opts.IntroRate, 1))
	}
	return x.intros
}

// newNameLocked counts a new name registered from src's network this hour
// and reports whether it is within the quota.
func (s *Server) newNameLocked(src netip.Addr, now time.Time) bool {
	if s.opts.NewNames < 0 {
		return true
	}
	pfx := sourcePrefix(src)
	q := s.newNames[pfx]
	if q == nil || now.Sub(q.since) >= time.Hour {
		q = &nameQuota{since: now}
		s.newNames[pfx] = q
		s.nameQ.push(pfx, s.mono(now))
	}
	if q.count >= s.opts.NewNames {
		return false
	}
	q.count++
	return true
}

// sourcePrefix is the network a source address stands for in quotas: its
// /24 (IPv4) or /56 (IPv6), what one customer of an ISP usually holds.
func sourcePrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 56
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p
}

func newSession() (id wire.SessionID) {
	rand.Read(id[:])
	return id
}

// spendLocked remembers c's current cookie as used up, and forgets it
// in byCookie: c's registration is ending or being replaced. A cookie
// that can no longer be valid (c.reg is nil then) needs neither.
func (s *Server) spendLocked(c *client, now time.Time) {
	if c.reg == nil {
		return
	}
	delete(s.byCookie, c.reg.cookie)
	rs := append(s.spent[c.key], spentCookie{cookie: c.reg.cookie, at: now})
	if len(rs) > maxSpent {
		rs = rs[len(rs)-maxSpent:]
	}
	s.spent[c.key] = rs
	s.spentQ.push(c.key, s.mono(now))
}

// removeLocked ends c's registration and tells who sees it.
func (s *Server) removeLocked(c *client, reason wire.LeaveReason, now time.Time) {
	s.announceLocked(c, wire.PresenceLeft, reason)
	s.leaveRoomsLocked(c)
	s.unwatchAllLocked(c)
	s.byKey.remove(c.key)
	s.memberOfflineLocked(c)
	s.bySession.remove(c.session)
	delete(s.dirty, c)
	s.expiry.remove(c)
	s.dropPutsLocked(c, now, true)
	s.spendLocked(c, now)
	s.m.online.Set(float64(s.byKey.len()))
}
