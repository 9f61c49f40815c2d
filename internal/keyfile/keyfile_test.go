package keyfile

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func gen() (any, error) {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	return k, err
}

func TestCreateThenLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "k.pem")
	k1, created, err := LoadOrCreate(path, gen)
	if err != nil || !created {
		t.Fatalf("first: created %v, %v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, %v", fi.Mode(), err)
	}
	if di, err := os.Stat(filepath.Dir(path)); err != nil || di.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v, %v", di.Mode(), err)
	}
	k2, created, err := LoadOrCreate(path, func() (any, error) { t.Fatal("generated again"); return nil, nil })
	if err != nil || created || !k1.(ed25519.PrivateKey).Equal(k2) {
		t.Fatalf("second: created %v, %v, same %v", created, err, err == nil && k1.(ed25519.PrivateKey).Equal(k2))
	}
}

func TestBadFiles(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"empty":     "",
		"not pem":   "hello",
		"wrong pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
		"bad der":   "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := LoadOrCreate(path, gen); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: err %v, want one naming the file", name, err)
		}
		if b, _ := os.ReadFile(path); string(b) != content {
			t.Errorf("%s: the file was overwritten", name)
		}
	}
}

// TestConcurrentCreate: processes starting at once agree on one key, none
// reads a half-written file, and no temporary file is left behind.
func TestConcurrentCreate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k.pem")
	const n = 16
	keys := make(chan any, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			k, _, err := LoadOrCreate(path, gen)
			keys <- k
			errs <- err
		}()
	}
	var first ed25519.PrivateKey
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		k := (<-keys).(ed25519.PrivateKey)
		if first == nil {
			first = k
		} else if !first.Equal(k) {
			t.Fatal("two different keys")
		}
	}
	es, err := os.ReadDir(dir)
	if err != nil || len(es) != 1 {
		t.Fatalf("directory holds %d entries (%v), want only the key", len(es), err)
	}
}
