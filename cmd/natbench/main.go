// Command natbench measures the rendezvous beside coturn on loopback:
// STUN Binding answers per second and their latency, relay throughput,
// and each server's CPU per operation and resident memory. It builds and
// starts the servers itself, runs each row as ours, coturn, ours, coturn
// (-reps times), and prints a Markdown table of medians, spreads (min–max)
// and the ratio ours/coturn.
//
// Two kinds of rows have no coturn counterpart and measure ours alone:
//
//   - registered nodes (-only reg): cmd/rendezvous built with -tags
//     natbench preloads N simulated nodes (-reg-sizes, 10k, 100k and 1M:
//     a few minutes with 3 repetitions), which natbench heartbeats with
//     real sealed datagrams from -reg-sockets addresses on 127.64.0.0/10
//     at the node's interval (25 s); it reports RSS per node, CPU per
//     heartbeat and the kernel's drops for the rendezvous's socket.
//   - messages (-only msg): two cmd/node -headless, direct and relayed,
//     -msg-w messages outstanding; messages/s and send → delivered p50/p99.
//
// Examples:
//
//	go run ./cmd/natbench -reps 3 -md /tmp/bench.md -png docs/bench
//	go run ./cmd/natbench -only reg -reg-sizes 10000,100000
//	go run ./cmd/natbench -only msg -msg-w 1
//	go run ./cmd/natbench -quick      # every kind, one short repetition
//
// coturn (Debian package coturn) is installed when missing and the tool
// runs as root; when it cannot be installed or started, natbench says
// "coturn: skipped: REASON" and measures ours alone.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"
)

type config struct {
	reps        int
	warm        time.Duration
	window      time.Duration
	only        string // "", "stun", "relay", "reg" or "msg"
	stunN       []int
	stunW       int
	relaySizes  []int
	relayPairs  []int
	relayW      int
	regSizes    []int
	regSockets  int
	regHB       time.Duration // the nodes' heartbeat interval
	regWarm     time.Duration
	regWindow   time.Duration
	msgW        int
	msgWindow   time.Duration
	noCoturn    bool
	oursFlags   []string // more flags for our servers (cmd/rendezvous)
	md, pngDir  string
	keepWorkDir bool
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "natbench:", err)
		os.Exit(1)
	}
}

func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%q: want positive integers separated by commas", s)
		}
		out = append(out, v)
	}
	return out, nil
}

// flagSet reports whether the flag name was given.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("natbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	fs.IntVar(&c.reps, "reps", 3, "repetitions of each row (each: ours, then coturn)")
	fs.DurationVar(&c.window, "window", 3*time.Second, "measuring window of one repetition")
	fs.DurationVar(&c.warm, "warm", 500*time.Millisecond, "warm-up before each window")
	quick := fs.Bool("quick", false, "one repetition, 300 ms windows, 100 ms warm-up, one registered-nodes size (10000) with a 1 s window (a smoke run)")
	fs.StringVar(&c.only, "only", "", "run only this row kind: stun, relay, reg (registered nodes) or msg (the node's message path)")
	stunN := fs.String("stun-n", "1,4,16", "STUN client sockets, one row each")
	fs.IntVar(&c.stunW, "stun-w", 16, "STUN requests outstanding per socket")
	sizes := fs.String("relay-sizes", "100,1200", "relayed payload sizes in bytes")
	pairs := fs.String("relay-pairs", "1,4", "relay sender/receiver pairs, one row each")
	fs.IntVar(&c.relayW, "relay-w", 64, "relayed packets in flight per pair (sent, not yet received)")
	regSizes := fs.String("reg-sizes", "10000,100000,1000000", "registered nodes (preloaded, heartbeating), one row each")
	fs.IntVar(&c.regSockets, "reg-sockets", 1000, "source addresses (127.64.0.1 up) the registered nodes heartbeat from")
	fs.DurationVar(&c.regHB, "reg-heartbeat", 25*time.Second, "each registered node's heartbeat interval (the node's default: node/rvclient)")
	fs.DurationVar(&c.regWarm, "reg-warm", 3*time.Second, "heartbeating before each registered-nodes window")
	fs.DurationVar(&c.regWindow, "reg-window", 10*time.Second, "measuring window of one registered-nodes repetition")
	fs.IntVar(&c.msgW, "msg-w", 16, "messages outstanding (sent, no delivered yet) in the message rows")
	fs.DurationVar(&c.msgWindow, "msg-window", 5*time.Second, "measuring window of one message-row repetition")
	fs.BoolVar(&c.noCoturn, "no-coturn", false, "measure ours alone")
	oursFlags := fs.String("ours-flags", "", `more flags for our servers, separated by spaces, e.g. "-pprof 127.0.0.1:6060" (with -only: both servers would take the port)`)
	fs.StringVar(&c.md, "md", "", "also write the Markdown table to this file")
	fs.StringVar(&c.pngDir, "png", "", "write PNG bar plots into this directory")
	fs.BoolVar(&c.keepWorkDir, "keep", false, "keep the temporary directory (servers' logs and data)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if c.stunN, err = parseInts(*stunN); err != nil {
		return fmt.Errorf("-stun-n %v", err)
	}
	if c.relaySizes, err = parseInts(*sizes); err != nil {
		return fmt.Errorf("-relay-sizes %v", err)
	}
	if c.relayPairs, err = parseInts(*pairs); err != nil {
		return fmt.Errorf("-relay-pairs %v", err)
	}
	c.oursFlags = strings.Fields(*oursFlags)
	if c.regSizes, err = parseInts(*regSizes); err != nil {
		return fmt.Errorf("-reg-sizes %v", err)
	}
	if *quick {
		c.reps, c.window, c.warm = 1, 300*time.Millisecond, 100*time.Millisecond
		c.regWarm, c.regWindow, c.msgWindow = 500*time.Millisecond, time.Second, time.Second
		if !flagSet(fs, "reg-sizes") {
			c.regSizes = []int{10000}
		}
	}
	switch {
	case c.reps < 1:
		return fmt.Errorf("-reps must be at least 1")
	case c.window <= 0 || c.warm < 0:
		return fmt.Errorf("-window must be positive and -warm not negative")
	case c.only != "" && c.only != "stun" && c.only != "relay" && c.only != "reg" && c.only != "msg":
		return fmt.Errorf("-only %q: want stun, relay, reg or msg", c.only)
	case c.stunW < 1 || c.relayW < 1 || c.msgW < 1:
		return fmt.Errorf("-stun-w, -relay-w and -msg-w must be positive")
	case c.regSockets < 1 || c.regHB <= 0 || c.regWindow <= 0 || c.regWarm < 0 || c.msgWindow <= 0:
		return fmt.Errorf("-reg-sockets, -reg-heartbeat, -reg-window and -msg-window must be positive, -reg-warm not negative")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	b := &bench{cfg: c, out: stdout, log: func(f string, a ...any) { fmt.Fprintf(stderr, f+"\n", a...) }}
	return b.run(ctx)
}

// bench is one run of the tool.
type bench struct {
	cfg  config
	out  io.Writer
	log  func(string, ...any)
	rows []*row
	// The servers: ours for STUN (source limit lifted), ours for the
	// relay (cmd/rendezvous, relay limits off), coturn (nil: skipped).
	stunRV, relayRV, coturn *server
	coturnSkipped           string
	stunServer              string // which binary answers the STUN row
	stealMin, stealMax      float64
	loadBefore              string  // /proc/loadavg's 1-, 5- and 15-minute load before the rows
	regBaseRSS              int64   // the natbench build's RSS with no node
	regIdleCPU              float64 // its CPU then, a share of one core
	regExpiryWarned         bool
}

// row is one configuration measured on both servers: metric → one value
// per repetition.
type row struct {
	kind, label  string
	metrics      []metricDef
	ours, coturn map[string][]float64
}

type metricDef struct {
	name    string
	noRatio bool // a ratio means nothing (losses, mostly zero)
}

func newRow(kind, label string, ms ...metricDef) *row {
	return &row{kind: kind, label: label, metrics: ms, ours: map[string][]float64{}, coturn: map[string][]float64{}}
}

func (r *row) add(ours bool, vals map[string]float64) {
	m := r.coturn
	if ours {
		m = r.ours
	}
	for k, v := range vals {
		m[k] = append(m[k], v)
	}
}

func (b *bench) noteSteal(s float64) {
	if math.IsNaN(s) {
		return
	}
	if b.stealMin == 0 && b.stealMax == 0 || s < b.stealMin {
		b.stealMin = s
	}
	b.stealMax = max(b.stealMax, s)
}

// want reports whether rows of kind run (-only).
func (b *bench) want(kind string) bool { return b.cfg.only == "" || b.cfg.only == kind }

func (b *bench) run(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "natbench-")
	if err != nil {
		return err
	}
	if b.cfg.keepWorkDir {
		b.log("work directory: %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	b.log("building the rendezvous")
	rvBin, err := buildRendezvous(ctx, dir)
	if err != nil {
		return err
	}
	defer func() {
		b.stunRV.stop()
		b.relayRV.stop()
		b.coturn.stop()
	}()
	if b.want("stun") {
		// The STUN row needs the per-source limit off: every client is
		// on 127.0.0.1, one /24.
		b.stunServer = strings.Join(append([]string{"cmd/rendezvous -source-rate -1"}, b.cfg.oursFlags...), " ")
		if b.stunRV, err = startOurs("rendezvous-stun", dir, rvBin, append([]string{"-source-rate", "-1"}, b.cfg.oursFlags...)...); err != nil {
			return err
		}
		b.log("STUN row: ours is %s", b.stunServer)
	}
	if b.want("relay") || b.want("msg") {
		if b.relayRV, err = startOurs("rendezvous", dir, rvBin, append([]string{
			"-relay-pps", "-1", "-relay-bps", "-1", "-relay-small-pps", "-1", "-new-names", "-1"}, b.cfg.oursFlags...)...); err != nil {
			return err
		}
	}
	if !b.want("stun") && !b.want("relay") {
		b.coturnSkipped = "no row with a coturn counterpart"
	} else if b.cfg.noCoturn {
		b.coturnSkipped = "-no-coturn"
	} else if bin, err := ensureCoturn(ctx, b.log); err != nil {
		b.coturnSkipped = err.Error()
	} else if b.coturn, err = startCoturn(bin, dir); err != nil {
		b.coturnSkipped = err.Error()
	}
	if b.coturnSkipped != "" {
		b.log("coturn: skipped: %s", b.coturnSkipped)
	}
	b.loadBefore = loadAvg()
	s0 := readSteal()
	if b.want("stun") {
		if err := b.stunRows(ctx); err != nil {
			return err
		}
	}
	if b.want("relay") {
		if err := b.relayRows(ctx); err != nil {
			return err
		}
	}
	// Rows with no coturn counterpart: coturn has no registrations and
	// carries no messages.
	b.coturn.stop()
	b.coturn = nil
	if b.want("reg") {
		if err := b.regRows(ctx, dir); err != nil {
			return err
		}
	}
	if b.want("msg") {
		if err := b.msgRows(ctx, dir); err != nil {
			return err
		}
	}
	steal := stealFraction(s0, readSteal())
	var sb strings.Builder
	b.writeMarkdown(&sb, steal)
	io.WriteString(b.out, sb.String())
	if b.cfg.md != "" {
		if err := os.WriteFile(b.cfg.md, []byte(sb.String()), 0o644); err != nil {
			return err
		}
	}
	if b.cfg.pngDir != "" {
		if err := b.writePNGs(b.cfg.pngDir); err != nil {
			return err
		}
	}
	return nil
}

var stunMetrics = []metricDef{
	{name: "answers/s"}, {name: "p50 µs"}, {name: "p99 µs"},
	{name: "server CPU µs/answer"}, {name: "server RSS MiB"}, {name: "server allocs/answer", noRatio: true},
	{name: "load generator CPU µs/answer"}, {name: "lost", noRatio: true},
}

func (b *bench) stunRows(ctx context.Context) error {
	for _, n := range b.cfg.stunN {
		r := newRow("stun", fmt.Sprintf("STUN N=%d W=%d", n, b.cfg.stunW), stunMetrics...)
		b.rows = append(b.rows, r)
		for rep := range b.cfg.reps {
			for _, s := range []*server{b.stunRV, b.coturn} {
				if s == nil {
					continue
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
				res, err := runSTUN(s, n, b.cfg.stunW, b.cfg.warm, b.cfg.window)
				if err != nil {
					return fmt.Errorf("%s, %s: %w", r.label, s.name, err)
				}
				b.noteSteal(res.steal)
				b.log("%s rep %d %-10s %6.0f answers/s  p50 %v  p99 %v  server %v/answer  rss %.1f MiB  generator %v/answer  lost %d  steal %.0f%%",
					r.label, rep+1, s.name, res.rps, res.p50.Round(time.Microsecond), res.p99.Round(time.Microsecond), res.cpuPerOp.Round(10*time.Nanosecond),
					float64(res.rss)/(1<<20), res.genPerOp.Round(10*time.Nanosecond), res.lost, 100*res.steal)
				vals := map[string]float64{
					"answers/s": res.rps, "p50 µs": us(res.p50), "p99 µs": us(res.p99),
					"server CPU µs/answer": us(res.cpuPerOp), "server RSS MiB": float64(res.rss) / (1 << 20),
					"load generator CPU µs/answer": us(res.genPerOp), "lost": float64(res.lost),
				}
				if !math.IsNaN(res.allocs) {
					vals["server allocs/answer"] = res.allocs
				}
				r.add(s == b.stunRV, vals)
			}
		}
	}
	return nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

var relayMetrics = []metricDef{
	{name: "packets/s"}, {name: "Mbit/s"}, {name: "server CPU µs/packet"},
	{name: "server RSS MiB"}, {name: "server allocs/packet", noRatio: true},
	{name: "load generator CPU µs/packet"}, {name: "loss %", noRatio: true},
}

func (b *bench) relayRows(ctx context.Context) error {
	for _, size := range b.cfg.relaySizes {
		for _, np := range b.cfg.relayPairs {
			r := newRow("relay", fmt.Sprintf("relay %d B, %d pair(s)", size, np), relayMetrics...)
			b.rows = append(b.rows, r)
			for rep := range b.cfg.reps {
				for _, s := range []*server{b.relayRV, b.coturn} {
					if s == nil {
						continue
					}
					if ctx.Err() != nil {
						return ctx.Err()
					}
					var pairs []*pair
					var err error
					if s == b.relayRV {
						pairs, err = oursPairs(s, np, size)
					} else {
						pairs, err = coturnPairs(s, np, size)
					}
					if err != nil {
						return fmt.Errorf("%s, %s: %w", r.label, s.name, err)
					}
					res, err := runRelay(s.pid(), pairs, b.cfg.relayW, b.cfg.warm, b.cfg.window)
					if err != nil {
						return fmt.Errorf("%s, %s: %w", r.label, s.name, err)
					}
					b.noteSteal(res.steal)
					b.log("%s rep %d %-10s %6.0f packets/s  %6.1f Mbit/s  loss %.2f%%  server %v/packet  rss %.1f MiB  generator %v/packet  steal %.0f%%",
						r.label, rep+1, s.name, res.pps, res.mbps, 100*res.loss, res.cpuPerOp.Round(10*time.Nanosecond),
						float64(res.rss)/(1<<20), res.genPerOp.Round(10*time.Nanosecond), 100*res.steal)
					vals := map[string]float64{
						"packets/s": res.pps, "Mbit/s": res.mbps, "loss %": 100 * res.loss,
						"server CPU µs/packet": us(res.cpuPerOp), "server RSS MiB": float64(res.rss) / (1 << 20),
						"load generator CPU µs/packet": us(res.genPerOp),
					}
					if !math.IsNaN(res.allocs) {
						vals["server allocs/packet"] = res.allocs
					}
					r.add(s == b.relayRV, vals)
				}
			}
		}
	}
	return nil
}
