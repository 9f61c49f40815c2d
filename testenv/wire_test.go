package testenv

import (
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// echoServer answers every packet on p with the same payload until the
// test ends.
func echoServer(t *testing.T, p *probe) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for pk := range p.ch {
			_, _ = p.c.WriteToUDPAddrPort([]byte(pk.data), pk.from)
		}
	}()
	t.Cleanup(func() { p.c.Close(); <-done })
}

// roundTrips sends n numbered requests one after another from src to dst
// and returns the round-trip times.
func roundTrips(t *testing.T, src *probe, dst *Host, port, n int) []time.Duration {
	t.Helper()
	var out []time.Duration
	for i := 0; i < n; i++ {
		msg := "rtt" + strconv.Itoa(i)
		start := time.Now()
		src.send(ap(dst, port), msg)
		pk := src.expect(msg, 5*time.Second)
		out = append(out, pk.at.Sub(start))
	}
	return out
}

// TestWireDelay checks that a WAN delay of 40ms each way gives round trips
// of about 80ms, that jitter spreads them without reordering, and that the
// impairment can be changed at run time.
func TestWireDelay(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	s := must(l.AddSite("site", PortRestricted, false, "h"))(t)
	p1 := must(l.AddHost("p1", l.Internet()))(t)
	src := newProbe(t, s.Hosts[0], 40000)
	echoServer(t, newProbe(t, p1, 7))

	base := roundTrips(t, src, p1, 7, 10)
	slices.Sort(base)
	t.Logf("no impairment: min %v median %v", base[0], base[len(base)/2])
	if base[len(base)/2] > 15*time.Millisecond {
		t.Errorf("unimpaired median RTT %v; want a few hundred microseconds", base[len(base)/2])
	}

	// The machine may be shared with builds and fuzzers, so timers can fire
	// late: the minimum is a hard bound (the wire never releases a frame
	// early), the rest is judged on the lower quartile.
	noErr(t, s.Router.Impair(Impairment{Delay: 40 * time.Millisecond}))
	d := roundTrips(t, src, p1, 7, 20)
	slices.Sort(d)
	t.Logf("40ms each way: min %v p25 %v median %v max %v", d[0], d[len(d)/4], d[len(d)/2], d[len(d)-1])
	if d[0] < 80*time.Millisecond {
		t.Errorf("min RTT %v < 2x40ms", d[0])
	}
	if d[len(d)/4] > 110*time.Millisecond {
		t.Errorf("lower-quartile RTT %v > 110ms", d[len(d)/4])
	}

	noErr(t, s.Router.Impair(Impairment{Delay: 40 * time.Millisecond, Jitter: 15 * time.Millisecond}))
	j := roundTrips(t, src, p1, 7, 40)
	slices.Sort(j)
	t.Logf("40ms±15ms each way: min %v p25 %v median %v p75 %v max %v", j[0], j[len(j)/4], j[len(j)/2], j[3*len(j)/4], j[len(j)-1])
	if j[0] < 50*time.Millisecond {
		t.Errorf("min RTT %v < 2x(40ms-15ms)", j[0])
	}
	if j[len(j)/4] > 140*time.Millisecond {
		t.Errorf("lower-quartile RTT %v > 140ms", j[len(j)/4])
	}
	if j[3*len(j)/4]-j[len(j)/4] < 2*time.Millisecond {
		t.Errorf("jitter had no visible effect: interquartile range %v", j[3*len(j)/4]-j[len(j)/4])
	}

	// A burst through a jittery wire arrives in order.
	sink := newProbe(t, p1, 9)
	const burst = 200
	for i := 0; i < burst; i++ {
		src.send(ap(p1, 9), fmt.Sprintf("b%03d", i))
	}
	for i := 0; i < burst; i++ {
		pk, ok := <-sink.ch
		if !ok {
			t.Fatal("sink closed")
		}
		if want := fmt.Sprintf("b%03d", i); pk.data != want {
			t.Fatalf("burst packet %d is %q: reordered or lost", i, pk.data)
		}
	}
}

// TestWireLoss checks that 10% loss on a public host's uplink drops about
// 10% of 2000 packets (the bounds are over seven standard deviations wide),
// that the wire's counters account for every packet, and that ARP is never
// dropped.
func TestWireLoss(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	p1 := must(l.AddHost("p1", l.Internet()))(t)
	p2 := must(l.AddHost("p2", l.Internet()))(t)
	src := newProbe(t, p1, 5000)
	dst := newProbe(t, p2, 5000)
	// Resolve ARP before impairing, so the count is about UDP only.
	src.send(ap(p2, 5000), "warmup")
	dst.expect("warmup", 3*time.Second)
	p1.WAN().SetDirection(Up, Impairment{Loss: 10})
	before := p1.WAN().Stats(Up)

	const n = 2000
	var received atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for pk := range dst.ch {
			if len(pk.data) > 0 && pk.data[0] == 'L' {
				if received.Add(1) == n {
					return
				}
			}
		}
	}()
	for i := 0; i < n; i++ {
		src.send(ap(p2, 5000), "L"+strconv.Itoa(i))
		if i%100 == 99 {
			// Pace the sender so no socket buffer overflows: wait until the
			// wire has handled this batch.
			want := uint64(i + 1)
			eventually(t, 5*time.Second, "wire to handle the batch", func() bool {
				s := p1.WAN().Stats(Up)
				return s.Forwarded+s.Lost-before.Forwarded-before.Lost >= want
			})
		}
	}
	var lost uint64
	eventually(t, 10*time.Second, "every packet received or counted lost", func() bool {
		s := p1.WAN().Stats(Up)
		lost = s.Lost - before.Lost
		return uint64(received.Load())+lost >= n
	})
	dst.c.Close()
	<-done
	rate := float64(lost) / n * 100
	t.Logf("10%% loss: %d of %d lost (%.1f%%), %d received", lost, n, rate, received.Load())
	if got := uint64(received.Load()) + lost; got != n {
		t.Errorf("received %d + lost %d = %d, want %d", received.Load(), lost, got, n)
	}
	if rate < 5 || rate > 15 {
		t.Errorf("loss rate %.1f%% outside [5%%, 15%%]", rate)
	}
	if s := p1.WAN().Stats(Up); s.Overflow != 0 {
		t.Errorf("wire queue overflowed %d times", s.Overflow)
	}
}
