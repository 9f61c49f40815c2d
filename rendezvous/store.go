package rendezvous

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"natchat/wire"
)

// Names keeps name↔key bindings: a name is bound to the first key that
// registers it, for good; a key has one name. The server calls it on its
// packet path, so reads must be fast; Bind is called once per new name.
// The bbolt Store implements it; a distributed store (several rendezvous
// servers as one service) will implement it too.
type Names interface {
	// Bind binds name to key and returns the name's canonical spelling
	// (as first registered). It fails with ErrNameTaken or ErrKeyInUse.
	// A binding is durable when Bind returns.
	Bind(name string, key wire.Key) (canonical string, err error)
	// ByName returns the key bound to name (compared by wire.NameKey).
	ByName(name string) (key wire.Key, canonical string, ok bool)
	// ByKey returns the name bound to key.
	ByKey(key wire.Key) (canonical string, ok bool)
}

var _ Names = (*Store)(nil)

// Store keeps name↔key bindings on disk in bbolt. A name is bound to the
// first key that registers it, for good; a key has one name.
type Store struct {
	db *bolt.DB
}

var (
	bucketNames = []byte("names") // NameKey(name) → key(32) name
	bucketKeys  = []byte("keys")  // key(32) → NameKey(name)
)

// Binding errors.
var (
	// ErrNameTaken: the name is bound to another key.
	ErrNameTaken = errors.New("name taken")
	// ErrKeyInUse: the key is bound to another name.
	ErrKeyInUse = errors.New("key is already registered under another name")
)

// OpenStore opens (creating) the bindings database in dir.
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dir, "rendezvous.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketNames); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(bucketKeys)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Bind binds name to key if neither is bound yet, and succeeds if they are
// bound to each other. It returns the canonical spelling of the name (the
// spelling of the first registration).
func (s *Store) Bind(name string, key wire.Key) (string, error) {
	nk := wire.NameKey(name)
	canonical := name
	err := s.db.Update(func(tx *bolt.Tx) error {
		names, keys := tx.Bucket(bucketNames), tx.Bucket(bucketKeys)
		if v := names.Get([]byte(nk)); v != nil {
			if len(v) < wire.KeyLen || wire.Key(v[:wire.KeyLen]) != key {
				return ErrNameTaken
			}
			canonical = string(v[wire.KeyLen:])
			return nil
		}
		if v := keys.Get(key[:]); v != nil {
			return fmt.Errorf("%w (%q)", ErrKeyInUse, v)
		}
		rec := append(append(make([]byte, 0, wire.KeyLen+len(name)), key[:]...), name...)
		if err := names.Put([]byte(nk), rec); err != nil {
			return err
		}
		return keys.Put(key[:], []byte(nk))
	})
	return canonical, err
}

// ByName returns the key and canonical name bound to name.
func (s *Store) ByName(name string) (key wire.Key, canonical string, ok bool) {
	s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketNames).Get([]byte(wire.NameKey(name)))
		if len(v) >= wire.KeyLen {
			key, canonical, ok = wire.Key(v[:wire.KeyLen]), string(v[wire.KeyLen:]), true
		}
		return nil
	})
	return key, canonical, ok
}

// ByKey returns the canonical name bound to key.
func (s *Store) ByKey(key wire.Key) (canonical string, ok bool) {
	s.db.View(func(tx *bolt.Tx) error {
		nk := tx.Bucket(bucketKeys).Get(key[:])
		if nk == nil {
			return nil
		}
		if v := tx.Bucket(bucketNames).Get(nk); len(v) >= wire.KeyLen {
			canonical, ok = string(v[wire.KeyLen:]), true
		}
		return nil
	})
	return canonical, ok
}
