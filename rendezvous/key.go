package rendezvous

import (
	"crypto/ecdh"
	"crypto/rand"
	"fmt"
	"path/filepath"

	"natchat/ctrl"
	"natchat/internal/keyfile"
)

// KeyFile is the name of the rendezvous's key in its data directory.
const KeyFile = "rendezvous.key"

// LoadOrCreateKey reads the rendezvous's long-term key from dir/KeyFile
// (PKCS#8 PEM, X25519), creating it (mode 0600) on first run; created
// reports whether it was made now. Losing it changes the rendezvous's
// identity: nodes that pinned the old one refuse the new one.
func LoadOrCreateKey(dir string) (k ctrl.ServerKey, created bool, err error) {
	path := filepath.Join(dir, KeyFile)
	key, created, err := keyfile.LoadOrCreate(path, func() (any, error) { return ecdh.X25519().GenerateKey(rand.Reader) })
	if err != nil {
		return k, false, fmt.Errorf("rendezvous key: %w", err)
	}
	priv, ok := key.(*ecdh.PrivateKey)
	if !ok || priv.Curve() != ecdh.X25519() {
		return k, false, fmt.Errorf("rendezvous key: %s holds a %T, want an X25519 key", path, key)
	}
	k, err = ctrl.ServerKeyFromPrivate([32]byte(priv.Bytes()))
	return k, created, err
}
