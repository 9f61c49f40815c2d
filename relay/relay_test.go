package relay

import (
	"testing"
	"time"
)

func TestLimiterPackets(t *testing.T) {
	l := NewLimiter(Limits{PacketsPerSec: 100, BytesPerSec: -1, Burst: 100 * time.Millisecond, SmallPacketsPerSec: -1})
	now := time.Unix(1000, 0)
	n := 0
	for l.Allow(now, 10) {
		n++
		if n > 1000 {
			t.Fatal("limiter never refused")
		}
	}
	if n != 10 {
		t.Fatalf("burst: allowed %d packets, want 10", n)
	}
	// 50 ms later five more tokens have accrued.
	now = now.Add(50 * time.Millisecond)
	n = 0
	for l.Allow(now, 10) {
		n++
	}
	if n != 5 {
		t.Fatalf("after 50ms: allowed %d, want 5", n)
	}
}

func TestLimiterBytes(t *testing.T) {
	l := NewLimiter(Limits{PacketsPerSec: -1, BytesPerSec: 10000, Burst: time.Second})
	now := time.Unix(1000, 0)
	if !l.Allow(now, 6000) {
		t.Fatal("first 6000 bytes refused")
	}
	if l.Allow(now, 6000) {
		t.Fatal("second 6000 bytes allowed beyond 10000-byte burst")
	}
	// A refused packet spends nothing: 4000 still fit.
	if !l.Allow(now, 4000) {
		t.Fatal("4000 bytes refused though 4000 remain")
	}
}

func TestLimiterRefusalSpendsNoPacketToken(t *testing.T) {
	l := NewLimiter(Limits{PacketsPerSec: 1, BytesPerSec: 1500, Burst: time.Second, SmallPacketsPerSec: -1})
	now := time.Unix(1000, 0)
	if l.Allow(now, 2000) {
		t.Fatal("2000 bytes allowed with a 1500-byte burst")
	}
	if !l.Allow(now, 100) {
		t.Fatal("byte refusal spent the only packet token")
	}
}

func TestLimiterDefaults(t *testing.T) {
	l := NewLimiter(Limits{})
	now := time.Unix(1000, 0)
	for i := 0; i < 400; i++ {
		if !l.Allow(now, 1200) {
			t.Fatalf("default limits refused packet %d of a 400-packet burst", i)
		}
	}
}

// TestSmallPacketsPassFirst: with the shared budget spent by full packets
// (a file), small packets (chat, acknowledgements) still pass on their own
// budget; past it they compete for the shared one.
func TestSmallPacketsPassFirst(t *testing.T) {
	l := NewLimiter(Limits{PacketsPerSec: 10, BytesPerSec: -1, Burst: time.Second, SmallPacketsPerSec: 5})
	now := time.Unix(1000, 0)
	n := 0
	for l.Allow(now, 1200) {
		n++
	}
	if n != 10 {
		t.Fatalf("full packets: %d allowed, want the shared burst of 10", n)
	}
	for i := range 5 {
		if !l.Allow(now, 200) {
			t.Fatalf("small packet %d refused while the file spent the shared budget", i)
		}
	}
	if l.Allow(now, 200) {
		t.Fatal("a sixth small packet passed with both budgets spent")
	}
	if l.Allow(now, SmallPacket+1) {
		t.Fatal("a packet over SmallPacket took the small budget")
	}
}
