package rendezvous

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

const sec = int64(time.Second)

// expired runs w.expire at now and returns the clients gone, in the order
// they went.
func expired(w *wheel, now int64) []*client {
	var out []*client
	w.expire(now, func(c *client) { out = append(out, c) })
	return out
}

// wantGone checks that exactly want went at now.
func wantGone(t *testing.T, w *wheel, now int64, want ...*client) {
	t.Helper()
	got := expired(w, now)
	if len(got) != len(want) {
		t.Fatalf("at %v: %d gone, want %d", time.Duration(now), len(got), len(want))
	}
	for _, c := range want {
		if !slices.Contains(got, c) {
			t.Fatalf("at %v: %q not gone", time.Duration(now), c.name)
		}
	}
}

func TestWheelDueAtTheRightTick(t *testing.T) {
	w := newWheel(30*time.Second, 0)
	a, b := &client{member: member{name: "a"}}, &client{member: member{name: "b"}}
	w.heard(a, 0)
	w.heard(b, 1500*time.Millisecond.Nanoseconds())
	if w.n != 2 {
		t.Fatalf("%d filed, want 2", w.n)
	}
	// Exactly Expiry of silence is tolerated; a nanosecond more is not.
	for now := int64(0); now <= 30*sec; now += sec / 4 {
		wantGone(t, w, now)
	}
	wantGone(t, w, 30*sec+1, a)
	wantGone(t, w, 31*sec+sec/2)
	wantGone(t, w, 31*sec+sec/2+1, b)
	if w.n != 0 {
		t.Fatalf("%d filed after both went, want 0", w.n)
	}
	// Sweeping again changes nothing.
	wantGone(t, w, 40*sec)
}

func TestWheelHeardMovesLater(t *testing.T) {
	w := newWheel(30*time.Second, 0)
	a := &client{member: member{name: "a"}}
	w.heard(a, 0)
	first := a.wIn
	w.heard(a, 10*sec)
	if a.wIn == first {
		t.Fatal("heard 10 s later, still in the same slot")
	}
	w.heard(a, 10*sec+sec/2) // the same due second: stays
	if w.n != 1 {
		t.Fatalf("%d filed, want 1", w.n)
	}
	wantGone(t, w, 31*sec)
	wantGone(t, w, 40*sec+sec/2)
	wantGone(t, w, 40*sec+sec/2+1, a)
}

func TestWheelRemove(t *testing.T) {
	w := newWheel(30*time.Second, 0)
	cs := make([]*client, 5)
	for i := range cs {
		cs[i] = &client{member: member{name: string(rune('a' + i))}}
		w.heard(cs[i], 0) // all in one slot: removal from its head, middle and tail
	}
	w.remove(cs[4]) // the head (filed last)
	w.remove(cs[2])
	w.remove(cs[0]) // the tail
	w.remove(cs[0]) // twice: nothing
	if w.n != 2 {
		t.Fatalf("%d filed, want 2", w.n)
	}
	wantGone(t, w, 31*sec, cs[1], cs[3])
}

func TestWheelOverflow(t *testing.T) {
	w := newWheel(10*time.Second, 0)
	ring := int64(len(w.slots))
	// Heard from far ahead of the sweeps (a clock stepped, sweeps
	// behind): due beyond the ring, so in the overflow.
	a, b := &client{member: member{name: "a"}}, &client{member: member{name: "b"}}
	w.heard(a, 5*ring*sec)
	w.heard(b, 2*ring*sec)
	if a.wIn != inOverflow || b.wIn != inOverflow {
		t.Fatal("not in the overflow")
	}
	for now := int64(0); now <= 2*ring*sec+10*sec; now += sec {
		wantGone(t, w, now)
	}
	if b.wIn == inOverflow {
		t.Error("b still in the overflow when due within the ring")
	}
	wantGone(t, w, 2*ring*sec+10*sec+1, b)
	for now := 2*ring*sec + 11*sec; now <= 5*ring*sec+10*sec; now += 3 * sec {
		wantGone(t, w, now)
	}
	wantGone(t, w, 5*ring*sec+10*sec+1, a)
	if w.overflow != nil || w.n != 0 {
		t.Fatalf("overflow %v, %d filed; want empty", w.overflow, w.n)
	}
}

func TestWheelLateSweep(t *testing.T) {
	w := newWheel(10*time.Second, 0)
	a, b := &client{member: member{name: "a"}}, &client{member: member{name: "b"}}
	w.heard(a, 0)
	w.heard(b, 5*sec)
	// The first sweep comes long after both were due: both go at once.
	wantGone(t, w, 1000*sec, a, b)
	// Heard from before the last sweep's time (a clock behind the
	// sweeper's): looked at by the next sweep.
	c := &client{member: member{name: "c"}}
	w.heard(c, 900*sec)
	wantGone(t, w, 1000*sec, c)
}

// TestWheelMatchesWalk drives a wheel and a walk over every client (what
// Sweep did before the wheel) with the same random heartbeats, leaves and
// sweeps, the clock jumping now and then, and checks that the same clients
// go at each sweep.
func TestWheelMatchesWalk(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 4} {
		rng := rand.New(rand.NewPCG(seed, 0))
		expiry := time.Duration(1+rng.IntN(20)) * time.Second / 2
		w := newWheel(expiry, 0)
		var online []*client
		now := int64(0)
		for step := range 20000 {
			switch r := rng.IntN(100); {
			case r < 40:
				c := &client{member: member{name: "n"}}
				w.heard(c, now)
				online = append(online, c)
			case r < 70 && len(online) > 0:
				w.heard(online[rng.IntN(len(online))], now)
			case r < 75 && len(online) > 0:
				i := rng.IntN(len(online))
				w.remove(online[i])
				online = slices.Delete(online, i, i+1)
			default:
				var want []*client
				online = slices.DeleteFunc(online, func(c *client) bool {
					if now-c.lastSeen > int64(expiry) {
						want = append(want, c)
						return true
					}
					return false
				})
				got := expired(w, now)
				if len(got) != len(want) {
					t.Fatalf("seed %d step %d at %v: %d gone, want %d", seed, step, time.Duration(now), len(got), len(want))
				}
				for _, c := range want {
					if !slices.Contains(got, c) {
						t.Fatalf("seed %d step %d: one due did not go", seed, step)
					}
				}
			}
			if w.n != len(online) {
				t.Fatalf("seed %d step %d: %d filed, %d online", seed, step, w.n, len(online))
			}
			switch r := rng.IntN(1000); {
			case r < 5:
				now += rng.Int64N(int64(3 * expiry)) // a jump: the sweeps fall behind
			default:
				now += rng.Int64N(int64(300 * time.Millisecond))
			}
		}
	}
}

func TestAgedQueue(t *testing.T) {
	var q agedQueue[int]
	if _, ok := q.popBefore(100); ok {
		t.Fatal("popped from an empty queue")
	}
	for i := range 5000 {
		q.push(i, int64(i))
	}
	for i := range 3000 {
		k, ok := q.popBefore(3000)
		if !ok || k != i {
			t.Fatalf("pop %d: %d %v", i, k, ok)
		}
	}
	if _, ok := q.popBefore(3000); ok {
		t.Fatal("popped one pushed at the limit")
	}
	if q.len() != 2000 {
		t.Fatalf("%d queued, want 2000", q.len())
	}
	// Out of order: the later one waits for the one before it.
	q.push(-1, 10)
	for i := 3000; i < 5000; i++ {
		if k, ok := q.popBefore(1 << 40); !ok || k != i {
			t.Fatalf("pop %d: %d %v", i, k, ok)
		}
	}
	if k, ok := q.popBefore(11); !ok || k != -1 {
		t.Fatalf("pop: %d %v, want -1", k, ok)
	}
	if q.len() != 0 || q.items != nil {
		t.Fatalf("%d queued, %d kept; want none", q.len(), cap(q.items))
	}
}
