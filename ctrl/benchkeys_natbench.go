//go:build natbench

package ctrl

// BenchKeys returns the rendezvous's session keys for a simulated node of
// the benchmark preload (internal/benchnode): up opens what the node
// sends, down seals what the rendezvous sends, as after a handshake.
// Only in binaries built with the natbench tag: production binaries have
// no way to make keys without a handshake.
func BenchKeys(up, down [32]byte) *Keys {
	return &Keys{send: down, recv: up}
}
