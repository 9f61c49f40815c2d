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

// AddRegistered puts a node in s as registered from src, as
// registration does once the handshake has succeeded (admitSimulated:
// no Noise, no durable writes), for the scale benchmarks
// (scale_bench_test.go); keys are the session's (the benchmarks share a
// few real sessions' ciphers among many records). It returns the session
// ID. Test-only.
func AddRegistered(s *Server, key wire.Key, name string, src netip.AddrPort, cookie wire.Cookie, reply []byte, keys *ctrl.Keys) wire.SessionID {
	session := newSession()
	if err := s.admitSimulated(key, name, session, src, cookie, reply, keys); err != nil {
		panic("AddRegistered: " + err.Error())
	}
	return session
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
	for c := range s.byKey.all() {
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
