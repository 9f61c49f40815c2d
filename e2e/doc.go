// Package e2e is natchat's end-to-end suite: it builds the real
// cmd/rendezvous and cmd/node binaries once, runs them on loopback, drives
// the nodes through their headless JSON interface (stdin commands, stdout
// events) and checks what users and operators would see: registration,
// presence, delivery receipts, restarts, refusals, exit codes, metrics and
// the bytes on the wire.
//
// Every test starts its own rendezvous on its own ports and runs in
// parallel with the others. Nothing waits by sleeping: tests wait for an
// event, a log line or a metric with a deadline. When a test fails, the
// stderr logs and stdout events of its processes are printed.
//
//	go test -race -count=1 ./e2e/
//
// NATCHAT_E2E_RACE=1 builds the binaries with -race as well, and any data
// race they report fails the test that ran them.
package e2e
