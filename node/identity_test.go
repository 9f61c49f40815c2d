package node

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIdentityCreateAndReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "bob.key")
	k1, created, err := LoadOrCreateIdentity(path)
	if err != nil || !created {
		t.Fatalf("create: %v created=%v", err, created)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	k2, created, err := LoadOrCreateIdentity(path)
	if err != nil || created {
		t.Fatalf("reload: %v created=%v", err, created)
	}
	if !k1.Equal(k2) {
		t.Fatal("reloaded key differs")
	}
}

func TestIdentityBadFiles(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.key")
	os.WriteFile(garbage, []byte("not a key"), 0o600)
	if _, _, err := LoadOrCreateIdentity(garbage); err == nil || !strings.Contains(err.Error(), "not a PEM private key") {
		t.Fatalf("garbage: %v", err)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(ec)
	wrong := filepath.Join(dir, "ecdsa.key")
	os.WriteFile(wrong, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	if _, _, err := LoadOrCreateIdentity(wrong); err == nil || !strings.Contains(err.Error(), "want an Ed25519 key") {
		t.Fatalf("ecdsa key: %v", err)
	}
	if b, _ := os.ReadFile(garbage); string(b) != "not a key" {
		t.Fatal("a bad identity file was overwritten")
	}
}

func TestDefaultIdentityPath(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", "/cfg")
	for name, want := range map[string]string{
		"Bob":     "/cfg/natchat/bob.key",
		"a.b-c_d": "/cfg/natchat/a.b-c_d.key",
		"../evil": "/cfg/natchat/x-2e2e2f6576696c.key",
		"zoë":     "/cfg/natchat/x-7a6fc3ab.key",
		".hidden": "/cfg/natchat/x-2e68696464656e.key",
	} {
		got, err := DefaultIdentityPath(name)
		if err != nil || got != want {
			t.Errorf("DefaultIdentityPath(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
}
