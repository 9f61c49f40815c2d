package api

import (
	"context"
	"errors"
	"testing"
	"time"
)

func next(t *testing.T, s *Sub) Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return e
}

func TestBusOrderAndStamp(t *testing.T) {
	b := NewBus(nil)
	s := b.Subscribe()
	b.Publish(&PeerJoined{Name: "a"})
	b.Publish(&Sent{ID: "1", To: "a", Text: "x"})
	e := next(t, s)
	if pj, ok := e.(*PeerJoined); !ok || pj.Name != "a" || pj.Type != TypePeerJoined || pj.TS.IsZero() {
		t.Fatalf("first event %#v", e)
	}
	if e := next(t, s); e.EventType() != TypeSent || HeaderOf(e).Type != TypeSent {
		t.Fatalf("second event %#v", e)
	}
}

func TestBusShownAfterHandled(t *testing.T) {
	b := NewBus(nil)
	s := b.Subscribe()
	shown := make(chan string, 2)
	b.PublishMessage(&Message{ID: "m1"}, func() { shown <- "m1" })
	b.PublishMessage(&Message{ID: "m2"}, func() { shown <- "m2" })
	if e := next(t, s); e.(*Message).ID != "m1" {
		t.Fatalf("got %#v", e)
	}
	select {
	case id := <-shown:
		t.Fatalf("%s marked shown before the front end asked for the next event", id)
	default:
	}
	next(t, s) // m1 handled now
	if id := <-shown; id != "m1" {
		t.Fatalf("shown %s, want m1", id)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next on empty queue with done ctx: %v", err)
	}
	if id := <-shown; id != "m2" {
		t.Fatalf("shown %s, want m2", id)
	}
}

func TestBusEarlyEventsForFirstSubscriber(t *testing.T) {
	b := NewBus(nil)
	b.Publish(&Registered{Name: "me"})
	s := b.Subscribe()
	if e := next(t, s); e.EventType() != TypeRegistered {
		t.Fatalf("first subscriber got %#v", e)
	}
	s.Close()
	b.Publish(&PeerJoined{Name: "lost"}) // with nobody subscribed now, state is not kept
	s2 := b.Subscribe()
	b.Publish(&Sent{ID: "x"})
	if e := next(t, s2); e.EventType() != TypeSent {
		t.Fatalf("second subscriber got %#v", e)
	}
}

func TestBusMessageWaitsForSubscriber(t *testing.T) {
	b := NewBus(nil)
	shown := make(chan struct{})
	b.PublishMessage(&Message{ID: "early"}, func() { close(shown) })
	s := b.Subscribe()
	if e := next(t, s); e.(*Message).ID != "early" {
		t.Fatalf("got %#v", e)
	}
	// A front end that closes without handling it hands it on.
	s.Close()
	s2 := b.Subscribe()
	if e := next(t, s2); e.(*Message).ID != "early" {
		t.Fatalf("second subscriber got %#v", e)
	}
	b.Publish(&Who2{})
	next(t, s2)
	<-shown
}

// Who2 is a non-droppable event for tests.
type Who2 = Peers

func TestBusDropsStateNotMessages(t *testing.T) {
	b := NewBus(nil)
	s := b.Subscribe()
	for i := range MaxStateEvents + 500 {
		b.Publish(&PathChanged{Peer: "p", RTTMS: float64(i)})
		if i%100 == 0 {
			b.PublishMessage(&Message{ID: "m"}, nil)
		}
	}
	b.Publish(&PeerLeft{Name: "q"}) // still dropped: the queue is full of state
	var paths, msgs, dropped int
	b.Publish(&Sent{ID: "end"})
	for {
		e := next(t, s)
		if e.EventType() == TypeSent {
			break
		}
		switch e := e.(type) {
		case *PathChanged:
			paths++
		case *Message:
			msgs++
		case *EventsDropped:
			dropped += e.Count
		}
	}
	if paths != MaxStateEvents || msgs != 16 || dropped != 501 {
		t.Fatalf("paths %d msgs %d dropped %d; want %d, 16, 501", paths, msgs, dropped, MaxStateEvents)
	}
	// Room again: state events flow.
	b.Publish(&PeerJoined{Name: "r"})
	if e := next(t, s); e.EventType() != TypePeerJoined {
		t.Fatalf("after draining got %#v", e)
	}
}

func TestBusCloseDrains(t *testing.T) {
	b := NewBus(nil)
	s := b.Subscribe()
	b.Publish(&Error{Code: CodeNameTaken})
	b.Close()
	b.Publish(&Error{Code: "after close"})
	if e := next(t, s); e.(*Error).Code != CodeNameTaken {
		t.Fatalf("got %#v", e)
	}
	if _, err := s.Next(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after close: %v", err)
	}
}

func TestBusWaitRoom(t *testing.T) {
	b := NewBus(nil)
	s := b.Subscribe()
	for range HighWater {
		b.Publish(&Sent{ID: "x"})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := b.WaitRoom(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitRoom with a full queue: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- b.WaitRoom(context.Background()) }()
	next(t, s)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitRoom did not return when the queue shrank")
	}
}

// TestBusTap: the tap sees every event, stamped, in publishing order, and
// is no subscriber: a message published with only the tap there still
// waits for the first subscriber, and is not shown by being tapped.
func TestBusTap(t *testing.T) {
	b := NewBus(nil)
	var tapped []string
	b.Tap(func(e Event) {
		if HeaderOf(e).TS.IsZero() {
			t.Errorf("%T tapped before it was stamped", e)
		}
		tapped = append(tapped, e.EventType())
	})
	shown := false
	b.Publish(&Sent{ID: "1", To: "a", Text: "x"})
	b.PublishMessage(&Message{ID: "m1"}, func() { shown = true })
	b.Publish(&PathChanged{Peer: "a"})
	if got := len(tapped); got != 3 || tapped[0] != TypeSent || tapped[1] != TypeMessage || tapped[2] != TypePath {
		t.Fatalf("tapped %v", tapped)
	}
	if shown {
		t.Fatal("a tapped message counts as shown")
	}
	s := b.Subscribe()
	for _, want := range []string{TypeSent, TypeMessage, TypePath} {
		if e := next(t, s); e.EventType() != want {
			t.Fatalf("subscriber got %s, want %s", e.EventType(), want)
		}
	}
	if !shown {
		t.Fatal("the subscriber handled the message, but it is not shown")
	}
	b.Tap(nil)
	b.Publish(&Sent{ID: "2"})
	b.Close()
	b.Publish(&Sent{ID: "3"})
	if len(tapped) != 3 {
		t.Fatalf("tapped %v after the tap was removed", tapped)
	}
}
