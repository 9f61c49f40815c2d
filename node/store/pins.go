package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"natchat/wire"
)

// Pin binds a peer's name to its identity key (trust on first use).
type Pin struct {
	Name  string    // the name as first seen: its display spelling
	Key   wire.Key  // the peer's identity key
	Since time.Time // when the pin was made, to the millisecond
}

// PinByName returns the pin of name, compared as wire.NameKey(name). ok is
// false if there is none. A corrupt pin is an error, never "no pin": that
// would let another key be pinned.
func (s *Store) PinByName(name string) (p Pin, ok bool, err error) {
	if s.isClosed() {
		return Pin{}, false, ErrClosed
	}
	nk := wire.NameKey(name)
	if nk == "" {
		return Pin{}, false, nil
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketPinNames).Get([]byte(nk))
		if v == nil {
			return nil
		}
		var perr error
		p, perr = parsePin(nk, v)
		ok = perr == nil
		return perr
	})
	if err != nil {
		return Pin{}, false, fmt.Errorf("pin of %q: %w", name, dbErr(err))
	}
	return p, ok, nil
}

// PinByKey returns the pin of key k. ok is false if there is none.
func (s *Store) PinByKey(k wire.Key) (p Pin, ok bool, err error) {
	if s.isClosed() {
		return Pin{}, false, ErrClosed
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		nk := tx.Bucket(bucketPinKeys).Get(k[:])
		if nk == nil {
			return nil
		}
		v := tx.Bucket(bucketPinNames).Get(nk)
		if v == nil {
			return fmt.Errorf("%w: name %q has no pin", ErrCorrupt, nk)
		}
		var perr error
		if p, perr = parsePin(string(nk), v); perr != nil {
			return perr
		}
		if p.Key != k {
			return fmt.Errorf("%w: name %q is pinned to key %s", ErrCorrupt, nk, p.Key.Short())
		}
		ok = true
		return nil
	})
	if err != nil {
		return Pin{}, false, fmt.Errorf("pin of key %s: %w", k.Short(), dbErr(err))
	}
	return p, ok, nil
}

// SetPin durably (fsync'd) binds name to k, replacing any pin of that name
// and any pin of that key, so that names and keys stay one to one. If name
// is already pinned to k, the pin (its spelling and Since) is kept.
func (s *Store) SetPin(name string, k wire.Key) error {
	if s.isClosed() {
		return ErrClosed
	}
	if err := wire.ValidateName(name); err != nil {
		return fmt.Errorf("pin %q: %w", name, err)
	}
	if k.IsZero() {
		return fmt.Errorf("pin %q: zero key", name)
	}
	nk := []byte(wire.NameKey(name))
	since := s.now().UnixMilli()
	err := s.db.Update(func(tx *bolt.Tx) error {
		names, keys := tx.Bucket(bucketPinNames), tx.Bucket(bucketPinKeys)
		if v := names.Get(nk); v != nil {
			old, err := parsePin(string(nk), v)
			if err != nil {
				return err
			}
			if old.Key == k {
				return nil
			}
			if err := keys.Delete(old.Key[:]); err != nil {
				return err
			}
		}
		if oldNK := bytes.Clone(keys.Get(k[:])); oldNK != nil && !bytes.Equal(oldNK, nk) {
			if err := names.Delete(oldNK); err != nil {
				return err
			}
		}
		rec := binary.BigEndian.AppendUint64(append(make([]byte, 0, wire.KeyLen+8+len(name)), k[:]...), uint64(since))
		if err := names.Put(nk, append(rec, name...)); err != nil {
			return err
		}
		return keys.Put(k[:], nk)
	})
	if err != nil {
		return fmt.Errorf("pin %q: %w", name, dbErr(err))
	}
	return nil
}

// parsePin parses the pin record v stored under name key nk.
func parsePin(nk string, v []byte) (Pin, error) {
	if len(v) <= wire.KeyLen+8 {
		return Pin{}, fmt.Errorf("%w: pin of %q is %d bytes", ErrCorrupt, nk, len(v))
	}
	p := Pin{
		Key:   wire.Key(v[:wire.KeyLen]),
		Since: time.UnixMilli(int64(binary.BigEndian.Uint64(v[wire.KeyLen:]))),
		Name:  string(v[wire.KeyLen+8:]),
	}
	if wire.NameKey(p.Name) != nk || p.Key.IsZero() {
		return Pin{}, fmt.Errorf("%w: pin of %q", ErrCorrupt, nk)
	}
	return p, nil
}

// RendezvousKey returns the key pinned for the rendezvous at addr (as the
// user gave it), if any. A corrupt record is an error, never "none".
func (s *Store) RendezvousKey(addr string) (k [32]byte, ok bool, err error) {
	if s.isClosed() {
		return k, false, ErrClosed
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRVKeys).Get([]byte(addr))
		if v == nil {
			return nil
		}
		if len(v) != len(k) {
			return fmt.Errorf("%w: rendezvous key of %d bytes", ErrCorrupt, len(v))
		}
		copy(k[:], v)
		ok = true
		return nil
	})
	return k, ok, err
}

// SetRendezvousKey pins k for the rendezvous at addr, durably (fsync'd)
// before it returns.
func (s *Store) SetRendezvousKey(addr string, k [32]byte) error {
	if s.isClosed() {
		return ErrClosed
	}
	if addr == "" || len(addr) > 1024 {
		return fmt.Errorf("store: rendezvous address %q", addr)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRVKeys).Put([]byte(addr), bytes.Clone(k[:]))
	})
}
