// Package files is the disk side of file transfer, without the network:
// which offered names may be saved (SafeName), the manifest that describes
// a file as blocks with their chained SHA-256 values (Manifest, HashFile,
// chain.go), and the
// partial file a receiver writes, verifies block by block, resumes after
// a crash and finally names without overwriting anything (Part).
//
// On disk, in the downloads directory, a transfer in progress is two
// hidden files named after its ID:
//
//	.natchat-<id>.part   the bytes received so far
//	.natchat-<id>.state  where the verified, fsync'd bytes end (see Part)
//
// and a finished one is the file under its own name. A .part is never
// renamed but once it is complete and verified, so an interrupted or
// failed transfer (a full disk, say) leaves nothing that looks complete.
//
// The package reads and writes files in the directories it is given and
// nowhere else; it keeps no state of its own.
package files
