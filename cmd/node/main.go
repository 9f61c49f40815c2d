// Command node is a natchat node: chat with peers behind any NAT.
//
//	node -name bob -rv host:3478 [-headless]
package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/rs/zerolog/diode"

	"natchat/ctrl"
	"natchat/internal/cmdutil"
	"natchat/node"
	"natchat/node/api"
	"natchat/node/store"
	"natchat/node/ui/headless"
	"natchat/node/ui/line"
	"natchat/node/ui/tui"
	"natchat/wire"
)

func main() { cmdutil.Exit("node", run(os.Args[1:])) }

// options are the command line's.
type options struct {
	name, rv, rvKey, listen, identity, state, logLevel, logFile string
	headless, noDirect, version                                 bool
	heartbeat, delivery, offlineGrace, mailboxAge               time.Duration
	roomRate                                                    float64
	roomBurst                                                   int
	downloads, acceptFrom, maxFile                              string
	maxFileSize                                                 int64
	acceptNames                                                 []string

	uiMode string // -ui: "tui", "line", or "" to choose by the terminal

	history    bool // -history: keep each conversation's recent messages
	historyMax int
	historyAge time.Duration
}

func parse(args []string) (*options, error) {
	var o options
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	fs.StringVar(&o.name, "name", "", "your name: 1-32 printable characters, no spaces (required)")
	fs.StringVar(&o.rv, "rv", "", "rendezvous host:port, or host:port#KEY with its key (required)")
	fs.StringVar(&o.rvKey, "rv-key", "", "the rendezvous's key, as `rendezvous -print-key` prints it (default: pinned on first contact)")
	fs.StringVar(&o.listen, "listen", ":0", "local UDP address for the node's one socket")
	fs.StringVar(&o.identity, "identity", "", "identity key file (default: natchat/NAME.key in the user config dir)")
	fs.StringVar(&o.state, "state", "", "state directory: outbox, messages shown, pinned keys (default: natchat/KEY under the user state dir)")
	fs.BoolVar(&o.headless, "headless", false, "read commands on stdin, write JSON events on stdout")
	fs.StringVar(&o.uiMode, "ui", "", "the terminal client: tui (full screen) or line (a prompt, for dumb terminals) (default: tui when stdin and stdout are terminals and $TERM is not dumb, else line)")
	fs.DurationVar(&o.heartbeat, "heartbeat", 25*time.Second, "heartbeat interval to the rendezvous")
	fs.DurationVar(&o.delivery, "delivery-timeout", 2*time.Minute, "how long a message may wait for its receipt (unless it is stored in the recipient's mailbox)")
	fs.DurationVar(&o.offlineGrace, "offline-grace", 500*time.Millisecond, "after live delivery to a peer failed, wait this long for receipts before depositing in its mailbox")
	fs.DurationVar(&o.mailboxAge, "mailbox-age", 30*24*time.Hour, "the rendezvous's mailbox age limit: older messages are not deposited (too_old)")
	fs.Float64Var(&o.roomRate, "room-rate", 5, "most messages a second you send to one room (others are held to twice that)")
	fs.IntVar(&o.roomBurst, "room-burst", 20, "messages you may send to one room at once, beyond -room-rate")
	fs.StringVar(&o.downloads, "downloads", "", "directory received files are saved in (default: natchat in your Downloads directory)")
	fs.StringVar(&o.acceptFrom, "accept-from", "", "comma-separated names whose file offers are accepted without asking")
	fs.StringVar(&o.maxFile, "max-file-size", "4G", "largest file you offer or accept (bytes, or with K, M, G or T)")
	fs.BoolVar(&o.history, "history", true, "keep each conversation's recent messages in the state directory (/history shows them); -history=false records nothing")
	fs.IntVar(&o.historyMax, "history-max", 1000, "messages kept per conversation in the history")
	fs.DurationVar(&o.historyAge, "history-age", 30*24*time.Hour, "how long messages stay in the history (0: no age limit)")
	fs.BoolVar(&o.noDirect, "no-direct", false, "never punch a direct path: every peer stays on the relay")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: trace, debug, info, warn, error, disabled")
	fs.StringVar(&o.logFile, "log-file", "", "write logs to this file (default: stderr with -headless; in the full-screen client, natchat/NAME.log in the user state dir, and its log view, F2; in the line UI, only warnings, on screen)")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	if err := cmdutil.Parse(fs, args); err != nil {
		return nil, err
	}
	if o.version {
		return &o, nil
	}
	switch {
	case o.name == "":
		return nil, cmdutil.Usagef("-name is required")
	case o.rv == "":
		return nil, cmdutil.Usagef("-rv host:port is required")
	case o.heartbeat <= 0:
		return nil, cmdutil.Usagef("-heartbeat must be positive")
	case o.delivery <= 0:
		return nil, cmdutil.Usagef("-delivery-timeout must be positive")
	case o.offlineGrace <= 0:
		return nil, cmdutil.Usagef("-offline-grace must be positive")
	case o.mailboxAge <= 0:
		return nil, cmdutil.Usagef("-mailbox-age must be positive")
	case !(o.roomRate > 0) || o.roomRate > 1e6:
		return nil, cmdutil.Usagef("-room-rate must be a positive number of messages a second")
	case o.roomBurst <= 0:
		return nil, cmdutil.Usagef("-room-burst must be positive")
	case o.historyMax <= 0:
		return nil, cmdutil.Usagef("-history-max must be positive")
	case o.historyAge < 0:
		return nil, cmdutil.Usagef("-history-age must not be negative (0: no age limit)")
	}
	switch {
	case o.uiMode != "" && o.uiMode != "tui" && o.uiMode != "line":
		return nil, cmdutil.Usagef("-ui %q: want tui or line", o.uiMode)
	case o.uiMode != "" && o.headless:
		return nil, cmdutil.Usagef("-ui and -headless: choose one")
	}
	if err := wire.ValidateName(o.name); err != nil {
		return nil, cmdutil.Usagef("-name %q: %v", o.name, err)
	}
	size, err := parseSize(o.maxFile)
	if err != nil {
		return nil, cmdutil.Usagef("-max-file-size %q: %v", o.maxFile, err)
	}
	o.maxFileSize = size
	if o.acceptFrom != "" {
		for _, n := range strings.Split(o.acceptFrom, ",") {
			if err := wire.ValidateName(n); err != nil {
				return nil, cmdutil.Usagef("-accept-from: %q: %v", n, err)
			}
			o.acceptNames = append(o.acceptNames, n)
		}
	}
	if addr, key, ok := strings.Cut(o.rv, "#"); ok {
		if key == "" {
			// Else the node would trust the first key offered, which the
			// user meant to rule out by writing the #.
			return nil, cmdutil.Usagef("-rv %q: no key after #", o.rv)
		}
		if o.rvKey != "" && o.rvKey != key {
			return nil, cmdutil.Usagef("-rv %q carries a key other than -rv-key's", o.rv)
		}
		o.rv, o.rvKey = addr, key
	}
	if err := cmdutil.CheckHostPort("rv", o.rv, false); err != nil {
		return nil, err
	}
	if o.rvKey != "" {
		if _, err := ctrl.ParsePublicKey(o.rvKey); err != nil {
			return nil, cmdutil.Usagef("-rv-key: %v", err)
		}
	}
	if err := cmdutil.CheckHostPort("listen", o.listen, true); err != nil {
		return nil, err
	}
	if _, err := zerolog.ParseLevel(o.logLevel); err != nil || o.logLevel == "" {
		return nil, cmdutil.Usagef("-log-level %q: want trace, debug, info, warn, error or disabled", o.logLevel)
	}
	return &o, nil
}

func run(args []string) error {
	o, err := parse(args)
	if err != nil {
		return err
	}
	if o.version {
		os.Stdout.WriteString(cmdutil.VersionString("node") + "\n")
		return nil
	}
	var ui *line.UI
	var full *tui.UI
	switch {
	case o.headless:
	case o.uiMode == "tui" || o.uiMode == "" && tui.Usable(os.Stdin, os.Stdout):
		full = tui.New(tui.Options{Name: o.name, In: os.Stdin, Out: os.Stdout})
	default:
		ui = line.New(line.Options{Name: o.name, In: os.Stdin, Out: os.Stdout})
	}
	log, closeLog, err := logger(o, ui, full)
	if err != nil {
		return err
	}
	defer closeLog()

	if o.identity == "" {
		if o.identity, err = node.DefaultIdentityPath(o.name); err != nil {
			return err
		}
	}
	key, created, err := node.LoadOrCreateIdentity(o.identity)
	if err != nil {
		return err
	}
	if created {
		log.Info().Str("file", o.identity).Msg("created a new identity key")
	}
	self := wire.Key(key.Public().(ed25519.PublicKey))
	if o.state == "" {
		if o.state, err = node.DefaultStateDir(self); err != nil {
			return err
		}
	}
	if o.downloads == "" {
		if o.downloads, err = defaultDownloads(); err != nil {
			return fmt.Errorf("no downloads directory (give -downloads): %w", err)
		}
	}
	st, err := store.Open(o.state, self, store.Options{Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()
	conn, err := net.ListenPacket("udp", o.listen)
	if err != nil {
		return err
	}
	log = log.With().Str("node", o.name).Logger()
	log.Info().Stringer("local", conn.LocalAddr()).Str("rv", o.rv).Str("state", o.state).Msg("starting")
	var rvKey ctrl.PublicKey
	if o.rvKey != "" {
		rvKey, _ = ctrl.ParsePublicKey(o.rvKey) // checked in parse
	}
	n, err := node.New(node.Options{
		Name: o.name, Rendezvous: o.rv, RendezvousKey: rvKey, Conn: conn, Identity: key, Store: st,
		Heartbeat: o.heartbeat, DeliveryTimeout: o.delivery, OfflineGrace: o.offlineGrace, MailboxAge: o.mailboxAge,
		Logger: log, NoDirect: o.noDirect, RoomRate: o.roomRate, RoomBurst: o.roomBurst,
		Downloads: o.downloads, AcceptFrom: o.acceptNames, MaxFileSize: o.maxFileSize,
		NoHistory: !o.history, HistoryMax: o.historyMax, HistoryAge: historyAge(o.historyAge),
	})
	if err != nil {
		conn.Close()
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The front end's subscription exists before Run starts, so it sees
	// every event from the first.
	fe := &subscribed{Node: n, sub: n.Subscribe()}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var feErr error
	if o.headless {
		feErr = headless.Run(ctx, fe, os.Stdin, os.Stdout)
	} else if full != nil {
		feErr = full.Run(ctx, fe)
	} else {
		feErr = ui.Run(ctx, fe)
	}
	if feErr != nil {
		// The front end is gone (stdout closed, say): leave.
		log.Warn().Err(feErr).Msg("front end failed; quitting")
		qctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := n.Do(qctx, api.Quit{}); err != nil && !errors.Is(err, node.ErrStopped) {
			stop()
		}
		cancel()
	}
	return <-done
}

// subscribed is the node for a front end, with its first subscription
// made beforehand.
type subscribed struct {
	*node.Node
	sub *api.Sub
}

func (s *subscribed) Subscribe() *api.Sub {
	if sub := s.sub; sub != nil {
		s.sub = nil
		return sub
	}
	return s.Node.Subscribe()
}

// logger returns the logger for the chosen front end: -log-file when
// given; otherwise stderr for -headless (through a non-blocking buffer, so
// a stalled stderr never stalls the node), and only warnings, on screen,
// for the line UI. The full-screen client's log goes to its log view (F2)
// and to -log-file, by default defaultLogFile.
func logger(o *options, ui *line.UI, full *tui.UI) (zerolog.Logger, func(), error) {
	lvl, _ := zerolog.ParseLevel(o.logLevel)
	if full != nil {
		path := o.logFile
		if path == "" {
			var err error
			if path, err = defaultLogFile(o.name); err != nil {
				return zerolog.Nop(), nil, fmt.Errorf("no place for the log (give -log-file): %w", err)
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return zerolog.Nop(), nil, fmt.Errorf("no place for the log (give -log-file): %w", err)
			}
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return zerolog.Nop(), nil, fmt.Errorf("-log-file: %w", err)
		}
		return zerolog.New(full.LogWriter(f)).Level(lvl).With().Timestamp().Logger(), func() { f.Close() }, nil
	}
	if o.logFile != "" {
		f, err := os.OpenFile(o.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return zerolog.Nop(), nil, fmt.Errorf("-log-file: %w", err)
		}
		return zerolog.New(f).Level(lvl).With().Timestamp().Logger(), func() { f.Close() }, nil
	}
	if ui != nil {
		return zerolog.New(ui.LogWriter()).Level(max(lvl, zerolog.WarnLevel)).With().Timestamp().Logger(), func() {}, nil
	}
	var missed atomic.Int64
	w := diode.NewWriter(cmdutil.LogWriter(os.Stderr), 4096, 10*time.Millisecond, func(n int) { missed.Add(int64(n)) })
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), func() {
		w.Close()
		if n := missed.Load(); n > 0 {
			fmt.Fprintf(os.Stderr, "node: %d log lines dropped while stderr was not read\n", n)
		}
	}, nil
}

// parseSize parses a size in bytes, with an optional K, M, G or T suffix
// (powers of 1024): at least 1 byte, at most wire.MaxFileSize.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'K', 'k':
			mult = 1 << 10
		case 'M', 'm':
			mult = 1 << 20
		case 'G', 'g':
			mult = 1 << 30
		case 'T', 't':
			mult = 1 << 40
		}
		if mult > 1 {
			s = s[:n-1]
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	switch {
	case err != nil:
		return 0, errors.New("not a size")
	case v <= 0 || v > wire.MaxFileSize/mult:
		return 0, fmt.Errorf("must be from 1 byte to %d", int64(wire.MaxFileSize))
	}
	return v * mult, nil
}

// defaultLogFile is where the full-screen client's log goes without
// -log-file: NAME.log (the name as in the identity's file name) in
// natchat's folder of the user state dir, beside the nodes' state
// directories.
func defaultLogFile(name string) (string, error) {
	state, err := node.DefaultStateDir(wire.Key{})
	if err != nil {
		return "", err
	}
	id, err := node.DefaultIdentityPath(name)
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(state), strings.TrimSuffix(filepath.Base(id), ".key")+".log"), nil
}

// defaultDownloads is natchat's folder in the user's Downloads directory
// ($XDG_DOWNLOAD_DIR, else ~/Downloads).
func defaultDownloads() (string, error) {
	if d := os.Getenv("XDG_DOWNLOAD_DIR"); d != "" {
		return filepath.Join(d, "natchat"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, "Downloads", "natchat"), nil
}

// historyAge maps -history-age (0: no age limit) to node.Options.HistoryAge
// (0: the default; negative: no age limit).
func historyAge(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
