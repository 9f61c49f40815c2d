package punch

import (
	"net"
	"time"

	"github.com/pion/transport/v2"
	"github.com/rs/zerolog"
)

// Default timing values. They are tuned for a 10–200 ms RTT internet path:
// see the package documentation.
const (
	DefaultCheckInterval       = 100 * time.Millisecond
	DefaultPairTimeout         = 4 * time.Second
	DefaultKeepaliveInterval   = 1 * time.Second
	DefaultDisconnectedTimeout = 3 * time.Second
	DefaultFailedTimeout       = 2 * time.Second
	DefaultRetryMin            = 1 * time.Second
	DefaultRetryMax            = 60 * time.Second
	DefaultSTUNRefresh         = 20 * time.Second
	DefaultGatherWait          = 200 * time.Millisecond
)

// Options configures a Manager. Only Conn is required; every zero duration
// means the matching Default value.
type Options struct {
	// Conn is the demultiplexed view of the node's one UDP socket: it
	// receives everything that is not rendezvous protocol (STUN, ICE
	// checks, direct peer datagrams) and WriteTo sends out of the same
	// socket. Required. LocalAddr must return the socket's *net.UDPAddr and
	// ReadFrom must return *net.UDPAddr sources. The Manager owns Conn from
	// NewManager on: Manager.Close closes it, which must make a blocked
	// ReadFrom return an error.
	Conn net.PacketConn

	// STUNServer is the rendezvous "host:port" (IPv4) that answers STUN
	// Binding requests. Empty means host and peer-reflexive candidates only.
	STUNServer string

	// Net is the network used to list interfaces and resolve names: nil is
	// the real network (stdnet); tests pass a vnet.
	Net transport.Net

	// Logger receives punch's logs (state changes at Info, steps at Debug)
	// and pion's (one level lower than pion's own, its routine warnings at
	// Debug). The zero Logger discards everything.
	Logger zerolog.Logger

	// CheckInterval is the pace of connectivity checks while connecting:
	// every pair in progress is pinged once per interval. 0 = 100 ms.
	CheckInterval time.Duration
	// PairTimeout is how long a candidate pair is checked before it is
	// given up (pion MaxBindingRequests = PairTimeout/CheckInterval).
	// 0 = 4 s.
	PairTimeout time.Duration
	// KeepaliveInterval paces STUN keepalives on the selected pair when no
	// traffic flows; it bounds how late a dead path is noticed. 0 = 1 s.
	KeepaliveInterval time.Duration
	// DisconnectedTimeout without hearing from the peer reports
	// Direct(false). 0 = 3 s.
	DisconnectedTimeout time.Duration
	// FailedTimeout after disconnection the agent fails and a restart is
	// scheduled. Connecting also fails after DisconnectedTimeout +
	// FailedTimeout. 0 = 2 s.
	FailedTimeout time.Duration
	// RetryMin and RetryMax bound the backoff between ICE restarts of the
	// controlling side: RetryMin after the first failure, doubling up to
	// RetryMax, reset when the path comes up. 0 = 1 s and 60 s.
	RetryMin, RetryMax time.Duration
	// STUNRefresh is how often the mapped address is re-queried (and the
	// lifetime of pion's cached copy). 0 = 20 s.
	STUNRefresh time.Duration
	// GatherWait is how long the first Signal of a Generation waits for
	// gathering to complete before it is sent with the candidates so far
	// (later candidates follow in further Signals). 0 = 200 ms.
	GatherWait time.Duration
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.CheckInterval, DefaultCheckInterval)
	def(&o.PairTimeout, DefaultPairTimeout)
	def(&o.KeepaliveInterval, DefaultKeepaliveInterval)
	def(&o.DisconnectedTimeout, DefaultDisconnectedTimeout)
	def(&o.FailedTimeout, DefaultFailedTimeout)
	def(&o.RetryMin, DefaultRetryMin)
	def(&o.RetryMax, DefaultRetryMax)
	def(&o.STUNRefresh, DefaultSTUNRefresh)
	def(&o.GatherWait, DefaultGatherWait)
	if o.RetryMax < o.RetryMin {
		o.RetryMax = o.RetryMin
	}
}

// maxBindingRequests converts PairTimeout to pion's per-pair request budget.
func (o *Options) maxBindingRequests() uint16 {
	n := o.PairTimeout / o.CheckInterval
	switch {
	case n < 1:
		n = 1
	case n > 1000:
		n = 1000
	}
	return uint16(n)
}
