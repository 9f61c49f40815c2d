// Package scenario holds the NAT lab's end-to-end scenarios: the real
// rendezvous and node binaries, built once per test run, in network
// namespaces behind real kernel NAT (see natchat/testenv and
// docs/NATLAB.md). The tests need root; they skip only without it. When
// the binaries do not build, every scenario fails with the build error.
//
// They run with -parallel 6 unless -test.parallel is given: the scenarios
// mostly wait on the network, not the CPU.
package scenario
