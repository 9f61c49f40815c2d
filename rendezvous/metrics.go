package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"

	"natchat/relay"
)

// metrics are the operator's view of a Server. Each Server has its own
// registry, so tests and several servers in one process do not collide.
type metrics struct {
	reg           *prometheus.Registry
	registrations prometheus.Counter
	online        prometheus.Gauge
	stun          prometheus.Counter
	relayedPkts   prometheus.Counter
	relayedBytes  prometheus.Counter
	signals       prometheus.Counter
	roams         prometheus.Counter
	dropped       *prometheus.CounterVec
}

func newMetrics(names Names) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		registrations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "natchat_rendezvous_registrations_total", Help: "Accepted registrations, re-registrations included.",
		}),
		online: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "natchat_rendezvous_online_nodes", Help: "Nodes registered now.",
		}),
		stun: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "natchat_rendezvous_stun_responses_total", Help: "STUN Binding success responses sent.",
		}),
		relayedPkts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "natchat_rendezvous_relayed_packets_total", Help: "Packets relayed between nodes.",
		}),
		relayedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "natchat_rendezvous_relayed_bytes_total", Help: "Payload bytes relayed between nodes.",
		}),
		signals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "natchat_rendezvous_signals_total", Help: "Signaling messages forwarded between nodes.",
		}),
		roams: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "natchat_rendezvous_roams_total", Help: "Sessions moved to a new address after it answered a path challenge.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "natchat_rendezvous_dropped_packets_total", Help: "Packets dropped, by reason.",
		}, []string{"reason"}),
	}
	bound := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "natchat_rendezvous_bound_names", Help: "Names bound to keys (registered at least once, not yet released).",
	}, func() float64 { return float64(names.Len()) })
	m.reg.MustRegister(bound, m.registrations, m.online, m.stun, m.relayedPkts, m.relayedBytes, m.signals, m.roams, m.dropped,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, r := range []string{relay.DropMalformed, relay.DropVersion, relay.DropUnknownType, relay.DropBadCookie,
		relay.DropBadSignature, relay.DropNotRegistered, relay.DropRateLimited, relay.DropOffline, relay.DropReplay,
		relay.DropSourceLimited, relay.DropNotSTUN, relay.DropBadHandshake, relay.DropBusy, relay.DropOpen,
		relay.DropUnvalidated, relay.DropQuota} {
		m.dropped.WithLabelValues(r) // export every reason from the start, at zero
	}
	return m
}

// ServeMetrics serves s's metrics at /metrics on the TCP address addr until
// the returned stop function is called (or ctx ends).
func ServeMetrics(ctx context.Context, addr string, s *Server, log zerolog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", s.MetricsHandler())
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("metrics server")
		}
	}()
	log.Info().Stringer("addr", ln.Addr()).Msg("serving metrics at /metrics")
	var once sync.Once
	stop = func() {
		once.Do(func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			hs.Shutdown(sctx)
			<-done
		})
	}
	go func() {
		select {
		case <-ctx.Done():
			stop()
		case <-done:
		}
	}()
	return stop, nil
}
