// Command rendezvous is natchat's meeting point: STUN, registration,
// presence, introductions, relay, the offline mailbox and chat rooms' members
// on one UDP port, and optionally STUN alone on a second one (-stun-alt),
// for nodes' /netcheck.
//
//	rendezvous -addr :3478 -stun-alt :3479
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"natchat/internal/cmdutil"
	"natchat/relay"
	"natchat/rendezvous"
	"natchat/wire"
)

func main() { cmdutil.Exit("rendezvous", run(os.Args[1:])) }

func defaultDataDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "natchat-rendezvous")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "natchat-rendezvous")
	}
	return "natchat-rendezvous"
}

func run(args []string) error {
	fs := flag.NewFlagSet("rendezvous", flag.ContinueOnError)
	addr := fs.String("addr", ":3478", "UDP address to serve on (IPv4 and IPv6)")
	data := fs.String("data", defaultDataDir(), "directory for the database (name bindings, offline mailboxes, rooms)")
	expiry := fs.Duration("expiry", 60*time.Second, "drop a node after this much silence")
	heartbeat := fs.Duration("heartbeat", 25*time.Second, "heartbeat interval suggested to nodes")
	room := fs.String("default-room", rendezvous.DefaultRoom, `room every new node is put in, once ("" for none)`)
	metrics := fs.String("metrics", "", "serve Prometheus metrics on this TCP host:port (off when empty)")
	pprofAddr := fs.String("pprof", "", "serve Go's profiler (net/http/pprof, /debug/pprof/) on this TCP host:port, e.g. 127.0.0.1:6060; off when empty. It exposes memory and stacks: keep it on loopback")
	sourceRate := fs.Int("source-rate", 50, "unauthenticated replies (STUN answers, cookies, errors) per second per source network, /24 or /56, burst twice that (-1 unlimited). Users behind one carrier-grade NAT share a network's budget: raise it when many do")
	stunAlt := fs.String("stun-alt", "", "also answer STUN Binding requests (only) on this UDP host:port, another port on the -addr IP, e.g. :3479, so that nodes can tell how their NAT maps (/netcheck); off when empty")
	pps := fs.Int("relay-pps", relay.DefaultPacketsPerSec, "relayed packets per second per node (-1 unlimited)")
	bps := fs.Int("relay-bps", relay.DefaultBytesPerSec, "relayed bytes per second per node (-1 unlimited): what a file through the relay gets")
	smallPPS := fs.Int("relay-small-pps", relay.DefaultSmallPacketsPerSec, "relayed small packets (chat, acknowledgements) per second per node, apart from -relay-pps (-1 unlimited)")
	newNames := fs.Int("new-names", 30, "new names registered per network (/24, /56) per hour (-1 unlimited)")
	lookupRate := fs.Int("lookup-rate", 20, "lookups per second per node (-1 unlimited)")
	introRate := fs.Int("intro-rate", 10, "introductions (signalling a new peer) per second per node (-1 unlimited)")
	bindingTTL := fs.Duration("binding-ttl", 180*24*time.Hour, "release a name not registered for this long (-1s: never)")
	bigRoom := fs.Int("big-room", 200, "rooms above this size no longer broadcast every join and leave")
	mailCount := fs.Int("mailbox-count", rendezvous.DefaultMailboxCount, "messages waiting in one node's offline mailbox (-1 unlimited)")
	mailBytes := fs.Int64("mailbox-bytes", rendezvous.DefaultMailboxBytes, "bytes waiting in one node's offline mailbox (-1 unlimited)")
	mailSenderCount := fs.Int("mailbox-sender-count", rendezvous.DefaultMailboxSenderCount, "messages one sender may have waiting in all mailboxes together (-1 unlimited)")
	mailSenderBytes := fs.Int64("mailbox-sender-bytes", rendezvous.DefaultMailboxSenderBytes, "bytes one sender may have waiting in all mailboxes together (-1 unlimited)")
	mailShare := fs.Int("mailbox-share", rendezvous.DefaultMailboxShare, "percent of a mailbox's count and bytes one sender may fill (1-100, -1 no share limit)")
	mailAge := fs.Duration("mailbox-age", rendezvous.DefaultMailboxAge, "delete a mailbox message unread after this long and tell its sender, and take a member away this long out of its rooms (-1s: never)")
	roomMembers := fs.Int("room-members", rendezvous.DefaultRoomMembers, "members of one room, the default room excepted (-1 unlimited)")
	roomsPerNode := fs.Int("rooms-per-node", rendezvous.DefaultRoomsPerNode, "rooms one node may be in, the default room not counted (-1 unlimited)")
	sockets := fs.Int("sockets", 0, "UDP sockets on -addr (SO_REUSEPORT, Linux), each read by its own loop, so that more cores answer; the kernel keeps each source on one socket. 0: min(GOMAXPROCS, 2) on Linux, 1 elsewhere")
	sockBuf := fs.Int("socket-buffer", rendezvous.DefaultSocketBuffer, "UDP receive and send buffer in bytes, for bursts (-1: the system's default; capped by net.core.rmem_max and wmem_max)")
	gcPercent := fs.Int("gc-percent", defaultGCPercent, "how far, in percent, the Go heap may grow past what is live before it is collected (Go's GOGC, whose default is 100); the lower, the closer the resident memory follows the nodes online, for a little more CPU while many register. GOGC in the environment applies when this flag is not given. -1: only GOMEMLIMIT collects")
	printKey := fs.Bool("print-key", false, "print the rendezvous's public key (creating it in -data if need be) and exit")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error, disabled")
	version := fs.Bool("version", false, "print the version and exit")
	preload := benchPreloadFlags(fs)
	if err := cmdutil.Parse(fs, args); err != nil {
		return err
	}
	if *version {
		os.Stdout.WriteString(cmdutil.VersionString("rendezvous") + "\n")
		return nil
	}
	if err := cmdutil.CheckHostPort("addr", *addr, false); err != nil {
		return err
	}
	if *metrics != "" {
		if err := cmdutil.CheckHostPort("metrics", *metrics, false); err != nil {
			return err
		}
	}
	if *stunAlt != "" {
		if err := cmdutil.CheckHostPort("stun-alt", *stunAlt, true); err != nil {
			return err
		}
	}
	if *pprofAddr != "" {
		if err := cmdutil.CheckHostPort("pprof", *pprofAddr, false); err != nil {
			return err
		}
	}
	switch {
	case *expiry <= 0:
		return cmdutil.Usagef("-expiry must be positive")
	case *heartbeat <= 0 || *heartbeat >= *expiry:
		return cmdutil.Usagef("-heartbeat must be positive and shorter than -expiry")
	case *room != "" && wire.ValidateRoom(*room) != nil:
		return cmdutil.Usagef("-default-room %q: %v", *room, wire.ValidateRoom(*room))
	case *pps == 0 || *bps == 0 || *smallPPS == 0:
		return cmdutil.Usagef("-relay-pps, -relay-bps and -relay-small-pps must be positive or -1")
	case *data == "":
		return cmdutil.Usagef("-data must not be empty")
	case *newNames == 0 || *lookupRate == 0 || *introRate == 0:
		return cmdutil.Usagef("-new-names, -lookup-rate and -intro-rate must be positive or -1")
	case *bindingTTL == 0:
		return cmdutil.Usagef("-binding-ttl must be positive (or negative: never)")
	case *bigRoom <= 0:
		return cmdutil.Usagef("-big-room must be positive")
	case *mailCount == 0 || *mailBytes == 0:
		return cmdutil.Usagef("-mailbox-count and -mailbox-bytes must be positive or -1")
	case *mailSenderCount == 0 || *mailSenderBytes == 0:
		return cmdutil.Usagef("-mailbox-sender-count and -mailbox-sender-bytes must be positive or -1")
	case *mailShare == 0 || *mailShare > 100:
		return cmdutil.Usagef("-mailbox-share must be 1 to 100, or -1")
	case *mailAge == 0:
		return cmdutil.Usagef("-mailbox-age must be positive (or negative: never)")
	case *roomMembers == 0 || *roomsPerNode == 0:
		return cmdutil.Usagef("-room-members and -rooms-per-node must be positive or -1")
	case *sockets < 0 || *sockets > 64:
		return cmdutil.Usagef("-sockets must be 0 to 64")
	case *sockBuf == 0 || *sockBuf < -1:
		return cmdutil.Usagef("-socket-buffer must be positive or -1")
	case *sourceRate == 0 || *sourceRate < -1 || *sourceRate > 1e9:
		return cmdutil.Usagef("-source-rate must be 1 to 1e9, or -1")
	case *gcPercent == 0 || *gcPercent < -1 || *gcPercent > 10000:
		return cmdutil.Usagef("-gc-percent must be 1 to 10000, or -1")
	}
	setGCPercent(fs, *gcPercent)
	key, created, err := rendezvous.LoadOrCreateKey(*data)
	if err != nil {
		return err
	}
	if *printKey {
		os.Stdout.WriteString(key.Public.String() + "\n")
		return nil
	}
	log, err := cmdutil.Logger(os.Stderr, *logLevel)
	if err != nil {
		return cmdutil.Usagef("%v", err)
	}
	if created {
		log.Info().Str("file", filepath.Join(*data, rendezvous.KeyFile)).Msg("created the rendezvous's key")
	}
	store, err := rendezvous.OpenStore(*data)
	if err != nil {
		return err
	}
	defer store.Close()
	if *sockets == 0 {
		*sockets = defaultSockets()
	}
	conns, err := rendezvous.ListenUDP(context.Background(), *addr, *sockets)
	if err != nil {
		return err
	}
	conn := conns[0]
	var alt net.PacketConn
	if *stunAlt != "" {
		if alt, err = net.ListenPacket("udp", *stunAlt); err != nil {
			for _, c := range conns {
				c.Close()
			}
			return fmt.Errorf("-stun-alt: %w", err)
		}
	}
	closeConns := func() {
		for _, c := range conns {
			c.Close()
		}
		if alt != nil {
			alt.Close()
		}
	}
	srv, err := rendezvous.New(rendezvous.Options{
		Conn: conn, MoreConns: conns[1:], AltSTUN: alt, Store: store, Logger: log,
		Expiry: *expiry, Heartbeat: *heartbeat, DefaultRoom: *room,
		Relay: relay.Limits{PacketsPerSec: *pps, BytesPerSec: *bps, SmallPacketsPerSec: *smallPPS},
		Key:   key, NewNames: *newNames, LookupRate: *lookupRate, IntroRate: *introRate,
		BindingTTL: *bindingTTL, BigRoom: *bigRoom,
		MailboxCount: *mailCount, MailboxBytes: *mailBytes, MailboxShare: *mailShare, MailboxAge: *mailAge,
		MailboxSenderCount: *mailSenderCount, MailboxSenderBytes: *mailSenderBytes,
		RoomMembers: *roomMembers, RoomsPerNode: *roomsPerNode, SocketBuffer: *sockBuf,
		SourceRate: *sourceRate,
	})
	if err != nil {
		closeConns()
		return err
	}
	if err := preload(srv); err != nil {
		closeConns()
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *metrics != "" {
		stopMetrics, err := rendezvous.ServeMetrics(ctx, *metrics, srv, log)
		if err != nil {
			closeConns()
			return err
		}
		defer stopMetrics()
	}
	if *pprofAddr != "" {
		stopPprof, err := servePprof(*pprofAddr)
		if err != nil {
			closeConns()
			return err
		}
		defer stopPprof()
		log.Warn().Str("addr", *pprofAddr).Msg("serving the Go profiler at /debug/pprof/: keep it private")
	}
	if alt != nil {
		log.Info().Stringer("addr", alt.LocalAddr()).Msg("second STUN address listening")
	}
	log.Info().Stringer("addr", conn.LocalAddr()).Int("sockets", len(conns)).Str("data", *data).Str("version", cmdutil.Version).
		Str("key", key.Public.String()).Str("fingerprint", key.Public.Fingerprint()).Msg("rendezvous listening")
	fmt.Fprintf(os.Stderr, "rendezvous key %s (fingerprint %s): nodes may pin it with -rv HOST:PORT#%s\n",
		key.Public, key.Public.Fingerprint(), key.Public)
	return srv.Run(ctx)
}

// defaultSockets is -sockets 0: two read loops where the kernel spreads
// a port's sources over its sockets (Linux) and two cores can run them.
// On a 2-vCPU VM (natbench, ours alone, alternated) a second socket gave
// about +10-50 % STUN answers/s at 4 and 16 client sockets and up to
// +20 % relayed packets/s at 4 pairs, nothing with one client, at the
// same CPU per operation. The loops share the Server's lock (held per
// read batch, the system calls outside it); more than two are not
// measured.
func defaultSockets() int {
	if runtime.GOOS != "linux" {
		return 1
	}
	return min(runtime.GOMAXPROCS(0), 2)
}

// servePprof serves net/http/pprof's handlers on their own mux (not
// http.DefaultServeMux, where importing the package also puts them, and
// which nothing here serves) at addr until the returned function is
// called: the profile of the real read loop, for the operator.
func servePprof(addr string) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// No write timeout: a CPU profile or trace takes as long as asked.
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		hs.Serve(ln)
	}()
	return func() { hs.Close(); <-done }, nil
}

// defaultGCPercent is -gc-percent's default. A rendezvous's heap is
// mostly its nodes' records, live for as long as the nodes are online,
// and little is allocated per packet (nothing per relayed packet or STUN
// answer, ~200 bytes per heartbeat): a collection costs in proportion to
// the records but is seldom due, so its CPU is small at any GOGC, while
// the resident memory is about (1 + GOGC/100) × 1.1 × the records. At
// Go's 100 a million nodes take ~660 MiB, at 40 ~490 (docs/BENCHMARKS.md).
const defaultGCPercent = 40

// setGCPercent applies -gc-percent, unless it was not given and GOGC is
// set (the operator's environment wins over our default).
func setGCPercent(fs *flag.FlagSet, percent int) {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "gc-percent" })
	if given || os.Getenv("GOGC") == "" {
		debug.SetGCPercent(percent)
	}
}
