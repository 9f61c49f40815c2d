package wire

import (
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxNameLen is the most characters (runes) a node name may have.
const MaxNameLen = 32

// Name errors, returned by ValidateName. Their text is shown to users.
var (
	// ErrNameEmpty: the name has no characters.
	ErrNameEmpty = errors.New("name is empty")
	// ErrNameTooLong: more than MaxNameLen characters (runes, not bytes).
	ErrNameTooLong = errors.New("name is longer than 32 characters")
	// ErrNameUTF8: the bytes are not valid UTF-8.
	ErrNameUTF8 = errors.New("name is not valid UTF-8")
	// ErrNameSpace: a space, tab or other white space, which would split
	// "/msg NAME TEXT".
	ErrNameSpace = errors.New("name contains white space")
	// ErrNameNotPrint: a control or other non-printable character
	// (unicode.IsPrint), including zero-width joiners.
	ErrNameNotPrint = errors.New("name contains a character that is not printable")
	// ErrNameReserved: the first character is one the UI gives a meaning:
	// '#' rooms, '/' commands, '@' mentions.
	ErrNameReserved = errors.New("name must not start with '#', '/' or '@'")
)

// ValidateName reports why name cannot be a node name, or nil.
// Names are 1–32 printable UTF-8 characters without white space, and must
// not start with '#' (rooms), '/' (commands) or '@'.
func ValidateName(name string) error {
	switch {
	case name == "":
		return ErrNameEmpty
	case !utf8.ValidString(name):
		return ErrNameUTF8
	case utf8.RuneCountInString(name) > MaxNameLen:
		return ErrNameTooLong
	case strings.ContainsAny(name[:1], "#/@"):
		return ErrNameReserved
	}
	for _, r := range name {
		if unicode.IsSpace(r) {
			return ErrNameSpace
		}
		if !unicode.IsPrint(r) {
			return ErrNameNotPrint
		}
	}
	return nil
}

// NameKey is the case-insensitive form under which a name is unique:
// "Bob" and "bob" are the same name.
func NameKey(name string) string {
	return strings.ToLower(strings.ToUpper(name))
}
