package main

import (
	"context"
	"encoding/binary"
	"testing"
	"time"
)

func TestBindingRequestCarriesSendTime(t *testing.T) {
	b := make([]byte, stunHeaderLen)
	putBindingRequest(b, 1234567*time.Nanosecond, 9)
	if binary.BigEndian.Uint16(b) != 0x0001 || binary.BigEndian.Uint32(b[4:]) != 0x2112A442 {
		t.Fatalf("not a Binding request: %x", b)
	}
	if _, ok := bindingSent(b); ok {
		t.Fatal("a request taken for an answer")
	}
	binary.BigEndian.PutUint16(b, 0x0101) // as the server echoes the ID
	if d, ok := bindingSent(b); !ok || d != 1234567*time.Nanosecond {
		t.Fatalf("bindingSent = %v, %v", d, ok)
	}
}

// TestSTUNSmoke builds the rendezvous, starts it on loopback
// and runs the STUN row against it alone for a fraction of a second. It
// needs no coturn.
func TestSTUNSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the rendezvous binary; skipped under -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	rv, err := buildRendezvous(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := startOurs("rendezvous", dir, rv, "-source-rate", "-1")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.stop()
	r, err := runSTUN(srv, 2, 4, 50*time.Millisecond, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%.0f answers/s, p50 %v, p99 %v, %v CPU/answer, RSS %d KiB", r.rps, r.p50, r.p99, r.cpuPerOp, r.rss>>10)
	if r.rps <= 0 || r.p50 <= 0 || r.p99 < r.p50 || r.rss <= 0 {
		t.Errorf("implausible result %+v", r)
	}
}

// TestRegSmoke builds the natbench rendezvous, preloads 2,000 nodes and
// heartbeats them for a fraction of a second at a second's interval:
// every heartbeat is answered.
func TestRegSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the rendezvous binary; skipped under -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin, err := goBuild(ctx, dir+"/rendezvous-natbench", "natchat/cmd/rendezvous", "-tags", "natbench")
	if err != nil {
		t.Fatal(err)
	}
	base, _, err := idleServer(dir, bin)
	if err != nil {
		t.Fatal(err)
	}
	r, err := runReg(ctx, dir, bin, 2000, 50, time.Second, 200*time.Millisecond, 500*time.Millisecond, base)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", r)
	if r.hbps < 1000 || r.rssPerNode <= 0 || r.cpuPerHB <= 0 || r.unanswered > 20 || r.notRegistered != 0 {
		t.Errorf("implausible result %+v", r)
	}
}
