// Command natlab brings a NAT lab up on this machine for manual testing,
// runs commands inside its namespaces and takes it down again. It needs
// root.
//
//	natlab up [flags]                      build a lab, start the rendezvous, wait for Ctrl-C
//	natlab exec [-lab ID] NAME -- CMD ...  run CMD inside the namespace of host or router NAME
//	natlab list                            show running labs
//	natlab down [-lab ID]                  remove a lab (without -lab: all labs of natlab up)
//
// `natlab up -nat symmetric,port-restricted` puts alice behind a symmetric
// NAT and bob behind a port-restricted one. Each -nat entry is
// [CARRIER/]TYPE[+naive][*N]: N hosts behind one router of TYPE, that
// router optionally naive (no firewall) and optionally behind a
// carrier-grade NAT of type CARRIER. TYPE none makes public hosts.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netns"

	"natchat/testenv"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "up":
		err = cmdUp(os.Args[2:])
	case "down":
		err = cmdDown(os.Args[2:])
	case "exec":
		err = cmdExec(os.Args[2:])
	case "list", "ls", "status":
		err = cmdList(os.Args[2:])
	case "-h", "-help", "--help", "help":
		usage()
		return
	default:
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "natlab:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  natlab up [-nat LIST] [-nodes NAMES] [-delay D] [-jitter D] [-loss PCT] [-udp-timeout D] [-bin DIR] [-expiry D] [-keep]
  natlab exec [-lab ID] NAME -- CMD [ARGS...]
  natlab list
  natlab down [-lab ID]

-nat entries: [CARRIER/]TYPE[+naive][*N], TYPE one of none, full-cone,
address-restricted, port-restricted, symmetric (short: public, full,
address, port, sym). Example: -nat sym,port*2,port/port,port+naive
`)
}

// siteSpec is one parsed -nat entry.
type siteSpec struct {
	nat     testenv.NATType
	carrier *testenv.NATType
	naive   bool
	hosts   int
}

func parseSite(s string) (siteSpec, error) {
	sp := siteSpec{hosts: 1}
	if i := strings.LastIndexByte(s, '*'); i >= 0 {
		n, err := strconv.Atoi(s[i+1:])
		if err != nil || n < 1 {
			return sp, fmt.Errorf("%q: bad host count", s)
		}
		sp.hosts, s = n, s[:i]
	}
	if strings.HasSuffix(s, "+naive") {
		sp.naive, s = true, strings.TrimSuffix(s, "+naive")
	}
	if c, home, ok := strings.Cut(s, "/"); ok {
		ct, err := testenv.ParseNATType(c)
		if err != nil {
			return sp, err
		}
		sp.carrier, s = &ct, home
	}
	nt, err := testenv.ParseNATType(s)
	if err != nil {
		return sp, err
	}
	sp.nat = nt
	if nt == testenv.None && (sp.naive || sp.carrier != nil) {
		return sp, fmt.Errorf("%q: a public host has no router", s)
	}
	return sp, nil
}

var defaultNames = []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"}

func cmdUp(args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	natList := fs.String("nat", "symmetric,port-restricted", "comma-separated sites, see usage")
	nodes := fs.String("nodes", strings.Join(defaultNames, ","), "comma-separated node names, used in order")
	delay := fs.Duration("delay", 0, "one-way delay on every internet link")
	jitter := fs.Duration("jitter", 0, "delay jitter on every internet link")
	loss := fs.Float64("loss", 0, "random loss in percent on every internet link, each way")
	udpTimeout := fs.Duration("udp-timeout", 0, "routers' conntrack UDP timeout (unreplied and stream); 0 keeps 30s/120s")
	binDir := fs.String("bin", "", "directory with rendezvous and node binaries; default: build them")
	expiry := fs.Duration("expiry", 0, "rendezvous -expiry (0: its default)")
	keep := fs.Bool("keep", false, "keep the log directory after down")
	_ = fs.Parse(args)

	var specs []siteSpec
	for _, e := range strings.Split(*natList, ",") {
		sp, err := parseSite(strings.TrimSpace(e))
		if err != nil {
			return err
		}
		specs = append(specs, sp)
	}
	names := strings.Split(*nodes, ",")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	l, err := testenv.New(testenv.Options{KeepDir: *keep})
	if err != nil {
		return err
	}
	if err := l.SetInfo("owner", ownerUp); err != nil {
		l.Close()
		return err
	}
	defer func() {
		fmt.Println("natlab: removing lab", l.ID)
		if err := l.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "natlab: close:", err)
		}
	}()

	type row struct{ name, nat, addr, router, ns string }
	var rows []row
	var routers []*testenv.Router
	var wires []*testenv.Wire
	next := 0
	for i, sp := range specs {
		site := fmt.Sprintf("r%d", i+1)
		var hosts []string
		for j := 0; j < sp.hosts; j++ {
			if next >= len(names) {
				return fmt.Errorf("not enough -nodes names for %d hosts", next+1)
			}
			hosts = append(hosts, strings.TrimSpace(names[next]))
			next++
		}
		var s *testenv.Site
		desc := sp.nat.String()
		switch {
		case sp.carrier != nil:
			s, err = l.AddDoubleNAT(site, *sp.carrier, sp.nat, hosts[0])
			if err == nil {
				for _, h := range hosts[1:] {
					var hh *testenv.Host
					if hh, err = l.AddHost(h, s.Router.LAN()); err != nil {
						break
					}
					s.Hosts = append(s.Hosts, hh)
				}
				cgn := l.Router(site + "-cgn")
				routers = append(routers, cgn)
				wires = append(wires, cgn.WAN())
				desc = fmt.Sprintf("%v behind %v (CGN)", sp.nat, *sp.carrier)
			}
		default:
			s, err = l.AddSite(site, sp.nat, sp.naive, hosts...)
		}
		if err != nil {
			return err
		}
		if sp.naive {
			desc += " (naive)"
		}
		if s.Router != nil {
			routers = append(routers, s.Router)
			if s.Router.WAN() != nil {
				wires = append(wires, s.Router.WAN())
			}
		}
		for _, h := range s.Hosts {
			r := "-"
			if s.Router != nil {
				r = fmt.Sprintf("%s %s", s.Router.Name, s.Router.PublicAddr())
				if cgn := l.Router(site + "-cgn"); cgn != nil {
					r += fmt.Sprintf(" via %s %s", cgn.Name, cgn.PublicAddr())
				}
			} else {
				wires = append(wires, h.WAN())
			}
			rows = append(rows, row{h.Name, desc, h.Addr.String(), r, h.NS.Name})
		}
	}
	rvHost, err := l.AddRendezvousHost()
	if err != nil {
		return err
	}
	im := testenv.Impairment{Delay: *delay, Jitter: *jitter, Loss: *loss}
	for _, w := range wires {
		w.Set(im)
	}
	if *udpTimeout > 0 {
		for _, r := range routers {
			if err := r.SetUDPTimeouts(*udpTimeout, *udpTimeout); err != nil {
				return err
			}
		}
	}

	bins := testenv.Binaries{}
	if *binDir != "" {
		bins = testenv.Binaries{Rendezvous: filepath.Join(*binDir, "rendezvous"), Node: filepath.Join(*binDir, "node")}
	} else {
		fmt.Println("natlab: building natchat/cmd/rendezvous and natchat/cmd/node ...")
		bins, err = testenv.BuildBinaries(ctx, filepath.Join(l.Dir, "bin"))
		if err != nil {
			fmt.Fprintf(os.Stderr, "natlab: %v\nnatlab: the lab is up without the natchat programs\n", err)
		}
	}
	rvAddr := netip.AddrPortFrom(rvHost.Addr, 3478)
	if bins.Rendezvous != "" {
		rv, err := l.StartRendezvous(rvHost, testenv.RendezvousConfig{Bin: bins.Rendezvous, Expiry: *expiry, LogLevel: "info"})
		if err != nil {
			return err
		}
		rvAddr = rv.Addr
		_ = l.SetInfo("rendezvous", rv.Addr.String())
		_ = l.SetInfo("node", bins.Node)
	}

	self := "natlab"
	if strings.Contains(os.Args[0], "go-build") {
		self = "go run ./testenv/cmd/natlab"
	}
	fmt.Printf("\nnatlab %s is up. Logs: %s\n", l.ID, l.Dir)
	fmt.Printf("Impairment on internet links: %v\n", im)
	if bins.Rendezvous != "" {
		fmt.Printf("Rendezvous %s in namespace %s (log %s)\n\n", rvAddr, rvHost.NS.Name, filepath.Join(l.Dir, "rv.stderr"))
	}
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNAT\tADDRESS\tROUTER (PUBLIC)\tNAMESPACE")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.name, r.nat, r.addr, r.router, r.ns)
	}
	tw.Flush()
	nodeBin := bins.Node
	if nodeBin == "" {
		nodeBin = "NODE-BINARY"
	}
	fmt.Println("\nAttach a terminal to a node (as root, from the repository):")
	for _, r := range rows {
		cmd := fmt.Sprintf("%s -name %s -rv %s -identity %s", nodeBin, r.name, rvAddr, filepath.Join(l.Dir, r.name+".identity"))
		fmt.Printf("  %s exec %s -- %s\n", self, r.name, cmd)
	}
	fmt.Printf("or: ip netns exec %s-NAME CMD. Any namespace works the same way (inet, rv, r1, ...).\n", l.ID)
	fmt.Printf("\nCtrl-C here or `%s down` removes the lab.\n", self)
	<-ctx.Done()
	return nil
}

// ownerUp marks labs made by natlab up in their state, so that exec and
// down leave the labs of running test binaries alone unless named.
const ownerUp = "natlab up"

// findLab picks the lab with the given id, or the newest natlab up lab.
func findLab(id string) (testenv.State, error) {
	sts, err := testenv.ReadStates(testenv.DefaultStateDir())
	if err != nil {
		return testenv.State{}, err
	}
	for _, st := range sts {
		if (st.ID == id || id == "" && st.Extra["owner"] == ownerUp) && st.Alive() {
			return st, nil
		}
	}
	if id != "" {
		return testenv.State{}, fmt.Errorf("no running lab %q", id)
	}
	return testenv.State{}, errors.New("no running lab; start one with natlab up")
}

func cmdExec(args []string) error {
	fs := flag.NewFlagSet("exec", flag.ExitOnError)
	id := fs.String("lab", "", "lab id (default: the newest)")
	_ = fs.Parse(args)
	rest := fs.Args()
	if len(rest) < 2 {
		return errors.New("usage: natlab exec [-lab ID] NAME -- CMD [ARGS...]")
	}
	name, cmdArgs := rest[0], rest[1:]
	if cmdArgs[0] == "--" {
		cmdArgs = cmdArgs[1:]
	}
	if len(cmdArgs) == 0 {
		return errors.New("no command")
	}
	st, err := findLab(*id)
	if err != nil {
		return err
	}
	full, ok := st.Namespaces[name]
	if !ok {
		var known []string
		for k := range st.Namespaces {
			known = append(known, k)
		}
		return fmt.Errorf("lab %s has no %q (have %s)", st.ID, name, strings.Join(known, ", "))
	}
	path, err := exec.LookPath(cmdArgs[0])
	if err != nil {
		return err
	}
	// execve keeps the calling thread's namespace and makes that thread the
	// whole new process.
	runtime.LockOSThread()
	h, err := netns.GetFromName(full)
	if err != nil {
		return fmt.Errorf("namespace %s: %w", full, err)
	}
	if err := netns.Set(h); err != nil {
		return fmt.Errorf("enter %s: %w", full, err)
	}
	env := append(os.Environ(), "NATLAB_LAB="+st.ID, "NATLAB_NODE="+name)
	return syscall.Exec(path, cmdArgs, env)
}

func cmdList(args []string) error {
	sts, err := testenv.ReadStates(testenv.DefaultStateDir())
	if err != nil {
		return err
	}
	if len(sts) == 0 {
		fmt.Println("no labs")
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LAB\tPID\tALIVE\tCREATED\tRENDEZVOUS\tHOSTS")
	for _, st := range sts {
		var hosts []string
		for name, addr := range st.Addrs {
			hosts = append(hosts, name+"="+addr)
		}
		fmt.Fprintf(tw, "%s\t%d\t%v\t%s\t%s\t%s\n", st.ID, st.PID, st.Alive(), st.Created.Local().Format(time.TimeOnly),
			st.Extra["rendezvous"], strings.Join(hosts, " "))
	}
	return tw.Flush()
}

func cmdDown(args []string) error {
	fs := flag.NewFlagSet("down", flag.ExitOnError)
	id := fs.String("lab", "", "lab id (default: every lab of natlab up, and every lab whose process died)")
	_ = fs.Parse(args)
	dir := testenv.DefaultStateDir()
	sts, err := testenv.ReadStates(dir)
	if err != nil {
		return err
	}
	var errs []error
	found := false
	for _, st := range sts {
		if *id != "" && st.ID != *id || *id == "" && st.Extra["owner"] != ownerUp && st.Alive() {
			continue
		}
		found = true
		if st.Alive() && st.PID != os.Getpid() {
			// Ask the owner to clean up, which also stops its wires.
			_ = syscall.Kill(st.PID, syscall.SIGTERM)
			deadline := time.Now().Add(15 * time.Second)
			for st.Alive() && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond) // polling another process's exit
			}
			if st.Alive() {
				_ = syscall.Kill(st.PID, syscall.SIGKILL)
			}
		}
		// Whatever the owner left behind.
		errs = append(errs, st.Destroy(dir))
		fmt.Println("natlab: removed lab", st.ID)
	}
	if !found {
		if *id != "" {
			return fmt.Errorf("no lab %q", *id)
		}
		fmt.Println("no labs")
	}
	return errors.Join(errs...)
}
