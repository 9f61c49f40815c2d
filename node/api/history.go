package api

import "time"

// Event types added with the full-screen client (issue 12).
const (
	TypeHistory  = "history"
	TypeNetCheck = "netcheck"
)

// Message states, in HistoryEntry.State for our own messages.
const (
	StateSending   = "sending"   // sent, no outcome yet
	StateDelivered = "delivered" // the peer (for a room: at least one member) has it
	StateStored    = "stored"    // waiting in the peer's mailbox
	StateFailed    = "failed"    // an error or expiry ended it; Reason says why
)

// NAT mapping behaviours, in NetCheck.Mapping.
const (
	MappingIndependent = "endpoint-independent" // the same public endpoint toward every destination: punching works
	MappingDependent   = "endpoint-dependent"   // another public endpoint per destination (symmetric NAT): peers will mostly be relayed
	MappingUnknown     = "unknown"              // fewer than two STUN answers
)

// History asks for a conversation's recent messages from the node's
// history store (/history [N] [NAME|#ROOM]), answered by a History event.
// Conv is a peer's name or a room; empty asks for every conversation that
// has history, one History event each, the most recently active last (so
// a front end that shows them in order ends on the newest), at most 50 of
// them; when none has, one History event with Conv empty and no entries.
// N bounds the entries per conversation (0: DefaultHistory). A
// conversation with no history is answered with no entries, not an error.
type History struct {
	Conv string
	N    int
}

// DefaultHistory is History.N when the command leaves it 0.
const DefaultHistory = 50

// CheckNet asks for a NetCheck event (/netcheck).
type CheckNet struct{}

func (History) command()  {}
func (CheckNet) command() {}

// HistoryEntry is one message of a History event: one we received (Out
// false, From the sender) or one we sent (Out true, From our own name,
// State its state). TS is when it was sent (the sender's clock: a message
// from the mailbox shows its original time).
type HistoryEntry struct {
	ID     string    `json:"id"`
	From   string    `json:"from"`
	Text   string    `json:"text"`
	Kind   string    `json:"kind,omitempty"`
	Out    bool      `json:"out,omitempty"`
	State  string    `json:"state,omitempty"`  // for Out: StateSending, StateDelivered, StateStored or StateFailed
	Reason string    `json:"reason,omitempty"` // for StateFailed: the error code, or "expired"
	Via    string    `json:"via,omitempty"`    // ViaMailbox for a received message that waited in our mailbox
	TS     time.Time `json:"sent_ts"`
}

// HistoryEvent answers a History command: the last entries of the conversation
// Conv (a peer's name or a room), oldest first. Entries is empty (not
// missing) when there are none or history is off (-history=false).
type HistoryEvent struct {
	Header
	Conv    string         `json:"conv"`
	Entries []HistoryEntry `json:"entries"`
}

// NetPeer is one row of NetCheck.
type NetPeer struct {
	Name    string    `json:"name"`
	Path    string    `json:"path"`             // PathDirect, PathRelay or PathNone
	Remote  string    `json:"remote,omitempty"` // the peer's endpoint on a direct path ("ip:port")
	RTTMS   float64   `json:"rtt_ms"`
	Changed time.Time `json:"changed"` // when the path last changed (zero: never)
}

// NetCheck answers /netcheck: our public endpoint(s) as STUN servers see
// them (Public: the rendezvous's view first), the NAT mapping behaviour
// inferred from two STUN answers from different server addresses
// (Mapping; MappingUnknown with Detail saying why when there were fewer),
// and each peer we have a session with.
type NetCheck struct {
	Header
	Public  []string  `json:"public"`
	Mapping string    `json:"mapping"`
	Detail  string    `json:"detail,omitempty"`
	Peers   []NetPeer `json:"peers"`
}

func (*HistoryEvent) EventType() string { return TypeHistory }
func (*NetCheck) EventType() string     { return TypeNetCheck }
