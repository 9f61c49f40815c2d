package messenger

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"natchat/node/api"
	"natchat/node/ui"
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

// inbox is the receiving state for one peer: its messages waiting to be
// shown, each with a channel closed once shown. Kept while the peer has a
// stream open or a message waits.
type inbox struct {
	streams int
	waiting map[wire.MsgID]chan struct{}
	slots   chan struct{} // one per message waiting (Options.Window)
}

// receipt is a receipt to write once shown is closed.
type receipt struct {
	id    wire.MsgID
	shown <-chan struct{}
}

// closedChan is a channel that is always closed: for receipts of messages
// shown before.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// ServeChat serves one incoming chat stream from peer: it shows each new
// message once and writes its receipt after it was shown. It returns when
// the stream ends; the caller closes the stream.
func (m *Messenger) ServeChat(ctx context.Context, peer wire.Key, st Stream) {
	name, err := m.opts.Dir.NameOf(ctx, peer)
	if err != nil {
		m.log.Info().Err(err).Str("key", peer.Short()).Msg("chat from a peer with no name; refused")
		return
	}
	if e := m.checkPin(name, peer); e != nil {
		m.reportConflict(name, peer, e)
		m.log.Warn().Str("peer", name).Str("key", peer.Short()).Msg("chat from a key that is not the one pinned; refused")
		return
	}
	in := m.openInbox(peer)
	defer m.closeInbox(peer, in)

	ctx, stop := context.WithCancel(ctx)
	receipts := make(chan receipt, m.opts.Window)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.writeReceipts(ctx, st, receipts)
	}()
	err = readFrames(st, func(k wire.FrameKind, body []byte) error {
		if k != wire.FrameMsg {
			return nil
		}
		msg, err := wire.ParseMsg(body)
		if err != nil {
			return err
		}
		if _, ok := APIKind(msg.Kind); !ok {
			// Not shown, and not acknowledged: a newer sender learns
			// nothing was delivered (its message times out).
			m.log.Info().Str("peer", name).Uint8("kind", uint8(msg.Kind)).
				Msg("message of a kind this node does not support; dropped")
			return nil
		}
		if msg.Room != "" {
			room, ok, err := m.acceptRoom(ctx, msg.Room, peer)
			if err != nil {
				return err // the stream ends unacknowledged: its sender writes it again on the next
			}
			if !ok {
				// Not acknowledged either: its sender sees it undelivered.
				m.log.Info().Str("peer", name).Str("room", ui.Safe(msg.Room)).
					Msg("message to a room we are not in, or from someone not in it; dropped")
				return nil
			}
			msg.Room = room
			if err := m.roomHold(ctx, room, peer); err != nil {
				return err
			}
		}
		// Older messages from the mailbox first: while it is being
		// drained, wait (not reading: flow control holds the sender).
		if err := m.waitDrain(ctx); err != nil {
			return err
		}
		shown, err := m.show(ctx, peer, name, in, msg, "")
		if err != nil {
			return err
		}
		r := receipt{id: msg.ID, shown: shown}
		select {
		case receipts <- r: // full: wait, and stop reading (flow control holds the sender)
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	})
	if ctx.Err() == nil && !errors.Is(err, io.EOF) {
		m.log.Debug().Err(err).Str("peer", name).Msg("chat stream ended")
	}
	stop()
	wg.Wait()
}

// reportConflict publishes a key_changed error for an incoming message or
// stream from peer under name, once per name and key.
func (m *Messenger) reportConflict(name string, peer wire.Key, e *api.Error) {
	m.mu.Lock()
	first := m.reported[wire.NameKey(name)] != peer
	m.reported[wire.NameKey(name)] = peer
	m.mu.Unlock()
	if first {
		m.bus.Publish(e)
	}
}

// show shows msg unless it was shown before or is waiting to be, and
// returns a channel closed once it has been shown. It waits while the
// peer has Window messages waiting to be shown. via is the message's Via
// ("" for live messages).
func (m *Messenger) show(ctx context.Context, peer wire.Key, name string, in *inbox, msg *wire.Msg, via string) (<-chan struct{}, error) {
	if m.opts.Store.Shown(peer, msg.ID) {
		return closedChan, nil
	}
	m.mu.Lock()
	ch := in.waiting[msg.ID]
	m.mu.Unlock()
	if ch != nil {
		return ch, nil
	}
	select {
	case in.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	m.mu.Lock()
	if ch := in.waiting[msg.ID]; ch != nil { // came on another stream meanwhile
		m.mu.Unlock()
		<-in.slots
		return ch, nil
	}
	ch = make(chan struct{})
	in.waiting[msg.ID] = ch
	m.mu.Unlock()
	id := msg.ID
	shownID := msg.ShownID()
	path := m.opts.PathOf(peer)
	if via == api.ViaMailbox {
		path = api.PathRelay // through the rendezvous
	}
	kind, _ := APIKind(msg.Kind) // the callers let only known kinds through
	m.bus.PublishMessage(&api.Message{ID: shownID.String(), From: name, Text: msg.Text, Kind: kind, Room: msg.Room,
		Path: path, Via: via, SentTS: time.UnixMilli(msg.SentMS).UTC()}, func() {
		// The front end has shown it: record it, then let the receipt go.
		if err := m.opts.Store.MarkShown(peer, id); err != nil {
			m.log.Error().Err(err).Str("peer", name).Msg("recording a shown message")
		}
		m.mu.Lock()
		delete(in.waiting, id)
		m.dropInboxLocked(peer, in)
		m.mu.Unlock()
		<-in.slots
		close(ch)
	})
	return ch, nil
}

// writeReceipts writes each receipt, in order, once its message is shown.
// Receipts already due are written together, and never held back behind
// a message not shown yet.
func (m *Messenger) writeReceipts(ctx context.Context, st Stream, receipts <-chan receipt) {
	var buf []byte
	for {
		var r receipt
		select {
		case r = <-receipts:
		case <-ctx.Done():
			return
		}
		for {
			select {
			case <-r.shown:
			default:
				// Not shown yet: first send what is due, then wait.
				if len(buf) > 0 {
					if _, err := st.Write(buf); err != nil {
						return
					}
					buf = buf[:0]
				}
				select {
				case <-r.shown:
				case <-ctx.Done():
					return
				}
			}
			buf = wire.AppendAck(buf, r.id)
			select {
			case r = <-receipts:
				continue
			default:
			}
			break
		}
		if _, err := st.Write(buf); err != nil {
			return
		}
		buf = buf[:0]
	}
}

func (m *Messenger) openInbox(peer wire.Key) *inbox {
	m.mu.Lock()
	defer m.mu.Unlock()
	in := m.inboxes[peer]
	if in == nil {
		in = &inbox{waiting: make(map[wire.MsgID]chan struct{}), slots: make(chan struct{}, m.opts.Window)}
		m.inboxes[peer] = in
	}
	in.streams++
	return in
}

func (m *Messenger) closeInbox(peer wire.Key, in *inbox) {
	m.mu.Lock()
	in.streams--
	m.dropInboxLocked(peer, in)
	m.mu.Unlock()
}

func (m *Messenger) dropInboxLocked(peer wire.Key, in *inbox) {
	if in.streams == 0 && len(in.waiting) == 0 && m.inboxes[peer] == in {
		delete(m.inboxes, peer)
	}
}

// Peers returns how many peers have receiving state and how many
// conversations are open, for leak tests.
func (m *Messenger) Peers() (inboxes, convs int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.inboxes), len(m.convs)
}
