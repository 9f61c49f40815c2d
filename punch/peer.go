package punch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v2"
	"github.com/rs/zerolog"
)

// Handler receives what a Peer produces. SendSignal and Direct are called
// from the Peer's own goroutine, in order; Receive from another one. None
// may block or call Peer.Close or Manager.Close.
type Handler interface {
	// SendSignal asks the node to deliver s to the remote Peer through the
	// rendezvous (retransmitted until acked).
	SendSignal(s Signal)
	// Direct reports a change of the direct path: up with the remote
	// address and the last measured round-trip time, or down (remote nil).
	// While up, Write sends on the direct path. A new remote while up is
	// reported as another Direct(true, ...).
	Direct(up bool, remote net.Addr, rtt time.Duration)
	// Receive is a datagram that arrived on the direct path. b is only
	// valid during the call.
	Receive(b []byte)
}

// receiveMTU is the largest datagram read from the direct path (pion's mux
// reads at most this much).
const receiveMTU = 8192

// settleDelay lets the asynchronous pion state callbacks catch up before a
// "failed" state is acted on (see the package documentation).
const settleDelay = 100 * time.Millisecond

// maxUfrags bounds the local ufrags a Peer remembers for releaseSrflx.
const maxUfrags = 64

// maxPending bounds the remote signals queued for the loop.
const maxPending = 64

// Peer is the ICE session with one remote peer. Its state lives in one
// goroutine (loop); the methods post events to it.
type Peer struct {
	m           *Manager
	id          string
	controlling bool
	h           Handler
	log         zerolog.Logger
	agent       *ice.Agent

	ctx    context.Context // lifetime of the Peer
	cancel context.CancelFunc
	wg     sync.WaitGroup // loop and reader
	once   sync.Once

	conn atomic.Pointer[ice.Conn] // set when Dial/Accept returns
	up   atomic.Bool              // between Direct(true) and Direct(false)

	mu      sync.Mutex // guards events and signals
	events  []event
	signals int // remote signals in events
	wake    chan struct{}

	s loopState // owned by loop
}

type eventKind int

const (
	evStart eventKind = iota
	evSignal
	evState
	evCandidate
	evPair
	evDialed
)

type event struct {
	kind  eventKind
	sig   Signal
	state ice.ConnectionState
	done  bool // evCandidate: gathering complete
	err   error
}

// loopState is only touched by the loop goroutine.
type loopState struct {
	started     bool // gathering begun (Start or first signal)
	dialStarted bool // Dial/Accept launched (once per agent)
	checking    bool // pion reported the first Checking: Restart is safe
	deferred    []Signal
	dialed      bool // Dial/Accept returned the Conn
	state       ice.ConnectionState

	gen          uint32   // controlling: current; controlled: answered (0 none)
	ufrag, pwd   string   // local credentials of this generation
	ufrags       []string // local ufrags of every generation (the last maxUfrags), for releaseSrflx
	remoteUfrag  string   // remote credentials set for gen ("" none)
	everRemote   bool     // remote credentials were ever set
	seenUfrags   []string // recent remote ufrags, to tell a new remote incarnation from a stale signal
	gatherDone   bool
	gatherWaitAt time.Time // send the first signal of gen by then
	dirty        bool      // a signal is owed
	lastSent     Signal

	attempt   int       // consecutive failed generations (backoff)
	wantRetry bool      // controlling: a restart is wanted
	retryAt   time.Time // controlling: restart scheduled at
	failedAt  time.Time // controlled: report failure at
	failSent  bool      // controlled: Failed sent for gen

	remote string // reported remote while up
}

func newPeer(m *Manager, id string, controlling bool, h Handler) (*Peer, error) {
	o := &m.opts
	log := m.log.With().Str("peer", id).Bool("controlling", controlling).Logger()
	// Host pairs are nominated at once, reflexive ones from half a check
	// interval after checks start (in practice the next tick), so that
	// peers on one LAN keep the host path even when their NAT hairpins:
	// the srflx pair can succeed first when the host pair is added late.
	zero, reflexiveWait := time.Duration(0), o.CheckInterval/2
	maxReq := o.maxBindingRequests()
	types := []ice.CandidateType{ice.CandidateTypeHost}
	if len(m.urls) > 0 {
		types = append(types, ice.CandidateTypeServerReflexive)
	}
	agent, err := ice.NewAgent(&ice.AgentConfig{
		Urls:                   m.urls,
		NetworkTypes:           m.netTypes,
		CandidateTypes:         types,
		UDPMux:                 m.mux,
		UDPMuxSrflx:            m.mux,
		MulticastDNSMode:       ice.MulticastDNSModeDisabled,
		CheckInterval:          &o.CheckInterval,
		MaxBindingRequests:     &maxReq,
		KeepaliveInterval:      &o.KeepaliveInterval,
		DisconnectedTimeout:    &o.DisconnectedTimeout,
		FailedTimeout:          &o.FailedTimeout,
		HostAcceptanceMinWait:  &zero,
		SrflxAcceptanceMinWait: &reflexiveWait,
		PrflxAcceptanceMinWait: &reflexiveWait,
		RelayAcceptanceMinWait: &zero,
		LoggerFactory:          pionLogs{log},
		Net:                    m.net,
	})
	if err != nil {
		return nil, fmt.Errorf("punch: new agent for %q: %w", id, err)
	}
	p := &Peer{
		m:           m,
		id:          id,
		controlling: controlling,
		h:           h,
		log:         log,
		agent:       agent,
		wake:        make(chan struct{}, 1),
	}
	p.ctx, p.cancel = context.WithCancel(m.ctx)
	p.s.state = ice.ConnectionStateNew
	if controlling {
		p.s.gen = firstGen(time.Now())
	}
	// pion calls these from its notifier goroutines, in order per kind.
	_ = agent.OnConnectionStateChange(func(s ice.ConnectionState) { p.post(event{kind: evState, state: s}) })
	_ = agent.OnCandidate(func(c ice.Candidate) { p.post(event{kind: evCandidate, done: c == nil}) })
	_ = agent.OnSelectedCandidatePairChange(func(ice.Candidate, ice.Candidate) { p.post(event{kind: evPair}) })
	p.wg.Add(1)
	go p.loop()
	return p, nil
}

// Start gathers candidates and signals them. Idempotent; a remote Signal
// also starts the Peer.
func (p *Peer) Start() error {
	if p.ctx.Err() != nil {
		return ErrClosed
	}
	p.post(event{kind: evStart})
	return nil
}

// HandleSignal takes a Signal from the remote Peer. It does not block;
// invalid signals, and signals beyond a backlog of 64, are dropped.
func (p *Peer) HandleSignal(s Signal) {
	if p.ctx.Err() != nil {
		return
	}
	if !s.valid() {
		p.log.Debug().Msg("invalid signal dropped")
		return
	}
	s.Candidates = slices.Clone(s.Candidates)
	p.mu.Lock()
	if p.signals >= maxPending {
		p.mu.Unlock()
		p.log.Warn().Msg("signal backlog full, signal dropped")
		return
	}
	p.signals++
	p.events = append(p.events, event{kind: evSignal, sig: s})
	p.mu.Unlock()
	p.notify()
}

// Write sends one datagram on the direct path. It fails with
// ErrNoDirectPath unless the path is up (Handler.Direct(true) was the last
// report); nothing is sent then.
func (p *Peer) Write(b []byte) error {
	c := p.conn.Load()
	if c == nil || !p.up.Load() {
		return ErrNoDirectPath
	}
	n, err := c.Write(b)
	switch {
	case err != nil:
		return fmt.Errorf("punch: write to %q: %w", p.id, err)
	case n == 0 && len(b) > 0: // pion: no selected pair, nothing sent
		return ErrNoDirectPath
	}
	return nil
}

// Close stops the Peer: it closes the agent, reports Direct(false) if the
// path was up, and waits for the Peer's goroutines. No Handler method is
// called after Close returns. Idempotent.
func (p *Peer) Close() error {
	p.once.Do(func() {
		p.cancel()
		p.wg.Wait()
		p.m.removePeer(p.id, p)
	})
	return nil
}

func (p *Peer) post(e event) {
	p.mu.Lock()
	p.events = append(p.events, e)
	p.mu.Unlock()
	p.notify()
}

func (p *Peer) notify() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *Peer) take() []event {
	p.mu.Lock()
	defer p.mu.Unlock()
	ev := p.events
	p.events = nil
	p.signals = 0
	return ev
}

func (p *Peer) loop() {
	defer p.wg.Done()
	defer func() {
		// Closing the agent ends Dial/Accept and Conn.Read in reader;
		// GracefulClose also waits for pion's callback goroutines.
		if err := p.agent.GracefulClose(); err != nil {
			p.log.Debug().Err(err).Msg("agent close")
		}
		p.m.releaseSrflx(p.s.ufrags)
		p.setUp(false, nil, 0)
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var tc <-chan time.Time
		if d := p.nextDeadline(); !d.IsZero() {
			timer.Reset(time.Until(d))
			tc = timer.C
		}
		select {
		case <-p.ctx.Done():
			return
		case <-p.wake:
		case <-tc:
		}
		timer.Stop()
		for _, e := range p.take() {
			p.handle(e, time.Now())
		}
		p.runDeadlines(time.Now())
	}
}

func (p *Peer) nextDeadline() time.Time {
	var d time.Time
	for _, t := range []time.Time{p.s.gatherWaitAt, p.s.retryAt, p.s.failedAt} {
		if !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	return d
}

func (p *Peer) handle(e event, now time.Time) {
	switch e.kind {
	case evStart:
		p.start(now)
	case evSignal:
		p.onSignal(e.sig, now)
	case evState:
		p.onState(e.state, now)
	case evCandidate:
		p.s.dirty = true
		if e.done {
			p.s.gatherDone = true
		} else if cs, _ := p.agent.GetLocalCandidates(); p.gathered(cs) {
			p.s.gatherDone = true // the rest is not worth waiting for
		}
		p.maybeSignal(now)
	case evPair:
		p.recomputeUp()
	case evDialed:
		if e.err != nil {
			if p.ctx.Err() == nil {
				p.log.Error().Err(e.err).Msg("ice dial")
			}
			p.setChecking(now) // nothing to wait for any more
			return
		}
		p.s.dialed = true
		p.recomputeUp()
	}
}

// gathered reports whether cs holds every candidate type being gathered.
func (p *Peer) gathered(cs []ice.Candidate) bool {
	if len(p.m.urls) == 0 {
		return true
	}
	for _, c := range cs {
		if c.Type() == ice.CandidateTypeServerReflexive {
			return true
		}
	}
	return false
}

func (p *Peer) runDeadlines(now time.Time) {
	s := &p.s
	if !s.gatherWaitAt.IsZero() && !now.Before(s.gatherWaitAt) {
		s.gatherWaitAt = time.Time{}
		s.gatherDone = true
		p.maybeSignal(now)
	}
	if !s.retryAt.IsZero() && !now.Before(s.retryAt) {
		s.retryAt = time.Time{}
		p.maybeRestart(now)
	}
	if !s.failedAt.IsZero() && !now.Before(s.failedAt) {
		s.failedAt = time.Time{}
		if s.state == ice.ConnectionStateFailed && !s.failSent && s.gen != 0 {
			s.failSent = true
			p.log.Info().Uint32("gen", s.gen).Msg("ice failed, asking for a restart")
			p.send(Signal{Generation: s.gen, Ufrag: s.ufrag, Pwd: s.pwd, Failed: true})
		}
	}
}

// start begins gathering for the first generation.
func (p *Peer) start(now time.Time) {
	if p.s.started {
		return
	}
	p.s.started = true
	p.gather(now)
}

// gather starts gathering with the agent's current credentials.
func (p *Peer) gather(now time.Time) {
	s := &p.s
	ufrag, pwd, err := p.agent.GetLocalUserCredentials()
	if err != nil {
		p.log.Error().Err(err).Msg("ice credentials")
		return
	}
	s.ufrag, s.pwd = ufrag, pwd
	if !slices.Contains(s.ufrags, ufrag) {
		if len(s.ufrags) == maxUfrags {
			s.ufrags = s.ufrags[1:]
		}
		s.ufrags = append(s.ufrags, ufrag)
	}
	s.gatherDone = false
	s.gatherWaitAt = now.Add(p.m.opts.GatherWait)
	s.dirty = true
	if err := p.agent.GatherCandidates(); err != nil {
		p.log.Error().Err(err).Msg("ice gather")
	}
}

// maybeSignal sends the current credentials and candidates if a signal is
// owed and gathering is complete (or GatherWait has passed).
func (p *Peer) maybeSignal(now time.Time) {
	s := &p.s
	if !s.dirty || !s.started || !s.gatherDone {
		return
	}
	cs, err := p.agent.GetLocalCandidates()
	if err != nil {
		return
	}
	sig := Signal{Generation: s.gen, Ufrag: s.ufrag, Pwd: s.pwd, Candidates: make([]string, 0, len(cs))}
	for _, c := range cs {
		sig.Candidates = append(sig.Candidates, c.Marshal())
	}
	slices.Sort(sig.Candidates)
	s.dirty = false
	s.gatherWaitAt = time.Time{}
	if len(sig.Candidates) == 0 || sig.equal(s.lastSent) {
		return
	}
	p.send(sig)
}

func (p *Peer) send(sig Signal) {
	p.s.lastSent = sig
	p.log.Debug().Uint32("gen", sig.Generation).Int("candidates", len(sig.Candidates)).Bool("failed", sig.Failed).Msg("signal out")
	p.h.SendSignal(sig)
}

func (p *Peer) onSignal(sig Signal, now time.Time) {
	s := &p.s
	if s.dialStarted && !s.checking {
		s.deferred = append(s.deferred, sig) // Restart is unsafe until Dial has set things up
		return
	}
	p.start(now)
	p.log.Debug().Uint32("gen", sig.Generation).Int("candidates", len(sig.Candidates)).Bool("failed", sig.Failed).Msg("signal in")
	if p.controlling {
		p.onAnswer(sig, now)
	} else {
		p.onOffer(sig, now)
	}
}

// onAnswer handles a signal from the controlled side.
func (p *Peer) onAnswer(sig Signal, now time.Time) {
	s := &p.s
	switch {
	case sig.Generation != s.gen && sig.Generation != 0:
		// Answers an older generation.
	case s.remoteUfrag == "":
		// A Generation 0 answer is usable only before any other: the
		// controlled side keeps those credentials for its first offer.
		if sig.Generation == s.gen || !s.everRemote {
			p.setRemote(sig)
		}
	case sig.Ufrag == s.remoteUfrag:
		p.addCandidates(sig.Candidates)
		if sig.Failed && sig.Generation == s.gen {
			p.log.Info().Uint32("gen", s.gen).Msg("remote ice failed")
			p.wantRestart(now)
		}
	case sig.Generation == s.gen || !slices.Contains(s.seenUfrags, sig.Ufrag):
		// Credentials we have never seen: the remote Peer was recreated
		// (process restart) and has not seen our offer. Start over, at
		// once unless restarts are already backing off.
		p.log.Info().Uint32("gen", s.gen).Msg("remote peer restarted")
		p.wantRestart(now)
		if s.attempt == 0 {
			s.retryAt = now
		}
	}
	p.seeUfrag(sig.Ufrag)
}

// seeUfrag remembers a remote ufrag (the last 8).
func (p *Peer) seeUfrag(u string) {
	s := &p.s
	if slices.Contains(s.seenUfrags, u) {
		return
	}
	if len(s.seenUfrags) == 8 {
		s.seenUfrags = s.seenUfrags[1:]
	}
	s.seenUfrags = append(s.seenUfrags, u)
}

// onOffer handles a signal from the controlling side.
func (p *Peer) onOffer(sig Signal, now time.Time) {
	s := &p.s
	if sig.Generation == 0 || sig.Failed {
		return // only the controlled side sends these
	}
	if sig.Generation == s.gen && sig.Ufrag == s.remoteUfrag {
		p.addCandidates(sig.Candidates) // more of the same generation
		return
	}
	if s.gen != 0 && !newerGen(sig.Generation, s.gen) && sig.Generation != s.gen {
		return // stale offer
	}
	// A new generation (or the same number from a new incarnation).
	if s.dialStarted {
		if err := p.restart(now); err != nil {
			return
		}
	}
	s.gen = sig.Generation
	p.setRemote(sig)
	s.dirty = true
	p.maybeSignal(now)
}

// setRemote gives the agent the remote credentials and candidates of the
// current generation, starting connectivity checks the first time.
func (p *Peer) setRemote(sig Signal) {
	s := &p.s
	p.addCandidates(sig.Candidates)
	s.remoteUfrag = sig.Ufrag
	s.everRemote = true
	if !s.dialStarted {
		s.dialStarted = true
		p.wg.Add(1)
		go p.reader(sig.Ufrag, sig.Pwd)
		return
	}
	if err := p.agent.SetRemoteCredentials(sig.Ufrag, sig.Pwd); err != nil {
		p.log.Error().Err(err).Msg("ice remote credentials")
	}
}

func (p *Peer) addCandidates(cands []string) {
	for _, raw := range cands {
		c, err := ice.UnmarshalCandidate(raw)
		if err != nil {
			p.log.Debug().Err(err).Str("candidate", raw).Msg("bad remote candidate")
			continue
		}
		if err := p.agent.AddRemoteCandidate(c); err != nil {
			p.log.Debug().Err(err).Str("candidate", raw).Msg("remote candidate refused")
		}
	}
}

// reader starts the checks (Dial/Accept return on the first connection of
// any generation, or when the agent closes), then delivers direct
// datagrams until the agent closes.
func (p *Peer) reader(ufrag, pwd string) {
	defer p.wg.Done()
	var c *ice.Conn
	var err error
	if p.controlling {
		c, err = p.agent.Dial(p.ctx, ufrag, pwd)
	} else {
		c, err = p.agent.Accept(p.ctx, ufrag, pwd)
	}
	if err != nil {
		p.post(event{kind: evDialed, err: err})
		return
	}
	p.conn.Store(c)
	p.post(event{kind: evDialed})
	buf := make([]byte, receiveMTU)
	for {
		n, err := c.Read(buf)
		if errors.Is(err, io.ErrShortBuffer) {
			continue // cannot happen: pion's mux reads at most receiveMTU
		}
		if err != nil {
			if p.ctx.Err() == nil && !errors.Is(err, ice.ErrClosed) {
				p.log.Debug().Err(err).Msg("direct read")
			}
			return
		}
		p.h.Receive(buf[:n])
	}
}

func (p *Peer) setChecking(now time.Time) {
	s := &p.s
	if s.checking {
		return
	}
	s.checking = true
	deferred := s.deferred
	s.deferred = nil
	for _, sig := range deferred {
		p.onSignal(sig, now)
	}
}

func (p *Peer) onState(st ice.ConnectionState, now time.Time) {
	s := &p.s
	s.state = st
	p.log.Debug().Str("state", st.String()).Uint32("gen", s.gen).Msg("ice state")
	switch st {
	case ice.ConnectionStateChecking:
		p.setChecking(now)
	case ice.ConnectionStateConnected:
		s.attempt = 0
		s.wantRetry = false
		s.retryAt = time.Time{}
	case ice.ConnectionStateFailed:
		if p.controlling {
			p.wantRestart(now)
		} else if !s.failSent {
			s.failedAt = now.Add(settleDelay)
		}
	}
	p.recomputeUp()
}

// wantRestart schedules an ICE restart (controlling side) after the backoff.
func (p *Peer) wantRestart(now time.Time) {
	s := &p.s
	s.wantRetry = true
	if s.retryAt.IsZero() {
		d := backoff(s.attempt, p.m.opts.RetryMin, p.m.opts.RetryMax, randJitter())
		s.retryAt = now.Add(d)
		p.log.Debug().Dur("in", d).Int("attempt", s.attempt).Msg("ice restart scheduled")
	}
}

// maybeRestart runs a scheduled restart unless the agent is checking: a
// Restart from the checking state keeps pion's old checking deadline, and
// the checks in progress end in connected or failed anyway.
func (p *Peer) maybeRestart(now time.Time) {
	s := &p.s
	if !s.wantRetry || s.state == ice.ConnectionStateChecking || (s.dialStarted && !s.checking) {
		return
	}
	s.wantRetry = false
	s.attempt++
	if err := p.restart(now); err != nil {
		return
	}
	s.gen = nextGen(s.gen)
	p.log.Info().Uint32("gen", s.gen).Int("attempt", s.attempt).Msg("ice restart")
}

// restart gives the agent new credentials and re-gathers; the remote
// credentials are cleared until the other side answers.
func (p *Peer) restart(now time.Time) error {
	s := &p.s
	if err := p.agent.Restart("", ""); err != nil {
		p.log.Error().Err(err).Msg("ice restart")
		return err
	}
	if s.state != ice.ConnectionStateNew {
		s.state = ice.ConnectionStateChecking // pion reports it asynchronously
	}
	s.remoteUfrag = ""
	s.failSent = false
	s.failedAt = time.Time{}
	s.lastSent = Signal{}
	p.recomputeUp()
	p.gather(now)
	return nil
}

// recomputeUp derives the path state from pion's and reports changes.
func (p *Peer) recomputeUp() {
	s := &p.s
	if !s.dialed || s.state != ice.ConnectionStateConnected {
		p.setUp(false, nil, 0)
		return
	}
	pair, err := p.agent.GetSelectedCandidatePair()
	if err != nil || pair == nil {
		p.setUp(false, nil, 0)
		return
	}
	remote := &net.UDPAddr{IP: net.ParseIP(pair.Remote.Address()), Port: pair.Remote.Port()}
	var rtt time.Duration
	if st, ok := p.agent.GetSelectedCandidatePairStats(); ok {
		rtt = time.Duration(st.CurrentRoundTripTime * float64(time.Second))
	}
	p.setUp(true, remote, rtt)
}

func (p *Peer) setUp(up bool, remote *net.UDPAddr, rtt time.Duration) {
	s := &p.s
	if !up {
		if p.up.Swap(false) {
			s.remote = ""
			p.log.Info().Uint32("gen", s.gen).Msg("direct path down")
			p.h.Direct(false, nil, 0)
		}
		return
	}
	r := net.JoinHostPort(remote.IP.String(), strconv.Itoa(remote.Port))
	if p.up.Load() && r == s.remote {
		return
	}
	s.remote = r
	p.up.Store(true)
	p.log.Info().Str("remote", r).Dur("rtt", rtt).Uint32("gen", s.gen).Msg("direct path up")
	p.h.Direct(true, remote, rtt)
}
