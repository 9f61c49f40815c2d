package api

// Command is something a front end asks the node to do. Node.Do queues it;
// its outcome comes back as events.
type Command interface{ command() }

// Send sends Text to the peer called To, or to every other member of the
// room To ("#dev"): see docs/HEADLESS.md for a room message's events.
// For a peer: Sent, then exactly one outcome
// with the same ID follows: Delivered or Error, or Stored (the message is
// in the peer's offline mailbox) and then Delivered or Expired (or one
// Error without an ID when it is refused at once). Kind is the message's
// kind: KindText (empty, the zero value) or KindEmote (/me); any other is
// refused with bad_command.
type Send struct {
	To   string
	Text string
	Kind string
}

// Who asks for a Peers event: the node's own view. With Room, it asks the
// rendezvous instead for one page of that room's members, answered by a
// Members event: the first page, or with After the page after that name
// (a Members event's Next).
type Who struct {
	Room  string
	After string
}

// ShowFingerprint asks for a Fingerprint event: this node's own when Name
// is empty, else Name's.
type ShowFingerprint struct{ Name string }

// Trust pins Name to the key the rendezvous gives for it now, after a
// key_changed error, and answers with Trusted.
type Trust struct{ Name string }

// Quit leaves: a notified leave, then Run returns. With Drain, it first
// waits until every message sent so far is delivered or has failed.
type Quit struct{ Drain bool }

// Deregister takes the node offline without quitting (/dereg): a
// notified leave, its sessions closed, answered by Deregistered; messages
// to it go to its mailbox.
type Deregister struct{}

// Register registers again after Deregister (/reg): Registered, then the
// mailbox is fetched.
type Register struct{}

// Join makes the node a member of Room ("#dev"), answered by RoomJoined
// with the node's own name, or an Error.
type Join struct{ Room string }

// Part takes the node out of Room, answered by RoomLeft with the node's
// own name, or an Error (not_member).
type Part struct{ Room string }

// ListRooms asks for a Rooms event: the rooms the node is in.
type ListRooms struct{}

// SendFile offers the file at Path to the peer To (/send NAME PATH):
// file_offer (with To) once offered, then file_progress, and file_done or
// file_failed. A peer offline is refused at once with an Error
// (peer_offline), and so are a missing file (no_file) and one too big
// (too_big): files do not wait in mailboxes.
type SendFile struct{ To, Path string }

// AcceptFile accepts the offer ID (/accept ID); RejectFile refuses it
// (/reject ID); CancelFile stops a transfer either side (/cancel ID).
type (
	AcceptFile struct{ ID string }
	RejectFile struct{ ID string }
	CancelFile struct{ ID string }
)

func (SendFile) command()        {}
func (AcceptFile) command()      {}
func (RejectFile) command()      {}
func (CancelFile) command()      {}
func (Join) command()            {}
func (Part) command()            {}
func (ListRooms) command()       {}
func (Send) command()            {}
func (Deregister) command()      {}
func (Register) command()        {}
func (Who) command()             {}
func (ShowFingerprint) command() {}
func (Trust) command()           {}
func (Quit) command()            {}
