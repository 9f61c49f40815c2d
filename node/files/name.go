package files

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"natchat/wire"
)

// ErrBadName is what every refusal of SafeName matches (errors.Is); the
// receiver answers it with wire.FileRejectBadName.
var ErrBadName = errors.New("bad file name")

// Reasons SafeName refuses a name; each matches ErrBadName. Their text is
// shown to users; none repeats the offered name (the caller quotes it,
// escaped, if it wants to).
var (
	// ErrNameEmpty: no characters.
	ErrNameEmpty = fmt.Errorf("%w: empty", ErrBadName)
	// ErrNameUTF8: the bytes are not valid UTF-8.
	ErrNameUTF8 = fmt.Errorf("%w: not valid UTF-8", ErrBadName)
	// ErrNameTooLong: more than wire.MaxFileNameLen bytes.
	ErrNameTooLong = fmt.Errorf("%w: longer than %d bytes", ErrBadName, wire.MaxFileNameLen)
	// ErrNameDots: "." or "..".
	ErrNameDots = fmt.Errorf("%w: \".\" or \"..\"", ErrBadName)
	// ErrNameAbsolute: an absolute path ("/etc/passwd", `\\server\x`) or
	// one that names a Windows drive ("C:x", `C:\x`).
	ErrNameAbsolute = fmt.Errorf("%w: an absolute path", ErrBadName)
	// ErrNameSeparator: a '/' or '\' anywhere: a path, not a base name.
	ErrNameSeparator = fmt.Errorf("%w: contains a path separator", ErrBadName)
	// ErrNameControl: a control character (C0, DEL, C1), a line or
	// paragraph separator, or an invisible formatting character: bidi
	// overrides and isolates (U+202A–202E, U+2066–2069), marks, zero-width
	// spaces and joiners, the BOM, and the like (Unicode category Cf), or a
	// character that renders as nothing (Hangul fillers, U+034F).
	ErrNameControl = fmt.Errorf("%w: contains a control or invisible character", ErrBadName)
	// ErrNameEdge: starts or ends with white space or a dot (hidden files,
	// names Windows trims, names that look like another).
	ErrNameEdge = fmt.Errorf("%w: starts or ends with a space or a dot", ErrBadName)
	// ErrNameReserved: a device name Windows reserves (CON, PRN, AUX, NUL,
	// COM0–9, LPT0–9, CONIN$, CONOUT$), with any extension, in any case.
	ErrNameReserved = fmt.Errorf("%w: a name Windows reserves for a device", ErrBadName)
)

// SafeName returns the base name to save an offered file under, or why it
// is refused (an error matching ErrBadName and one of the ErrName
// reasons). A name is refused rather than repaired, so that what is saved
// is what the sender named: 1–255 bytes of UTF-8, no path separator, not
// "." or "..", no control or invisible character, no leading or trailing
// space or dot, no Windows device name. "résumé.pdf", "photo 1.jpg" and
// "日本語.txt" are fine. Names are not Unicode-normalised.
func SafeName(offered string) (string, error) {
	switch {
	case offered == "":
		return "", ErrNameEmpty
	case !utf8.ValidString(offered):
		return "", ErrNameUTF8
	case len(offered) > wire.MaxFileNameLen:
		return "", ErrNameTooLong
	case offered == "." || offered == "..":
		return "", ErrNameDots
	case offered[0] == '/' || offered[0] == '\\' || isDrive(offered):
		return "", ErrNameAbsolute
	case strings.ContainsAny(offered, `/\`):
		return "", ErrNameSeparator
	}
	for _, r := range offered {
		if invisible(r) {
			return "", ErrNameControl
		}
	}
	first, _ := utf8.DecodeRuneInString(offered)
	last, _ := utf8.DecodeLastRuneInString(offered)
	if first == '.' || last == '.' || unicode.IsSpace(first) || unicode.IsSpace(last) {
		return "", ErrNameEdge
	}
	if reserved(offered) {
		return "", ErrNameReserved
	}
	return offered, nil
}

// isDrive reports whether name starts with a Windows drive: a letter and
// a colon.
func isDrive(name string) bool {
	return len(name) >= 2 && name[1] == ':' && ('a' <= name[0]|0x20 && name[0]|0x20 <= 'z')
}

// invisible reports whether r is a control character or one that does
// not show: ErrNameControl.
func invisible(r rune) bool {
	switch r {
	case 0x034F, 0x115F, 0x1160, 0x3164, 0xFFA0: // grapheme joiner, Hangul fillers
		return true
	}
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp)
}

// reservedNames are the Windows device names, upper case.
var reservedNames = map[string]bool{
	"CON": true, "PRN": true, "AUX": true, "NUL": true, "CONIN$": true, "CONOUT$": true,
	"COM0": true, "COM1": true, "COM2": true, "COM3": true, "COM4": true,
	"COM5": true, "COM6": true, "COM7": true, "COM8": true, "COM9": true,
	"COM¹": true, "COM²": true, "COM³": true,
	"LPT0": true, "LPT1": true, "LPT2": true, "LPT3": true, "LPT4": true,
	"LPT5": true, "LPT6": true, "LPT7": true, "LPT8": true, "LPT9": true,
	"LPT¹": true, "LPT²": true, "LPT³": true,
}

// reserved reports whether name is a Windows device name: what comes
// before the first dot, less trailing spaces ("con .txt" is CON too).
func reserved(name string) bool {
	stem, _, _ := strings.Cut(name, ".")
	stem = strings.TrimRight(stem, " ")
	return len(stem) <= len("CONOUT$") && reservedNames[strings.ToUpper(stem)]
}
