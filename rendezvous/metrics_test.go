package rendezvous_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"natchat/rendezvous"
)

// syncBuffer is a bytes.Buffer safe for a logger on several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// metricsAddr finds the address ServeMetrics logged.
func metricsAddr(t *testing.T, logs string) string {
	t.Helper()
	for line := range strings.Lines(logs) {
		var e struct{ Addr, Message string }
		if json.Unmarshal([]byte(line), &e) == nil && e.Addr != "" {
			return e.Addr
		}
	}
	t.Fatalf("no address in logs %q", logs)
	return ""
}

func TestServeMetrics(t *testing.T) {
	defer checkGoroutines(t)()
	h := newHarness(t, nil)
	h.register(newNode(t, "alice", "198.51.100.1:1"))
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	get := func(url string) (string, error) {
		resp, err := client.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}

	// Stopped with stop.
	var logs syncBuffer
	stop, err := rendezvous.ServeMetrics(context.Background(), "127.0.0.1:0", h.s, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + metricsAddr(t, logs.String()) + "/metrics"
	text, err := get(url)
	if err != nil {
		t.Fatal(err)
	}
	if got := metric(t, text, "natchat_rendezvous_online_nodes"); got != 1 {
		t.Errorf("online nodes %v, want 1", got)
	}
	stop()
	stop() // idempotent
	if _, err := get(url); err == nil {
		t.Error("metrics still served after stop")
	}

	// Stopped by its context.
	var logs2 syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := rendezvous.ServeMetrics(ctx, "127.0.0.1:0", h.s, zerolog.New(&logs2)); err != nil {
		t.Fatal(err)
	}
	url = "http://" + metricsAddr(t, logs2.String()) + "/metrics"
	if _, err := get(url); err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := get(url); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("metrics still served 5 s after the context ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := rendezvous.ServeMetrics(context.Background(), "256.0.0.1:0", h.s, zerolog.Nop()); err == nil {
		t.Error("ServeMetrics on a bad address succeeded")
	}
}
