package store

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"natchat/wire"
)

// FileOut is a file this node is sending: kept from its offer until its
// outcome, so that a restarted node offers it again (the receiver resumes
// from what it has verified).
type FileOut struct {
	ID      wire.FileID
	To      string // the peer's name as typed
	Path    string // the file's path as given
	Size    int64
	SHA256  [32]byte
	Created time.Time // to the millisecond
}

// maxFilePath bounds FileOut.Path in bytes.
const maxFilePath = 4096

// PutFileOut records f durably (an fsync'd commit).
func (s *Store) PutFileOut(f FileOut) error {
	if s.isClosed() {
		return ErrClosed
	}
	if f.To == "" || len(f.To) > maxToLen || f.Path == "" || len(f.Path) > maxFilePath {
		return fmt.Errorf("file %s: recipient or path out of bounds", f.ID)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFilesOut).Put(f.ID[:], appendFileOut(nil, f))
	})
	if err != nil {
		return fmt.Errorf("file %s: %w", f.ID, dbErr(err))
	}
	return nil
}

// DeleteFileOut forgets the file id (its transfer ended), durably.
func (s *Store) DeleteFileOut(id wire.FileID) error {
	if s.isClosed() {
		return ErrClosed
	}
	err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketFilesOut).Delete(id[:]) })
	if err != nil {
		return fmt.Errorf("file %s: %w", id, dbErr(err))
	}
	return nil
}

// FilesOut returns every file being sent, oldest first. A damaged record
// is an error (the caller reports it; the others are still returned).
func (s *Store) FilesOut() ([]FileOut, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	var out []FileOut
	var bad error
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFilesOut).ForEach(func(k, v []byte) error {
			f, err := parseFileOut(v)
			if err != nil || len(k) != len(f.ID) || wire.FileID(k) != f.ID {
				bad = fmt.Errorf("file record %x: %w", k, ErrCorrupt)
				return nil
			}
			out = append(out, f)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("files: %w", dbErr(err))
	}
	for i := 1; i < len(out); i++ { // few records: insertion sort by creation
		for j := i; j > 0 && out[j].Created.Before(out[j-1].Created); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out, bad
}

// appendFileOut appends the record of f: version(1) id(8) size(8)
// sha256(32) created_ms(8) to(uvarint len + bytes) path(rest).
func appendFileOut(b []byte, f FileOut) []byte {
	b = append(b, 1)
	b = append(b, f.ID[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(f.Size))
	b = append(b, f.SHA256[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(f.Created.UnixMilli()))
	b = binary.AppendUvarint(b, uint64(len(f.To)))
	b = append(b, f.To...)
	return append(b, f.Path...)
}

func parseFileOut(b []byte) (FileOut, error) {
	var f FileOut
	const fixed = 1 + 8 + 8 + 32 + 8
	if len(b) < fixed+2 || b[0] != 1 {
		return f, ErrCorrupt
	}
	f.ID = wire.FileID(b[1:9])
	f.Size = int64(binary.BigEndian.Uint64(b[9:]))
	f.SHA256 = [32]byte(b[17:49])
	f.Created = time.UnixMilli(int64(binary.BigEndian.Uint64(b[49:])))
	b = b[fixed:]
	n, l := binary.Uvarint(b)
	if l <= 0 || n == 0 || n > maxToLen || n >= uint64(len(b)-l) || f.Size < 0 {
		return f, ErrCorrupt
	}
	b = b[l:]
	f.To, f.Path = string(b[:n]), string(b[n:])
	return f, nil
}
