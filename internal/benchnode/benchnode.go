// Package benchnode derives simulated registered nodes from a seed, for
// the benchmark tool (cmd/natbench) and the rendezvous's benchmark
// preload (built only with the natbench build tag): both sides compute
// the same node i, so the tool can send real sealed heartbeats for a
// million nodes the rendezvous never ran a Noise handshake with.
//
// Node i of seed s:
//
//   - its identity key, session ID and registration cookie, and its two
//     session secrets (Up: node → rendezvous, Down: rendezvous → node),
//     from two SHA-512 hashes of a label, s and i;
//   - its name: "nb" and i in decimal;
//   - its source address: socket i mod S of the tool's S sockets, all on
//     one port, on 127.64.0.0/10 (Addr).
//
// Seal writes a Sealed datagram exactly as ctrl.Keys.Seal does with a
// Noise ChaChaPoly cipher keyed with Up: the sealed header (the session
// and the counter) is the associated data, the nonce is four zero bytes
// and the counter little-endian (Noise §5.1). The package does no I/O and
// imports no ctrl: the agreement with ctrl is tested there.
package benchnode

import (
	"crypto/sha512"
	"encoding/binary"
	"net/netip"
	"strconv"

	"golang.org/x/crypto/chacha20poly1305"

	"natchat/wire"
)

// Node is one simulated node's identity and session.
type Node struct {
	Key      wire.Key
	Session  wire.SessionID
	Cookie   wire.Cookie
	Up, Down [32]byte // session secrets: node → rendezvous, rendezvous → node
}

const label = "natchat natbench node v1\x00"

// Derive returns node i of seed.
func Derive(seed uint64, i int) Node {
	var in [len(label) + 1 + 16]byte
	copy(in[:], label)
	binary.BigEndian.PutUint64(in[len(label)+1:], seed)
	binary.BigEndian.PutUint64(in[len(label)+9:], uint64(i))
	var n Node
	in[len(label)] = 'k'
	h := sha512.Sum512(in[:])
	copy(n.Key[:], h[:32])
	copy(n.Session[:], h[32:40])
	copy(n.Cookie[:], h[40:])
	in[len(label)] = 's'
	h = sha512.Sum512(in[:])
	copy(n.Up[:], h[:32])
	copy(n.Down[:], h[32:])
	return n
}

// Name is node i's name.
func Name(i int) string { return "nb" + strconv.Itoa(i) }

// MaxSockets is the most source addresses Addr spreads nodes over.
const MaxSockets = 254 << 14

// Addr is node i's source address when the tool has sockets sockets (1
// to MaxSockets) on port: socket j is 127.64.0.0 + 256·(j/254) + 1 + j%254,
// so no address ends in .0 or .255. Every address of 127.0.0.0/8 is the
// loopback interface's on Linux: binding them needs no setup.
func Addr(i, sockets int, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(SocketIP(i%sockets), port)
}

// SocketIP is the address of the tool's socket j.
func SocketIP(j int) netip.Addr {
	v := (127<<24 | 64<<16) + uint32(j/254)<<8 + 1 + uint32(j%254)
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], v)
	return netip.AddrFrom4(a)
}

// Plaintext returns m as an inner message padded as the node pads
// (wire.SealedMinLen in all).
func Plaintext(m wire.Message) []byte {
	pt := wire.AppendInner(nil, m)
	for len(pt)+wire.SealedHeaderLen+chacha20poly1305.Overhead < wire.SealedMinLen {
		pt = append(pt, 0)
	}
	return pt
}

// Seal appends to dst node n's Sealed datagram with the given counter
// carrying plaintext. Counters must grow per node: the rendezvous refuses
// one it has seen or one too far behind (ctrl.Window).
func Seal(dst []byte, n *Node, counter uint64, plaintext []byte) []byte {
	aead, err := chacha20poly1305.New(n.Up[:])
	if err != nil {
		panic(err) // the key has the right size
	}
	start := len(dst)
	dst = wire.AppendSealedHeader(dst, n.Session, counter)
	var nonce [chacha20poly1305.NonceSize]byte
	binary.LittleEndian.PutUint64(nonce[4:], counter)
	return aead.Seal(dst, nonce[:], plaintext, dst[start:])
}
