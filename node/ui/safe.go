package ui

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Safe returns s with everything that could control a terminal made
// visible: C0 controls (ESC, CR, LF, BEL, ...) become their Unicode
// control pictures (␛ ␍ ␊ ␇), DEL becomes ␡, C1 controls and the
// bidirectional overrides and isolates (which can reorder what is shown,
// "Trojan Source") become [U+XXXX], and invalid UTF-8 becomes U+FFFD. Tabs
// become a space. Text from peers goes through Safe before any terminal.
func Safe(s string) string {
	clean := true
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if unsafeRune(r, n) {
			clean = false
			break
		}
		i += n
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		i += n
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteRune(utf8.RuneError)
		case r == '\t':
			b.WriteByte(' ')
		case r < 0x20:
			b.WriteRune(0x2400 + r)
		case r == 0x7f:
			b.WriteRune(0x2421)
		case unsafeRune(r, n):
			fmt.Fprintf(&b, "[U+%04X]", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func unsafeRune(r rune, size int) bool {
	switch {
	case r == utf8.RuneError && size == 1:
		return true
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}
