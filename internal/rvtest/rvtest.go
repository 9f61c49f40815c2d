// Package rvtest is a rendezvous client for tests, attack tests and load
// generators: it builds and reads the datagrams of the control protocol
// (docs/PROTOCOL.md) for one node identity, and does no I/O, so a test
// decides where every datagram goes and from which source it seems to
// come. It is not the node's client (node/rvclient): it keeps no timers and
// retries nothing.
package rvtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"

	"natchat/ctrl"
	"natchat/wire"
)

// Node is one node identity and, once registered, its session.
type Node struct {
	Name   string
	Priv   ed25519.PrivateKey
	Key    wire.Key
	Server ctrl.PublicKey // the rendezvous's key: pinned, or learned from a CookieReply

	Session wire.SessionID
	Keys    *ctrl.Keys  // nil until registered
	Cookie  wire.Cookie // the cookie of the last Handshake
	Result  *wire.HandshakeResult

	init *ctrl.Initiator
}

// New returns a node with a fresh identity key.
func New(name string) *Node {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return &Node{Name: name, Priv: priv, Key: wire.Key(pub)}
}

// Hello returns a Hello datagram with nonce.
func (n *Node) Hello(nonce uint64) []byte { return wire.Marshal(&wire.Hello{Nonce: nonce}) }

// Handshake returns the Handshake datagram that registers n as name with
// the cookie c, to the rendezvous whose key is n.Server (set by the caller,
// or by Cookie).
func (n *Node) Handshake(c wire.Cookie, name string) ([]byte, error) {
	init, err := ctrl.NewInitiator(n.Priv, n.Server, c)
	if err != nil {
		return nil, err
	}
	first, err := init.First(wire.AppendRegisterPayload(nil, &wire.RegisterPayload{Key: n.Key, Name: name}))
	if err != nil {
		return nil, err
	}
	n.init, n.Cookie = init, c
	return wire.Marshal(&wire.Handshake{Cookie: c, Noise: first}), nil
}

// FromCookie takes a CookieReply datagram: it learns the rendezvous's key
// if n has none (trust on first use) and returns the Handshake datagram
// that registers n under n.Name.
func (n *Node) FromCookie(b []byte) ([]byte, error) {
	m, err := wire.Parse(b)
	if err != nil {
		return nil, err
	}
	cr, ok := m.(*wire.CookieReply)
	if !ok {
		return nil, fmt.Errorf("rvtest: got %s, want a cookie", m.Type())
	}
	if n.Server.IsZero() {
		n.Server = ctrl.PublicKey(cr.ServerKey)
	}
	return n.Handshake(cr.Cookie, n.Name)
}

// ErrRefused wraps a registration the rendezvous refused in its
// authenticated HandshakeResult.
var ErrRefused = errors.New("rvtest: registration refused")

// Finish takes the rendezvous's answer to the Handshake: a HandshakeReply
// datagram. On success n is registered (Session, Keys, Result set). A
// refusal returns the result and an error wrapping ErrRefused.
func (n *Node) Finish(b []byte) (*wire.HandshakeResult, error) {
	if n.init == nil {
		return nil, errors.New("rvtest: no handshake in progress")
	}
	m, err := wire.Parse(b)
	if err != nil {
		return nil, err
	}
	hr, ok := m.(*wire.HandshakeReply)
	if !ok {
		return nil, fmt.Errorf("rvtest: got %s, want a handshake reply", describe(m))
	}
	payload, keys, err := n.init.Finish(hr.Noise)
	if err != nil {
		return nil, err
	}
	r, err := wire.ParseHandshakeResult(payload)
	if err != nil {
		return nil, err
	}
	if r.Code != 0 {
		return r, fmt.Errorf("%w: %s: %s", ErrRefused, r.Code, r.Message)
	}
	n.init = nil
	n.Session, n.Keys, n.Result = r.Session, keys, r
	return r, nil
}

// Seal returns m as a Sealed datagram of n's session, padded to
// wire.SealedMinLen as the node pads.
func (n *Node) Seal(m wire.Message) []byte {
	pt := wire.AppendInner(nil, m)
	for len(pt)+wire.SealedHeaderLen+ctrl.Overhead < wire.SealedMinLen {
		pt = append(pt, 0)
	}
	return n.Keys.Seal(nil, n.Session, pt)
}

// Open reads a datagram from the rendezvous: a Sealed one is opened with
// n's keys (and its counter checked against the replay window); anything
// else is parsed as it is (a Relayed, an Error, a CookieReply...).
func (n *Node) Open(b []byte) (wire.Message, error) {
	m, err := wire.Parse(b)
	if err != nil {
		return nil, err
	}
	if _, ok := m.(*wire.Sealed); !ok {
		return m, nil
	}
	if n.Keys == nil {
		return nil, errors.New("rvtest: sealed datagram before registration")
	}
	pt, err := n.Keys.Open(nil, b)
	if err != nil {
		return nil, err
	}
	return wire.ParseInner(pt)
}

// Relay returns a Relay datagram carrying payload to dst.
func (n *Node) Relay(dst wire.Key, payload []byte) []byte {
	return wire.Marshal(&wire.Relay{Session: n.Session, Dst: dst, Payload: payload})
}

func describe(m wire.Message) string {
	if e, ok := m.(*wire.Error); ok {
		return "error " + e.Error()
	}
	return m.Type().String()
}
