// Command node is a natchat node: chat with peers behind any NAT.
//
//	node -name bob -rv host:3478 [-headless]
package main

import (
	"context"
	"flag"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"natchat/internal/cmdutil"
	"natchat/node"
	"natchat/node/cli"
	"natchat/wire"
)

func main() { cmdutil.Exit("node", run(os.Args[1:])) }

func run(args []string) error {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	name := fs.String("name", "", "your name: 1-32 printable characters, no spaces (required)")
	rv := fs.String("rv", "", "rendezvous host:port (required)")
	listen := fs.String("listen", ":0", "local UDP address for the node's one socket")
	identity := fs.String("identity", "", "identity key file (default: natchat/NAME.key in the user config dir)")
	headless := fs.Bool("headless", false, "read commands on stdin, write JSON events on stdout")
	heartbeat := fs.Duration("heartbeat", 25*time.Second, "heartbeat interval to the rendezvous")
	delivery := fs.Duration("delivery-timeout", 2*time.Minute, "how long a message may wait for its receipt")
	noDirect := fs.Bool("no-direct", false, "never punch a direct path: every peer stays on the relay")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error, disabled")
	version := fs.Bool("version", false, "print the version and exit")
	if err := cmdutil.Parse(fs, args); err != nil {
		return err
	}
	if *version {
		os.Stdout.WriteString(cmdutil.VersionString("node") + "\n")
		return nil
	}
	switch {
	case *name == "":
		return cmdutil.Usagef("-name is required")
	case *rv == "":
		return cmdutil.Usagef("-rv host:port is required")
	case *heartbeat <= 0:
		return cmdutil.Usagef("-heartbeat must be positive")
	case *delivery <= 0:
		return cmdutil.Usagef("-delivery-timeout must be positive")
	}
	if err := wire.ValidateName(*name); err != nil {
		return cmdutil.Usagef("-name %q: %v", *name, err)
	}
	if err := cmdutil.CheckHostPort("rv", *rv, false); err != nil {
		return err
	}
	if err := cmdutil.CheckHostPort("listen", *listen, true); err != nil {
		return err
	}
	log, err := cmdutil.Logger(os.Stderr, *logLevel)
	if err != nil {
		return cmdutil.Usagef("%v", err)
	}
	if *identity == "" {
		if *identity, err = node.DefaultIdentityPath(*name); err != nil {
			return err
		}
	}
	key, created, err := node.LoadOrCreateIdentity(*identity)
	if err != nil {
		return err
	}
	if created {
		log.Info().Str("file", *identity).Msg("created a new identity key")
	}
	conn, err := net.ListenPacket("udp", *listen)
	if err != nil {
		return err
	}
	log = log.With().Str("node", *name).Logger()
	log.Info().Stringer("local", conn.LocalAddr()).Str("rv", *rv).Msg("starting")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cli.Run(ctx, cli.Options{
		Node: node.Options{
			Name: *name, Rendezvous: *rv, Conn: conn, Identity: key,
			Heartbeat: *heartbeat, DeliveryTimeout: *delivery, Logger: log, NoDirect: *noDirect,
		},
		Headless: *headless,
		In:       os.Stdin,
		Out:      os.Stdout,
	})
}
