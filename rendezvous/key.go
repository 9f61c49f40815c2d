package rendezvous

import (
	"crypto/ecdh"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"natchat/ctrl"
)

// KeyFile is the name of the rendezvous's key in its data directory.
const KeyFile = "rendezvous.key"

// LoadOrCreateKey reads the rendezvous's long-term key from dir/KeyFile
// (PKCS#8 PEM, X25519), creating it (mode 0600) on first run; created
// reports whether it was made now. Losing it changes the rendezvous's
// identity: nodes that pinned the old one refuse the new one.
func LoadOrCreateKey(dir string) (k ctrl.ServerKey, created bool, err error) {
	path := filepath.Join(dir, KeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if k, err = ctrl.NewServerKey(); err != nil {
			return k, false, fmt.Errorf("rendezvous key: %w", err)
		}
		priv, err := ecdh.X25519().NewPrivateKey(k.Private[:])
		if err != nil {
			return k, false, fmt.Errorf("rendezvous key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return k, false, fmt.Errorf("rendezvous key: %w", err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return k, false, fmt.Errorf("rendezvous key: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return LoadOrCreateKey(dir) // another process made it meanwhile
		}
		if err != nil {
			return k, false, fmt.Errorf("rendezvous key: %w", err)
		}
		_, werr := f.Write(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			os.Remove(path)
			return k, false, fmt.Errorf("rendezvous key: write %s: %w", path, err)
		}
		return k, true, nil
	}
	if err != nil {
		return k, false, fmt.Errorf("rendezvous key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return k, false, fmt.Errorf("rendezvous key: %s is not a PEM private key", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return k, false, fmt.Errorf("rendezvous key: %s: %w", path, err)
	}
	priv, ok := parsed.(*ecdh.PrivateKey)
	if !ok || priv.Curve() != ecdh.X25519() {
		return k, false, fmt.Errorf("rendezvous key: %s holds a %T, want an X25519 key", path, parsed)
	}
	var raw [32]byte
	copy(raw[:], priv.Bytes())
	k, err = ctrl.ServerKeyFromPrivate(raw)
	return k, false, err
}
