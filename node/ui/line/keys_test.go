package line

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"golang.org/x/term"
)

func TestFilterKeys(t *testing.T) {
	for _, c := range []struct {
		in, out, hold string
		final         bool
	}{
		{in: "plain", out: "plain"},
		{in: "\x1bOA\x1bOB\x1bOC\x1bOD\x1bOH\x1bOF", out: "\x1b[A\x1b[B\x1b[C\x1b[D\x1b[H\x1b[F"},
		{in: "a\x1bOPb\x1bOQ\x1bOM", out: "ab"},
		{in: "\x1b[D\x1b[1;5D", out: "\x1b[D\x1b[1;5D"},
		{in: "ab\x1b", out: "ab", hold: "\x1b"},
		{in: "ab\x1bO", out: "ab", hold: "\x1bO"},
		{in: "ab\x1b[", out: "ab\x1b["},
		{in: "ab\x1bO", out: "ab\x1bO", final: true},
	} {
		out, hold := filterKeys([]byte(c.in), c.final)
		if string(out) != c.out || string(hold) != c.hold {
			t.Errorf("filterKeys(%q, %v) = %q, %q; want %q, %q", c.in, c.final, out, hold, c.out, c.hold)
		}
	}
}

// terminalOver returns an x/term Terminal reading keys from in through a
// keyReader, as Run sets it up, and that reader.
func terminalOver(in io.Reader) (*term.Terminal, *keyReader) {
	k := newKeyReader(in)
	return term.NewTerminal(struct {
		io.Reader
		io.Writer
	}{k, io.Discard}, "bob> "), k
}

// TestKeysNeverTyped: cursor and function keys, in either form and split
// across reads, edit the line and never land in it.
func TestKeysNeverTyped(t *testing.T) {
	keys := "/msg alice helo" +
		"\x1b[D" + "\x1bOP" + "l" + "\x1bOC" + // Left, F1, l, Right (SS3)
		"\x1b[5~" + "\x1b[1;5D" + "\x1b[1;5C" + "\x1b[15~" + "\x1bOQ" + // PgUp, Ctrl-Left/Right, F5, F2
		"\r" +
		"x\x1bOD" + "y\x1b[H" + "z\r" // Left in SS3 form, Home
	for _, chunked := range []bool{false, true} {
		var r io.Reader = bytes.NewReader([]byte(keys))
		if chunked {
			r = iotest.OneByteReader(r)
		}
		tm, _ := terminalOver(r)
		for _, want := range []string{"/msg alice hello", "zyx"} {
			got, err := tm.ReadLine()
			if err != nil || got != want {
				t.Errorf("chunked %v: ReadLine = %q, %v; want %q", chunked, got, err, want)
			}
		}
	}
}

func TestCtrlCAndCtrlD(t *testing.T) {
	tm, k := terminalOver(bytes.NewReader([]byte("typed\x04\rmore\x03")))
	if got, err := tm.ReadLine(); err != nil || got != "typed" {
		t.Fatalf("Ctrl-D on a typed line: %q, %v; want the line", got, err)
	}
	if _, err := tm.ReadLine(); !errors.Is(err, io.EOF) || !k.ctrlC {
		t.Fatalf("Ctrl-C: err %v, ctrlC %v", err, k.ctrlC)
	}

	tm, k = terminalOver(iotest.OneByteReader(bytes.NewReader([]byte("\x04later"))))
	if _, err := tm.ReadLine(); !errors.Is(err, io.EOF) || k.ctrlC || k.err != nil {
		t.Fatalf("Ctrl-D on an empty line: err %v, ctrlC %v, read error %v", err, k.ctrlC, k.err)
	}

	// End of the input itself.
	tm, k = terminalOver(bytes.NewReader(nil))
	if _, err := tm.ReadLine(); !errors.Is(err, io.EOF) || k.ctrlC || k.err == nil {
		t.Fatalf("end of input: err %v, ctrlC %v, read error %v", err, k.ctrlC, k.err)
	}
}

func TestKeyReaderStopped(t *testing.T) {
	k := newKeyReader(bytes.NewReader([]byte("abc")))
	k.stop()
	if n, err := k.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("Read after stop = %d, %v", n, err)
	}
}
