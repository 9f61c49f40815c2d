package node

import "natchat/node/api"

// history answers api.History from the node's history store.
func (n *Node) history(c api.History) {
	n.bus.Publish(&api.HistoryEvent{Conv: c.Conv, Entries: []api.HistoryEntry{}})
}
