package testenv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Impairment describes what a Wire does to the frames of one direction.
// The zero value forwards every frame at once.
type Impairment struct {
	// Delay is the one-way latency added to every frame.
	Delay time.Duration
	// Jitter spreads the delay uniformly over [Delay-Jitter, Delay+Jitter]
	// (clipped at zero). Frames are never reordered: a frame leaves no
	// earlier than the one before it, as on a real queue.
	Jitter time.Duration
	// Loss is the percentage (0-100) of IPv4 frames dropped at random.
	// ARP is never dropped, so loss never breaks neighbour resolution.
	Loss float64
}

func (im Impairment) String() string {
	return fmt.Sprintf("delay=%v jitter=%v loss=%g%%", im.Delay, im.Jitter, im.Loss)
}

// Direction selects one half of a Wire.
type Direction int

const (
	// Up is the direction from the attached router or host to the internet.
	Up Direction = iota
	// Down is the direction from the internet to the attached router or host.
	Down
)

func (d Direction) String() string {
	if d == Up {
		return "up"
	}
	return "down"
}

// WireStats counts frames of one direction.
type WireStats struct {
	Forwarded uint64 // frames written out
	Lost      uint64 // IPv4 frames dropped by the Loss impairment
	Overflow  uint64 // frames dropped because the delay queue was full
}

// Wire is the impairment stage between one attachment (a router's WAN or a
// public host) and the internet bridge. It is a userspace Ethernet repeater:
// two AF_PACKET sockets on two veth ends in the internet namespace, and per
// direction one goroutine that reads and one that writes after the delay.
// This kernel has no netem, and a userspace stage needs neither NFQUEUE
// (not built as an nftables expression here) nor a TUN routing setup.
//
// Frames are read and written with a virtio-net header (PACKET_VNET_HDR),
// so checksum-offload state travels with the frame and veth's partial
// checksums stay valid.
type Wire struct {
	name string
	dirs [2]*wireDir

	wg sync.WaitGroup // reader and writer goroutines
}

// vnetHdrLen is sizeof(struct virtio_net_hdr), the prefix PACKET_VNET_HDR
// puts before every frame.
const vnetHdrLen = 10

// wireQueueLen bounds the frames held in one direction's delay queue.
const wireQueueLen = 8192

type wireDir struct {
	dir Direction
	in  *os.File // read side
	out *os.File // write side

	mu  sync.Mutex // guards imp and rng
	imp Impairment
	rng *rand.Rand

	queue chan wireFrame

	forwarded, lost, overflow atomic.Uint64
}

type wireFrame struct {
	b       []byte
	release time.Time
}

// newWire starts a wire between the interfaces inner (towards the
// attachment) and outer (towards the bridge), both in ns. seed makes the
// random loss and jitter reproducible.
func newWire(ns *Namespace, name, inner, outer string, seed uint64) (*Wire, error) {
	var fi, fo *os.File
	err := ns.Do(func() error {
		var err error
		if fi, err = openPacketSocket(inner); err != nil {
			return err
		}
		if fo, err = openPacketSocket(outer); err != nil {
			fi.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("wire %s: %w", name, err)
	}
	w := &Wire{name: name}
	w.dirs[Up] = &wireDir{dir: Up, in: fi, out: fo, rng: rand.New(rand.NewPCG(seed, 1)), queue: make(chan wireFrame, wireQueueLen)}
	w.dirs[Down] = &wireDir{dir: Down, in: fo, out: fi, rng: rand.New(rand.NewPCG(seed, 2)), queue: make(chan wireFrame, wireQueueLen)}
	for _, d := range w.dirs {
		w.wg.Add(2)
		go func() {
			defer w.wg.Done()
			d.readLoop()
		}()
		go func() {
			defer w.wg.Done()
			d.writeLoop()
		}()
	}
	return w, nil
}

// openPacketSocket opens a non-blocking AF_PACKET socket bound to ifname in
// the calling thread's namespace, registered with the Go poller so that
// Close wakes a blocked Read.
func openPacketSocket(ifname string) (*os.File, error) {
	idx, err := netInterfaceIndex(ifname)
	if err != nil {
		return nil, err
	}
	// Protocol 0 receives nothing until bind, so no frame of another
	// interface slips in between socket and bind.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	opts := []struct {
		level, opt, val int
		name            string
	}{
		{unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1, "PACKET_VNET_HDR"},
		{unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING"},
		{unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4 << 20, "SO_RCVBUFFORCE"},
		{unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4 << 20, "SO_SNDBUFFORCE"},
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.val); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("setsockopt %s on %s: %w", o.name, ifname, err)
		}
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: idx}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind packet socket to %s: %w", ifname, err)
	}
	return os.NewFile(uintptr(fd), "packet:"+ifname), nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// netInterfaceIndex resolves an interface name in the calling thread's
// namespace.
func netInterfaceIndex(name string) (int, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, fmt.Errorf("interface %s: %w", name, err)
	}
	return int(ifr.Uint32()), nil
}

// Set applies im to both directions.
func (w *Wire) Set(im Impairment) {
	w.SetDirection(Up, im)
	w.SetDirection(Down, im)
}

// SetDirection applies im to one direction. It affects frames read after
// the call.
func (w *Wire) SetDirection(d Direction, im Impairment) {
	wd := w.dirs[d]
	wd.mu.Lock()
	wd.imp = im
	wd.mu.Unlock()
}

// Impairment returns the current setting of one direction.
func (w *Wire) Impairment(d Direction) Impairment {
	wd := w.dirs[d]
	wd.mu.Lock()
	defer wd.mu.Unlock()
	return wd.imp
}

// Stats returns the frame counters of one direction.
func (w *Wire) Stats(d Direction) WireStats {
	wd := w.dirs[d]
	return WireStats{Forwarded: wd.forwarded.Load(), Lost: wd.lost.Load(), Overflow: wd.overflow.Load()}
}

// Close stops the wire and waits for its goroutines. Frames still queued
// are discarded. After Close the wire's sockets no longer pin the internet
// namespace.
func (w *Wire) Close() error {
	var errs []error
	for _, d := range w.dirs {
		errs = append(errs, d.in.Close())
	}
	w.wg.Wait()
	return errors.Join(errs...)
}

// readLoop reads frames, applies loss and schedules them. It closes the
// queue when the read side is closed, which ends writeLoop.
func (d *wireDir) readLoop() {
	defer close(d.queue)
	var last time.Time
	for {
		buf := make([]byte, vnetHdrLen+65536)
		n, err := d.in.Read(buf)
		if err != nil {
			return // closed by Close, or the link went away
		}
		frame := buf[:n]
		now := time.Now()
		d.mu.Lock()
		imp := d.imp
		drop := imp.Loss > 0 && isIPv4(frame) && d.rng.Float64()*100 < imp.Loss
		delay := imp.Delay
		if imp.Jitter > 0 {
			delay += time.Duration((d.rng.Float64()*2 - 1) * float64(imp.Jitter))
			if delay < 0 {
				delay = 0
			}
		}
		d.mu.Unlock()
		if drop {
			d.lost.Add(1)
			continue
		}
		release := now.Add(delay)
		if release.Before(last) {
			release = last
		}
		last = release
		select {
		case d.queue <- wireFrame{b: frame, release: release}:
		default:
			d.overflow.Add(1)
		}
	}
}

// writeLoop writes frames once their release time has come.
func (d *wireDir) writeLoop() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for f := range d.queue {
		if wait := time.Until(f.release); wait > 0 {
			timer.Reset(wait)
			<-timer.C
		}
		if _, err := d.out.Write(f.b); err != nil {
			// Closing (the other direction's Close took our write
			// side) or the link is gone: drop the frame and drain.
			continue
		}
		d.forwarded.Add(1)
	}
}

// isIPv4 reports whether a vnet-header-prefixed Ethernet frame carries IPv4.
func isIPv4(frame []byte) bool {
	const off = vnetHdrLen + 12
	return len(frame) >= off+2 && binary.BigEndian.Uint16(frame[off:]) == unix.ETH_P_IP
}
