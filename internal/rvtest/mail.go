package rvtest

import (
	"errors"
	"fmt"

	"natchat/wire"
)

// MailPuts returns the sealed MailPut datagrams of one deposit of blob
// (already sealed end to end, or any bytes a test likes) for the node
// with key to, in part order: what a node sends, and sends again, with
// the same TxID, when no MailPutReply comes.
func (n *Node) MailPuts(tx uint32, to wire.Key, id wire.MsgID, blob []byte) [][]byte {
	parts := wire.MailParts(blob)
	out := make([][]byte, len(parts))
	for i, d := range parts {
		out[i] = n.Seal(&wire.MailPut{TxID: tx, To: to, ID: id, Part: uint8(i), Parts: uint8(len(parts)), Data: d})
	}
	return out
}

// Fetched is a mailbox message put together from its Mail parts.
type Fetched struct {
	From     wire.Key
	ID       wire.MsgID
	StoredMS int64
	Blob     []byte
}

// ErrMailParts wraps parts that do not make whole, consistent messages.
var ErrMailParts = errors.New("rvtest: mail parts")

// AssembleMail puts the Mail parts among ms (other messages are skipped)
// together into messages, in the order of their first parts. A message
// missing a part, a part given twice, or parts of one message that
// disagree (parts count, stored time) is an error wrapping ErrMailParts.
func AssembleMail(ms []wire.Message) ([]Fetched, error) {
	type gather struct {
		f     Fetched
		parts [][]byte
		have  int
	}
	var order []wire.MailRef
	byRef := make(map[wire.MailRef]*gather)
	for _, m := range ms {
		mm, ok := m.(*wire.Mail)
		if !ok {
			continue
		}
		ref := wire.MailRef{Peer: mm.From, ID: mm.ID}
		g := byRef[ref]
		if g == nil {
			g = &gather{f: Fetched{From: mm.From, ID: mm.ID, StoredMS: mm.StoredMS}, parts: make([][]byte, mm.Parts)}
			byRef[ref] = g
			order = append(order, ref)
		}
		switch {
		case int(mm.Parts) != len(g.parts) || mm.StoredMS != g.f.StoredMS:
			return nil, fmt.Errorf("%w: %s: parts disagree", ErrMailParts, mm.ID)
		case g.parts[mm.Part] != nil:
			return nil, fmt.Errorf("%w: %s: part %d twice", ErrMailParts, mm.ID, mm.Part)
		}
		g.parts[mm.Part] = append([]byte(nil), mm.Data...)
		g.have++
	}
	out := make([]Fetched, 0, len(order))
	for _, ref := range order {
		g := byRef[ref]
		if g.have != len(g.parts) {
			return nil, fmt.Errorf("%w: %s: %d of %d parts", ErrMailParts, ref.ID, g.have, len(g.parts))
		}
		for _, p := range g.parts {
			g.f.Blob = append(g.f.Blob, p...)
		}
		out = append(out, g.f)
	}
	return out, nil
}
