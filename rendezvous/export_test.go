package rendezvous

import (
	"net/netip"

	"natchat/ctrl"
	"natchat/wire"
)

// Hooks for the tests of package rendezvous_test.

// SetCommitHook has st's committer call f at the start of each write
// transaction, with the number of requests in it: a test holds a commit
// there. Call it while st is idle.
func SetCommitHook(st *Store, f func(requests int)) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.testHookCommit = f
}

// SetMailHeldMax sets the bytes every session's deposits in progress may
// reserve together.
func SetMailHeldMax(s *Server, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mailHeldMax = n
}

// MailHeld returns the bytes reserved by deposits in progress.
func MailHeld(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mailHeld
}

// AddRegistered puts a node in s as registered, the way register does
// once the node's handshake has succeeded and its name is bound: the
// default room's membership applied to the in-memory copy (as initRooms
// applies its durable write), then, under the lock, the client record,
// its indexes, its rooms, its presence join and snapshot. It skips the
// Noise handshake and the durable writes (the name binding, the room
// membership, the Store's last use), which the scale benchmarks
// (scale_bench_test.go) cannot afford a million times; keys are the
// session's (the benchmarks share a few real sessions' ciphers among many
// records). It returns the session ID. Test-only.
func AddRegistered(s *Server, key wire.Key, name string, src netip.AddrPort, cookie wire.Cookie, reply []byte, keys *ctrl.Keys) wire.SessionID {
	if s.opts.DefaultRoom != "" {
		s.mu.Lock()
		var v uint64 = 1
		if r := s.byRoom[s.defaultRK]; r != nil {
			v = r.version + 1
		}
		s.mu.Unlock()
		s.initApplied(RoomResult{Status: wire.RoomOK, Room: s.opts.DefaultRoom, Key: key, Version: v, Members: 0, Changed: true}, name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.byKey[key] != nil {
		panic("AddRegistered: key already online")
	}
	c := s.newClient(key, name)
	c.session, c.addr = newSession(), src
	c.keys = *keys
	s.admitLocked(c, cookie, reply, false, now)
	return c.session
}

// ExpiryState returns the clients filed in s's expiry wheel, the keys
// with spent cookies and the entries of their queue, and the new-name
// quotas and the entries of theirs.
func ExpiryState(s *Server) (filed, spentKeys, spentQueued, quotas, quotasQueued int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expiry.n, len(s.spent), s.spentQ.len(), len(s.newNames), s.nameQ.len()
}

// Registration reports whether the node online with name keeps its
// registration's record (cookie and reply), and its reply.
func Registration(s *Server, name string) (held, reply bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.byKey {
		if c.name == name && c.reg != nil {
			return true, c.reg.reply != nil
		}
	}
	return false, false
}

// CookieIndex returns the registrations s finds by cookie, and the
// entries of their queue.
func CookieIndex(s *Server) (entries, queued int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byCookie), s.cookieQ.len()
}
