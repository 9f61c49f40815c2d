package wire

import "fmt"

// The offline mailbox (sealed messages, inside a Sealed datagram).
//
// A sender whose peer is offline deposits the message, sealed end to end
// to the recipient (node/mailbox), in parts of at most MailPartLen bytes
// (MailPut); the rendezvous answers the whole deposit once it is durable
// (MailPutReply). When the recipient registers it is told how many wait
// (MailNotice), fetches them oldest first (MailFetch, answered with the
// parts of up to MailFetchMax messages, Mail), and acknowledges each once
// it is durably in its own store (MailAck); only then does the rendezvous
// delete it and tell its sender (MailReceipt, acknowledged with
// MailReceiptAck).

// Mailbox size limits.
const (
	// MailPartLen bounds the data of one MailPut or Mail: with its headers
	// a part fits a 1200-byte datagram.
	MailPartLen = 1024
	// MaxMailBlob bounds a sealed message: a message of MaxTextLen bytes
	// with its header, box nonce and tag fits.
	MaxMailBlob = 17 * MailPartLen
	// MaxMailParts is the most parts a blob has.
	MaxMailParts = MaxMailBlob / MailPartLen
	// MailFetchMax is the most messages one MailFetch is answered with.
	MailFetchMax = 8
	// MaxMailAcks bounds the entries of one MailAck, MailReceipt or
	// MailReceiptAck.
	MaxMailAcks = 16
	// MaxMailSkip bounds a MailFetch's skip: the most messages a node
	// sets aside; a rendezvous treats a larger skip as this, so that one
	// fetch reads a bounded part of a mailbox.
	MaxMailSkip = 1024
)

// Mailbox message types (inside Sealed only).
const (
	TypeMailPut        Type = 0x17 // N→R: one part of a deposit
	TypeMailPutReply   Type = 0x18 // R→N: the deposit's outcome
	TypeMailNotice     Type = 0x19 // R→N: messages waiting
	TypeMailFetch      Type = 0x1A // N→R: send me the oldest ones
	TypeMail           Type = 0x1B // R→N: one part of a waiting message
	TypeMailAck        Type = 0x1C // N→R: these are safe with me; delete them
	TypeMailReceipt    Type = 0x1D // R→N: what became of messages you deposited
	TypeMailReceiptAck Type = 0x1E // N→R: receipts taken
)

func init() {
	parsers[TypeMailPut] = parseMailPut
	parsers[TypeMailPutReply] = parseMailPutReply
	parsers[TypeMailNotice] = parseMailNotice
	parsers[TypeMailFetch] = parseMailFetch
	parsers[TypeMail] = parseMail
	parsers[TypeMailAck] = parseMailAck
	parsers[TypeMailReceipt] = parseMailReceipt
	parsers[TypeMailReceiptAck] = parseMailReceiptAck
}

// checkPart validates a part index, count and data length.
func checkPart(part, parts uint8, data []byte) error {
	switch {
	case parts == 0 || int(parts) > MaxMailParts:
		return fmt.Errorf("%w: %d parts", ErrMalformed, parts)
	case part >= parts:
		return fmt.Errorf("%w: part %d of %d", ErrMalformed, part, parts)
	case len(data) == 0 || len(data) > MailPartLen:
		return fmt.Errorf("%w: part of %d bytes", ErrMalformed, len(data))
	}
	return nil
}

// MailParts splits a blob into parts of MailPartLen bytes (the last
// shorter). The parts alias blob.
func MailParts(blob []byte) [][]byte {
	var out [][]byte
	for len(blob) > 0 {
		n := min(len(blob), MailPartLen)
		out = append(out, blob[:n:n])
		blob = blob[n:]
	}
	return out
}

// MailPut is one part of a deposit for the offline node To (sealed).
// Every part of one deposit carries the same TxID, To and ID; the
// rendezvous answers the whole deposit, once, with a MailPutReply.
// Body: txid(4) to(32) id(8) part(1) parts(1) data(u16 length + bytes).
type MailPut struct {
	TxID  uint32
	To    Key
	ID    MsgID
	Part  uint8 // from 0
	Parts uint8 // 1..MaxMailParts
	Data  []byte
}

func (*MailPut) Type() Type { return TypeMailPut }
func (m *MailPut) AppendBody(b []byte) []byte {
	b = appendU32(b, m.TxID)
	b = append(b, m.To[:]...)
	b = append(b, m.ID[:]...)
	b = append(b, m.Part, m.Parts)
	return appendBytes16(b, m.Data)
}
func parseMailPut(b []byte) (Message, error) {
	r := reader{b: b}
	m := &MailPut{TxID: r.u32(), To: r.key()}
	copy(m.ID[:], r.take(8))
	m.Part, m.Parts = r.u8(), r.u8()
	m.Data = r.take(int(r.u16()))
	if r.err != nil {
		return nil, r.err
	}
	return m, checkPart(m.Part, m.Parts, m.Data)
}

// MailStatus is the outcome of a deposit.
type MailStatus uint8

// Deposit outcomes.
const (
	MailStored  MailStatus = 0 // durable in the recipient's mailbox (now or before)
	MailOnline  MailStatus = 1 // the recipient is online: deliver live
	MailUnknown MailStatus = 2 // no node has that key
	MailFull    MailStatus = 3 // the recipient's mailbox is at its count or byte limit
	MailShare   MailStatus = 4 // the sender's share of that mailbox is used up
	MailTooBig  MailStatus = 5 // the blob is over MaxMailBlob, or could never fit the mailbox or the sender's share of it
	MailBusy    MailStatus = 6 // too many deposits in progress: retry later
	MailQuota   MailStatus = 7 // the sender has as much waiting in all mailboxes together as it may
)

func (s MailStatus) String() string {
	switch s {
	case MailStored:
		return "stored"
	case MailOnline:
		return "online"
	case MailUnknown:
		return "unknown"
	case MailFull:
		return "full"
	case MailShare:
		return "share"
	case MailTooBig:
		return "too_big"
	case MailBusy:
		return "busy"
	case MailQuota:
		return "quota"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// MailPutReply answers a complete deposit (sealed).
// Body: txid(4) id(8) status(1).
type MailPutReply struct {
	TxID   uint32
	ID     MsgID
	Status MailStatus
}

func (*MailPutReply) Type() Type { return TypeMailPutReply }
func (m *MailPutReply) AppendBody(b []byte) []byte {
	b = appendU32(b, m.TxID)
	b = append(b, m.ID[:]...)
	return append(b, byte(m.Status))
}
func parseMailPutReply(b []byte) (Message, error) {
	r := reader{b: b}
	m := &MailPutReply{TxID: r.u32()}
	copy(m.ID[:], r.take(8))
	m.Status = MailStatus(r.u8())
	return m, r.err
}

// MailNotice says how many messages wait in the node's mailbox (sealed):
// sent after a registration when any wait, when a deposit for the node
// becomes durable while it is online, and as the answer to a MailFetch
// when none do. Body: count(4) bytes(4).
type MailNotice struct {
	Count uint32
	Bytes uint32
}

func (*MailNotice) Type() Type { return TypeMailNotice }
func (m *MailNotice) AppendBody(b []byte) []byte {
	return appendU32(appendU32(b, m.Count), m.Bytes)
}
func parseMailNotice(b []byte) (Message, error) {
	r := reader{b: b}
	m := &MailNotice{Count: r.u32(), Bytes: r.u32()}
	return m, r.err
}

// MailFetch asks for the oldest messages waiting, up to Max (1..
// MailFetchMax; 0 means MailFetchMax), each in all its parts, after
// skipping the Skip oldest: those the node has set aside (it cannot take
// them yet, e.g. their sender's key is not the one it pinned) and leaves
// in the mailbox. Waiting messages stay until acknowledged, so a lost
// answer is fetched again. Tag is the node's name for this fetch (it
// changes with every fetch); every part of the answer echoes it.
// Body: max(1) skip(2) tag(2).
type MailFetch struct {
	Max  uint8
	Skip uint16
	Tag  uint16
}

func (*MailFetch) Type() Type { return TypeMailFetch }
func (m *MailFetch) AppendBody(b []byte) []byte {
	return appendU16(appendU16(append(b, m.Max), m.Skip), m.Tag)
}
func parseMailFetch(b []byte) (Message, error) {
	r := reader{b: b}
	m := &MailFetch{Max: r.u8(), Skip: r.u16(), Tag: r.u16()}
	return m, r.err
}

// Mail is one part of a waiting message (sealed). StoredMS is the
// rendezvous's clock when it took the deposit; the sender's own send time
// is inside the sealed blob, where the rendezvous cannot change it. Tag
// echoes the MailFetch this answers; Index is the message's position in
// that answer (from 0, oldest first) and Count the messages in it
// (1..MailFetchMax), so the node can tell a message lost in full from the
// end of the answer. Body: from(32) id(8) stored_ms(8) tag(2) index(1)
// count(1) part(1) parts(1) data(u16 length + bytes).
type Mail struct {
	From     Key
	ID       MsgID
	StoredMS int64
	Tag      uint16
	Index    uint8 // from 0
	Count    uint8 // 1..MailFetchMax
	Part     uint8
	Parts    uint8
	Data     []byte
}

func (*Mail) Type() Type { return TypeMail }
func (m *Mail) AppendBody(b []byte) []byte {
	b = append(b, m.From[:]...)
	b = append(b, m.ID[:]...)
	b = appendU64(b, uint64(m.StoredMS))
	b = appendU16(b, m.Tag)
	b = append(b, m.Index, m.Count, m.Part, m.Parts)
	return appendBytes16(b, m.Data)
}
func parseMail(b []byte) (Message, error) {
	r := reader{b: b}
	m := &Mail{From: r.key()}
	copy(m.ID[:], r.take(8))
	m.StoredMS = int64(r.u64())
	m.Tag = r.u16()
	m.Index, m.Count = r.u8(), r.u8()
	m.Part, m.Parts = r.u8(), r.u8()
	m.Data = r.take(int(r.u16()))
	if r.err != nil {
		return nil, r.err
	}
	switch {
	case m.Count == 0 || m.Count > MailFetchMax:
		return nil, fmt.Errorf("%w: an answer of %d messages", ErrMalformed, m.Count)
	case m.Index >= m.Count:
		return nil, fmt.Errorf("%w: message %d of %d", ErrMalformed, m.Index, m.Count)
	}
	return m, checkPart(m.Part, m.Parts, m.Data)
}

// MailRef names one message in a mailbox: its sender (or, in receipts,
// its recipient) and its ID.
type MailRef struct {
	Peer Key
	ID   MsgID
}

// MailAck says the node has these messages durably (sealed): the
// rendezvous deletes them and tells their senders. Peer is the sender.
// Body: count(1) {peer(32) id(8)}*count, count ≤ MaxMailAcks.
type MailAck struct {
	Refs []MailRef
}

func (*MailAck) Type() Type                   { return TypeMailAck }
func (m *MailAck) AppendBody(b []byte) []byte { return appendRefs(b, m.Refs) }
func parseMailAck(b []byte) (Message, error) {
	refs, err := parseRefs(b)
	if err != nil {
		return nil, err
	}
	return &MailAck{Refs: refs}, nil
}

// ReceiptStatus is what became of a deposited message.
type ReceiptStatus uint8

// Receipt outcomes.
const (
	ReceiptDelivered ReceiptStatus = 0 // the recipient took it
	ReceiptExpired   ReceiptStatus = 1 // it waited past the mailbox's age limit and was deleted unread
)

func (s ReceiptStatus) String() string {
	switch s {
	case ReceiptDelivered:
		return "delivered"
	case ReceiptExpired:
		return "expired"
	}
	return fmt.Sprintf("receipt(%d)", uint8(s))
}

// Receipt is one outcome for the sender. Peer is the recipient.
type Receipt struct {
	MailRef
	Status ReceiptStatus
}

// MailReceipt tells a sender what became of messages it deposited
// (sealed); it is repeated until acknowledged with a MailReceiptAck.
// Body: count(1) {peer(32) id(8) status(1)}*count, count ≤ MaxMailAcks.
type MailReceipt struct {
	Receipts []Receipt
}

func (*MailReceipt) Type() Type { return TypeMailReceipt }
func (m *MailReceipt) AppendBody(b []byte) []byte {
	n := min(len(m.Receipts), MaxMailAcks)
	b = append(b, byte(n))
	for _, r := range m.Receipts[:n] {
		b = append(b, r.Peer[:]...)
		b = append(b, r.ID[:]...)
		b = append(b, byte(r.Status))
	}
	return b
}
func parseMailReceipt(b []byte) (Message, error) {
	r := reader{b: b}
	n := int(r.u8())
	if n > MaxMailAcks {
		return nil, fmt.Errorf("%w: %d receipts", ErrMalformed, n)
	}
	m := &MailReceipt{}
	for i := 0; i < n && r.err == nil; i++ {
		var rc Receipt
		rc.Peer = r.key()
		copy(rc.ID[:], r.take(8))
		rc.Status = ReceiptStatus(r.u8())
		m.Receipts = append(m.Receipts, rc)
	}
	if r.err != nil {
		return nil, r.err
	}
	return m, nil
}

// MailReceiptAck says the sender has taken these receipts (sealed). Peer
// is the recipient. Body: count(1) {peer(32) id(8)}*count.
type MailReceiptAck struct {
	Refs []MailRef
}

func (*MailReceiptAck) Type() Type                   { return TypeMailReceiptAck }
func (m *MailReceiptAck) AppendBody(b []byte) []byte { return appendRefs(b, m.Refs) }
func parseMailReceiptAck(b []byte) (Message, error) {
	refs, err := parseRefs(b)
	if err != nil {
		return nil, err
	}
	return &MailReceiptAck{Refs: refs}, nil
}

func appendRefs(b []byte, refs []MailRef) []byte {
	n := min(len(refs), MaxMailAcks)
	b = append(b, byte(n))
	for _, r := range refs[:n] {
		b = append(b, r.Peer[:]...)
		b = append(b, r.ID[:]...)
	}
	return b
}

func parseRefs(b []byte) ([]MailRef, error) {
	r := reader{b: b}
	n := int(r.u8())
	if n > MaxMailAcks {
		return nil, fmt.Errorf("%w: %d entries", ErrMalformed, n)
	}
	var refs []MailRef
	for i := 0; i < n && r.err == nil; i++ {
		var ref MailRef
		ref.Peer = r.key()
		copy(ref.ID[:], r.take(8))
		refs = append(refs, ref)
	}
	if r.err != nil {
		return nil, r.err
	}
	return refs, nil
}
