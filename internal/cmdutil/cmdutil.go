// Package cmdutil holds what both commands share: the version, the logger
// and the exit-code convention (2 for bad flags).
package cmdutil

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// Version is the release version; builds may set it with
// -ldflags "-X natchat/internal/cmdutil.Version=v1.2.3".
var Version = "0.1.0-dev"

// VersionString returns the version with the VCS revision when known.
func VersionString(prog string) string {
	s := fmt.Sprintf("%s %s", prog, Version)
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, kv := range bi.Settings {
			if kv.Key == "vcs.revision" && len(kv.Value) >= 12 {
				s += " (" + kv.Value[:12] + ")"
			}
		}
		s += " " + bi.GoVersion
	}
	return s
}

// Logger returns a zerolog logger on w at level: JSON, or human-readable
// when w is a terminal.
func Logger(w *os.File, level string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("-log-level %q: want trace, debug, info, warn, error or disabled", level)
	}
	return zerolog.New(LogWriter(w)).Level(lvl).With().Timestamp().Logger(), nil
}

// LogWriter returns where logs to w go: w itself (JSON lines), or a
// human-readable console writer when w is a terminal.
func LogWriter(w *os.File) io.Writer {
	if isatty.IsTerminal(w.Fd()) {
		return zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return w
}

// ErrUsage marks a command-line error; Exit turns it into exit code 2.
var ErrUsage = errors.New("usage")

// Usagef returns a usage error with a one-line message.
func Usagef(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, a...))
}

// Parse parses args into fs, turning flag errors into usage errors. The
// flag package prints its own one-line complaint; we keep only ours.
func Parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stderr)
			fs.PrintDefaults()
			os.Exit(0)
		}
		return Usagef("%v (see -h)", err)
	}
	if fs.NArg() > 0 {
		return Usagef("unexpected argument %q (see -h)", fs.Arg(0))
	}
	return nil
}

// Exit prints err on one line and exits: 0 for nil, 2 for usage errors,
// 1 otherwise.
func Exit(prog string, err error) {
	if err == nil {
		os.Exit(0)
	}
	msg := err.Error()
	if errors.Is(err, ErrUsage) {
		msg = msg[len(ErrUsage.Error())+2:]
		fmt.Fprintf(os.Stderr, "%s: %s\n", prog, msg)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "%s: %s\n", prog, msg)
	os.Exit(1)
}

// CheckHostPort validates a "host:port" flag value with a port in 1–65535
// (or 0 when zeroOK: pick any free port).
func CheckHostPort(flagName, v string, zeroOK bool) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return Usagef("-%s %q: want host:port", flagName, v)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return Usagef("-%s %q: port %q is not a number", flagName, v, port)
	}
	if p > 65535 || p < 0 || (p == 0 && !zeroOK) {
		return Usagef("-%s %q: port must be 1-65535", flagName, v)
	}
	return nil
}
