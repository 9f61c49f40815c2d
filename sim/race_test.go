//go:build race

package sim

// raceEnabled: the race detector allocates for itself (shadow state,
// unattributed runtime allocations) and makes sync.Pool drop items at
// random, so live-heap measurements under it say nothing about ours.
const raceEnabled = true
