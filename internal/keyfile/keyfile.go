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
// 0600 (its directory 0700), exclusively (two processes starting at once
// do not overwrite each other's key: the second reads the first's), and
// synced before it returns. created reports whether the key was made now.
// The key is what x509.ParsePKCS8PrivateKey returns; the caller checks its
// type.
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
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, false, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return LoadOrCreate(path, generate) // another process made it meanwhile
		}
		if err != nil {
			return nil, false, err
		}
		_, werr := f.Write(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			os.Remove(path)
			return nil, false, fmt.Errorf("write %s: %w", path, err)
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
