package store

import (
	"errors"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"natchat/wire"
)

func TestPins(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	s := open(t, dir, Options{Now: c.Now})
	k1, k2, k3 := key(11), key(12), key(13)
	t0 := c.Now()

	type want struct {
		name string // looked up by this name and by key
		key  wire.Key
		pin  *Pin // nil: no pin
	}
	check := func(step string, wants ...want) {
		t.Helper()
		for _, w := range wants {
			p, ok, err := s.PinByName(w.name)
			if err != nil || ok != (w.pin != nil) || ok && (p.Name != w.pin.Name || p.Key != w.pin.Key || !p.Since.Equal(w.pin.Since)) {
				t.Errorf("%s: PinByName(%q) = %+v, %v, %v; want %+v", step, w.name, p, ok, err, w.pin)
			}
			if w.key.IsZero() {
				continue
			}
			p, ok, err = s.PinByKey(w.key)
			if err != nil || ok != (w.pin != nil) || ok && (p.Name != w.pin.Name || p.Key != w.pin.Key) {
				t.Errorf("%s: PinByKey(%s) = %+v, %v, %v; want %+v", step, w.key.Short(), p, ok, err, w.pin)
			}
		}
	}
	set := func(name string, k wire.Key) {
		t.Helper()
		if err := s.SetPin(name, k); err != nil {
			t.Fatalf("SetPin(%q, %s): %v", name, k.Short(), err)
		}
	}

	check("empty", want{"alice", k1, nil})
	set("Alice", k1)
	set("bob", k2)
	check("set", want{"alice", k1, &Pin{"Alice", k1, t0}}, want{"BOB", k2, &Pin{"bob", k2, t0}})

	c.Add(time.Hour)
	set("ALICE", k1) // same binding: spelling and Since kept
	check("same again", want{"alice", k1, &Pin{"Alice", k1, t0}})

	t1 := c.Now()
	set("alice", k3) // the name moves to a new key: k1 is no longer pinned
	check("name rebound",
		want{"alice", k3, &Pin{"alice", k3, t1}},
		want{"", k1, nil},
		want{"bob", k2, &Pin{"bob", k2, t0}})

	set("Carol", k2) // the key moves to a new name: bob is no longer pinned
	check("key rebound",
		want{"carol", k2, &Pin{"Carol", k2, t1}},
		want{"bob", wire.Key{}, nil},
		want{"alice", k3, &Pin{"alice", k3, t1}})

	set("carol", k3) // both: alice (k3) and carol (k2) give way
	check("both rebound",
		want{"carol", k3, &Pin{"carol", k3, t1}},
		want{"alice", wire.Key{}, nil},
		want{"", k2, nil})

	mustClose(t, s)
	s = open(t, dir, Options{Now: c.Now})
	check("reopened",
		want{"carol", k3, &Pin{"carol", k3, t1}},
		want{"alice", k1, nil},
		want{"bob", k2, nil})

	for _, tc := range []struct {
		name string
		key  wire.Key
	}{
		{"", k1},
		{"has space", k1},
		{"#room", k1},
		{"dave", wire.Key{}},
	} {
		if err := s.SetPin(tc.name, tc.key); err == nil {
			t.Errorf("SetPin(%q, %s) succeeded", tc.name, tc.key.Short())
		}
	}
}

func TestPinCorrupt(t *testing.T) {
	k5 := key(5)
	for _, tc := range []struct {
		name  string
		value []byte
	}{
		{"short", []byte{1, 2, 3}},
		{"no name", make([]byte, wire.KeyLen+8)},
		{"other name", append(append(k5[:], make([]byte, 8)...), "mallory"...)},
		{"zero key", append(make([]byte, wire.KeyLen+8), "bob"...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, t.TempDir(), Options{})
			if err := s.SetPin("bob", key(5)); err != nil {
				t.Fatal(err)
			}
			if err := s.db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket(bucketPinNames).Put([]byte("bob"), tc.value)
			}); err != nil {
				t.Fatal(err)
			}
			if _, ok, err := s.PinByName("bob"); ok || !errors.Is(err, ErrCorrupt) {
				t.Errorf("PinByName: %v, %v; want ErrCorrupt", ok, err)
			}
			if _, ok, err := s.PinByKey(key(5)); ok || !errors.Is(err, ErrCorrupt) {
				t.Errorf("PinByKey: %v, %v; want ErrCorrupt", ok, err)
			}
			if err := s.SetPin("bob", key(6)); !errors.Is(err, ErrCorrupt) {
				t.Errorf("SetPin over a corrupt pin: %v; want ErrCorrupt", err)
			}
		})
	}
}

func TestRendezvousKeyPin(t *testing.T) {
	dir := t.TempDir()
	self := wire.Key{1}
	s, err := Open(dir, self, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.RendezvousKey("rv.example:3478"); ok || err != nil {
		t.Fatalf("before any pin: %v %v", ok, err)
	}
	k := [32]byte{9, 9}
	if err := s.SetRendezvousKey("rv.example:3478", k); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(dir, self, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, ok, err := s.RendezvousKey("rv.example:3478"); !ok || err != nil || got != k {
		t.Fatalf("after reopen: %x %v %v", got, ok, err)
	}
	if _, ok, _ := s.RendezvousKey("other:3478"); ok {
		t.Fatal("a pin for another rendezvous")
	}
	if err := s.SetRendezvousKey("", k); err == nil {
		t.Fatal("empty address accepted")
	}
}
