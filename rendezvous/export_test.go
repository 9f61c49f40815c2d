package rendezvous

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
