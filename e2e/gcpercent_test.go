package e2e

import (
	"math"
	"testing"
)

// TestRendezvousGCPercent: -gc-percent sets the Go collector's GOGC (40
// when not given), GOGC in the environment applies when the flag is not
// given, and the flag wins over it. The rendezvous's metrics report the
// runtime's own setting (go_gc_gogc_percent).
func TestRendezvousGCPercent(t *testing.T) {
	for _, tc := range []struct {
		name  string
		env   string // GOGC; "" for none
		extra []string
		want  float64
	}{
		{"default", "", nil, 40},
		{"GOGC", "80", nil, 80},
		{"flag over GOGC", "80", []string{"-gc-percent", "30"}, 30},
		{"flag", "", []string{"-gc-percent", "200"}, 200},
		{"off", "", []string{"-gc-percent", "-1"}, math.MaxUint64}, // the runtime reports off so
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOGC", tc.env) // the rendezvous inherits the environment
			rv := startRendezvous(t, rvOptions{metrics: true, extra: tc.extra})
			if got, ok := rv.scrape(t)["go_gc_gogc_percent"]; !ok || got != tc.want {
				t.Fatalf("go_gc_gogc_percent = %v (reported: %v), want %v", got, ok, tc.want)
			}
		})
	}
}
