package rendezvous

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
)

// serveAll serves Conn on this goroutine and each of MoreConns on one of
// its own until ctx is done or one of them fails; then it closes them all,
// waits for their loops and returns the first failure.
func (s *Server) serveAll(ctx context.Context) error {
	more := s.opts.MoreConns
	if len(more) == 0 {
		return s.serve(ctx, s.opts.Conn)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		s.opts.Conn.Close() // unblocks the reads
		for _, c := range more {
			c.Close()
		}
	}()
	errs := make(chan error, len(more))
	for _, c := range more {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.serve(ctx, c); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	err := s.serve(ctx, s.opts.Conn)
	cancel()
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}

// ListenUDP opens n UDP sockets on addr (as net.ListenPacket("udp", addr)
// does), the second and later ones on the first one's port with
// SO_REUSEPORT, for Options.Conn and Options.MoreConns. Port 0 picks one
// port for them all. n > 1 is for Linux, whose kernel spreads the sources
// over the sockets; elsewhere it fails. A socket with SO_REUSEPORT may be
// joined by another process of the same user on the same port.
func ListenUDP(ctx context.Context, addr string, n int) ([]net.PacketConn, error) {
	if n <= 1 {
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, err
		}
		return []net.PacketConn{c}, nil
	}
	lc := net.ListenConfig{Control: reusePort}
	first, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, err
	}
	conns := []net.PacketConn{first}
	host, _, err := net.SplitHostPort(addr)
	if err == nil {
		addr = net.JoinHostPort(host, strconv.Itoa(first.LocalAddr().(*net.UDPAddr).Port))
		for len(conns) < n {
			var c net.PacketConn
			if c, err = lc.ListenPacket(ctx, "udp", addr); err != nil {
				break
			}
			conns = append(conns, c)
		}
	}
	if err != nil {
		for _, c := range conns {
			c.Close()
		}
		return nil, fmt.Errorf("socket %d of %d on %s: %w", len(conns)+1, n, addr, err)
	}
	return conns, nil
}
