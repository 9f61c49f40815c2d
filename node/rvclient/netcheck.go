package rvclient

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/pion/stun/v2"

	"natchat/wire"
)

// NetCheck's timing: a request is sent again every netCheckRetry until
// answered, and the check gives up on what is unanswered after
// netCheckTimeout.
const (
	netCheckRetry   = 500 * time.Millisecond
	netCheckTimeout = 3 * time.Second
)

// Mapping is a NAT's mapping behaviour, as NetCheck infers it from two
// STUN answers (RFC 4787 §4.1).
type Mapping int

const (
	// MappingUnknown: fewer than two STUN answers.
	MappingUnknown Mapping = iota
	// MappingIndependent: the same public endpoint toward both STUN
	// addresses. Hole punching works (with port-restricted filtering, when
	// the peer's mapping is independent too).
	MappingIndependent
	// MappingDependent: another public endpoint toward each STUN address
	// (a symmetric NAT). A peer cannot guess the endpoint the NAT gives
	// toward it: most peers stay on the relay.
	MappingDependent
)

func (m Mapping) String() string {
	switch m {
	case MappingIndependent:
		return "endpoint-independent"
	case MappingDependent:
		return "endpoint-dependent"
	default:
		return "unknown"
	}
}

// NetReport is what NetCheck learned. An invalid address is one not
// known.
type NetReport struct {
	// Observed is our endpoint as the rendezvous last saw it, from our
	// registration or its last HeartbeatAck (authenticated).
	Observed netip.AddrPort
	// Server is the rendezvous's address, its main STUN address, and
	// Mapped our endpoint in its STUN answer.
	Server, Mapped netip.AddrPort
	// Alt is the rendezvous's second STUN address (its IP, the port its
	// HeartbeatAck announced), and AltMapped our endpoint in its answer.
	Alt, AltMapped netip.AddrPort
	// Mapping is inferred from Mapped and AltMapped; Detail says how, or
	// why it is unknown.
	Mapping Mapping
	Detail  string
}

// Public returns our distinct public endpoints: Observed, Mapped and
// AltMapped, in that order, each once.
func (r NetReport) Public() []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range []netip.AddrPort{r.Observed, r.Mapped, r.AltMapped} {
		if a.IsValid() && !containsAddr(out, a) {
			out = append(out, a)
		}
	}
	return out
}

func containsAddr(as []netip.AddrPort, a netip.AddrPort) bool {
	for _, b := range as {
		if a == b {
			return true
		}
	}
	return false
}

// infer sets Mapping and Detail from the answers; noAlt says why there
// is no second STUN address to ask, when Alt is not valid.
func (r *NetReport) infer(noAlt string) {
	if r.Mapped.IsValid() && r.AltMapped.IsValid() {
		if r.Mapped == r.AltMapped {
			r.Mapping = MappingIndependent
			r.Detail = fmt.Sprintf("%s toward both %s and %s", r.Mapped, r.Server, r.Alt)
		} else {
			r.Mapping = MappingDependent
			r.Detail = fmt.Sprintf("%s toward %s but %s toward %s", r.Mapped, r.Server, r.AltMapped, r.Alt)
		}
		return
	}
	var why []string
	if !r.Mapped.IsValid() {
		why = append(why, "no answer from "+r.Server.String())
	}
	switch {
	case !r.Alt.IsValid():
		why = append(why, noAlt)
	case !r.AltMapped.IsValid():
		why = append(why, "no answer from "+r.Alt.String())
	}
	r.Mapping, r.Detail = MappingUnknown, strings.Join(why, "; ")
}

// netCheck is one NetCheck running.
type netCheck struct {
	wake chan struct{} // cap 1: an answer or an ack came
	// acked: a HeartbeatAck came since the check began, so the second
	// STUN port is current. Guarded by Client.mu.
	acked bool
}

func (nc *netCheck) poke() {
	select {
	case nc.wake <- struct{}{}:
	default:
	}
}

// stunProbe is one of NetCheck's STUN Binding requests. Its fields are
// guarded by Client.mu.
type stunProbe struct {
	check  *netCheck
	to     netip.AddrPort // where it goes, and the only source its answer is believed from
	req    []byte
	send   func([]byte)
	mapped netip.AddrPort // from the answer; invalid until one comes
}

// probeLocked builds a Binding request to to, registers it under its
// transaction ID and sends it with send.
func (c *Client) probeLocked(nc *netCheck, to netip.AddrPort, send func([]byte)) *stunProbe {
	p := &stunProbe{check: nc, to: to, send: send}
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		c.log.Error().Err(err).Msg("stun build")
		return p // never answered: reported as no answer
	}
	p.req = req.Raw
	c.probes[req.TransactionID] = p
	send(p.req)
	return p
}

// NetCheck asks the rendezvous's two STUN addresses for our public
// endpoint and infers how our NAT maps (RFC 4787): a Binding request to
// the rendezvous's address and one to its second STUN address (its IP,
// the port its HeartbeatAcks announce; a Heartbeat sent first brings a
// fresh ack when it is not known yet), each sent again every 500 ms until
// answered, for at most 3 s (or until ctx is done). An answer is believed
// only with the transaction ID of our request and from the address it
// went to. It never fails: what went unanswered is in the report.
func (c *Client) NetCheck(ctx context.Context) NetReport {
	ctx, cancel := context.WithTimeout(ctx, netCheckTimeout)
	defer cancel()
	r := NetReport{Server: c.opts.Addr}
	if !r.Server.IsValid() {
		r.Observed = c.Observed()
		r.Detail = "the rendezvous's address is not known"
		return r
	}
	nc := &netCheck{wake: make(chan struct{}, 1)}
	c.mu.Lock()
	registered := c.state == stRegistered
	c.checks[nc] = struct{}{}
	if registered {
		c.sendSealedLocked(&wire.Heartbeat{})
	}
	main := c.probeLocked(nc, r.Server, c.opts.Send)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.checks, nc)
		for tx, p := range c.probes {
			if p.check == nc {
				delete(c.probes, tx)
			}
		}
		c.mu.Unlock()
	}()

	var alt *stunProbe
	tick := time.NewTicker(netCheckRetry)
	defer tick.Stop()
wait:
	for {
		c.mu.Lock()
		if alt == nil && c.altSTUN != 0 && c.opts.SendTo != nil {
			to := netip.AddrPortFrom(r.Server.Addr(), c.altSTUN)
			alt = c.probeLocked(nc, to, func(b []byte) { c.opts.SendTo(b, to) })
		}
		// Without a second port, wait for the ack that says whether
		// there is one (when registered: unregistered, none comes).
		done := main.mapped.IsValid() &&
			((alt != nil && alt.mapped.IsValid()) || (alt == nil && (nc.acked || !registered)))
		c.mu.Unlock()
		if done {
			break
		}
		select {
		case <-ctx.Done():
			break wait
		case <-nc.wake:
		case <-tick.C:
			c.mu.Lock()
			for _, p := range []*stunProbe{main, alt} {
				if p != nil && p.req != nil && !p.mapped.IsValid() {
					p.send(p.req) // the same transaction, sent again (RFC 8489 §6.2.1)
				}
			}
			if registered && !nc.acked && c.state == stRegistered {
				c.sendSealedLocked(&wire.Heartbeat{})
			}
			c.mu.Unlock()
		}
	}

	c.mu.Lock()
	r.Observed, r.Mapped = c.observed, main.mapped
	if alt != nil {
		r.Alt, r.AltMapped = alt.to, alt.mapped
	}
	var noAlt string
	switch {
	case c.opts.SendTo == nil:
		noAlt = "this node cannot send to a second STUN address"
	case !registered:
		noAlt = "not registered: the rendezvous announces its second STUN address to registered nodes"
	case !nc.acked:
		noAlt = "no heartbeat answer from the rendezvous, which announces its second STUN address"
	default:
		noAlt = "the rendezvous has no second STUN address (-stun-alt)"
	}
	c.mu.Unlock()
	r.infer(noAlt)
	return r
}
