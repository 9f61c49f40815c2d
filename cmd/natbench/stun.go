package main

import (
	"encoding/binary"
	"errors"
	"math"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// A STUN Binding request with no attributes (RFC 8489 §5): the
// transaction ID carries the send time, so an answer gives its latency
// without any table of requests in flight.
const stunHeaderLen = 20

func putBindingRequest(b []byte, sent time.Duration, tag uint32) {
	binary.BigEndian.PutUint16(b[0:], 0x0001)
	binary.BigEndian.PutUint16(b[2:], 0)
	binary.BigEndian.PutUint32(b[4:], 0x2112A442)
	binary.BigEndian.PutUint64(b[8:], uint64(sent))
	binary.BigEndian.PutUint32(b[16:], tag)
}

// bindingSent returns the send time of a Binding success answer, and
// false for anything else.
func bindingSent(b []byte) (time.Duration, bool) {
	if len(b) < stunHeaderLen || binary.BigEndian.Uint16(b) != 0x0101 || binary.BigEndian.Uint32(b[4:]) != 0x2112A442 {
		return 0, false
	}
	return time.Duration(binary.BigEndian.Uint64(b[8:])), true
}

// waitSTUN sends Binding requests to addr until one is answered.
func waitSTUN(addr *net.UDPAddr, timeout time.Duration) error {
	c, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(timeout)
	req, buf := make([]byte, stunHeaderLen), make([]byte, 1500)
	for time.Now().Before(deadline) {
		putBindingRequest(req, 0, 1)
		c.Write(req)
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := c.Read(buf); err == nil {
			if _, ok := bindingSent(buf[:n]); ok {
				return nil
			}
		}
	}
	return errors.New("no answer")
}

// phase is when a load generator counts: from start until stop (both
// offsets from base); it runs until done.
type phase struct {
	base      time.Time
	measuring atomic.Bool
	done      atomic.Bool
}

// measure runs the generator started by start for warm, then measures
// the server for window: its CPU and RSS, the steal, and the time really
// elapsed. start's goroutines must count only while p.measuring and
// return soon after p.done.
type measured struct {
	elapsed time.Duration
	cpu     time.Duration // the server's
	self    time.Duration // natbench's own: the load generator's
	rss     int64
	steal   float64
	allocs  int64 // the server's heap allocations, -1 when it does not tell
}

// perOp is n allocations per op operations, NaN when unknown.
func perOp(allocs int64, ops int64) float64 {
	if allocs < 0 || ops <= 0 {
		return math.NaN()
	}
	return float64(allocs) / float64(ops)
}

func measure(p *phase, pid int, warm, window time.Duration) (measured, error) {
	return measureWith(p, pid, warm, window, nil)
}

// measureWith is measure calling atStart (unless nil) as the window
// opens, before the first reading.
func measureWith(p *phase, pid int, warm, window time.Duration, atStart func()) (measured, error) {
	time.Sleep(warm)
	if atStart != nil {
		atStart()
	}
	allocsNow := allocCounter(pid)
	var a0 uint64
	if allocsNow != nil {
		var err error
		if a0, err = allocsNow(); err != nil {
			return measured{}, err
		}
	}
	c0, err := procCPU(pid)
	if err != nil {
		return measured{}, err
	}
	self0, err := procCPU(os.Getpid())
	if err != nil {
		return measured{}, err
	}
	s0 := readSteal()
	t0 := time.Now()
	p.measuring.Store(true)
	time.Sleep(window)
	p.measuring.Store(false)
	el := time.Since(t0)
	c1, err := procCPU(pid)
	if err != nil {
		return measured{}, err
	}
	self1, err := procCPU(os.Getpid())
	if err != nil {
		return measured{}, err
	}
	s1 := readSteal()
	rss, err := procRSS(pid)
	if err != nil {
		return measured{}, err
	}
	allocs := int64(-1)
	if allocsNow != nil {
		a1, err := allocsNow()
		if err != nil {
			return measured{}, err
		}
		allocs = int64(a1 - a0)
	}
	p.done.Store(true)
	return measured{elapsed: el, cpu: c1 - c0, self: self1 - self0, rss: rss, steal: stealFraction(s0, s1), allocs: allocs}, nil
}

// stunResult is one repetition of the STUN row.
type stunResult struct {
	rps      float64
	p50, p99 time.Duration
	cpuPerOp time.Duration
	genPerOp time.Duration // the load generator's CPU per answer
	allocs   float64       // the server's heap allocations per answer (NaN: unknown)
	rss      int64
	lost     int64
	steal    float64
}

// runSTUN keeps w Binding requests outstanding on each of n sockets
// against srv (closed loop per socket: an answer releases the next
// request; an answer missing for 200 ms counts as lost and is replaced).
func runSTUN(srv *server, n, w int, warm, window time.Duration) (stunResult, error) {
	conns := make([]*net.UDPConn, n)
	for i := range conns {
		c, err := net.DialUDP("udp", nil, srv.addr)
		if err != nil {
			for _, c := range conns[:i] {
				c.Close()
			}
			return stunResult{}, err
		}
		conns[i] = c
	}
	p := &phase{base: time.Now()}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		lat   []time.Duration
		count atomic.Int64
		lost  atomic.Int64
	)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			var mine []time.Duration
			req, buf := make([]byte, stunHeaderLen), make([]byte, 1500)
			send := func() {
				putBindingRequest(req, time.Since(p.base), uint32(i))
				c.Write(req)
			}
			for range w {
				send()
			}
			outstanding := w
			var lastDeadline time.Time
			for !p.done.Load() {
				if now := time.Now(); now.Sub(lastDeadline) > 50*time.Millisecond {
					c.SetReadDeadline(now.Add(200 * time.Millisecond))
					lastDeadline = now
				}
				nr, err := c.Read(buf)
				if err != nil {
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						if p.measuring.Load() {
							lost.Add(int64(outstanding))
						}
						for range w {
							send()
						}
						outstanding = w
						lastDeadline = time.Time{}
						continue
					}
					return
				}
				sent, ok := bindingSent(buf[:nr])
				if !ok {
					continue
				}
				if p.measuring.Load() {
					count.Add(1)
					mine = append(mine, time.Since(p.base)-sent)
				}
				send()
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	m, err := measure(p, srv.pid(), warm, window)
	p.done.Store(true)
	wg.Wait()
	if err != nil {
		return stunResult{}, err
	}
	slices.Sort(lat)
	ops := count.Load()
	r := stunResult{
		rps: float64(ops) / m.elapsed.Seconds(), p50: percentile(lat, 50), p99: percentile(lat, 99),
		rss: m.rss, lost: lost.Load(), steal: m.steal, allocs: perOp(m.allocs, ops),
	}
	if ops > 0 {
		r.cpuPerOp = m.cpu / time.Duration(ops)
		r.genPerOp = m.self / time.Duration(ops)
	}
	return r, nil
}
