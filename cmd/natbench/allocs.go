package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Allocations per operation on our server: it runs with -metrics on a
// loopback port, and the window's allocations are the growth of its
// go_memstats_mallocs_total (every heap allocation, tiny ones included).
// One scrape's own allocations in the server (its HTTP handler: a few
// thousand) fall inside the window, a few hundredths of an allocation per
// operation at these rates. coturn has no such counter.

// metricsURLs maps our servers' pids to their /metrics.
var metricsURLs sync.Map // int → string

// freeTCPPort returns a loopback TCP port free at the moment of asking.
func freeTCPPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var metricsClient = &http.Client{Timeout: 2 * time.Second}

// mallocs reads the server's go_memstats_mallocs_total.
func mallocs(url string) (uint64, error) {
	resp, err := metricsClient.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return parseMallocs(bufio.NewScanner(resp.Body))
}

func parseMallocs(sc *bufio.Scanner) (uint64, error) {
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_mallocs_total "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("go_memstats_mallocs_total: %w", err)
			}
			return uint64(f), nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no go_memstats_mallocs_total in the metrics")
}

// allocCounter returns a function reading pid's allocations so far, or
// nil when pid is not one of our servers with metrics.
func allocCounter(pid int) func() (uint64, error) {
	u, ok := metricsURLs.Load(pid)
	if !ok {
		return nil
	}
	return func() (uint64, error) { return mallocs(u.(string)) }
}
