package main

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"strings"
	"time"
)

// fmtNum prints a figure with a precision that suits its size.
func fmtNum(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "–"
	case v == 0:
		return "0"
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func fmtSummary(s summary) string {
	if s.N == 0 {
		return "–"
	}
	if s.N == 1 {
		return fmtNum(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", fmtNum(s.Median), fmtNum(s.Min), fmtNum(s.Max))
}

func fmtRatio(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", r)
}

// writeMarkdown writes the table: one line per row and metric, medians
// with their min–max over the repetitions, and ours/coturn.
func (b *bench) writeMarkdown(w io.Writer, steal float64) {
	fmt.Fprintf(w, "natbench %s, %d rep(s), %v window after %v warm-up, GOMAXPROCS %d, %d CPUs, load average %s before the rows\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), b.cfg.reps, b.cfg.window, b.cfg.warm, runtime.GOMAXPROCS(0), runtime.NumCPU(), b.loadBefore)
	if b.stunServer != "" {
		fmt.Fprintf(w, "STUN rows, ours: %s.\n", b.stunServer)
	}
	if b.hasKind("relay") {
		fmt.Fprintf(w, "Relay rows, ours: %s.\n", strings.Join(append([]string{"cmd/rendezvous -relay-pps -1 -relay-bps -1 -relay-small-pps -1 -new-names -1"}, b.cfg.oursFlags...), " "))
	}
	if b.hasKind("reg") {
		fmt.Fprintf(w, "Registered-nodes rows, ours only (coturn has no registrations: no counterpart): %s built with "+
			"-tags natbench preloads N nodes (rendezvous.Preload: the registration path after the Noise handshake, "+
			"without the durable writes; each node has its own session keys) from %d source addresses on 127.64.0.0/10; "+
			"natbench sends each node a real sealed Heartbeat every %v (the node's interval, not scaled down), %v warm-up, "+
			"%v window. RSS B/node: (VmRSS at the window's end − %.1f MiB, the same binary with no node) / N; "+
			"peak RSS: VmHWM then (the preload's registrations included). "+
			"Server CPU is all the process's (heartbeats, expiry sweeps, GC; with no node it takes %.2f %% of a core) "+
			"per heartbeat sent in the window. Kernel drops: the drops column of /proc/net/udp over the window "+
			"(and from the first heartbeat, warm-up included). "+
			"Unanswered: heartbeats without a HeartbeatAck, warm-up and window.\n",
			strings.Join(append([]string{"cmd/rendezvous"}, b.cfg.oursFlags...), " "), b.cfg.regSockets, b.cfg.regHB, b.cfg.regWarm, b.cfg.regWindow, float64(b.regBaseRSS)/(1<<20), 100*b.regIdleCPU)
	}
	if b.hasKind("msg") {
		b.writeMsgNote(w)
	}
	fmt.Fprintln(w)
	if b.coturnSkipped != "" {
		fmt.Fprintf(w, "coturn: skipped: %s\n\n", b.coturnSkipped)
	}
	fmt.Fprintln(w, "| row | metric | ours: median (min–max) | coturn: median (min–max) | ours/coturn |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|")
	for _, r := range b.rows {
		for _, m := range r.metrics {
			o, c := summarize(r.ours[m.name]), summarize(r.coturn[m.name])
			if o.N == 0 && c.N == 0 {
				continue
			}
			rt := ratio(o.Median, c.Median)
			if m.noRatio {
				rt = math.NaN()
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", r.label, m.name, fmtSummary(o), fmtSummary(c), fmtRatio(rt))
		}
	}
	fmt.Fprintln(w)
	if !math.IsNaN(steal) {
		fmt.Fprintf(w, "Steal (time the VM's host took, /proc/stat): %.1f %% over the run, %.1f–%.1f %% per window.\n",
			100*steal, 100*b.stealMin, 100*b.stealMax)
	}
}

// hasKind reports whether a row of kind was measured.
func (b *bench) hasKind(kind string) bool {
	for _, r := range b.rows {
		if r.kind == kind {
			return true
		}
	}
	return false
}
