// Package punch upgrades a peer link from the relay to a direct UDP path with
// ICE (github.com/pion/ice/v2), sharing the node's one UDP socket.
//
// # Where it sits
//
// The node owns one UDP socket. It demultiplexes it once: rendezvous protocol
// packets stay in the node; everything else (STUN, ICE checks, direct peer
// datagrams) is handed to punch through a net.PacketConn view (Options.Conn)
// whose WriteTo goes out of the same socket. The rendezvous answers STUN
// Binding requests on its port, so it is also the STUN server
// (Options.STUNServer) that yields server-reflexive candidates.
//
// A Manager owns one ice.UniversalUDPMux over that view and one ICE agent per
// remote peer (Peer). The mux routes a packet by remote address first, then by
// the STUN USERNAME, so at most one live agent may talk to a given remote
// IP:port: a Peer keeps its one agent for life and restarts it (ICE restart)
// rather than replacing it.
//
// Above punch each peer has one path-agnostic link: it sends over the relay
// from the first packet and switches to the direct path when Handler.Direct
// reports true, back to the relay when it reports false. The direct path only
// carries opaque datagrams (QUIC runs on top).
//
// # The algorithm, per peer
//
//  1. Start (or the first remote Signal) gathers host and server-reflexive
//     candidates and sends a Signal through Handler.SendSignal; the node
//     delivers it to the peer through the rendezvous, reliably.
//  2. When the remote credentials arrive, connectivity checks start (both
//     sides start within one signalling delay of each other: see "Signals").
//  3. ICE selects a pair: Direct(true, remote, rtt). Keepalives run every
//     KeepaliveInterval.
//  4. Nothing heard for DisconnectedTimeout: Direct(false). If traffic comes
//     back, Direct(true) again. FailedTimeout later the agent fails.
//  5. On failure (or when the controlled side reports its failure) the
//     controlling side restarts ICE on the same agent after an exponential
//     backoff (RetryMin doubling to RetryMax, ±20% jitter, reset on success):
//     a new Generation, new credentials, fresh candidates, re-signalled. So a
//     pair that cannot punch (symmetric NAT against a port-restricted or
//     symmetric one) keeps re-probing rarely, and a network change can still
//     upgrade to direct.
//
// # Signals
//
// The controlling side (the node with the smaller Ed25519 key) owns the
// Generation, an ICE session number. Its first Generation is derived from the
// wall clock (seconds), then it increments by one per restart, so a restarted
// process supersedes its previous incarnation; comparison is serial-number
// arithmetic (RFC 1982). Rules:
//
//   - Controlling side K sends offers {Generation: g, its credentials and
//     candidates}. Within one g, K's credentials never change; later signals
//     of the same g only add candidates (each Signal carries the full list
//     gathered so far, so reordering and duplicates are harmless).
//   - Controlled side C answers with {Generation: g of the offer it answers}.
//     Before it has seen any offer it sends Generation 0, so both sides learn
//     each other's credentials after one one-way signalling delay instead of a
//     round trip. A newer g makes C restart its agent (if it was in use) and
//     answer; an older g is stale and dropped.
//   - K accepts answers for its current g, and a Generation 0 answer only
//     while it has never had remote credentials. Anything else is stale,
//     except credentials K has never seen (in a Generation 0 or a current-g
//     signal): the remote Peer was recreated, so K restarts at once.
//   - When C's agent fails it sends {Generation: g, Failed: true}; K restarts
//     (after its backoff) if g is still current. Only K ever starts a new
//     Generation, so there is no restart glare.
//
// Signals must be delivered eventually (the node retransmits until acked);
// they may be duplicated or reordered.
//
// # Timing (defaults, see Options)
//
// CheckInterval 100 ms, a pair is abandoned after PairTimeout 4 s of checks
// (MaxBindingRequests = 40), nomination waits 0 for host pairs and half a
// CheckInterval for reflexive ones (so a LAN keeps its host path even behind
// a hairpinning NAT),
// KeepaliveInterval 1 s, DisconnectedTimeout 3 s (so Direct(false) 3–4 s
// after the path dies), FailedTimeout 2 s more, retry 1 s doubling to 60 s.
// pion's defaults (200 ms checks, 500 ms/1 s nomination waits for srflx/prflx,
// 5 s + 25 s failure) cost ~0.5 s per connect and 30 s per failure.
//
// pion sends one STUN Binding request per gather and waits 5 s, so a lost
// packet loses the server-reflexive candidate. The Manager keeps the mux's
// mapped-address cache warm: it queries the STUN server at start and every
// STUNRefresh with retransmissions, and gatherers waiting on a pending query
// are answered by any of them.
//
// # pion gotchas handled here
//
//   - NetworkTypes is set explicitly (nil gathers host candidates only);
//     UDPMux and UDPMuxSrflx are the same universal mux; mDNS is disabled.
//   - ice.Conn.Write returns (0, nil) with no selected pair: Peer.Write turns
//     that into ErrNoDirectPath.
//   - Dial/Accept start checks once and return only on the first connection;
//     later Generations reuse the same Conn. They are cancelled by Close.
//   - pion's checking timer is not reset by a Restart from the checking state,
//     so the controlling side only restarts from connected, disconnected or
//     failed; state callbacks are asynchronous, so decisions taken on "failed"
//     are re-checked after a settle delay.
//   - On an unspecified-address socket the mux lists every interface address;
//     loopback and link-local ones are dropped from the host candidates.
package punch
