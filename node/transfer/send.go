package transfer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"natchat/node/api"
	"natchat/node/files"
	"natchat/node/store"
	"natchat/wire"
)

// outgoing is a transfer from us.
type outgoing struct {
	id     wire.FileID
	to     string
	peer   wire.Key
	path   string
	man    *files.Manifest
	offer  *wire.FileOffer
	frames []byte // the offer and its hashes
	stop   context.CancelFunc

	// Guarded by Manager.mu:
	st        Stream // the current attempt's
	final     bool
	cancelled bool
}

// Send offers the file at path to the peer to (/send NAME PATH). A path
// that is missing, not a regular file or unreadable is refused with an
// Error no_file, one larger than MaxSize with too_big, and a peer that
// cannot be resolved with the Peers' error (unknown_peer, peer_offline,
// key_changed, ...): these offers get no ID. Otherwise the file is hashed,
// file_offer (with To) says the offer goes out, and file_progress and
// file_done or file_failed follow; if no stream can be opened to the peer
// the offer fails at once (file_failed "peer offline"): files do not
// wait for a peer to come online.
func (m *Manager) Send(ctx context.Context, to, path string) {
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		m.refuse(api.CodeNoFile, err.Error(), "")
		return
	case !fi.Mode().IsRegular():
		m.refuse(api.CodeNoFile, path+" is not a regular file", "")
		return
	case fi.Size() > m.o.MaxSize:
		m.refuse(api.CodeTooBig, fmt.Sprintf("%s is %d bytes; at most %d are sent", path, fi.Size(), m.o.MaxSize), "")
		return
	}
	f, err := os.Open(path)
	if err != nil {
		m.refuse(api.CodeNoFile, err.Error(), "")
		return
	}
	f.Close()
	name := baseName(path)
	if _, err := files.SafeName(name); err != nil {
		m.refuse(api.CodeBadName, fmt.Sprintf("%q cannot be offered: %v", name, err), "")
		return
	}
	run := m.runCtx(ctx)
	m.wg.Go(func() { m.send(run, to, path, name) })
}

// send resolves the peer, hashes the file and runs the transfer.
func (m *Manager) send(ctx context.Context, to, path, name string) {
	key, e := m.o.Peers.KeyOf(ctx, to)
	if e != nil {
		if e.To == "" {
			e.To = to
		}
		m.publish(e)
		return
	}
	if key == m.o.Self {
		m.publish(&api.Error{Code: api.CodeBadCommand, Message: "a file to yourself", To: to})
		return
	}
	man, err := files.HashFile(path)
	switch {
	case errors.Is(err, files.ErrTooBig):
		m.refuse(api.CodeTooBig, err.Error(), "")
		return
	case err != nil:
		m.refuse(api.CodeNoFile, err.Error(), "")
		return
	case man.Size > m.o.MaxSize:
		m.refuse(api.CodeTooBig, fmt.Sprintf("%s is %d bytes; at most %d are sent", path, man.Size, m.o.MaxSize), "")
		return
	}
	id := newID()
	if m.o.Outbox != nil {
		rec := store.FileOut{ID: id, To: to, Path: path, Size: man.Size, SHA256: man.SHA256, Created: m.o.Now()}
		if err := m.o.Outbox.PutFileOut(rec); err != nil {
			m.log.Error().Err(err).Str("id", id.String()).Msg("recording a file being sent; a restart will not resume it")
		}
	}
	m.run(ctx, id, to, key, path, name, man)
}

// resume offers again, after a restart, a file that was being sent: the
// same ID, so that the receiver resumes from what it verified. The peer
// is waited for (retryFor) if it is not online yet; a file that changed
// meanwhile fails.
func (m *Manager) resume(ctx context.Context, r store.FileOut) {
	log := m.log.With().Str("id", r.ID.String()).Str("peer", r.To).Logger()
	fail := func(reason string) {
		m.publish(&api.FileFailed{ID: r.ID.String(), Reason: reason})
		m.forget(r.ID)
	}
	var key wire.Key
	backoff := minBackoff
	for deadline := m.o.Now().Add(m.retryFor); ; {
		k, e := m.o.Peers.KeyOf(ctx, r.To)
		if e == nil {
			key = k
			break
		}
		if ctx.Err() != nil {
			return
		}
		if (e.Code != api.CodePeerOffline && e.Code != api.CodeRendezvousUnreachable) || m.o.Now().After(deadline) {
			fail(api.FilePeerOffline + ": " + e.Message)
			return
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
	man, err := files.HashFile(r.Path)
	if err != nil || man.Size != r.Size || man.SHA256 != r.SHA256 {
		if err == nil {
			err = errors.New("its contents are not those offered")
		}
		log.Info().Err(err).Msg("a file being sent changed while the node was down")
		fail(api.FileChanged + ": " + err.Error())
		return
	}
	log.Info().Msg("offering a file again after a restart")
	m.run(ctx, r.ID, r.To, key, r.Path, baseName(r.Path), man)
}

// forget drops the durable record of a file whose transfer ended.
func (m *Manager) forget(id wire.FileID) {
	if m.o.Outbox == nil {
		return
	}
	if err := m.o.Outbox.DeleteFileOut(id); err != nil {
		m.log.Error().Err(err).Str("id", id.String()).Msg("forgetting a file sent")
	}
}

// run announces the offer and runs the transfer to its end; the durable
// record goes once it has an outcome (not when the node stops first).
func (m *Manager) run(ctx context.Context, id wire.FileID, to string, key wire.Key, path, name string, man *files.Manifest) {
	offer := man.Offer(id, name)
	frames := wire.AppendFileOffer(nil, offer)
	frames = wire.AppendFileHashFrames(frames, man.Blocks)
	tctx, stop := context.WithCancel(ctx)
	defer stop()
	o := &outgoing{id: id, to: to, peer: key, path: path, man: man, offer: offer, frames: frames, stop: stop}
	defer func() {
		m.mu.Lock()
		final := o.final
		m.mu.Unlock()
		if final {
			m.forget(id)
		}
	}()
	m.mu.Lock()
	m.out[id] = o
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		if m.out[id] == o {
			delete(m.out, id)
		}
		m.mu.Unlock()
	}()
	m.publish(&api.FileOffer{ID: id.String(), To: to, Name: name, Size: man.Size, SHA256: hexSum(man.SHA256)})
	m.log.Info().Str("id", id.String()).Str("peer", to).Str("path", path).Int64("size", man.Size).Msg("file offered")
	m.runOut(tctx, o)
	m.mu.Lock()
	cancelled := o.cancelled
	m.mu.Unlock()
	if cancelled && ctx.Err() == nil {
		m.notifyCancel(ctx, o)
	}
}

// outcome is how an attempt ended.
type outcome int

const (
	outBroken outcome = iota // the stream broke: retry
	outDone                  // the receiver saved the file
	outFailed                // the transfer cannot succeed
)

// runOut makes attempts until one succeeds or fails for good, retrying
// broken streams with backoff while they make progress.
func (m *Manager) runOut(ctx context.Context, o *outgoing) {
	log := m.log.With().Str("id", o.id.String()).Str("peer", o.to).Logger()
	backoff := minBackoff
	lastProgress := m.o.Now()
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return
		}
		st, err := m.o.Sessions.OpenFile(ctx, o.peer)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if attempt == 0 {
				m.finishOut(o, &api.FileFailed{ID: o.id.String(), Reason: api.FilePeerOffline + ": " + err.Error()})
				return
			}
			log.Debug().Err(err).Msg("file stream: cannot open")
		} else {
			m.mu.Lock()
			if o.final {
				m.mu.Unlock()
				st.Close()
				return
			}
			o.st = st
			m.mu.Unlock()
			began := m.o.Now()
			kind, reason, progressed := m.attempt(ctx, o, st)
			// A stream that stayed up a while (an offer waiting for its
			// answer, say) counts as progress too.
			progressed = progressed || m.o.Now().Sub(began) >= time.Second
			switch kind {
			case outDone:
				m.finishOut(o, &api.FileDone{ID: o.id.String(), Path: o.path, SHA256: hexSum(o.man.SHA256)})
				log.Info().Msg("file sent")
				return
			case outFailed:
				m.finishOut(o, &api.FileFailed{ID: o.id.String(), Reason: reason})
				return
			}
			log.Debug().Str("why", reason).Bool("progressed", progressed).Msg("file stream broke")
			if progressed {
				lastProgress, backoff = m.o.Now(), minBackoff
			}
			err = errors.New(reason)
		}
		if m.o.Now().Sub(lastProgress) > m.retryFor {
			m.finishOut(o, &api.FileFailed{ID: o.id.String(), Reason: api.FileBroken + ": " + err.Error()})
			return
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// frame is a frame the sender read, or the error that ended reading.
type frame struct {
	kind wire.FrameKind
	body []byte
	err  error
}

// attempt runs one stream of o: offer, answer, data, outcome. The reason
// says why it failed or broke; progressed whether the receiver answered.
func (m *Manager) attempt(ctx context.Context, o *outgoing, st Stream) (_ outcome, reason string, progressed bool) {
	frames := make(chan frame, 4)
	quit := make(chan struct{})
	stopClose := context.AfterFunc(ctx, func() { st.Close() })
	done := make(chan struct{})
	go func() {
		defer close(done)
		br := bufio.NewReader(st)
		var f frame
		for f.err == nil {
			f.kind, f.body, f.err = readFrame(br, nil)
			select {
			case frames <- f:
			case <-quit:
				return
			}
		}
	}()
	defer func() {
		stopClose()
		st.Close()
		close(quit)
		<-done
	}()
	next := func(within time.Duration) frame {
		var timeout <-chan time.Time
		if within > 0 {
			t := time.NewTimer(within)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case f := <-frames:
			return f
		case <-ctx.Done():
			return frame{err: ctx.Err()}
		case <-timeout:
			return frame{err: errors.New("no answer")}
		}
	}

	if _, err := st.Write(o.frames); err != nil {
		return outBroken, err.Error(), false
	}
	f := next(0)
	if f.err != nil {
		return outBroken, f.err.Error(), false
	}
	switch f.kind {
	case wire.FrameFileAccept:
	case wire.FrameFileReject, wire.FrameFileDone:
		return m.answer(o, f)
	default:
		return outBroken, fmt.Sprintf("unexpected frame %d", f.kind), true
	}
	a, err := wire.ParseFileAccept(f.body)
	if err == nil {
		err = o.offer.CheckAccept(a)
	}
	if err != nil {
		return outBroken, err.Error(), false
	}
	if m.onAccept != nil {
		m.onAccept(o.id, a.Offset)
	}
	sent, err := m.sendData(ctx, o, st, a.Offset)
	if errors.Is(err, errChanged) {
		return outFailed, api.FileChanged + ": " + err.Error(), true
	}
	if err != nil {
		// The receiver may have said why it ended the stream.
		if f := next(replyWait); f.err == nil {
			return m.answer(o, f)
		}
		return outBroken, err.Error(), sent > 0
	}
	st.CloseWrite()
	if f = next(0); f.err != nil {
		return outBroken, f.err.Error(), true
	}
	return m.answer(o, f)
}

// answer is the outcome of the receiver's FileReject or FileDone.
func (m *Manager) answer(o *outgoing, f frame) (outcome, string, bool) {
	switch f.kind {
	case wire.FrameFileReject:
		j, err := wire.ParseFileReject(f.body)
		if err != nil || j.ID != o.id {
			return outBroken, "bad reject", false
		}
		return outFailed, rejectReason(j), true
	case wire.FrameFileDone:
		d, err := wire.ParseFileDone(f.body)
		if err != nil || d.ID != o.id {
			return outBroken, "bad done", false
		}
		if d.SHA256 != o.man.SHA256 {
			return outFailed, api.FileVerifyFailed + ": the receiver saved another SHA-256", true
		}
		return outDone, "", true
	}
	return outBroken, fmt.Sprintf("unexpected frame %d", f.kind), true
}

// errChanged: the file being sent is not the one offered any more.
var errChanged = errors.New("transfer: file changed")

// sendData writes the file from off to its end.
func (m *Manager) sendData(ctx context.Context, o *outgoing, st Stream, off int64) (int64, error) {
	f, err := os.Open(o.path)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errChanged, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() != o.man.Size {
		return 0, fmt.Errorf("%w: %s", errChanged, o.path)
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return 0, fmt.Errorf("%w: %w", errChanged, err)
	}
	mt := newMeter(o.id.String(), o.man.Size, off, func() string { return m.o.PathOf(o.peer) }, m.o.Now)
	buf := make([]byte, bufSize)
	var sent int64
	for off+sent < o.man.Size {
		n, err := f.Read(buf[:min(int64(len(buf)), o.man.Size-off-sent)])
		if n > 0 {
			if _, werr := st.Write(buf[:n]); werr != nil {
				return sent, werr
			}
			sent += int64(n)
			mt.tick(m.publish, off+sent)
		}
		if err == io.EOF && off+sent < o.man.Size {
			return sent, fmt.Errorf("%w: %s is shorter", errChanged, o.path)
		}
		if err != nil && err != io.EOF {
			return sent, fmt.Errorf("%w: %w", errChanged, err)
		}
		if ctx.Err() != nil {
			return sent, ctx.Err()
		}
	}
	return sent, nil
}

// finishOut ends o with e (file_done or file_failed), once.
func (m *Manager) finishOut(o *outgoing, e api.Event) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if o.final {
		return false
	}
	o.final = true
	delete(m.out, o.id)
	m.publish(e)
	return true
}

// cancelOut cancels o (/cancel): file_failed now, then the receiver is
// told.
func (m *Manager) cancelOut(o *outgoing) {
	m.mu.Lock()
	if o.final {
		m.mu.Unlock()
		return
	}
	o.final, o.cancelled = true, true
	delete(m.out, o.id)
	m.publish(&api.FileFailed{ID: o.id.String(), Reason: api.FileCancelled})
	st := o.st
	m.mu.Unlock()
	o.stop()
	if st != nil {
		st.Close()
	}
}

// notifyCancel tells o's receiver that we cancelled, on a stream of its
// own (see the package doc), waiting at most notifyWithin.
func (m *Manager) notifyCancel(ctx context.Context, o *outgoing) {
	ctx, cancel := context.WithTimeout(ctx, notifyWithin)
	defer cancel()
	st, err := m.o.Sessions.OpenFile(ctx, o.peer)
	if err != nil {
		return
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Close() })
	defer stop()
	if _, err := st.Write(rejectFrame(o.id, wire.FileRejectCancelled, "")); err != nil {
		return
	}
	st.CloseWrite()
	io.Copy(io.Discard, st) // until the receiver closes: it has handled it
}
