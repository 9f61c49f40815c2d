package headless

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"natchat/node/api"
)

// TestWriteEscapesTerminalControls: a peer's text with characters a
// terminal acts on (C1 CSI, DEL, a bidi override) is written with them
// escaped, and decodes to exactly what the peer sent.
func TestWriteEscapesTerminalControls(t *testing.T) {
	text := "a\u009b31mred\x7f \u202egnp.exe <b>&</b> é ✓ \u2066x\u2069"
	var out bytes.Buffer
	w := newWriter(&out)
	if err := w.write(&api.Message{ID: "01", From: "bob\u009b2J", Text: text}); err != nil {
		t.Fatal(err)
	}
	line := out.String()
	if !strings.HasSuffix(line, "\n") || strings.Count(line, "\n") != 1 {
		t.Fatalf("not one JSON line: %q", line)
	}
	for _, r := range []rune{0x9b, 0x7f, 0x202e, 0x2066, 0x2069} {
		if strings.ContainsRune(line, r) {
			t.Errorf("U+%04X written raw: %q", r, line)
		}
	}
	if !strings.Contains(line, "<b>&</b> é ✓") {
		t.Errorf("ordinary text escaped: %q", line)
	}
	var got api.Message
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatal(err)
	}
	if got.Text != text || got.From != "bob\u009b2J" {
		t.Errorf("decoded %q from %q, want %q", got.Text, got.From, text)
	}
}
