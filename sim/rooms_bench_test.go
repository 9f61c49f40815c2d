package sim

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"natchat/internal/vnetlab"
	"natchat/node/api"
	"natchat/rendezvous"
)

// BenchmarkRoomFanout: one sender and a room of SIM_ROOM members (default
// 100, the sender included) on a vnet WAN with 20 ms one-way delay on
// every path (every node is a public host on the WAN, so node↔node and
// node↔rendezvous each cross it once), on the real clock. After a
// warm-up message, and once the sender has a direct path to every member
// and each member one to the sender, each iteration sends one message to
// the room: the time from the Send until the last member shows it (its
// message event's timestamp) is one sample; the iteration ends when the
// sender's folded receipt says every copy was delivered. Iterations start
// 1/RoomRate (200 ms) apart, the node's own limit for a room.
//
// Reported (besides ns/op, Send to the folded receipt):
//   - ms-p50, ms-p99, ms-max: Send until every member has the message;
//     ms-first-p50 until the first member has it, ms-member-p50 the
//     median over every member's copy.
//   - B/msg, pkts/msg: what the sender's host put on the WAN per message
//     (UDP payload: QUIC packets to the members, its acknowledgements of
//     their receipts), counted on the WAN router, less its idle traffic
//     (ICE and QUIC keepalives, heartbeats) at the rate measured over an
//     idle window just before.
//   - cpu-ms/msg: the whole process's CPU per message, less its idle rate;
//     every node, the rendezvous and vnet run in this process.
//     cpu-ms/msg-sender, -members, -rendezvous, -other split it by pprof
//     labels (the goroutines each node starts inherit its label; "other"
//     is vnet's routers, the garbage collector's workers and the runtime),
//     in the proportions of a CPU profile of the iterations (and of one of
//     the idle window for the idle rate); cpu-us/copy-sender is the
//     sender's part per member copy. The profile samples at 100 Hz: the
//     split is good to a few tenths of a millisecond over 20 messages.
//
// Run with a fixed count: -benchtime=20x (go test runs the function once
// with b.N=1 first, which builds its own room). SIM_CPUPROFILE=FILE
// writes the iterations' CPU profile (labelled) for go tool pprof.
func BenchmarkRoomFanout(b *testing.B) {
	const delay = 20 * time.Millisecond
	members := envInt("SIM_ROOM", 100)
	const room = "#bench"
	const pace = 200 * time.Millisecond // 1/RoomRate: the node's default 5 a second
	w := vnetlab.NewWorld(b, vnetlab.Impairment{Delay: delay}, 7)
	rvh := w.PublicHost(rvIP)
	// Public hosts on the WAN: 1.2.3.(100+10×(i−1)+LAN) for LANs 1–9 and
	// up to 15 hosts a LAN stay inside the WAN's /24.
	if members < 2 || members > 9*15 {
		b.Fatalf("SIM_ROOM=%d: from 2 to %d members", members, 9*15)
	}
	var lans []*vnetlab.LAN
	for range 9 {
		lans = append(lans, w.LAN(vnetlab.NoNAT))
	}
	var hosts []*vnetlab.Host
	for i := range members {
		hosts = append(hosts, lans[i%len(lans)].Host())
	}
	var sent, pkts atomic.Int64 // from the sender's host onto the WAN
	senderIP := net.ParseIP(hosts[0].IP)
	w.Cut(func(src, _ *net.UDPAddr, p []byte) bool {
		if src.IP.Equal(senderIP) {
			sent.Add(int64(len(p)))
			pkts.Add(1)
		}
		return false // counts, drops nothing
	})
	w.Start()
	// The WAN goes dark before the nodes stop (cleanups run last first),
	// as in newPair: no leave is heard while ICE agents close.
	b.Cleanup(func() { w.Cut(func(_, _ *net.UDPAddr, _ []byte) bool { return true }) })

	labelled := func(label string, f func()) {
		pprof.Do(context.Background(), pprof.Labels("part", label), func(context.Context) { f() })
	}
	var rv *Rendezvous
	labelled("rendezvous", func() {
		rv = StartRendezvous(b, rvh.Listen(3478), func(o *rendezvous.Options) {
			o.DefaultRoom = ""
			o.NewNames = -1   // every host is in 1.2.3.0/24
			o.SourceRate = -1 // likewise
			// The warm-up introduces the sender to every member at
			// once: not paced, as it is not measured.
			o.IntroRate = -1
			o.LookupRate = -1
		})
	})
	nodes := make([]*Node, members)
	for i, h := range hosts {
		label := "members"
		if i == 0 {
			label = "sender"
		}
		labelled(label, func() {
			nodes[i] = StartNode(b, NodeConfig{Name: fmt.Sprintf("m%03d", i), Conn: h.Listen(0), RV: rv.Addr, Net: h.Net})
		})
	}
	sender, others := nodes[0], nodes[1:]
	for _, n := range nodes {
		n.WaitRegistered(60 * time.Second)
	}
	// The sender joins last, so its member list has everyone.
	for _, n := range others {
		n.Do(api.Join{Room: room})
	}
	for _, n := range others {
		waitOwnJoin(b, n, room, 60*time.Second)
	}
	sender.Do(api.Join{Room: room})
	waitOwnJoin(b, sender, room, 60*time.Second)

	// Warm-up: a first message opens the sessions; then ICE finds the
	// direct paths.
	if _, err := fanout(sender, others, room, "warm-up", 60*time.Second); err != nil {
		b.Fatal(err)
	}
	for _, n := range others {
		waitDirect(b, sender, n, 60*time.Second)
		waitDirect(b, n, sender, 60*time.Second)
	}

	// The idle rates: CPU, the sender's bytes, by label, over a window
	// a third as long as the iterations will take (3–15 s), so that what
	// is subtracted is measured about as well as what it is taken from.
	idle := min(3*time.Second+time.Duration(b.N)*pace/3, 15*time.Second)
	prof, err := startProfile()
	if err != nil {
		b.Logf("no CPU breakdown: %v", err)
	}
	c0, s0, p0, t0 := cpuTime(), sent.Load(), pkts.Load(), time.Now()
	hold(idle)
	idleCPU, idleSent, idlePkts, idleFor := cpuTime()-c0, sent.Load()-s0, pkts.Load()-p0, time.Since(t0)
	idleParts := prof.stop()

	// The iterations.
	var all, first, each []time.Duration
	var slow []string // the iterations over the target, explained
	paths := map[string]int{}
	prof, _ = startProfile()
	c0, s0, p0, t0 = cpuTime(), sent.Load(), pkts.Load(), time.Now()
	busy0, steal0 := machineCPU()
	b.ResetTimer()
	next := time.Now()
	for i := range b.N {
		b.StopTimer()
		if d := time.Until(next); d > 0 {
			hold(d) // pacing, not synchronisation
		}
		next = time.Now().Add(pace)
		b.StartTimer()
		gc0 := gcCycles()
		_, st0 := machineCPU()
		r, err := fanout(sender, others, room, fmt.Sprintf("message %d", i), 30*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		if last := slices.Max(r.members); last > 2*2*delay+50*time.Millisecond {
			_, st1 := machineCPU()
			slow = append(slow, fmt.Sprintf("#%d %.0f ms (sent event %.0f, first member %.0f; GC cycles %d, steal %.0f ms)",
				i, ms(last), ms(r.sent), ms(slices.Min(r.members)), gcCycles()-gc0, ms(st1-st0)))
		}
		each = append(each, r.members...)
		all = append(all, slices.Max(r.members))
		first = append(first, slices.Min(r.members))
		for _, p := range r.paths {
			paths[p]++
		}
	}
	b.StopTimer()
	hold(pace) // the last receipts' acknowledgements
	cpu, out, np, took := cpuTime()-c0, sent.Load()-s0, pkts.Load()-p0, time.Since(t0)
	busy, steal := machineCPU()
	busy, steal = busy-busy0, steal-steal0
	parts := prof.stop()
	if f := os.Getenv("SIM_CPUPROFILE"); f != "" && prof != nil {
		if err := os.WriteFile(f, prof.buf.Bytes(), 0o644); err != nil {
			b.Error(err)
		}
	}

	order := make([]string, len(all))
	for i, d := range all {
		order[i] = fmt.Sprintf("%.0f", ms(d))
	}
	n := float64(b.N)
	scale := took.Seconds() / idleFor.Seconds() // idle windows in the run
	perMsg := func(run, idle float64) float64 { return (run - idle*scale) / n }
	slices.Sort(all)
	slices.Sort(first)
	slices.Sort(each)
	b.ReportMetric(ms(percentile(all, 50)), "ms-p50")
	b.ReportMetric(ms(percentile(all, 99)), "ms-p99")
	b.ReportMetric(ms(all[len(all)-1]), "ms-max")
	b.ReportMetric(ms(percentile(first, 50)), "ms-first-p50")
	b.ReportMetric(ms(percentile(each, 50)), "ms-member-p50")
	b.ReportMetric(perMsg(float64(out), float64(idleSent)), "B/msg")
	b.ReportMetric(perMsg(float64(np), float64(idlePkts)), "pkts/msg")
	b.ReportMetric(perMsg(ms(cpu), ms(idleCPU)), "cpu-ms/msg")
	if parts != nil && idleParts != nil {
		share := func(ps map[string]float64, cpu time.Duration, label string) float64 {
			total := 0.0
			for _, v := range ps {
				total += v
			}
			if total == 0 {
				return 0
			}
			return ms(cpu) * ps[label] / total
		}
		for _, label := range []string{"sender", "members", "rendezvous", "other"} {
			b.ReportMetric(perMsg(share(parts, cpu, label), share(idleParts, idleCPU, label)), "cpu-ms/msg-"+label)
		}
		b.ReportMetric(1000*perMsg(share(parts, cpu, "sender"), share(idleParts, idleCPU, "sender"))/float64(len(others)), "cpu-us/copy-sender")
	}
	if paths[api.PathDirect] != len(each) {
		b.Logf("copies by path: %v (want all direct)", paths)
	}
	if len(slow) > 0 {
		b.Logf("%d of %d messages over 2 RTT + 50 ms: %s", len(slow), b.N, strings.Join(slow, "; "))
	}
	if busy > 0 {
		// On a VM, steal is time the host gave our CPUs to others: it
		// delays every node here as much as a busy neighbour would.
		machine := took.Seconds() * float64(runtime.NumCPU()) / 100
		b.Logf("during the iterations: this process %.0f%% of the machine's CPU, other processes %.0f%%, steal %.0f%%",
			cpu.Seconds()/machine, max(busy-cpu, 0).Seconds()/machine, steal.Seconds()/machine)
	}
	b.Logf("%d members, %d messages over %v; Send→every member, in order (ms): %s; idle: %.1f%% of a core, the sender %d B/s",
		members, b.N, took.Round(time.Millisecond), strings.Join(order, " "),
		100*idleCPU.Seconds()/idleFor.Seconds(), int(float64(idleSent)/idleFor.Seconds()))
}

// fanoutResult is what one room message took.
type fanoutResult struct {
	members []time.Duration // Send → each member's message event, in the order of others
	paths   []string        // the path each copy came by
	sent    time.Duration   // Send → the Sent event (the copies are made)
}

// fanout sends text from sender to room and waits until every member of
// others shows it and the sender's folded receipt counts them all. Delays
// are from the Send to each event's timestamp (when it was published).
func fanout(sender *Node, others []*Node, room, text string, within time.Duration) (*fanoutResult, error) {
	marks := make([]int, len(others))
	for i, n := range others {
		marks[i] = n.mark()
	}
	from := sender.mark()
	t0 := time.Now()
	sender.Do(api.Send{To: room, Text: text})
	wall := t0.Round(0) // event timestamps are UTC, without a monotonic reading
	deadline := t0.Add(within)
	r := &fanoutResult{members: make([]time.Duration, len(others)), paths: make([]string, len(others))}
	for i, n := range others {
		e, ok := n.waitFor(marks[i], deadline, func(e api.Event) bool {
			m, ok := e.(*api.Message)
			return ok && m.Text == text && m.Room == room
		})
		if !ok {
			return nil, fmt.Errorf("%s: no %q within %v; %s", n.Name, text, within, fanoutDiag(sender, n, from, marks[i]))
		}
		m := e.(*api.Message)
		r.members[i] = m.TS.Sub(wall)
		r.paths[i] = m.Path
	}
	want := fmt.Sprintf("%d/%d", len(others), len(others))
	var id string
	e, ok := sender.waitFor(from, deadline, func(e api.Event) bool {
		switch e := e.(type) {
		case *api.Sent:
			if e.Text == text {
				id = e.ID
				r.sent = e.TS.Sub(wall)
			}
		case *api.Delivered:
			return e.ID == id && id != ""
		case *api.Error:
			return e.ID == id && id != "" || e.To == room
		}
		return false
	})
	if d, isD := e.(*api.Delivered); !ok || !isD || d.Members != want {
		return nil, fmt.Errorf("%s: %s: %+v, want delivered to %s", sender.Name, text, e, want)
	}
	return r, nil
}

// fanoutDiag describes what sender and member n saw since their marks,
// for a failure.
func fanoutDiag(sender, n *Node, fromS, fromN int) string {
	var out []string
	for _, e := range sender.Events()[fromS:] {
		switch e := e.(type) {
		case *api.Sent, *api.Delivered, *api.Stored, *api.Error:
			out = append(out, fmt.Sprintf("%s: %+v", sender.Name, e))
		case *api.PathChanged:
			if e.Peer == n.Name {
				out = append(out, fmt.Sprintf("%s: %+v", sender.Name, e))
			}
		}
	}
	evs := n.Events()[fromN:]
	for _, e := range evs[max(0, len(evs)-20):] {
		out = append(out, fmt.Sprintf("%s: %T %+v", n.Name, e, e))
	}
	return strings.Join(out, "; ")
}

// waitFor waits until deadline for an event at index ≥ from that
// satisfies pred.
func (n *Node) waitFor(from int, deadline time.Time, pred func(api.Event) bool) (api.Event, bool) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		n.mu.Lock()
		for ; from < len(n.events); from++ {
			if pred(n.events[from]) {
				e := n.events[from]
				n.mu.Unlock()
				return e, true
			}
		}
		ch := n.change
		n.mu.Unlock()
		select {
		case <-ch:
		case <-t.C:
			return nil, false
		}
	}
}

// mark returns the index the next event will have.
func (n *Node) mark() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.events)
}

// waitDirect waits until n's latest path event for peer says direct.
func waitDirect(tb testing.TB, n, peer *Node, within time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		from := n.mark()
		if pc := lastPath(n, peer); pc != nil && pc.Path == api.PathDirect {
			return
		}
		waitPath(n, peer, from, api.PathDirect, time.Until(deadline))
	}
}

// gcCycles returns how many garbage collections the process has done.
func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// machineCPU returns the CPU time every process has used (user, nice,
// system, irq, softirq: /proc/stat) and the time the hypervisor gave this
// machine's CPUs to others (steal); zero if /proc/stat cannot be read.
func machineCPU() (busy, steal time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	tick := func(i int) time.Duration {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		return time.Duration(v) * time.Second / 100 // USER_HZ
	}
	return tick(1) + tick(2) + tick(3) + tick(6) + tick(7), tick(8)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile returns the nearest-rank p-th percentile of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// cpuProfile is a CPU profile being written to memory.
type cpuProfile struct{ buf bytes.Buffer }

// startProfile starts the process's CPU profile (it fails if one runs
// already, as with go test -cpuprofile). A nil *cpuProfile stops to nil.
func startProfile() (*cpuProfile, error) {
	p := &cpuProfile{}
	if err := pprof.StartCPUProfile(&p.buf); err != nil {
		return nil, err
	}
	return p, nil
}

// stop ends the profile and returns its CPU time by the value of the
// "part" label ("other" for samples without it), or nil if it cannot be
// read.
func (p *cpuProfile) stop() map[string]float64 {
	if p == nil {
		return nil
	}
	pprof.StopCPUProfile()
	parts, err := profileParts(p.buf.Bytes(), "part")
	if err != nil {
		return nil
	}
	return parts
}

// profileParts sums a gzipped pprof CPU profile's last sample value (CPU
// nanoseconds) by the value of the string label key ("other": none). It
// reads just what it needs of profile.proto: Profile.sample (2),
// Profile.string_table (6), Sample.value (2), Sample.label (3),
// Label.key (1) and Label.str (2).
func profileParts(gz []byte, key string) (map[string]float64, error) {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return nil, err
	}
	type sample struct {
		value      int64
		keys, strs []int64
	}
	var samples []sample
	var strs []string
	err = protoFields(raw, func(f int, v uint64, b []byte) error {
		switch f {
		case 6:
			strs = append(strs, string(b))
		case 2:
			var s sample
			err := protoFields(b, func(f int, v uint64, b []byte) error {
				switch {
				case f == 2 && b == nil:
					s.value = int64(v)
				case f == 2:
					return protoFields(packed(b), func(_ int, v uint64, _ []byte) error { s.value = int64(v); return nil })
				case f == 3:
					var k, str int64
					if err := protoFields(b, func(f int, v uint64, _ []byte) error {
						switch f {
						case 1:
							k = int64(v)
						case 2:
							str = int64(v)
						}
						return nil
					}); err != nil {
						return err
					}
					s.keys, s.strs = append(s.keys, k), append(s.strs, str)
				}
				return nil
			})
			if err != nil {
				return err
			}
			samples = append(samples, s)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	str := func(i int64) string {
		if i < 0 || int(i) >= len(strs) {
			return ""
		}
		return strs[i]
	}
	out := map[string]float64{}
	for _, s := range samples {
		part := "other"
		for i, k := range s.keys {
			if str(k) == key && str(s.strs[i]) != "" {
				part = str(s.strs[i])
			}
		}
		out[part] += float64(s.value)
	}
	return out, nil
}

// packed turns a packed repeated varint field's bytes into a sequence of
// field-1 varints, for protoFields.
func packed(b []byte) []byte {
	var out []byte
	for len(b) > 0 {
		_, n := binary.Uvarint(b)
		if n <= 0 {
			break
		}
		out = append(out, 1<<3) // field 1, varint
		out = append(out, b[:n]...)
		b = b[n:]
	}
	return out
}

var errProto = errors.New("malformed protobuf")

// protoFields calls f for each field of the protobuf message b: its
// number and, for varints, its value (b nil), for length-delimited fields
// its bytes. Fixed-size fields are skipped.
func protoFields(b []byte, f func(field int, v uint64, b []byte) error) error {
	for len(b) > 0 {
		tag, n := binary.Uvarint(b)
		if n <= 0 {
			return errProto
		}
		b = b[n:]
		field, typ := int(tag>>3), tag&7
		switch typ {
		case 0:
			v, n := binary.Uvarint(b)
			if n <= 0 {
				return errProto
			}
			b = b[n:]
			if err := f(field, v, nil); err != nil {
				return err
			}
		case 1:
			if len(b) < 8 {
				return errProto
			}
			b = b[8:]
		case 2:
			l, n := binary.Uvarint(b)
			if n <= 0 || uint64(len(b)-n) < l {
				return errProto
			}
			body := b[n : n+int(l)]
			b = b[n+int(l):]
			if err := f(field, 0, append([]byte{}, body...)); err != nil {
				return err
			}
		case 5:
			if len(b) < 4 {
				return errProto
			}
			b = b[4:]
		default:
			return errProto
		}
	}
	return nil
}
