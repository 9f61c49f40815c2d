package transfer

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
	"natchat/node/files"
	"natchat/wire"
)

// errFrameTooLong: a peer sent a frame longer than wire.MaxFrameLen.
var errFrameTooLong = errors.New("transfer: frame too long")

// inState is where an incoming transfer is.
type inState int

const (
	inDeciding  inState = iota // the offer waits for /accept or /reject
	inAccepted                 // receiving, or waiting for the sender's retry
	inFinishing                // every byte is in: verifying and naming the file
	inFinal                    // done, failed, rejected or cancelled
)

// incoming is a transfer to us.
//
// Its Part is open only in the Serve that holds sem. A Part is removed by
// whoever holds sem when the transfer is final (or, when no one holds it,
// by the one who made it final): removePartIfFree and Serve's checks of
// the state after taking sem and after its data loop.
type incoming struct {
	id    wire.FileID
	peer  wire.Key
	from  string
	offer wire.FileOffer
	man   *files.Manifest
	save  string        // the safe name to save under
	sem   chan struct{} // capacity 1: held by the Serve that has the Part open

	// Guarded by Manager.mu:
	state     inState
	decided   chan struct{} // closed when state leaves inDeciding
	deadline  time.Time     // inDeciding: rejected after it; inAccepted with no att: given up after it
	att       *attachment   // the stream serving it, if any
	reply     []byte        // inFinal: the frame for the sender, nil for none
	corrupt   int           // corrupt blocks in a row
	corruptAt int64         // Verified at the last corrupt block
	keep      bool          // final for a disk error: the .part stays
}

// attachment is a stream serving an incoming transfer.
type attachment struct {
	st   Stream
	kick chan struct{} // closed when another stream of the sender's takes over
	data bool          // past the decision: its Serve reads data (guarded by Manager.mu)
	wmu  sync.Mutex    // serialises writes
}

func (a *attachment) write(b []byte) error {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	_, err := a.st.Write(b)
	return err
}

// writeAndClose writes b (if any), waiting at most notifyWithin, and
// closes the stream.
func (a *attachment) writeAndClose(b []byte) {
	if b != nil {
		t := time.AfterFunc(notifyWithin, func() { a.st.Close() })
		a.write(b)
		t.Stop()
	}
	a.st.Close()
}

// Serve serves an incoming file stream from peer: an offer (new, or the
// sender's retry of one) or a sender's cancel. It returns when the stream
// is done with, having closed it.
func (m *Manager) Serve(ctx context.Context, peer wire.Key, st Stream) {
	defer st.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopRun := context.AfterFunc(m.runCtx(ctx), cancel)
	defer stopRun()
	stopClose := context.AfterFunc(ctx, func() { st.Close() })
	defer stopClose()

	br := bufio.NewReaderSize(st, 64<<10)
	timer := time.AfterFunc(m.offerTimeout, func() { st.Close() })
	defer timer.Stop()
	var body []byte
	kind, body, err := readFrame(br, body)
	if err != nil {
		return
	}
	switch kind {
	case wire.FrameFileReject:
		if j, err := wire.ParseFileReject(body); err == nil {
			m.peerCancelled(peer, j.ID)
		}
		return
	case wire.FrameFileOffer:
	default:
		m.log.Info().Str("key", peer.Short()).Uint8("frame", uint8(kind)).Msg("file stream without an offer; closed")
		return
	}
	offer, err := wire.ParseFileOffer(body)
	if err != nil {
		m.log.Info().Err(err).Str("key", peer.Short()).Msg("bad file offer")
		return
	}
	man := files.NewManifest(offer)
	for !man.Complete() {
		if kind, body, err = readFrame(br, body); err != nil {
			return
		}
		if kind == wire.FrameFileBlockHashes {
			m.log.Info().Str("key", peer.Short()).Msg("file offer with per-block hashes (an older natchat); refused")
			st.Write(rejectFrame(offer.ID, wire.FileRejectVersion, "this node takes files from natchat with chained block hashes only: update natchat"))
			return
		}
		if kind != wire.FrameFileChain {
			return
		}
		h, err := wire.ParseFileHashes(body, offer.Blocks())
		if err == nil {
			err = man.AddHashes(h)
		}
		if err != nil {
			m.log.Info().Err(err).Str("key", peer.Short()).Msg("bad file hashes")
			return
		}
	}
	if !timer.Stop() {
		return // too slow: the stream is closed
	}
	log := m.log.With().Str("id", offer.ID.String()).Str("key", peer.Short()).Logger()
	from, err := m.o.Peers.NameOf(ctx, peer)
	if err != nil {
		log.Info().Err(err).Msg("file offer from a peer with no name; refused")
		return
	}
	log = log.With().Str("peer", from).Logger()
	save, err := files.SafeName(offer.Name)
	if err != nil {
		log.Info().Err(err).Msg("file offer refused")
		st.Write(rejectFrame(offer.ID, wire.FileRejectBadName, err.Error()))
		return
	}
	if m.o.Downloads == "" {
		log.Info().Msg("file offer refused: no downloads directory")
		st.Write(rejectFrame(offer.ID, wire.FileRejectUser, "this node takes no files"))
		return
	}
	if offer.Size > m.o.MaxSize {
		log.Info().Int64("size", offer.Size).Msg("file offer too big; refused")
		st.Write(rejectFrame(offer.ID, wire.FileRejectTooBig, fmt.Sprintf("larger than %d bytes", m.o.MaxSize)))
		return
	}
	in, att, reply := m.admit(peer, from, offer, man, save, st)
	if in == nil {
		if reply != nil {
			st.Write(reply)
		}
		return
	}
	m.serveAttached(ctx, in, att, br)
}

// admit takes an offer in: a new transfer, or a retry of one we have (its
// stream replaces the old one), or of one whose .part we have on disk. It
// returns the transfer and the stream's attachment, or the frame to
// answer with (nil: just close).
func (m *Manager) admit(peer wire.Key, from string, offer *wire.FileOffer, man *files.Manifest, save string, st Stream) (*incoming, *attachment, []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := offer.ID
	if t, ok := m.tombs[id]; ok {
		if t.peer == peer {
			return nil, nil, t.reply
		}
		return nil, nil, nil
	}
	att := &attachment{st: st, kick: make(chan struct{})}
	if in := m.in[id]; in != nil {
		if in.peer != peer || in.offer != *offer || in.state == inFinal {
			return nil, nil, nil
		}
		if old := in.att; old != nil {
			close(old.kick)
			old.st.Close()
		}
		in.att = att
		return in, att, nil
	}
	resume := files.HasPart(m.o.Downloads, id)
	if !resume {
		n := 0
		for _, in := range m.in {
			if in.peer == peer {
				n++
			}
		}
		if n >= m.o.PerPeer {
			return nil, nil, rejectFrame(id, wire.FileRejectBusy, fmt.Sprintf("%d transfers at once", n))
		}
	}
	in := &incoming{id: id, peer: peer, from: from, offer: *offer, man: man, save: save,
		sem: make(chan struct{}, 1), decided: make(chan struct{}), att: att}
	m.in[id] = in
	if !resume {
		m.publish(&api.FileOffer{ID: id.String(), From: from, Name: offer.Name, Size: offer.Size, SHA256: hexSum(offer.SHA256)})
	}
	if resume || m.acceptFrom[from] {
		in.state = inAccepted
		close(in.decided)
	} else {
		in.deadline = m.o.Now().Add(m.o.DecideWithin)
	}
	m.log.Info().Str("id", id.String()).Str("peer", from).Int64("size", offer.Size).Bool("resume", resume).Msg("file offered")
	return in, att, nil
}

// serveAttached serves in on att's stream: waits for the decision, then
// receives.
func (m *Manager) serveAttached(ctx context.Context, in *incoming, att *attachment, br *bufio.Reader) {
	select {
	case <-in.decided:
	case <-att.kick:
		return
	case <-ctx.Done():
		m.detach(in, att)
		return
	}
	m.mu.Lock()
	if in.att != att {
		m.mu.Unlock()
		return
	}
	if in.state == inFinal {
		reply := in.reply
		m.mu.Unlock()
		if reply != nil {
			att.write(reply)
		}
		return
	}
	att.data = true
	m.mu.Unlock()

	select {
	case in.sem <- struct{}{}:
	case <-att.kick:
		return
	case <-ctx.Done():
		m.detach(in, att)
		return
	}
	defer func() {
		<-in.sem
		m.mu.Lock()
		final := in.state == inFinal
		m.mu.Unlock()
		if final {
			// Made final while we held the part (we may have let it go
			// just before): remove it, unless another Serve holds it now.
			m.removePartIfFree(in)
		}
	}()
	m.mu.Lock()
	state, current := in.state, in.att == att
	m.mu.Unlock()
	switch {
	case state == inFinal:
		return // the deferred check removes the part
	case !current:
		return
	}
	part, err := m.openPart(m.o.Downloads, in.id, in.man)
	if err != nil {
		m.failDisk(in, att, err)
		return
	}
	m.receive(ctx, in, att, br, part)
}

// receive accepts from the part's verified offset and writes the bytes
// that come into it, then saves the file.
func (m *Manager) receive(ctx context.Context, in *incoming, att *attachment, br *bufio.Reader, part *files.Part) {
	log := m.log.With().Str("id", in.id.String()).Str("peer", in.from).Logger()
	off := part.Verified()
	if err := att.write(wire.AppendFileAccept(nil, &wire.FileAccept{ID: in.id, Offset: off})); err != nil {
		part.Close()
		m.detach(in, att)
		return
	}
	log.Debug().Int64("offset", off).Msg("file accept sent")
	size := in.man.Size
	mt := newMeter(in.id.String(), size, off, func() string { return m.o.PathOf(in.peer) }, m.o.Now)
	rerr, werr := m.pipe(br, part, size-off, func(n int64) { mt.tick(m.publish, off+n) })

	m.mu.Lock()
	final, current := in.state == inFinal, in.att == att
	if !final && current && rerr == nil && werr == nil {
		in.state = inFinishing
	}
	m.mu.Unlock()
	switch {
	case final:
		part.Remove()
	case werr != nil && errors.Is(werr, files.ErrCorruptBlock):
		// The part has cut the block off. End the stream: the sender's
		// retry resends from the verified offset.
		v := part.Verified()
		m.mu.Lock()
		if in.corrupt == 0 || v > in.corruptAt {
			in.corrupt = 0
		}
		in.corrupt++
		in.corruptAt = v
		n := in.corrupt
		m.mu.Unlock()
		log.Warn().Err(werr).Int("in_a_row", n).Msg("corrupt block")
		if n >= maxCorrupt {
			part.Remove()
			reason := fmt.Sprintf("%v, %d times in a row", werr, n)
			if m.finalIn(in, rejectFrame(in.id, rejectVerify, api.FileVerifyFailed+": "+reason), api.FileVerifyFailed+": "+reason) {
				att.write(in.reply)
			}
			return
		}
		part.Close()
		m.detach(in, att)
	case werr != nil:
		part.Close() // the .part stays: never a half file under the final name
		m.failDisk(in, att, werr)
	case rerr != nil:
		// The stream broke, or was replaced: the sender retries.
		if err := part.Rewind(); err != nil {
			part.Close()
			m.failDisk(in, att, err)
			return
		}
		part.Close()
		m.detach(in, att)
	case !current:
		part.Close()
	default:
		m.finish(ctx, in, att, part)
	}
}

// pipe moves n bytes from the stream to the part on two goroutines: this
// one reads the stream, a writer verifies and writes (part.Write: SHA-256,
// pwrite, and every 8 MiB an fsync that takes milliseconds). So the stream
// is read, and quic-go's flow-control window kept open, while the disk is
// busy, and the two halves use two cores. At most recvBufs buffers are in
// flight. It returns the stream's error (io.EOF and the like when it ended
// early) and the part's; after the part's first error the rest is not
// read. progress is called from the writer with the bytes written.
func (m *Manager) pipe(br *bufio.Reader, part *files.Part, n int64, progress func(int64)) (rerr, werr error) {
	free := make(chan []byte, recvBufs)
	for range recvBufs {
		free <- make([]byte, bufSize)
	}
	full := make(chan []byte, recvBufs)
	failed := make(chan struct{}) // closed by the writer on the part's error
	done := make(chan error, 1)
	go func() {
		var written int64
		var err error
		for b := range full {
			if err == nil {
				if _, err = part.Write(b); err != nil {
					close(failed)
				} else {
					written += int64(len(b))
					progress(written)
				}
			}
			free <- b[:cap(b)]
		}
		done <- err
	}()
	for got := int64(0); got < n; {
		var buf []byte
		select {
		case <-failed: // first: a free buffer must not hide it
		default:
			select {
			case buf = <-free:
			case <-failed:
			}
		}
		if buf == nil {
			break
		}
		// Gather at least half a buffer before writing: quic-go's Read
		// returns what has arrived, often a few packets, and a pwrite and
		// a hash call per KiB cost more than the copy they spare.
		want := min(int64(len(buf)), n-got)
		k, err := io.ReadAtLeast(br, buf[:want], int(min(want, minWrite)))
		if k > 0 {
			full <- buf[:k]
			got += int64(k)
		} else {
			free <- buf
		}
		if err != nil {
			rerr = err
			break
		}
	}
	close(full)
	return rerr, <-done
}

// finish saves the complete file and tells the sender.
func (m *Manager) finish(ctx context.Context, in *incoming, att *attachment, part *files.Part) {
	path, err := part.Finish(m.o.Downloads, in.save)
	switch {
	case errors.Is(err, files.ErrFileHash):
		part.Remove()
		reason := api.FileVerifyFailed + ": the file does not match its SHA-256"
		if m.finalIn(in, rejectFrame(in.id, rejectVerify, reason), reason) {
			att.write(in.reply)
		}
		return
	case err != nil && path == "":
		part.Close()
		m.failDisk(in, att, err)
		return
	case err != nil:
		m.log.Warn().Err(err).Str("path", path).Msg("file saved, but not synced")
	}
	done := wire.AppendFileDone(nil, &wire.FileDone{ID: in.id, SHA256: in.man.SHA256})
	m.mu.Lock()
	m.finalInLocked(in, done, "")
	m.mu.Unlock()
	m.publish(&api.FileDone{ID: in.id.String(), Path: path, SHA256: hexSum(in.man.SHA256)})
	m.log.Info().Str("id", in.id.String()).Str("peer", in.from).Str("path", path).Msg("file received")
	if att.write(done) == nil {
		att.st.CloseWrite()
		// Wait for the sender to close (it has read FileDone), briefly.
		t := time.AfterFunc(notifyWithin, func() { att.st.Close() })
		io.Copy(io.Discard, att.st)
		t.Stop()
	}
}

// failDisk fails in for a disk error: FileReject Disk with the OS error.
func (m *Manager) failDisk(in *incoming, att *attachment, err error) {
	m.log.Warn().Err(err).Str("id", in.id.String()).Msg("cannot store file")
	m.mu.Lock()
	ok := m.finalInLocked(in, rejectFrame(in.id, wire.FileRejectDisk, err.Error()), api.FileDisk+": "+err.Error())
	if ok {
		in.keep = true
	}
	m.mu.Unlock()
	if ok {
		att.write(in.reply)
	}
}

// detach leaves in without its stream att, waiting for the sender's retry.
func (m *Manager) detach(in *incoming, att *attachment) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if in.att == att {
		in.att = nil
		if in.state == inAccepted {
			in.deadline = m.o.Now().Add(m.idleFor)
		}
	}
}

// finalIn makes in final (see finalInLocked); false if it was already.
func (m *Manager) finalIn(in *incoming, reply []byte, reason string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.finalInLocked(in, reply, reason)
}

// finalInLocked ends in: reply is what the sender gets (now and for
// retries), reason the file_failed's (none when empty: done). False if in
// was final already.
func (m *Manager) finalInLocked(in *incoming, reply []byte, reason string) bool {
	if in.state == inFinal {
		return false
	}
	if in.state == inDeciding {
		close(in.decided)
	}
	in.state, in.reply = inFinal, reply
	delete(m.in, in.id)
	m.tombLocked(in.id, in.peer, reply)
	if reason != "" {
		m.publish(&api.FileFailed{ID: in.id.String(), Reason: reason})
		m.log.Info().Str("id", in.id.String()).Str("peer", in.from).Str("reason", reason).Msg("file transfer failed")
	}
	return true
}

func (m *Manager) tombLocked(id wire.FileID, peer wire.Key, reply []byte) {
	now := m.o.Now()
	if len(m.tombs) >= maxTombs {
		for k, t := range m.tombs {
			if now.After(t.until) || len(m.tombs) >= maxTombs {
				delete(m.tombs, k)
			}
		}
	}
	m.tombs[id] = tomb{peer: peer, reply: reply, until: now.Add(tombFor)}
}

// removePartIfFree removes the part of a final transfer unless a Serve
// has it open (which then removes it), or it failed for a disk error.
func (m *Manager) removePartIfFree(in *incoming) {
	m.mu.Lock()
	keep := in.keep
	m.mu.Unlock()
	if keep {
		return
	}
	select {
	case in.sem <- struct{}{}:
		files.RemovePart(m.o.Downloads, in.id)
		<-in.sem
	default:
	}
}

// peerCancelled handles the sender's cancel of id.
func (m *Manager) peerCancelled(peer wire.Key, id wire.FileID) {
	m.mu.Lock()
	in := m.in[id]
	if in == nil || in.peer != peer {
		_, known := m.tombs[id]
		m.mu.Unlock()
		if in == nil && !known && files.HasPart(m.o.Downloads, id) {
			files.RemovePart(m.o.Downloads, id) // left by an earlier run
		}
		return
	}
	att := in.att
	m.finalInLocked(in, nil, api.FileCancelled+" by the peer")
	m.mu.Unlock()
	if att != nil {
		att.st.Close()
	}
	m.removePartIfFree(in)
}

// readFrame reads one frame from br into body's space.
func readFrame(br *bufio.Reader, body []byte) (wire.FrameKind, []byte, error) {
	k, err := br.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	l, err := binary.ReadUvarint(br)
	if err != nil {
		return 0, nil, err
	}
	if l > wire.MaxFrameLen {
		return 0, nil, fmt.Errorf("%w: %d bytes", errFrameTooLong, l)
	}
	if uint64(cap(body)) < l {
		body = make([]byte, l)
	}
	body = body[:l]
	if _, err := io.ReadFull(br, body); err != nil {
		return 0, nil, err
	}
	return wire.FrameKind(k), body, nil
}
