package testenv

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// NATType is a router's NAT behaviour in RFC 4787 terms.
type NATType int

const (
	// None is a public host on the internet segment: no NAT, no firewall.
	None NATType = iota
	// FullCone: endpoint-independent mapping and endpoint-independent
	// filtering. Once a LAN socket has sent anything out, any internet
	// host may send to its public address and port.
	FullCone
	// AddressRestricted: endpoint-independent mapping, address-dependent
	// filtering. Inbound is accepted from any port of an address the LAN
	// socket has sent to.
	AddressRestricted
	// PortRestricted: endpoint-independent mapping, address-and-port-
	// dependent filtering. This is Linux masquerade plus a firewall that
	// drops new inbound flows, i.e. a typical home router.
	PortRestricted
	// Symmetric: address-and-port-dependent mapping (masquerade random:
	// every new destination gets a fresh random port) and
	// address-and-port-dependent filtering.
	Symmetric
)

// NATTypes lists every NAT type, public host first.
var NATTypes = []NATType{None, FullCone, AddressRestricted, PortRestricted, Symmetric}

func (t NATType) String() string {
	switch t {
	case None:
		return "none"
	case FullCone:
		return "full-cone"
	case AddressRestricted:
		return "address-restricted"
	case PortRestricted:
		return "port-restricted"
	case Symmetric:
		return "symmetric"
	}
	return fmt.Sprintf("NATType(%d)", int(t))
}

// EndpointIndependentMapping reports whether the NAT keeps one public port
// per LAN socket whatever the destination.
func (t NATType) EndpointIndependentMapping() bool { return t != Symmetric }

// ParseNATType accepts the names String returns and the short forms
// "public", "full", "address", "restricted", "port", "sym".
func ParseNATType(s string) (NATType, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "none", "public", "open":
		return None, nil
	case "full-cone", "full", "fullcone", "full_cone":
		return FullCone, nil
	case "address-restricted", "address", "addr", "restricted", "restricted-cone", "address-restricted-cone":
		return AddressRestricted, nil
	case "port-restricted", "port", "port-restricted-cone", "masquerade":
		return PortRestricted, nil
	case "symmetric", "sym":
		return Symmetric, nil
	}
	return 0, fmt.Errorf("unknown NAT type %q (want none, full-cone, address-restricted, port-restricted or symmetric)", s)
}

// nftables objects of a router, all in table ip natlab.
const (
	nftTable      = "natlab"
	nftMapSet     = "mapping" // public port -> LAN address . LAN port
	nftPermitSet  = "permit"  // public port . remote address, for address-restricted filtering
	nftBlockSet   = "blocked" // addresses Router.Block black-holes
	nftWAN        = "wan0"    // router WAN interface
	regKey        = 8         // NFT_REG32_00
	regKey2       = 9         // NFT_REG32_01
	regData       = 12        // NFT_REG32_04
	regData2      = 13        // NFT_REG32_05
	ctDirOriginal = 0         // IP_CT_DIR_ORIGINAL
	// ctDirReply is IP_CT_DIR_REPLY as expr.Ct.Direction must carry it:
	// google/nftables v0.3.0 encodes NFTA_CT_DIRECTION as a big-endian
	// u32 but the kernel reads a u8, i.e. the first byte. (As
	// ct direction matched with a Cmp, the value is a plain 1.)
	ctDirReply = 1 << 24
	ipsSrcNAT  = uint32(0x10) // IPS_SRC_NAT
	ipsDstNAT  = uint32(0x20) // IPS_DST_NAT
)

// ruleConfig is what a router's ruleset depends on.
type ruleConfig struct {
	nat   NATType
	naive bool
	// mapTimeout is how long an idle full-cone / address-restricted
	// mapping stays in the nftables sets; it follows the conntrack UDP
	// stream timeout.
	mapTimeout time.Duration
	// blocked are the addresses in the blocked set (Router.Block), sorted.
	blocked []netip.Addr
}

// blockChains are the chains of the black hole (Router.Block), one per
// filter hook a packet to or from a blocked address can take.
var blockChains = []string{"block-in", "block-fwd", "block-out"}

// applyRules replaces table ip natlab in the namespace with the ruleset for
// cfg, atomically (one netlink batch). Dynamic set contents are lost.
//
// Every NAT type masquerades on wan0 (with random ports for Symmetric).
// Unless naive, the router drops new inbound flows on wan0 in its input and
// forward hooks, as home routers do; established and related traffic
// passes. Dropping in the filter hooks also means the kernel never confirms
// a conntrack entry for an unsolicited packet, which is what keeps an early
// hole-punch packet from stealing the port the LAN host is about to use.
//
// Full cone and address-restricted add endpoint-independent filtering on
// top of masquerade: a postrouting chain records, for every outbound
// source-NATed UDP flow, public port -> LAN address.port in a dynamic map
// (and, for address-restricted, public port . remote address in a permit
// set); a prerouting rule DNATs new inbound UDP to a recorded public port
// (if permitted) back to its LAN socket. The resulting flow's reply is
// source-NATed to the same public port, so the mapping stays endpoint
// independent.
//
// Every router also has a black hole (Router.Block): a set of blocked
// addresses, filled from cfg.blocked and changed in place by
// updateBlocked, and chains in the input, forward and output hooks that
// drop packets from (input, forward) or to (forward, output) an address in
// it, with a counter. They run at filter priority -10, before the
// firewall, so their counters see every blocked packet.
func applyRules(ns *Namespace, cfg ruleConfig) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.h)))
	if err != nil {
		return fmt.Errorf("nftables in %s: %w", ns.Name, err)
	}
	tbl := &nftables.Table{Name: nftTable, Family: nftables.TableFamilyIPv4}
	// Add, delete, add: replaces the table whether or not it exists.
	c.AddTable(tbl)
	c.DelTable(tbl)
	c.AddTable(tbl)

	eif := cfg.nat == FullCone || cfg.nat == AddressRestricted
	var mapSet, permitSet *nftables.Set
	if eif {
		timeout := cfg.mapTimeout
		if timeout <= 0 {
			timeout = 120 * time.Second
		}
		mapSet = &nftables.Set{
			Table: tbl, ID: 1, Name: nftMapSet,
			IsMap: true, HasTimeout: true, Dynamic: true, Timeout: timeout, Size: 65535,
			KeyType:  nftables.TypeInetService,
			DataType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService),
		}
		if err := c.AddSet(mapSet, nil); err != nil {
			return fmt.Errorf("add set %s: %w", nftMapSet, err)
		}
		if cfg.nat == AddressRestricted {
			permitSet = &nftables.Set{
				Table: tbl, ID: 2, Name: nftPermitSet,
				HasTimeout: true, Dynamic: true, Timeout: timeout, Size: 65535,
				KeyType: nftables.MustConcatSetType(nftables.TypeInetService, nftables.TypeIPAddr),
			}
			if err := c.AddSet(permitSet, nil); err != nil {
				return fmt.Errorf("add set %s: %w", nftPermitSet, err)
			}
		}
	}

	pre := c.AddChain(&nftables.Chain{Name: "pre", Table: tbl, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	post := c.AddChain(&nftables.Chain{Name: "post", Table: tbl, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})

	// oifname "wan0" masquerade [random]
	c.AddRule(&nftables.Rule{Table: tbl, Chain: post, Exprs: concat(
		metaEq(expr.MetaKeyOIFNAME, ifname(nftWAN)),
		[]expr.Any{&expr.Masq{Random: cfg.nat == Symmetric}},
	)})

	if eif {
		rec := c.AddChain(&nftables.Chain{Name: "record", Table: tbl, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityRef(200)})
		// oifname "wan0" meta l4proto udp ct direction original ct status snat
		//   update @mapping { ct reply proto-dst : ct original saddr . ct original proto-src }
		//   [update @permit { ct reply proto-dst . ip daddr }]
		exprs := concat(
			metaEq(expr.MetaKeyOIFNAME, ifname(nftWAN)),
			metaEq(expr.MetaKeyL4PROTO, []byte{unix.IPPROTO_UDP}),
			[]expr.Any{
				&expr.Ct{Register: 1, Key: expr.CtKeyDIRECTION},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}}, // original
			},
			ctBitsSet(expr.CtKeySTATUS, ipsSrcNAT),
			[]expr.Any{
				&expr.Ct{Register: regKey, Key: expr.CtKeyPROTODST, Direction: ctDirReply},
				&expr.Ct{Register: regData, Key: expr.CtKeySRC, Direction: ctDirOriginal},
				&expr.Ct{Register: regData2, Key: expr.CtKeyPROTOSRC, Direction: ctDirOriginal},
				&expr.Dynset{SrcRegKey: regKey, SrcRegData: regData, SetName: nftMapSet, SetID: mapSet.ID,
					Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: mapSet.Timeout},
			},
		)
		if permitSet != nil {
			exprs = append(exprs,
				&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: regKey2,
					Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}, // ip daddr
				&expr.Dynset{SrcRegKey: regKey, SetName: nftPermitSet, SetID: permitSet.ID,
					Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: permitSet.Timeout},
			)
		}
		c.AddRule(&nftables.Rule{Table: tbl, Chain: rec, Exprs: exprs})

		// iifname "wan0" meta l4proto udp ct state new
		//   [udp dport . ip saddr @permit] counter
		//   dnat ip addr . port to udp dport map @mapping
		exprs = concat(
			metaEq(expr.MetaKeyIIFNAME, ifname(nftWAN)),
			metaEq(expr.MetaKeyL4PROTO, []byte{unix.IPPROTO_UDP}),
			ctBitsSet(expr.CtKeySTATE, expr.CtStateBitNEW),
			[]expr.Any{&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: regKey,
				Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}}, // udp dport
		)
		if permitSet != nil {
			exprs = append(exprs,
				&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: regKey2,
					Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}, // ip saddr
				&expr.Lookup{SourceRegister: regKey, SetName: nftPermitSet, SetID: permitSet.ID},
			)
		}
		exprs = append(exprs,
			&expr.Lookup{SourceRegister: regKey, DestRegister: regData, IsDestRegSet: true,
				SetName: nftMapSet, SetID: mapSet.ID},
			&expr.Counter{},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4,
				RegAddrMin: regData, RegProtoMin: regData2, Specified: true},
		)
		c.AddRule(&nftables.Rule{Table: tbl, Chain: pre, Exprs: exprs})
	}

	if err := addBlackHole(c, tbl, cfg.blocked); err != nil {
		return err
	}

	if !cfg.naive {
		accept := nftables.ChainPolicyAccept
		in := c.AddChain(&nftables.Chain{Name: "in", Table: tbl, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
		fwd := c.AddChain(&nftables.Chain{Name: "fwd", Table: tbl, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
		for _, ch := range []*nftables.Chain{in, fwd} {
			// iifname "wan0" ct state established,related accept
			c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: concat(
				metaEq(expr.MetaKeyIIFNAME, ifname(nftWAN)),
				ctBitsSet(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED),
				[]expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}},
			)})
			if ch == fwd {
				// iifname "wan0" ct status dnat accept (full-cone flows)
				c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: concat(
					metaEq(expr.MetaKeyIIFNAME, ifname(nftWAN)),
					ctBitsSet(expr.CtKeySTATUS, ipsDstNAT),
					[]expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}},
				)})
			}
			// iifname "wan0" counter drop
			c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: concat(
				metaEq(expr.MetaKeyIIFNAME, ifname(nftWAN)),
				[]expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}},
			)})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("apply %v rules in %s: %w", cfg.nat, ns.Name, err)
	}
	return nil
}

// blockSet is the blocked set of tbl, as set element calls name it.
func blockSet(tbl *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: tbl, ID: 3, Name: nftBlockSet, KeyType: nftables.TypeIPAddr}
}

func blockElements(addrs []netip.Addr) []nftables.SetElement {
	var els []nftables.SetElement
	for _, a := range addrs {
		b := a.As4()
		els = append(els, nftables.SetElement{Key: b[:]})
	}
	return els
}

// addBlackHole adds the blocked set holding blocked and the chains that
// drop traffic to and from its addresses:
//
//	chain block-in  { type filter hook input priority -10; ip saddr @blocked counter drop }
//	chain block-fwd { type filter hook forward priority -10;
//	                  ip saddr @blocked counter drop; ip daddr @blocked counter drop }
//	chain block-out { type filter hook output priority -10; ip daddr @blocked counter drop }
func addBlackHole(c *nftables.Conn, tbl *nftables.Table, blocked []netip.Addr) error {
	set := blockSet(tbl)
	if err := c.AddSet(set, blockElements(blocked)); err != nil {
		return fmt.Errorf("add set %s: %w", nftBlockSet, err)
	}
	const saddr, daddr = 12, 16 // offsets in the IPv4 header
	accept := nftables.ChainPolicyAccept
	for _, b := range []struct {
		name    string
		hook    *nftables.ChainHook
		offsets []uint32
	}{
		{blockChains[0], nftables.ChainHookInput, []uint32{saddr}},
		{blockChains[1], nftables.ChainHookForward, []uint32{saddr, daddr}},
		{blockChains[2], nftables.ChainHookOutput, []uint32{daddr}},
	} {
		ch := c.AddChain(&nftables.Chain{Name: b.name, Table: tbl, Type: nftables.ChainTypeFilter,
			Hooknum: b.hook, Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityFilter - 10), Policy: &accept})
		for _, off := range b.offsets {
			c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: []expr.Any{
				&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1,
					Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
				&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
				&expr.Counter{},
				&expr.Verdict{Kind: expr.VerdictDrop},
			}})
		}
	}
	return nil
}

// updateBlocked adds addr to the namespace's blocked set, or removes it,
// in one batch, leaving the rest of the table (and its dynamic sets)
// alone.
func updateBlocked(ns *Namespace, addr netip.Addr, add bool) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.h)))
	if err != nil {
		return fmt.Errorf("nftables in %s: %w", ns.Name, err)
	}
	set := blockSet(&nftables.Table{Name: nftTable, Family: nftables.TableFamilyIPv4})
	op, what := c.SetAddElements, "add"
	if !add {
		op, what = c.SetDeleteElements, "delete"
	}
	if err := op(set, blockElements([]netip.Addr{addr})); err != nil {
		return fmt.Errorf("%s %v in set %s in %s: %w", what, addr, nftBlockSet, ns.Name, err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("%s %v in set %s in %s: %w", what, addr, nftBlockSet, ns.Name, err)
	}
	return nil
}

// ruleCounters sums the packet counters of the rules in chain: those of
// drop rules only when drops is set, else all of them.
func ruleCounters(ns *Namespace, chain string, drops bool) (uint64, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.h)))
	if err != nil {
		return 0, err
	}
	tbl := &nftables.Table{Name: nftTable, Family: nftables.TableFamilyIPv4}
	rules, err := c.GetRules(tbl, &nftables.Chain{Name: chain, Table: tbl})
	if err != nil {
		return 0, fmt.Errorf("list chain %s in %s: %w", chain, ns.Name, err)
	}
	var n uint64
	for _, r := range rules {
		var cnt *expr.Counter
		isDrop := false
		for _, e := range r.Exprs {
			switch e := e.(type) {
			case *expr.Counter:
				cnt = e
			case *expr.Verdict:
				isDrop = e.Kind == expr.VerdictDrop
			}
		}
		if cnt != nil && (isDrop || !drops) {
			n += cnt.Packets
		}
	}
	return n, nil
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// ifname pads an interface name to IFNAMSIZ, as meta iifname compares.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

func metaEq(key expr.MetaKey, data []byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data},
	}
}

// ctBitsSet matches when any of bits is set in the 32-bit ct key (state or
// status), which nftables keeps in host byte order.
func ctBitsSet(key expr.CtKey, bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: key},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}
