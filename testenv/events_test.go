package testenv

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"natchat/headless"
)

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// TestParseEvent checks what the harness adds to headless.Parse (which
// has its own tests): Raw, and EventInvalid with Err for a bad line.
func TestParseEvent(t *testing.T) {
	ts := "2025-01-02T03:04:05.123456789Z"
	want, _ := time.Parse(time.RFC3339Nano, ts)
	line := `{"type":"path","ts":"` + ts + `","peer":"bob","path":"direct","remote":"198.51.100.3:5000","rtt_ms":12.5}`
	ev := ParseEvent(line)
	if ev.Err != nil || ev.Raw != line || ev.Type != "path" || !ev.TS.Equal(want) || ev.Peer != "bob" ||
		ev.Path != "direct" || ev.Remote != "198.51.100.3:5000" || ev.RTTMS != 12.5 {
		t.Errorf("ParseEvent(%s) = %+v", line, ev)
	}
	for _, c := range []struct {
		line string
		err  error
	}{
		{`not json`, headless.ErrNotObject},
		{`{"ts":"` + ts + `"}`, headless.ErrNoType},
		{`{"type":"registered"}`, headless.ErrTS},
		{`{"type":"x","ts":"yesterday"}`, headless.ErrTS},
		{`{"type":"sent","ts":"` + ts + `","id":17,"to":"bob"}`, headless.ErrField},
	} {
		ev := ParseEvent(c.line)
		if ev.Type != EventInvalid || ev.Raw != c.line || !errors.Is(ev.Err, c.err) {
			t.Errorf("ParseEvent(%s) = %+v, want type %s, error %v", c.line, ev, EventInvalid, c.err)
		}
	}
}

func TestParseNATType(t *testing.T) {
	for _, nt := range NATTypes {
		got, err := ParseNATType(nt.String())
		if err != nil || got != nt {
			t.Errorf("ParseNATType(%q) = %v, %v", nt.String(), got, err)
		}
	}
	for s, want := range map[string]NATType{"sym": Symmetric, "port": PortRestricted, "full": FullCone, "address": AddressRestricted, "public": None} {
		if got, err := ParseNATType(s); err != nil || got != want {
			t.Errorf("ParseNATType(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseNATType("cone"); err == nil {
		t.Error("ParseNATType accepted cone")
	}
}
