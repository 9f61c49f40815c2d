// Package transfer sends and receives files over peer session streams of
// kind wire.StreamFile: /send, /accept, /reject and /cancel, and the
// file_offer, file_progress, file_done and file_failed events. The disk
// side (names, manifests, the verified and resumable .part) is package
// node/files; the frames are wire/files.go's.
//
// One stream carries one attempt at one transfer:
//
//	S→R  FileOffer, FileChain...       (a resumed transfer keeps its ID)
//	R→S  FileAccept{offset} | FileReject | FileDone (an ID already saved)
//	S→R  the raw bytes [offset, size), FIN
//	R→S  FileDone | FileReject
//
// A stream that breaks (a session dropped, a receiver restarted, a
// corrupt block, which the receiver answers by ending the stream) is
// retried by the sender with the same ID, with backoff, for as long as
// retries keep making progress; the receiver recognises the ID (a
// transfer it holds, or a .part in its downloads directory) and accepts
// at once from its last verified block.
//
// The sender cancels with a stream of its own that carries, instead of an
// offer, a FileReject{ID, FileRejectCancelled}: a FileReject is an
// R→S frame on a transfer's stream, but as the first frame of a stream it
// means "the sender cancels this ID" (on the transfer's own stream, the
// receiver reads raw bytes and could not see it). The receiver cancels by
// writing a FileReject{Cancelled} on the transfer's stream and closing it.
package transfer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"natchat/node/api"
	"natchat/node/files"
	"natchat/node/store"
	"natchat/wire"
)

// Stream is a session stream of kind wire.StreamFile (a *session.Stream in
// the node). Close may be called concurrently with Read and Write (it
// makes them return), and after Close the peer's writes fail; data we
// wrote before Close still reaches the peer.
type Stream interface {
	io.Reader
	io.Writer
	CloseWrite() error // FIN our direction
	Close() error      // both ways, abort; idempotent
}

// Sessions opens file streams to peers.
type Sessions interface {
	OpenFile(ctx context.Context, peer wire.Key) (Stream, error)
}

// Peers resolves names and keys with trust on first use (the messenger
// does it).
type Peers interface {
	// KeyOf returns the pinned/looked-up key for name, or an *api.Error
	// (unknown_peer, peer_offline, key_changed, bad_name...).
	KeyOf(ctx context.Context, name string) (wire.Key, *api.Error)
	// NameOf returns the (pinned) name of key, or an error.
	NameOf(ctx context.Context, key wire.Key) (string, error)
}

// Options configures a Manager. Bus, Sessions and Peers must be set.
type Options struct {
	Self         wire.Key
	Bus          *api.Bus
	Sessions     Sessions
	Peers        Peers
	Downloads    string                // directory files are saved in (made 0700 at the first accept); "": offers are rejected
	AcceptFrom   []string              // names whose offers are accepted without asking
	MaxSize      int64                 // largest file offered or accepted; 0: 4 GiB
	PerPeer      int                   // concurrent transfers per peer (each direction); 0: 4
	DecideWithin time.Duration         // how long an offer waits for /accept or /reject; 0: 10 min (then rejected)
	PathOf       func(wire.Key) string // "direct"/"relay" for progress events; nil: ""
	// Outbox keeps the files being sent, so that a restarted node offers
	// them again (the receiver resumes from its verified blocks). nil:
	// a restart ends them.
	Outbox Outbox
	Logger zerolog.Logger
	Now    func() time.Time // nil: time.Now
}

// Outbox is the durable record of files being sent (store.Store).
type Outbox interface {
	PutFileOut(f store.FileOut) error
	DeleteFileOut(id wire.FileID) error
	FilesOut() ([]store.FileOut, error)
}

// Defaults and limits.
const (
	defaultMaxSize      = 4 << 30
	defaultPerPeer      = 4
	defaultDecideWithin = 10 * time.Minute

	// bufSize is the data buffer of a transfer, either side: memory does
	// not grow with the file.
	bufSize = 256 << 10
	// minWrite is the least a receiver gathers before it writes to the
	// .part (but at the end of the file). Its reads ask for at least
	// bufSize-minWrite bytes, more than the stream's bufio buffer, so they
	// bypass that buffer (no extra copy).
	minWrite = 128 << 10
	// recvBufs is how many buffers a receiver's stream reader may fill
	// ahead of its writer (Manager.pipe): 1.5 MiB, which at 150 MB/s
	// covers a 10 ms fsync.
	recvBufs = 6
	// progressEvery spaces the file_progress events of a transfer.
	progressEvery = 250 * time.Millisecond
	// minBackoff and maxBackoff bound the sender's wait between attempts.
	minBackoff = 250 * time.Millisecond
	maxBackoff = 5 * time.Second
	// retryFor is how long the sender retries without progress.
	retryFor = 2 * time.Minute
	// idleFor is how long a receiver keeps an accepted transfer whose
	// stream broke waiting for the sender's retry.
	idleFor = retryFor + 30*time.Second
	// offerTimeout bounds reading an offer and its hashes.
	offerTimeout = 10 * time.Second
	// maxCorrupt corrupt blocks in a row, without progress in between,
	// fail a transfer.
	maxCorrupt = 3
	// tombFor is how long the answer for a finished transfer is kept, for
	// a sender's retry that missed it.
	tombFor = 10 * time.Minute
	// maxTombs bounds the answers kept.
	maxTombs = 4096
	// notifyWithin bounds telling the receiver of a sender's cancel, and
	// writing a receiver's cancel.
	notifyWithin = 5 * time.Second
	// replyWait is how long the sender, whose write failed, waits for the
	// receiver's FileReject that may explain it.
	replyWait = 2 * time.Second
)

// rejectVerify is the FileReject code for a transfer whose blocks kept
// failing verification (a code newer than wire's six: a sender that does
// not know it shows the reason).
const rejectVerify wire.FileRejectCode = 7

// Manager runs the file transfers of a node, both ways.
type Manager struct {
	o          Options
	log        zerolog.Logger
	acceptFrom map[string]bool

	// Timing, that tests shorten.
	retryFor, idleFor, offerTimeout, sweepEvery time.Duration
	// onAccept, if set, is called when a sender gets a FileAccept (tests).
	onAccept func(id wire.FileID, offset int64)
	// openPart is files.OpenPart; tests inject disk errors.
	openPart func(dir string, id wire.FileID, m *files.Manifest) (*files.Part, error)

	wg sync.WaitGroup

	mu sync.Mutex
	// Guarded by mu:
	ctx   context.Context // Start's; nil before Start
	out   map[wire.FileID]*outgoing
	in    map[wire.FileID]*incoming
	tombs map[wire.FileID]tomb
}

// tomb is the answer for a transfer this receiver finished: a sender's
// retry gets it instead of an accept.
type tomb struct {
	peer  wire.Key
	reply []byte // a FileDone or FileReject frame; nil: just close
	until time.Time
}

// New returns a Manager, creating the downloads directory if it is
// missing. Call Start before Send or Serve.
func New(o Options) (*Manager, error) {
	if o.Bus == nil || o.Sessions == nil || o.Peers == nil {
		return nil, errors.New("transfer: Bus, Sessions and Peers must be set")
	}
	if o.MaxSize <= 0 {
		o.MaxSize = defaultMaxSize
	}
	if o.PerPeer <= 0 {
		o.PerPeer = defaultPerPeer
	}
	if o.DecideWithin <= 0 {
		o.DecideWithin = defaultDecideWithin
	}
	if o.PathOf == nil {
		o.PathOf = func(wire.Key) string { return "" }
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m := &Manager{
		o:            o,
		log:          o.Logger.With().Str("sub", "transfer").Logger(),
		acceptFrom:   map[string]bool{},
		retryFor:     retryFor,
		idleFor:      idleFor,
		offerTimeout: offerTimeout,
		sweepEvery:   time.Second,
		openPart:     openPart,
		out:          map[wire.FileID]*outgoing{},
		in:           map[wire.FileID]*incoming{},
		tombs:        map[wire.FileID]tomb{},
	}
	for _, n := range o.AcceptFrom {
		m.acceptFrom[n] = true
	}
	return m, nil
}

// Start runs the Manager's background work (offers not answered in time,
// transfers whose sender stopped retrying) until ctx is done; transfers
// stop with ctx, leaving their .part files to resume.
func (m *Manager) Start(ctx context.Context) {
	m.mu.Lock()
	m.ctx = ctx
	m.mu.Unlock()
	if m.o.Outbox != nil {
		recs, err := m.o.Outbox.FilesOut()
		if err != nil {
			m.log.Error().Err(err).Msg("files being sent: a record is damaged")
		}
		for _, r := range recs {
			m.wg.Go(func() { m.resume(ctx, r) })
		}
	}
	m.wg.Go(func() {
		t := time.NewTicker(m.sweepEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				m.sweep(m.o.Now())
			}
		}
	})
}

// Wait waits for the goroutines of the Manager after Start's ctx is done.
func (m *Manager) Wait() { m.wg.Wait() }

// runCtx is Start's ctx, or ctx before Start.
func (m *Manager) runCtx(ctx context.Context) context.Context {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx != nil {
		return m.ctx
	}
	return ctx
}

func (m *Manager) publish(e api.Event) { m.o.Bus.Publish(e) }

func (m *Manager) refuse(code, msg, id string) {
	m.publish(&api.Error{Code: code, Message: msg, ID: id})
}

// Accept accepts the offer id (/accept ID).
func (m *Manager) Accept(id string) {
	fid, in := m.lookupIn(id)
	if in == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if in.state != inDeciding {
		m.refuse(api.CodeBadCommand, "transfer "+id+" is not waiting for an answer", id)
		return
	}
	in.state = inAccepted
	in.deadline = m.o.Now().Add(m.idleFor) // if no stream is attached now
	close(in.decided)
	m.log.Info().Str("id", fid.String()).Str("peer", in.from).Msg("file accepted")
}

// Reject refuses the offer id (/reject ID).
func (m *Manager) Reject(id string) {
	_, in := m.lookupIn(id)
	if in == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if in.state != inDeciding {
		m.refuse(api.CodeBadCommand, "transfer "+id+" is not waiting for an answer (/cancel stops it)", id)
		return
	}
	m.finalInLocked(in, rejectFrame(in.id, wire.FileRejectUser, ""), api.FileRejected)
}

// Cancel stops the transfer id, either side (/cancel ID).
func (m *Manager) Cancel(id string) {
	fid, err := wire.ParseFileID(id)
	if err != nil {
		m.refuse(api.CodeBadCommand, "no transfer "+id, id)
		return
	}
	m.mu.Lock()
	if o := m.out[fid]; o != nil {
		m.mu.Unlock()
		m.cancelOut(o)
		return
	}
	in := m.in[fid]
	if in == nil || in.state == inFinishing {
		m.mu.Unlock()
		m.refuse(api.CodeBadCommand, "no transfer "+id+" to cancel", id)
		return
	}
	att := in.att
	m.finalInLocked(in, rejectFrame(in.id, wire.FileRejectCancelled, ""), api.FileCancelled)
	data := att != nil && att.data
	m.mu.Unlock()
	if data {
		// The stream's Serve is reading data: write the reject for it
		// and end the stream, which makes it remove the part.
		m.wg.Go(func() { att.writeAndClose(in.reply) })
	}
	m.removePartIfFree(in)
}

// lookupIn returns the incoming transfer id, or refuses the command.
func (m *Manager) lookupIn(id string) (wire.FileID, *incoming) {
	fid, err := wire.ParseFileID(id)
	if err == nil {
		m.mu.Lock()
		in := m.in[fid]
		m.mu.Unlock()
		if in != nil {
			return fid, in
		}
	}
	m.refuse(api.CodeBadCommand, "no file offer "+id, id)
	return fid, nil
}

// sweep rejects offers not answered in time and gives up transfers whose
// sender stopped retrying, and forgets old answers.
func (m *Manager) sweep(now time.Time) {
	var idle []*incoming
	m.mu.Lock()
	for _, in := range m.in {
		switch {
		case in.state == inDeciding && now.After(in.deadline):
			m.finalInLocked(in, rejectFrame(in.id, wire.FileRejectUser, "not answered within "+m.o.DecideWithin.String()),
				api.FileRejected+": not answered within "+m.o.DecideWithin.String())
		case in.state == inAccepted && in.att == nil && now.After(in.deadline):
			m.finalInLocked(in, nil, api.FileBroken+": the sender did not resume within "+m.idleFor.String())
			idle = append(idle, in)
		}
	}
	for id, t := range m.tombs {
		if now.After(t.until) {
			delete(m.tombs, id)
		}
	}
	m.mu.Unlock()
	for _, in := range idle {
		m.removePartIfFree(in)
	}
}

// newID returns a random transfer ID.
func newID() wire.FileID {
	var id wire.FileID
	rand.Read(id[:])
	return id
}

func hexSum(s [32]byte) string { return hex.EncodeToString(s[:]) }

// rejectFrame is a FileReject frame.
func rejectFrame(id wire.FileID, code wire.FileRejectCode, reason string) []byte {
	return wire.AppendFileReject(nil, &wire.FileReject{ID: id, Code: code, Reason: reason})
}

// rejectReason is the file_failed reason at the sender for the receiver's
// FileReject.
func rejectReason(j *wire.FileReject) string {
	var kw string
	switch j.Code {
	case wire.FileRejectUser:
		kw = api.FileRejected
	case wire.FileRejectCancelled:
		kw = api.FileCancelled
	case wire.FileRejectTooBig:
		kw = api.FileTooBig
	case wire.FileRejectBadName:
		kw = api.FileBadName
	case wire.FileRejectBusy:
		kw = api.FileBusy
	case wire.FileRejectDisk:
		kw = api.FileDisk
	case rejectVerify:
		kw = api.FileVerifyFailed
	case wire.FileRejectVersion:
		kw = api.FileVersion
	default:
		kw = j.Code.String()
	}
	if j.Reason == "" {
		if j.Code == wire.FileRejectUser || j.Code == wire.FileRejectCancelled {
			return kw + " by the peer"
		}
		return kw
	}
	return kw + ": " + j.Reason
}

// meter paces and computes a transfer's progress events.
type meter struct {
	id    string
	total int64
	path  func() string
	now   func() time.Time

	at    time.Time // of the last sample
	bytes int64     // at the last sample
	rate  float64   // bytes a second, smoothed
}

func newMeter(id string, total, bytes int64, path func() string, now func() time.Time) *meter {
	return &meter{id: id, total: total, path: path, now: now, at: now(), bytes: bytes}
}

// tick publishes progress at bytes if the last one is progressEvery old.
func (mt *meter) tick(pub func(api.Event), bytes int64) {
	now := mt.now()
	dt := now.Sub(mt.at)
	if dt < progressEvery {
		return
	}
	inst := float64(bytes-mt.bytes) / dt.Seconds()
	if mt.rate == 0 || inst < 0 {
		mt.rate = max(inst, 0)
	} else {
		mt.rate = 0.7*mt.rate + 0.3*inst
	}
	mt.at, mt.bytes = now, bytes
	var eta int64
	if mt.rate >= 1 {
		eta = int64(float64(mt.total-bytes)/mt.rate + 0.999)
	}
	pub(&api.FileProgress{ID: mt.id, Bytes: bytes, Total: mt.total, RateBPS: int64(mt.rate), ETAS: eta, Path: mt.path()})
}

// baseName is the name a path is offered under.
func baseName(path string) string { return filepath.Base(path) }

// openPart opens a download's part, making the downloads directory (0700)
// first: only a node that accepts a file gets one.
func openPart(dir string, id wire.FileID, man *files.Manifest) (*files.Part, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("downloads: %w", err)
	}
	return files.OpenPart(dir, id, man)
}
