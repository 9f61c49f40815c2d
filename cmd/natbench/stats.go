package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// summary is the median and spread of one metric over the repetitions.
type summary struct {
	Median, Min, Max float64
	N                int
}

// summarize returns the median, min and max of xs; NaNs (a metric a
// repetition could not measure) are left out. N is how many remain.
func summarize(xs []float64) summary {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return summary{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	slices.Sort(v)
	m := v[len(v)/2]
	if len(v)%2 == 0 {
		m = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return summary{Median: m, Min: v[0], Max: v[len(v)-1], N: len(v)}
}

// ratio is a/b, NaN when either is unknown or b is zero.
func ratio(a, b float64) float64 {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return math.NaN()
	}
	return a / b
}

// percentile returns the p-th percentile (0–100) of sorted durations by
// the nearest-rank method; 0 when there are none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	k := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(k, len(sorted)-1))]
}

// clockTick is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture Go supports.
const clockTick = 100

// errProcFormat wraps /proc contents that do not parse.
var errProcFormat = errors.New("natbench: unexpected /proc format")

// parseStatCPU returns utime+stime from the contents of /proc/PID/stat.
// The command name (field 2) is in parentheses and may hold spaces and
// parentheses itself, so fields are counted from the last ')'.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("%w: stat without ')'", errProcFormat)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("%w: stat has %d fields after the name", errProcFormat, len(f))
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("%w: %v", errProcFormat, err)
	}
	return time.Duration(u+s) * time.Second / clockTick, nil
}

// parseVmRSS returns VmRSS in bytes from the contents of /proc/PID/status.
func parseVmRSS(b []byte) (int64, error) { return parseStatusKB(b, "VmRSS") }

// parseStatusKB returns field (VmRSS, VmHWM...) of a /proc/PID/status in
// bytes.
func parseStatusKB(b []byte, field string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("%w: %s %q", errProcFormat, field, rest)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: %v", errProcFormat, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("%w: no %s", errProcFormat, field)
}

// cpuTimes is the machine-wide "cpu" line of /proc/stat: busy time,
// steal, and the total, in ticks.
type cpuTimes struct{ Steal, Total uint64 }

// parseProcStat reads the first ("cpu") line of /proc/stat.
func parseProcStat(b []byte) (cpuTimes, error) {
	line, _, _ := bytes.Cut(b, []byte{'\n'})
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}, fmt.Errorf("%w: /proc/stat first line %q", errProcFormat, line)
	}
	var t cpuTimes
	for i, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return cpuTimes{}, fmt.Errorf("%w: %v", errProcFormat, err)
		}
		if i >= 8 { // guest and guest_nice are already in user and nice
			break
		}
		t.Total += v
		if i == 7 {
			t.Steal = v
		}
	}
	return t, nil
}

// stealFraction is the share of the machine's time its host took between
// two /proc/stat readings.
func stealFraction(a, b cpuTimes) float64 {
	if b.Total <= a.Total {
		return math.NaN()
	}
	return float64(b.Steal-a.Steal) / float64(b.Total-a.Total)
}

func readSteal() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	t, _ := parseProcStat(b)
	return t
}

// procCPU returns the process's user+system CPU time so far.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// procRSS returns the process's resident set size in bytes.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseVmRSS(b)
}

// procPeakRSS returns the peak resident set (VmHWM) of process pid in
// bytes.
func procPeakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseStatusKB(b, "VmHWM")
}

// loadAvg returns the 1-, 5- and 15-minute load averages of /proc/loadavg
// ("?" without it): how busy the host was, beside the steal.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}
