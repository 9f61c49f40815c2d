// Package sim runs the real rendezvous and node packages together in one
// process, on loopback sockets or on a pion/transport vnet (an in-memory
// internet with NATs of every RFC 4787 type, delay and loss, built with
// internal/vnetlab), for tests and benchmarks that need no root. The netns
// lab (testenv) checks the same behaviour with real kernels and the real
// binaries.
package sim
