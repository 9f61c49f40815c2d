package node

import (
	"context"

	"natchat/node/api"
)

// netCheck answers api.CheckNet.
func (n *Node) netCheck(ctx context.Context) {
	n.bus.Publish(&api.NetCheck{Mapping: api.MappingUnknown, Public: []string{}, Peers: []api.NetPeer{}})
}
