package node

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	"natchat/internal/keyfile"
	"natchat/wire"
)

// LoadOrCreateIdentity reads the Ed25519 private key at path (PKCS#8 PEM),
// creating it with mode 0600 (and its directory with 0700) when the file
// does not exist. created reports whether a new key was made.
func LoadOrCreateIdentity(path string) (key ed25519.PrivateKey, created bool, err error) {
	k, created, err := keyfile.LoadOrCreate(path, func() (any, error) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	})
	if err != nil {
		return nil, false, fmt.Errorf("identity: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, false, fmt.Errorf("identity: %s holds a %T, want an Ed25519 key", path, k)
	}
	return priv, created, nil
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
