package main

import (
	"errors"
	"math"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	for _, c := range []struct {
		in            []float64
		med, min, max float64
		n             int
	}{
		{[]float64{3, 1, 2}, 2, 1, 3, 3},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4, 4},
		{[]float64{5}, 5, 5, 5, 1},
		{[]float64{math.NaN(), 7, 1}, 4, 1, 7, 2},
	} {
		s := summarize(c.in)
		if s.Median != c.med || s.Min != c.min || s.Max != c.max || s.N != c.n {
			t.Errorf("summarize(%v) = %+v, want median %v min %v max %v n %d", c.in, s, c.med, c.min, c.max, c.n)
		}
	}
	if s := summarize(nil); !math.IsNaN(s.Median) || s.N != 0 {
		t.Errorf("summarize(nil) = %+v", s)
	}
}

func TestRatio(t *testing.T) {
	if r := ratio(3, 2); r != 1.5 {
		t.Errorf("ratio(3, 2) = %v", r)
	}
	for _, c := range [][2]float64{{1, 0}, {math.NaN(), 1}, {1, math.NaN()}} {
		if r := ratio(c[0], c[1]); !math.IsNaN(r) {
			t.Errorf("ratio(%v, %v) = %v, want NaN", c[0], c[1], r)
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	if p := percentile(d, 50); p != 50 {
		t.Errorf("p50 = %v", p)
	}
	if p := percentile(d, 99); p != 99 {
		t.Errorf("p99 = %v", p)
	}
	if p := percentile(d[:1], 99); p != 1 {
		t.Errorf("p99 of one = %v", p)
	}
	if p := percentile(nil, 50); p != 0 {
		t.Errorf("p50 of none = %v", p)
	}
}

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and a ')' inside, as the kernel writes it.
	stat := "4242 (odd) name) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 100 123456 789 18446744073709551615\n"
	got, err := parseStatCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if want := 3250 * time.Millisecond; got != want {
		t.Errorf("cpu = %v, want %v", got, want)
	}
	for _, bad := range []string{"4242 no parens S 1", "4242 (x) S 1 2 3", "4242 (x) S 1 2 3 4 5 6 7 8 9 10 x 11 12"} {
		if _, err := parseStatCPU([]byte(bad)); !errors.Is(err, errProcFormat) {
			t.Errorf("%q: err %v", bad, err)
		}
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\trendezvous\nVmPeak:\t  999 kB\nVmHWM:\t   23456 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 1 kB\n"
	got, err := parseVmRSS([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	if got != 12345*1024 {
		t.Errorf("rss = %d", got)
	}
	if peak, err := parseStatusKB([]byte(status), "VmHWM"); err != nil || peak != 23456*1024 {
		t.Errorf("peak = %d, %v", peak, err)
	}
	for _, bad := range []string{"Name:\tx\n", "VmRSS:\t12 MB\n", "VmRSS:\tx kB\n"} {
		if _, err := parseVmRSS([]byte(bad)); !errors.Is(err, errProcFormat) {
			t.Errorf("%q: err %v", bad, err)
		}
	}
}

func TestParseProcStat(t *testing.T) {
	a, err := parseProcStat([]byte("cpu  100 0 50 800 10 0 5 20 0 0\ncpu0 1 2 3 4 5 6 7 8\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Steal != 20 || a.Total != 985 {
		t.Fatalf("got %+v", a)
	}
	b := cpuTimes{Steal: 30, Total: 1085}
	if f := stealFraction(a, b); f != 0.1 {
		t.Errorf("steal = %v", f)
	}
	if _, err := parseProcStat([]byte("intr 1 2 3\n")); !errors.Is(err, errProcFormat) {
		t.Errorf("bad: %v", err)
	}
}
