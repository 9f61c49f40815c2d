package messenger

import (
	"context"
	"errors"
	"time"

	"natchat/node/api"
	"natchat/node/mailbox"
	"natchat/node/ui"
	"natchat/wire"
)

// The receiving side of the offline mailbox (see the package doc).

// mailQueue bounds the messages from our mailbox waiting for the mail
// goroutine; more are refused, and fetched again (the rendezvous client
// hands out at most a few dozen before they are acknowledged).
const mailQueue = 64

// mailIn is a message from our mailbox, sealed.
type mailIn struct {
	from     wire.Key
	id       wire.MsgID
	storedMS int64
	blob     []byte
}

// ReceiveMail takes a sealed message from our mailbox
// (rvclient.MailObserver.Mail). It never blocks: the mail goroutine opens
// and shows the messages in the order they came. It returns false for one
// that does not fit its queue: the rendezvous client hands out nothing
// after it and fetches it again.
func (m *Messenger) ReceiveMail(from wire.Key, id wire.MsgID, storedMS int64, blob []byte) bool {
	if m.mail == nil {
		return false
	}
	select {
	case m.mailQ <- mailIn{from: from, id: id, storedMS: storedMS, blob: blob}:
		return true
	default:
		m.log.Debug().Str("from", from.Short()).Stringer("id", id).Msg("mailbox: behind; message refused for now")
		return false
	}
}

// MailDrain hears that a drain of our mailbox began or ended
// (rvclient.MailObserver.MailDrain). While one is under way, live
// messages wait for it, at most DrainWait from its start. It never blocks.
func (m *Messenger) MailDrain(active bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case active && m.drainDone == nil:
		m.drainDone = make(chan struct{})
		m.drainUntil = m.now().Add(m.opts.DrainWait)
	case !active && m.drainDone != nil:
		close(m.drainDone)
		m.drainDone = nil
		m.drainGen++
	}
}

// waitDrain waits while a drain of our mailbox is under way, at most until
// its DrainWait is up.
func (m *Messenger) waitDrain(ctx context.Context) error {
	m.mu.Lock()
	done, until := m.drainDone, m.drainUntil
	m.mu.Unlock()
	if done == nil {
		return nil
	}
	d := until.Sub(m.now())
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		m.log.Info().Msg("mailbox drain not over in time; showing live messages")
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// mailAck is a message from our mailbox to acknowledge once shown.
type mailAck struct {
	from  wire.Key
	id    wire.MsgID
	shown <-chan struct{}
}

// blocked is a sender whose message failed for now (and was left in the
// mailbox): its later messages are left too, until that one comes again
// (it comes first: the rendezvous hands out the oldest first), or the
// drain ends.
type blocked struct {
	id  wire.MsgID
	gen uint64 // m.drainGen when it failed
}

// mailLoop takes the messages of our mailbox, in order, until ctx is done;
// its acknowledger acknowledges them in the same order once shown.
func (m *Messenger) mailLoop(ctx context.Context) {
	acks := make(chan mailAck, mailQueue)
	m.wg.Add(1)
	go func() { defer m.wg.Done(); m.mailAcker(ctx, acks) }()
	failed := make(map[wire.Key]blocked)
	for {
		var in mailIn
		select {
		case <-ctx.Done():
			return
		case in = <-m.mailQ:
		}
		m.mu.Lock()
		gen := m.drainGen
		m.mu.Unlock()
		if b, ok := failed[in.from]; ok {
			if b.id != in.id && b.gen == gen {
				// Not shown before the one that failed.
				m.mail.LeaveMail(in.from, in.id)
				continue
			}
			delete(failed, in.from)
		}
		if !m.takeMail(ctx, in, acks) && ctx.Err() == nil {
			m.mail.LeaveMail(in.from, in.id)
			failed[in.from] = blocked{id: in.id, gen: gen}
		}
	}
}

// mailAcker acknowledges each message once it has been shown, in order
// (messages are shown in the order published).
func (m *Messenger) mailAcker(ctx context.Context, acks <-chan mailAck) {
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-acks:
			select {
			case <-a.shown:
				m.mail.AckMail(a.from, a.id)
			case <-ctx.Done():
				return
			}
		}
	}
}

// takeMail opens and shows one message from our mailbox, and has it
// acknowledged once shown. It reports false when it failed for now (the
// caller leaves it in the mailbox: it comes again).
func (m *Messenger) takeMail(ctx context.Context, in mailIn, acks chan<- mailAck) bool {
	log := m.log.With().Str("from", in.from.Short()).Stringer("id", in.id).Logger()
	name, err := m.mailSender(ctx, in.from)
	switch {
	case errors.Is(err, errNoName):
		// No name has this key: nobody we could show it from. The
		// rendezvous vouched for the sender's key, so this is junk.
		log.Warn().Err(err).Msg("mailbox: message refused: its sender has no name; dropped")
		m.mail.AckMail(in.from, in.id)
		return true
	case err != nil:
		log.Info().Err(err).Msg("mailbox: cannot find the sender's name now; the message stays in the mailbox")
		return false
	}
	log = log.With().Str("peer", name).Logger()
	if e := m.checkPin(name, in.from); e != nil {
		// Like a live stream from that key: refused, and said once. It
		// stays in the mailbox (not acknowledged) until /trust and the
		// next registration, or until it expires.
		m.reportConflict(name, in.from, e)
		log.Warn().Msg("mailbox: message from a key that is not the one pinned for its name; left in the mailbox")
		m.mail.KeepMail(in.from, in.id)
		return true
	}
	msg, err := mailbox.OpenMail(m.opts.Identity, in.from, in.id, in.blob)
	if err != nil {
		// Altered or forged (only the rendezvous, or someone who broke it,
		// could do that): refused. It is acknowledged, so that it does not
		// stop the mailbox for good; its sender gets a "delivered"
		// receipt for a message we never showed, which is the one lie a
		// rendezvous able to alter blobs can tell anyway (it could delete
		// them).
		log.Warn().Err(err).Str("key", in.from.String()).Msg("mailbox: message refused: it does not open; dropped")
		m.mail.AckMail(in.from, in.id)
		return true
	}
	if _, ok := APIKind(msg.Kind); !ok {
		log.Info().Uint8("kind", uint8(msg.Kind)).Msg("mailbox: message of a kind this node does not support; dropped")
		m.mail.AckMail(in.from, in.id)
		return true
	}
	if msg.Room != "" {
		room, ok, err := m.acceptRoom(ctx, msg.Room, in.from)
		if err != nil {
			log.Info().Err(err).Msg("mailbox: a room message cannot be checked now; it stays in the mailbox")
			return false
		}
		if !ok {
			// Acknowledged, so that it does not block the mailbox; its
			// sender hears "delivered" from the rendezvous (the
			// rendezvous's word, as for any mail).
			log.Warn().Str("room", ui.Safe(msg.Room)).Msg("mailbox: message to a room we are not in, or from someone not in it; dropped")
			m.mail.AckMail(in.from, in.id)
			return true
		}
		msg.Room = room
	}
	inbox := m.openInbox(in.from)
	shown, err := m.show(ctx, in.from, name, inbox, msg, api.ViaMailbox)
	m.closeInbox(in.from, inbox)
	if err != nil {
		return true // stopping
	}
	select {
	case acks <- mailAck{from: in.from, id: in.id, shown: shown}:
	case <-ctx.Done():
	}
	return true
}

// errNoName: the rendezvous knows no name for a key.
var errNoName = errors.New("no name is registered for this key")

// mailSender returns the name of a mailbox message's sender: the name
// pinned to its key, else the rendezvous's.
func (m *Messenger) mailSender(ctx context.Context, k wire.Key) (string, error) {
	if p, ok, err := m.opts.Store.PinByKey(k); err == nil && ok {
		return p.Name, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, err := m.opts.Dir.Lookup(ctx, "", k)
	switch {
	case err != nil:
		return "", err
	case r.Status == wire.LookupUnknown || r.Key != k || wire.ValidateName(r.Name) != nil:
		return "", errNoName
	}
	return r.Name, nil
}
