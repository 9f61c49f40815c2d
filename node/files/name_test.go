package files

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

var safeNameCases = []struct {
	name string
	want error // nil: accepted as it is
}{
	{"a.txt", nil},
	{"résumé.pdf", nil},
	{"photo 1.jpg", nil},
	{"日本語.txt", nil},
	{"README", nil},
	{"archive.tar.gz", nil},
	{"a..b", nil},
	{"emoji 🎉.png", nil},
	{"x" + strings.Repeat("y", 254), nil},
	{strings.Repeat("é", 127) + "x", nil}, // 255 bytes
	{"CONSOLE.txt", nil},                  // not a device: the stem is CONSOLE
	{"COM10", nil},
	{"LPT", nil},
	{"nul_", nil},
	{"my con.txt", nil},
	{"ab:c", nil}, // not a drive

	{"", ErrNameEmpty},
	{"\xff.txt", ErrNameUTF8},
	{"a\xc3", ErrNameUTF8},
	{strings.Repeat("x", 256), ErrNameTooLong},
	{strings.Repeat("é", 128), ErrNameTooLong},
	{".", ErrNameDots},
	{"..", ErrNameDots},
	{"/", ErrNameAbsolute},
	{"/etc/passwd", ErrNameAbsolute},
	{`\\server\share\x`, ErrNameAbsolute},
	{`\x`, ErrNameAbsolute},
	{`C:\Windows\x`, ErrNameAbsolute},
	{"c:x", ErrNameAbsolute}, // drive-relative
	{"Z:", ErrNameAbsolute},
	{"a/b", ErrNameSeparator},
	{"../x", ErrNameSeparator},
	{`..\x`, ErrNameSeparator},
	{`a\b`, ErrNameSeparator},
	{"a/", ErrNameSeparator},
	{"a\x00b", ErrNameControl},
	{"a\tb", ErrNameControl},
	{"a\nb", ErrNameControl},
	{"a\rb", ErrNameControl},
	{"a\x1b[31mb", ErrNameControl},
	{"a\x7fb", ErrNameControl},
	{"a\u0085b", ErrNameControl}, // C1: NEL
	{"a\u009bb", ErrNameControl}, // C1: CSI
	{"\u202Etxt.exe", ErrNameControl},
	{"a\u202Ab", ErrNameControl},
	{"a\u2066b", ErrNameControl},
	{"a\u2069b", ErrNameControl},
	{"a\u200Eb", ErrNameControl}, // left-to-right mark
	{"a\u200Bb", ErrNameControl}, // zero-width space
	{"a\u200Db", ErrNameControl}, // zero-width joiner
	{"a\u2060b", ErrNameControl}, // word joiner
	{"a\uFEFFb", ErrNameControl}, // BOM
	{"a\u00ADb", ErrNameControl}, // soft hyphen
	{"a\u2028b", ErrNameControl}, // line separator
	{"a\u3164b", ErrNameControl}, // Hangul filler
	{"a\u034Fb", ErrNameControl}, // combining grapheme joiner
	{" a.txt", ErrNameEdge},
	{"a.txt ", ErrNameEdge},
	{".bashrc", ErrNameEdge},
	{"...", ErrNameEdge},
	{"a.", ErrNameEdge},
	{"\u00a0a.txt", ErrNameEdge}, // no-break space
	{"a.txt\u3000", ErrNameEdge}, // ideographic space
	{"CON", ErrNameReserved},
	{"con.txt", ErrNameReserved},
	{"Nul.tar.gz", ErrNameReserved},
	{"prn", ErrNameReserved},
	{"AUX.c", ErrNameReserved},
	{"COM1", ErrNameReserved},
	{"com9.log", ErrNameReserved},
	{"COM0", ErrNameReserved},
	{"lpt1.doc", ErrNameReserved},
	{"LPT9", ErrNameReserved},
	{"COM¹.txt", ErrNameReserved},
	{"lpt³", ErrNameReserved},
	{"CON .txt", ErrNameReserved},
	{"conin$", ErrNameReserved},
	{"CONOUT$.x", ErrNameReserved},
}

func TestSafeName(t *testing.T) {
	for _, c := range safeNameCases {
		got, err := SafeName(c.name)
		if c.want == nil {
			if err != nil || got != c.name {
				t.Errorf("SafeName(%q) = %q, %v; want it as it is", c.name, got, err)
			}
			continue
		}
		if !errors.Is(err, c.want) || !errors.Is(err, ErrBadName) || got != "" {
			t.Errorf("SafeName(%q) = %q, %v; want %v", c.name, got, err, c.want)
		}
	}
}

func FuzzSafeName(f *testing.F) {
	for _, c := range safeNameCases {
		f.Add(c.name)
	}
	f.Fuzz(func(t *testing.T, name string) {
		got, err := SafeName(name)
		if err != nil {
			if !errors.Is(err, ErrBadName) || got != "" {
				t.Fatalf("SafeName(%q) = %q, %v", name, got, err)
			}
			return
		}
		// An accepted name is itself, one element under the directory.
		if got != name || !utf8.ValidString(name) || len(name) > 255 || strings.ContainsAny(name, "/\\\x00") ||
			!filepath.IsLocal(name) || filepath.Base(name) != name || filepath.Join("/dl", name) != "/dl/"+name ||
			strings.HasPrefix(name, ".") || strings.TrimSpace(name) != name {
			t.Fatalf("SafeName accepted %q", name)
		}
		for _, r := range name {
			if invisible(r) || r < 0x20 || (r >= 0x7f && r < 0xa0) {
				t.Fatalf("SafeName accepted %q with %U", name, r)
			}
		}
		// Numbered forms of it are safe too.
		base, ext := splitExt(name)
		for _, i := range []int{1, 9999} {
			n := numbered(base, ext, i)
			if _, err := SafeName(n); err != nil {
				t.Fatalf("numbered(%q, %d) = %q: %v", name, i, n, err)
			}
			if len(n) > 255 || !utf8.ValidString(n) {
				t.Fatalf("numbered(%q, %d) = %q", name, i, n)
			}
		}
	})
}

func TestNumbered(t *testing.T) {
	long := strings.Repeat("é", 124) + ".txt" // 252 bytes
	for _, c := range []struct {
		name string
		i    int
		want string
	}{
		{"a.txt", 0, "a.txt"},
		{"a.txt", 1, "a (1).txt"},
		{"a.txt", 12, "a (12).txt"},
		{"archive.tar.gz", 2, "archive.tar (2).gz"},
		{"README", 3, "README (3)"},
		// Cut to fit 255 bytes, at a character boundary.
		{long, 1, strings.Repeat("é", 123) + " (1).txt"},
		{"x." + strings.Repeat("e", 250), 1, "x." + strings.Repeat("e", 249) + " (1)"},
	} {
		base, ext := splitExt(c.name)
		if got := numbered(base, ext, c.i); got != c.want || len(got) > 255 {
			t.Errorf("numbered(%q, %d) = %q; want %q", c.name, c.i, got, c.want)
		}
	}
}
