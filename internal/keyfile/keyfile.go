// Package keyfile keeps a private key in a PEM file (PKCS #8), created on
// first use: the node's identity and the rendezvous's key.
package keyfile

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// LoadOrCreate returns the private key in the PEM file at path. If the file
// does not exist it creates it with the key that generate returns: mode
// 0600 (its directory 0700), written and synced in a temporary file that
// is then linked into place, so the file at path is never half-written (a
// crash leaves no empty key behind) and two processes starting at once
// agree on one key (the second to link reads the first's). created reports
// whether the key was made now. The key is what x509.ParsePKCS8PrivateKey
// returns; the caller checks its type.
func LoadOrCreate(path string, generate func() (any, error)) (key any, created bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key, err := generate()
		if err != nil {
			return nil, false, fmt.Errorf("generate: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, false, fmt.Errorf("encode: %w", err)
		}
		dir := filepath.Dir(path)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, false, err
		}
		f, err := os.CreateTemp(dir, ".keyfile-*")
		if err != nil {
			return nil, false, err
		}
		tmp := f.Name()
		defer os.Remove(tmp)
		_, werr := f.Write(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
		if err := errors.Join(werr, f.Chmod(0o600), f.Sync(), f.Close()); err != nil {
			return nil, false, fmt.Errorf("write %s: %w", path, err)
		}
		err = os.Link(tmp, path)
		if errors.Is(err, fs.ErrExist) {
			return LoadOrCreate(path, generate) // another process made it meanwhile: read it
		}
		if err != nil {
			return nil, false, fmt.Errorf("write %s: %w", path, err)
		}
		if d, err := os.Open(dir); err == nil { // the new name, durable too
			d.Sync()
			d.Close()
		}
		return key, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, false, fmt.Errorf("%s is not a PEM private key file", path)
	}
	key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", path, err)
	}
	return key, false, nil
}
