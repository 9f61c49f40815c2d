package session

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/quic-go/quic-go"

	"natchat/wire"
)

// alpn names the session protocol in the TLS handshake. natchat/2 changed
// the chat frames (sequence numbers); a natchat/1 peer fails the handshake
// with "no application protocol" instead of ignoring our messages.
const alpn = "natchat/2"

// selfCert makes a self-signed certificate for the identity key. Peers do
// not check names or chains: they pin the key (as libp2p does), and TLS 1.3
// CertificateVerify proves the holder has the private key.
func selfCert(priv ed25519.PrivateKey) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "natchat"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, nil
}

// errWrongKey means the peer's certificate is not for the key we expect.
var errWrongKey = errors.New("peer certificate does not match its identity key")

// certKey returns the Ed25519 key of the leaf certificate.
func certKey(raw [][]byte) (wire.Key, error) {
	if len(raw) == 0 {
		return wire.Key{}, errors.New("no peer certificate")
	}
	c, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return wire.Key{}, err
	}
	pk, ok := c.PublicKey.(ed25519.PublicKey)
	if !ok || len(pk) != wire.KeyLen {
		return wire.Key{}, fmt.Errorf("peer certificate key is %T, want Ed25519", c.PublicKey)
	}
	return wire.Key(pk), nil
}

// clientTLS returns the config to dial the peer with key want.
func clientTLS(cert tls.Certificate, want wire.Key) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cert},
		NextProtos:         []string{alpn},
		ServerName:         "natchat",
		InsecureSkipVerify: true, // replaced by the key pin below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			k, err := certKey(raw)
			if err != nil {
				return err
			}
			if k != want {
				return errWrongKey
			}
			return nil
		},
	}
}

// serverTLS returns the config to accept peers. Which key a connection must
// present is known only from its link address, so the accept loop checks
// the pin after the handshake; here we require an Ed25519 certificate.
func serverTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{alpn},
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := certKey(raw)
			return err
		},
	}
}

// QUICConfig returns (a fresh copy of) the session transport's
// configuration; the file benchmark gives plain quic-go the same. Path MTU discovery
// is off: a path change (direct ↔ relay) changes the MTU under QUIC, and
// 1200-byte packets plus the relay header fit every path.
//
// A peer that died without our hearing (killed mid-handshake, say, so that
// its next incarnation cannot reset the connection, or gone with its
// network) is noticed by the idle timeout: with a keepalive every 3 s, 10 s
// without a packet means three keepalives lost in a row. A connection
// without streams closes after the Manager's IdleTimeout anyway.
func QUICConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:    8 * time.Second,
		MaxIdleTimeout:          10 * time.Second,
		KeepAlivePeriod:         3 * time.Second,
		DisablePathMTUDiscovery: true,
		InitialPacketSize:       1200,
		MaxIncomingStreams:      64,
		MaxIncomingUniStreams:   -1,
	}
}
