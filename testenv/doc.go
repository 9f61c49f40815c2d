// Package testenv is the NAT lab: it builds real networks on one Linux
// machine out of network namespaces, veth pairs, bridges and kernel NAT,
// runs programs inside them and lets tests watch what happens.
//
// A Lab owns everything it creates and removes it on Close:
//
//   - an internet segment (Lab.Internet) carrying 198.51.100.0/24 (router
//     WANs) and 203.0.113.0/24 (public hosts, the rendezvous at
//     RendezvousAddr);
//   - routers (Lab.AddRouter) with a NAT type (RFC 4787: FullCone,
//     AddressRestricted, PortRestricted, Symmetric), a firewall unless
//     naive, a LAN bridge, and a WAN on the internet or on another
//     router's LAN (carrier-grade NAT, Lab.AddDoubleNAT);
//   - hosts (Lab.AddHost) on a LAN or on the internet (NAT type None);
//   - a Wire per internet attachment, which adds delay, jitter and loss
//     in userspace (this kernel has no netem);
//   - processes (Lab.Start), in particular the rendezvous
//     (Lab.StartRendezvous) and headless nodes (Lab.StartNode), whose JSON
//     events a test waits for with Node.Wait and Node.WaitFrom.
//
// Routers expose the NAT state to tests: Router.SetUDPTimeouts,
// Router.FlushConntrack, Router.ChangePublicAddr, Router.Conntrack and
// Router.InboundDropped.
//
// Everything is configured from Go through netlink and nftables; the lab
// needs root and nothing but the kernel. Names carry a random per-lab
// prefix, so labs never collide; a state file per lab lets `natlab down`
// and later labs remove what a crashed process left behind. See
// docs/NATLAB.md for the design, the addressing plan and the expected NAT
// matrix, and testenv/cmd/natlab for the command-line tool.
package testenv
