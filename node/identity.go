package node

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	"natchat/wire"
)

// LoadOrCreateIdentity reads the Ed25519 private key at path (PKCS#8 PEM),
// creating it with mode 0600 (and its directory with 0700) when the file
// does not exist. created reports whether a new key was made.
func LoadOrCreateIdentity(path string) (key ed25519.PrivateKey, created bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, false, fmt.Errorf("identity: generate: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, false, fmt.Errorf("identity: encode: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, false, fmt.Errorf("identity: %w", err)
		}
		data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		// O_EXCL: two nodes starting at once must not overwrite each other's key.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return LoadOrCreateIdentity(path)
		}
		if err != nil {
			return nil, false, fmt.Errorf("identity: %w", err)
		}
		if _, err := f.Write(data); err != nil {
			f.Close()
			os.Remove(path)
			return nil, false, fmt.Errorf("identity: write %s: %w", path, err)
		}
		if err := f.Close(); err != nil {
			return nil, false, fmt.Errorf("identity: write %s: %w", path, err)
		}
		return priv, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("identity: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, false, fmt.Errorf("identity: %s is not a PEM private key file", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, false, fmt.Errorf("identity: %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, false, fmt.Errorf("identity: %s holds a %T, want an Ed25519 key", path, k)
	}
	return priv, false, nil
}

var safeFileName = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// DefaultIdentityPath returns where the identity of a node called name
// lives by default: natchat/NAME.key under the user's config directory
// (the name lower-cased, hex-encoded if it has characters unsafe in a file
// name), so several nodes on one machine keep separate identities.
func DefaultIdentityPath(name string) (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("identity: no config dir (use -identity): %w", err)
	}
	file := strings.ToLower(name)
	if !safeFileName.MatchString(file) || strings.HasPrefix(file, ".") {
		file = "x-" + hex.EncodeToString([]byte(file))
	}
	return filepath.Join(dir, "natchat", file+".key"), nil
}

// DefaultStateDir returns where the state of the node with identity key k
// lives by default: natchat/<the key's first 16 hex digits> under the
// user's state directory ($XDG_STATE_HOME, else ~/.local/state; on macOS
// ~/Library/Application Support; on Windows %LocalAppData%), so each
// identity has its own and nothing else lives there.
func DefaultStateDir(k wire.Key) (string, error) {
	base, err := userStateDir()
	if err != nil {
		return "", fmt.Errorf("state: no state dir (use -state): %w", err)
	}
	return filepath.Join(base, "natchat", k.String()[:16]), nil
}

func userStateDir() (string, error) {
	switch runtime.GOOS {
	case "windows":
		if d := os.Getenv("LocalAppData"); d != "" {
			return d, nil
		}
		return "", errors.New("%LocalAppData% is not set")
	case "darwin", "ios":
		return os.UserConfigDir() // ~/Library/Application Support
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" && filepath.IsAbs(d) {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".local", "state"), nil
}
