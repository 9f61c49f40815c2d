//go:build natbench

package ctrl

import (
	"testing"

	"natchat/internal/benchnode"
	"natchat/wire"
)

func TestBenchKeysOpenBenchnode(t *testing.T) {
	n := benchnode.Derive(1, 2)
	k := BenchKeys(n.Up, n.Down)
	if _, err := k.Open(nil, benchnode.Seal(nil, &n, 3, benchnode.Plaintext(&wire.Heartbeat{}))); err != nil {
		t.Fatal(err)
	}
}
