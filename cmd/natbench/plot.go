package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// writePNGs draws one grouped bar chart (ours beside coturn, medians)
// per headline metric: STUN answers per second, relayed packets per
// second, and server CPU per operation across the STUN and relay rows;
// and bars of ours alone for the rows coturn has no counterpart of:
// memory and CPU per registered node, messages per second and their p99.
func (b *bench) writePNGs(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	charts := []struct {
		file, title, ylabel string
		kind                string
		metric              func(*row) string // "": the row is not in the chart
		oursOnly            bool              // rows with no coturn counterpart
	}{
		{"stun-rate.png", "STUN Binding answers per second (median)", "answers/s", "stun", func(*row) string { return "answers/s" }, false},
		{"relay-rate.png", "Relayed packets per second (median)", "packets/s", "relay", func(*row) string { return "packets/s" }, false},
		{"server-cpu.png", "Server CPU per operation (median)", "µs", "", func(r *row) string {
			switch r.kind {
			case "stun":
				return "server CPU µs/answer"
			case "relay":
				return "server CPU µs/packet"
			}
			return ""
		}, false},
		{"reg-rss.png", "Rendezvous resident memory per registered node (median)", "bytes/node", "reg", func(*row) string { return "server RSS B/node" }, true},
		{"reg-cpu.png", "Rendezvous CPU per heartbeat, all nodes heartbeating (median)", "µs", "reg", func(*row) string { return "server CPU µs/heartbeat" }, true},
		{"msg-rate.png", "Messages delivered per second, two nodes (median)", "messages/s", "msg", func(*row) string { return "messages/s" }, true},
		{"msg-latency.png", "Message send → delivered, p99 (median)", "ms", "msg", func(*row) string { return "p99 ms" }, true},
	}
	for _, c := range charts {
		var labels []string
		var ours, coturn plotter.Values
		for _, r := range b.rows {
			m := c.metric(r)
			if c.kind != "" && r.kind != c.kind || m == "" {
				continue
			}
			labels = append(labels, r.label)
			ours = append(ours, zeroNaN(summarize(r.ours[m]).Median))
			coturn = append(coturn, zeroNaN(summarize(r.coturn[m]).Median))
		}
		if len(labels) == 0 {
			continue
		}
		if c.oursOnly {
			if err := saveOursOnly(c.title, c.ylabel, labels, ours, filepath.Join(dir, c.file)); err != nil {
				return fmt.Errorf("%s: %w", c.file, err)
			}
			continue
		}
		p := plot.New()
		p.Title.Text = c.title
		p.Y.Label.Text = c.ylabel
		w := vg.Points(18)
		bo, err := plotter.NewBarChart(ours, w)
		if err != nil {
			return err
		}
		bo.Color = plotutil.Color(0)
		bo.Offset = -w / 2
		bc, err := plotter.NewBarChart(coturn, w)
		if err != nil {
			return err
		}
		bc.Color = plotutil.Color(1)
		bc.Offset = w / 2
		p.Add(bo, bc)
		p.Legend.Add("ours (rendezvous)", bo)
		p.Legend.Add("coturn 4.6", bc)
		p.Legend.Top, p.Legend.Left = true, true
		p.Y.Max *= 1.25 // room for the legend
		p.NominalX(labels...)
		width := vg.Length(max(5, 1.6*float64(len(labels)))) * vg.Inch
		if err := p.Save(width, 4*vg.Inch, filepath.Join(dir, c.file)); err != nil {
			return fmt.Errorf("%s: %w", c.file, err)
		}
	}
	return nil
}

func zeroNaN(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return v
}

// saveOursOnly draws a bar chart of ours alone.
func saveOursOnly(title, ylabel string, labels []string, ours plotter.Values, file string) error {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = ylabel
	bo, err := plotter.NewBarChart(ours, vg.Points(24))
	if err != nil {
		return err
	}
	bo.Color = plotutil.Color(0)
	p.Add(bo)
	p.Legend.Add("ours (no coturn counterpart)", bo)
	p.Legend.Top, p.Legend.Left = true, true
	p.Y.Max *= 1.25
	p.NominalX(labels...)
	width := vg.Length(max(5, 1.6*float64(len(labels)))) * vg.Inch
	return p.Save(width, 4*vg.Inch, file)
}
