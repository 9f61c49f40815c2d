package tui

import (
	"slices"
	"time"

	"natchat/node/api"
	"natchat/wire"
)

// entryKind is what an entry of a conversation is.
type entryKind int

const (
	entryMsg  entryKind = iota // a message, ours (out) or a peer's
	entrySys                   // "*** ..." a system line
	entryErr                   // "! ..." an error or a hint
	entryFile                  // a file transfer, drawn as it stands now
	entryText                  // preformatted text (help, tables), no time
)

// entry is one item of a conversation. Strings from peers are kept as
// they came and made safe when drawn.
type entry struct {
	kind   entryKind
	ts     time.Time // when it was sent (messages) or happened
	text   string    // message text; system text (already safe)
	indent int       // entryText: where its wrapped lines go on

	// Messages:
	id    string
	from  string
	emote bool
	via   string // api.ViaMailbox for one that waited in our mailbox
	out   bool   // ours
	// Ours:
	state   string // api.StateSending, StateDelivered, StateStored, StateFailed
	reason  string // for StateFailed
	resumed bool   // sent again after a restart
	members string // a room message's "n/N" delivered
	stored  int    // a room message's copies waiting in mailboxes
	failed  int    // a room message's copies that failed

	// Files:
	xfer *transfer
}

// transfer is a file transfer's state, drawn where it was offered.
type transfer struct {
	id       string
	incoming bool
	peer     string
	name     string
	size     int64
	sha256   string
	state    xferState
	progress api.FileProgress
	path     string // done: where it is (saved, or sent from)
	reason   string // failed
}

type xferState int

const (
	xferOffered   xferState = iota // waiting for the receiver
	xferAccepting                  // we said yes, nothing moved yet
	xferMoving                     // progress came
	xferDone
	xferFailed
)

// conv is a conversation: the status view (name ""), a room ("#dev") or
// a peer.
type conv struct {
	name    string
	entries []*entry
	byID    map[string]*entry // our messages and received ones, by ID; transfers by "file:"+ID
	unread  int
	scroll  int // lines scrolled back from the bottom; 0 follows the end
	// Rooms:
	members map[string]string // online members we know of: NameKey → name
	total   int               // online members the rendezvous counted
	partial bool              // members holds only the first page of them
	parted  bool              // we are no longer in it
}

func newConv(name string) *conv {
	c := &conv{name: name, byID: make(map[string]*entry)}
	if wire.IsRoom(name) {
		c.members = make(map[string]string)
	}
	return c
}

func (c *conv) isRoom() bool { return c.members != nil }

// add appends e, keeping the lines on screen where they are when the view
// is scrolled back (height is e's height in lines as drawn now).
func (c *conv) add(e *entry, height int) {
	c.entries = append(c.entries, e)
	if e.id != "" {
		c.byID[e.id] = e
	}
	if c.scroll > 0 {
		c.scroll += height
	}
}

// clear empties the view (the node's history is kept).
func (c *conv) clear() {
	c.entries = nil
	c.byID = make(map[string]*entry)
	c.scroll = 0
}

// setHistory puts entries, the node's history of the conversation, before
// what is on screen, leaving out what is already there.
func (c *conv) setHistory(hist []*entry) {
	var merged []*entry
	seen := make(map[string]bool)
	for _, e := range hist {
		if e.id != "" {
			if old := c.byID[e.id]; old != nil {
				continue // the live one is newer
			}
			seen[e.id] = true
		}
		merged = append(merged, e)
	}
	// The history's messages first, in their order; what was shown
	// before stays after them.
	merged = append(merged, c.entries...)
	c.entries = merged
	for _, e := range hist {
		if e.id != "" && seen[e.id] {
			c.byID[e.id] = e
		}
	}
	c.scroll = 0
}

// memberNames returns the room's online members, sorted.
func (c *conv) memberNames() []string {
	names := make([]string, 0, len(c.members))
	for _, n := range c.members {
		names = append(names, n)
	}
	slices.SortFunc(names, cmpName)
	return names
}

// cmpName orders names case-insensitively.
func cmpName(a, b string) int {
	ka, kb := wire.NameKey(a), wire.NameKey(b)
	switch {
	case ka < kb:
		return -1
	case ka > kb:
		return 1
	}
	return 0
}

// peer is what we know of a peer: presence and path.
type peer struct {
	name   string
	online bool
	path   string
	remote string
	rttMS  float64
}

// historyEntry turns one entry of the node's history into an entry.
func historyEntry(h api.HistoryEntry) *entry {
	e := &entry{kind: entryMsg, ts: h.TS, id: h.ID, from: h.From, text: h.Text, emote: h.Kind == api.KindEmote,
		via: h.Via, out: h.Out, state: h.State, reason: h.Reason}
	if e.out && e.state == "" {
		e.state = api.StateSending
	}
	return e
}
