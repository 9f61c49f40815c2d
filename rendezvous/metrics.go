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
	"natchat/wire"
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
	socketDrops   prometheus.Counter
	mailStored    prometheus.Counter
	mailDelivered prometheus.Counter
	mailExpired   prometheus.Counter
	mailRejected  *prometheus.CounterVec
	roomJoins     prometheus.Counter
	roomLeaves    *prometheus.CounterVec
	roomRefused   *prometheus.CounterVec
	rooms         prometheus.Gauge
	roomMembers   prometheus.Gauge
}

func newMetrics(names Names, mail Mailboxes) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		registrations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "natchat_rendezvous_registrations_total", Help: "Accepted registrations, re-registrations included.",
		}),
		online: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "natchat_rendezvous_online_nodes", Help: "Nodes registered now.",
		}),
		stun: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "natchat_rendezvous_stun_responses_total", Help: "STUN Binding responses sent: successes, and 420 errors for unknown comprehension-required attributes.",
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
		socketDrops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "natchat_rendezvous_socket_drops_total",
			Help: "Datagrams the kernel dropped on the rendezvous's sockets, their receive buffers full (Linux, SO_RXQ_OVFL; counted when the next datagram is read). Raise -socket-buffer (and net.core.rmem_max) when it grows.",
		}),
		mailStored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "natchat_rendezvous_mail_stored_total", Help: "Messages stored in a mailbox (durably, before the sender was told).",
		}),
		mailDelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "natchat_rendezvous_mail_delivered_total", Help: "Mailbox messages their recipient acknowledged (and so deleted).",
		}),
		mailExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "natchat_rendezvous_mail_expired_total", Help: "Mailbox messages deleted unread for their age.",
		}),
		mailRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "natchat_rendezvous_mail_rejected_total",
			Help: "Deposits not stored, by reason: the MailPutReply status (online: the sender was told to deliver live), or error (a failed write, answered busy).",
		}, []string{"reason"}),
		roomJoins: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "natchat_rendezvous_room_joins_total", Help: "Room joins recorded (durably), default-room joins of new keys included.",
		}),
		roomLeaves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "natchat_rendezvous_room_leaves_total", Help: "Members taken out of rooms (durably), by reason: part, or expired (away longer than the mailbox age).",
		}, []string{"reason"}),
		roomRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "natchat_rendezvous_room_refused_total", Help: "Room joins and parts refused, by the RoomReply status.",
		}, []string{"reason"}),
		rooms: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "natchat_rendezvous_rooms", Help: "Rooms with members.",
		}),
		roomMembers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "natchat_rendezvous_room_members", Help: "Members of all rooms together, online or not.",
		}),
	}
	mailMessages := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "natchat_rendezvous_mailbox_messages", Help: "Messages waiting in mailboxes.",
	}, func() float64 { n, _ := mail.MailTotals(); return float64(n) })
	mailBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "natchat_rendezvous_mailbox_bytes", Help: "Bytes (sealed blobs) waiting in mailboxes.",
	}, func() float64 { _, b := mail.MailTotals(); return float64(b) })
	bound := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "natchat_rendezvous_bound_names", Help: "Names bound to keys (registered at least once, not yet released).",
	}, func() float64 { return float64(names.Len()) })
	m.reg.MustRegister(bound, m.registrations, m.online, m.stun, m.relayedPkts, m.relayedBytes, m.signals, m.roams, m.dropped, m.socketDrops,
		m.mailStored, m.mailDelivered, m.mailExpired, m.mailRejected, mailMessages, mailBytes,
		m.roomJoins, m.roomLeaves, m.roomRefused, m.rooms, m.roomMembers,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, r := range []string{relay.DropMalformed, relay.DropVersion, relay.DropUnknownType, relay.DropBadCookie,
		relay.DropBadSignature, relay.DropNotRegistered, relay.DropRateLimited, relay.DropOffline, relay.DropReplay,
		relay.DropSourceLimited, relay.DropNotSTUN, relay.DropBadHandshake, relay.DropBusy, relay.DropOpen,
		relay.DropUnvalidated, relay.DropQuota} {
		m.dropped.WithLabelValues(r) // export every reason from the start, at zero
	}
	for _, st := range []wire.MailStatus{wire.MailOnline, wire.MailUnknown, wire.MailFull, wire.MailShare, wire.MailTooBig, wire.MailBusy} {
		m.mailRejected.WithLabelValues(st.String())
	}
	m.mailRejected.WithLabelValues(mailRejectError)
	for _, r := range []string{roomLeftPart, roomLeftExpired} {
		m.roomLeaves.WithLabelValues(r)
	}
	for _, st := range []wire.RoomStatus{wire.RoomFull, wire.RoomTooMany, wire.RoomNotMember, wire.RoomBadName, wire.RoomBusy, wire.RoomFailed} {
		m.roomRefused.WithLabelValues(st.String())
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
