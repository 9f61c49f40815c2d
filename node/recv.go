package node

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/quic-go/quic-go"

	"natchat/node/link"
	"natchat/wire"
)

// errFrameTooLong: a peer sent a frame longer than wire.MaxFrameLen.
var errFrameTooLong = errors.New("frame too long")

// readFrames reads frames from r until it fails, calling f for each.
func readFrames(r io.Reader, f func(wire.FrameKind, []byte) error) error {
	br := bufio.NewReader(r)
	var body []byte
	for {
		k, err := br.ReadByte()
		if err != nil {
			return err
		}
		l, err := binary.ReadUvarint(br)
		if err != nil {
			return err
		}
		if l > wire.MaxFrameLen {
			return fmt.Errorf("%w: %d bytes", errFrameTooLong, l)
		}
		if uint64(cap(body)) < l {
			body = make([]byte, l)
		}
		body = body[:l]
		if _, err := io.ReadFull(br, body); err != nil {
			return err
		}
		if err := f(wire.FrameKind(k), body); err != nil {
			return err
		}
	}
}

// dedup remembers the last few thousand message IDs from one peer.
type dedup struct {
	set  map[wire.MsgID]struct{}
	ring []wire.MsgID
	next int
}

const dedupSize = 4096

func (d *dedup) seen(id wire.MsgID) bool {
	if _, ok := d.set[id]; ok {
		return true
	}
	if len(d.ring) < dedupSize {
		d.ring = append(d.ring, id)
	} else {
		delete(d.set, d.ring[d.next])
		d.ring[d.next] = id
		d.next = (d.next + 1) % dedupSize
	}
	d.set[id] = struct{}{}
	return false
}

// acceptLoop accepts peers' session connections.
func (n *Node) acceptLoop(ln *quic.Listener) {
	for {
		qc, err := ln.Accept(n.ctx)
		if err != nil {
			return
		}
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.serveConn(qc) }()
	}
}

// serveConn checks the peer's identity and serves its chat streams.
func (n *Node) serveConn(qc *quic.Conn) {
	addr, ok := qc.RemoteAddr().(link.Addr)
	var raw [][]byte
	for _, c := range qc.ConnectionState().TLS.PeerCertificates {
		raw = append(raw, c.Raw)
	}
	k, err := certKey(raw)
	if !ok || err != nil || k != addr.Key {
		n.log.Warn().Err(err).Msg("peer certificate does not match its link address; closed")
		qc.CloseWithError(1, "identity mismatch")
		return
	}
	n.addConn(k, qc)
	ctx := qc.Context()
	for {
		st, err := qc.AcceptStream(n.ctx)
		if err != nil {
			return
		}
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.serveStream(ctx, k, st) }()
	}
}

func (n *Node) serveStream(ctx context.Context, from wire.Key, st *quic.Stream) {
	defer st.Close()
	var pre [wire.PreambleLen]byte
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(st, pre[:]); err != nil {
		st.CancelRead(1)
		return
	}
	st.SetReadDeadline(time.Time{})
	kind, err := wire.ParsePreamble(pre[:])
	if err != nil || kind != wire.StreamChat {
		n.log.Info().Err(err).Uint8("kind", uint8(kind)).Msg("unsupported stream")
		st.CancelRead(1)
		return
	}
	name, err := n.nameOf(ctx, from)
	if err != nil {
		n.log.Info().Err(err).Str("key", from.Short()).Msg("unknown peer; stream refused")
		st.CancelRead(1)
		return
	}
	err = readFrames(st, func(k wire.FrameKind, body []byte) error {
		if k != wire.FrameMsg {
			return nil
		}
		m, err := wire.ParseMsg(body)
		if err != nil {
			return err
		}
		n.mu.Lock()
		d := n.seen[from]
		if d == nil {
			d = &dedup{set: make(map[wire.MsgID]struct{})}
			n.seen[from] = d
		}
		dup := d.seen(m.ID)
		if n.lastTo == "" {
			n.lastTo = name // plain text now answers the first to write
		}
		n.mu.Unlock()
		if !dup {
			n.emit(&Message{Header: hdr("message"), ID: m.ID.String(), From: name, Text: m.Text,
				Path: n.link.PathOf(from).Kind.String()})
		}
		// The receipt follows the message's display: "delivered" means shown.
		_, err = st.Write(wire.AppendAck(nil, m.ID))
		return err
	})
	if ctx.Err() == nil { // readFrames always ends with an error
		n.log.Debug().Err(err).Str("peer", name).Msg("chat stream ended")
	}
}
