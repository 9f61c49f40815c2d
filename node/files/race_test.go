//go:build race

package files

// raceEnabled: the race detector disables an optimisation that keeps
// crypto/sha256's AppendBinary from allocating (append of a make).
const raceEnabled = true
