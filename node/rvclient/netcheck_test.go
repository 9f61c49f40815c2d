package rvclient_test

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pion/stun/v2"

	"natchat/node/rvclient"
	"natchat/wire"
)

func (c *client) stunSeen(mine bool) {
	if mine {
		c.stun.mine.Add(1)
	} else {
		c.stun.others.Add(1)
	}
}

// srcFor returns where c's datagram to `to` seems to come from.
func (w *world) srcFor(c *client, to netip.AddrPort) netip.AddrPort {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c.altSrc.IsValid() && to != w.rvAddr {
		return c.altSrc
	}
	return c.addr
}

// symmetric puts c behind a NAT whose mapping depends on the destination:
// toward any address but the rendezvous's its datagrams come from another
// port, which it returns.
func (w *world) symmetric(c *client) netip.AddrPort {
	w.mu.Lock()
	defer w.mu.Unlock()
	c.altSrc = netip.AddrPortFrom(c.addr.Addr(), c.addr.Port()+1000)
	w.clients[c.altSrc] = c
	return c.altSrc
}

// registered adds a client and waits until it is registered.
func (w *world) registered(name string) *client {
	w.t.Helper()
	c := w.addClient(name, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.WaitRegistered(ctx); err != nil {
		w.t.Fatalf("%s not registered: %v", name, err)
	}
	return c
}

// netCheck runs a NetCheck and returns its report and how long it took.
func netCheck(c *client) (rvclient.NetReport, time.Duration) {
	start := time.Now()
	r := c.NetCheck(context.Background())
	return r, time.Since(start)
}

func TestNetCheckIndependent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorldWith(t, true)
		a := w.registered("alice")
		// The Hello's STUN answer may still be on its way when the
		// registration is: let it land (no time passes).
		synctest.Wait()
		// Right after registering, before any heartbeat: the check's own
		// heartbeat brings the second port.
		r, took := netCheck(a)
		if r.Mapping != rvclient.MappingIndependent || r.Server != w.rvAddr || r.Alt != w.altAddr ||
			r.Observed != a.addr || r.Mapped != a.addr || r.AltMapped != a.addr {
			t.Fatalf("report %+v", r)
		}
		if got := r.Public(); !slices.Equal(got, []netip.AddrPort{a.addr}) {
			t.Errorf("public %v, want %v", got, a.addr)
		}
		if r.Mapping.String() != "endpoint-independent" || !strings.Contains(r.Detail, a.addr.String()) {
			t.Errorf("mapping %v, detail %q", r.Mapping, r.Detail)
		}
		if took != 0 {
			t.Errorf("took %v on a network without delay or loss: nothing should wait for a retry", took)
		}
		if a.stun.mine.Load() < 3 { // the Hello's, and both probes'
			t.Errorf("%d STUN answers taken", a.stun.mine.Load())
		}
	})
}

func TestNetCheckDependent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorldWith(t, true)
		a := w.registered("alice")
		other := w.symmetric(a)
		r, _ := netCheck(a)
		if r.Mapping != rvclient.MappingDependent || r.Mapped != a.addr || r.AltMapped != other {
			t.Fatalf("report %+v", r)
		}
		if got := r.Public(); !slices.Equal(got, []netip.AddrPort{a.addr, other}) {
			t.Errorf("public %v, want %v then %v", got, a.addr, other)
		}
		for _, s := range []string{a.addr.String(), other.String(), w.rvAddr.String(), w.altAddr.String()} {
			if !strings.Contains(r.Detail, s) {
				t.Errorf("detail %q does not name %s", r.Detail, s)
			}
		}
	})
}

func TestNetCheckNoAlt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		a := w.registered("alice")
		r, took := netCheck(a)
		if r.Mapping != rvclient.MappingUnknown || r.Mapped != a.addr || r.Alt.IsValid() || r.AltMapped.IsValid() {
			t.Fatalf("report %+v", r)
		}
		if r.Detail != "the rendezvous has no second STUN address (-stun-alt)" {
			t.Errorf("detail %q", r.Detail)
		}
		if took != 0 {
			t.Errorf("took %v: the heartbeat answer says at once that there is no second address", took)
		}
	})
}

func TestNetCheckAltSilent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorldWith(t, true)
		a := w.registered("alice")
		var mu sync.Mutex
		var reqs [][stun.TransactionIDSize]byte
		w.setDrop(func(d dgram) bool {
			if d.to != w.altAddr {
				return false
			}
			mu.Lock()
			reqs = append(reqs, txOf(t, d.b))
			mu.Unlock()
			return true
		})
		r, took := netCheck(a)
		if r.Mapping != rvclient.MappingUnknown || r.Mapped != a.addr || r.Alt != w.altAddr || r.AltMapped.IsValid() {
			t.Fatalf("report %+v", r)
		}
		if want := "no answer from " + w.altAddr.String(); r.Detail != want {
			t.Errorf("detail %q, want %q", r.Detail, want)
		}
		if took != 3*time.Second {
			t.Errorf("gave up after %v, want 3s", took)
		}
		mu.Lock()
		defer mu.Unlock()
		// Sent at 0, 0.5 s, ... 2.5 s (and perhaps at 3 s): one
		// transaction, retransmitted.
		if len(reqs) < 6 || len(reqs) > 7 {
			t.Errorf("%d requests to the silent address, want 6 or 7", len(reqs))
		}
		for _, tx := range reqs {
			if tx != reqs[0] {
				t.Errorf("retransmission with another transaction ID")
			}
		}
	})
}

// TestNetCheckForgedAnswers: an answer is believed only with the
// transaction ID of the request and from the address it went to.
func TestNetCheckForgedAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorldWith(t, true)
		a := w.registered("alice")
		forged := []netip.AddrPort{
			netip.MustParseAddrPort("203.0.113.1:1"),
			netip.MustParseAddrPort("203.0.113.2:2"),
			netip.MustParseAddrPort("203.0.113.3:3"),
		}
		good := netip.MustParseAddrPort("203.0.113.4:4")
		var mu sync.Mutex
		honest := false // whether the forger also sends the right answer
		// The real second address never answers; the forger answers
		// the first request to it, from the wrong address or with the
		// wrong transaction ID.
		w.setDrop(func(d dgram) bool {
			if d.to != w.altAddr {
				return false
			}
			mu.Lock()
			defer mu.Unlock()
			tx := txOf(t, d.b)
			var wrong [stun.TransactionIDSize]byte
			copy(wrong[:], tx[:])
			wrong[0] ^= 1
			w.send(dgram{from: w.rvAddr, to: d.from, b: bindingSuccess(t, tx, forged[0])})                                                 // right ID, the main address
			w.send(dgram{from: netip.AddrPortFrom(w.altAddr.Addr(), w.altAddr.Port()+1), to: d.from, b: bindingSuccess(t, tx, forged[1])}) // right ID, another port
			w.send(dgram{from: w.altAddr, to: d.from, b: bindingSuccess(t, wrong, forged[2])})                                             // the right address, another ID
			if honest {
				w.send(dgram{from: w.altAddr, to: d.from, b: bindingSuccess(t, tx, good)})
			}
			return true
		})
		r, _ := netCheck(a)
		if r.Mapping != rvclient.MappingUnknown || r.AltMapped.IsValid() || r.Mapped != a.addr {
			t.Fatalf("report %+v", r)
		}
		for _, p := range r.Public() {
			if slices.Contains(forged, p) {
				t.Errorf("a forged answer's %v is in public %v", p, r.Public())
			}
		}
		if n := a.stun.others.Load(); n < 3 {
			t.Errorf("%d STUN answers declined, want at least the 3 forged per request", n)
		}
		// The same forger, now also with the right answer from the right
		// address: that one is believed, the others still not.
		mu.Lock()
		honest = true
		mu.Unlock()
		r, took := netCheck(a)
		if r.Mapping != rvclient.MappingDependent || r.AltMapped != good || r.Mapped != a.addr {
			t.Fatalf("report %+v", r)
		}
		if took != 0 {
			t.Errorf("took %v", took)
		}
	})
}

func TestNetCheckUnregistered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorldWith(t, true)
		// The rendezvous answers STUN, and nothing else reaches it.
		w.setDrop(func(d dgram) bool { return d.to == w.rvAddr && !wire.IsSTUN(d.b) })
		a := w.addClient("alice", nil)
		r, took := netCheck(a)
		if r.Mapping != rvclient.MappingUnknown || r.Mapped != a.addr || r.Observed.IsValid() || r.Alt.IsValid() {
			t.Fatalf("report %+v", r)
		}
		if !strings.HasPrefix(r.Detail, "not registered") {
			t.Errorf("detail %q", r.Detail)
		}
		if took != 0 {
			t.Errorf("took %v: unregistered, no heartbeat answer is awaited", took)
		}
	})
}

func TestNetCheckCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorldWith(t, true)
		w.setDrop(func(d dgram) bool { return true }) // a dead network
		a := w.addClient("alice", nil)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		r := a.NetCheck(ctx)
		if took := time.Since(start); took != time.Second {
			t.Errorf("returned after %v, want at the context's deadline", took)
		}
		if r.Mapping != rvclient.MappingUnknown || r.Mapped.IsValid() || !strings.Contains(r.Detail, "no answer from "+w.rvAddr.String()) {
			t.Errorf("report %+v", r)
		}
	})
}

// txOf returns a STUN message's transaction ID.
func txOf(t *testing.T, b []byte) [stun.TransactionIDSize]byte {
	m := &stun.Message{Raw: slices.Clone(b)}
	if err := m.Decode(); err != nil {
		t.Errorf("not STUN: %v", err)
	}
	return m.TransactionID
}

// bindingSuccess builds a Binding success answering tx with mapped.
func bindingSuccess(t *testing.T, tx [stun.TransactionIDSize]byte, mapped netip.AddrPort) []byte {
	m, err := stun.Build(stun.NewTransactionIDSetter(tx), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: mapped.Addr().AsSlice(), Port: int(mapped.Port())}, stun.Fingerprint)
	if err != nil {
		t.Error(err)
	}
	return m.Raw
}
