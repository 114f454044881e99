package bench

import (
	"fmt"
	"image/color"
	"path/filepath"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// curve is one metric of one target: a line per mode over the number of
// Services, or (where only one point was measured) a bar per mode.
type curve struct {
	metric, unit, target string
}

func (r *Report) curves() []curve {
	var out []curve
	seen := map[curve]bool{}
	for _, m := range r.Measurements {
		c := curve{m.Metric, m.Unit, m.Target}
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}

// WritePlots writes one PNG per curve into dir: the median of each mode
// with its min–max as error bars, against the number of Services; a bar
// chart per mode where the curve has a single point.
func (r *Report) WritePlots(dir string) ([]string, error) {
	var paths []string
	modes := r.presentModes()
	for _, c := range r.curves() {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%s: %s", r.Scenario, c.metric)
		if c.target != "" {
			p.Title.Text += " — " + c.target
		}
		p.Y.Label.Text = fmt.Sprintf("%s (%s)", c.metric, c.unit)
		p.Y.Min = 0
		p.Legend.Top = true
		xs := map[int]bool{}
		for _, m := range r.Measurements {
			if m.Metric == c.metric && m.Target == c.target {
				xs[m.X] = true
			}
		}
		var err error
		if len(xs) > 1 {
			err = r.linePlot(p, c, modes)
		} else {
			err = r.barPlot(p, c, modes)
		}
		if err != nil {
			return paths, fmt.Errorf("plot %s %s: %w", c.metric, c.target, err)
		}
		path := filepath.Join(dir, fileName(r.Scenario, c.metric, c.target)+".png")
		if err := p.Save(8*vg.Inch, 5*vg.Inch, path); err != nil {
			return paths, fmt.Errorf("save %s: %w", path, err)
		}
		paths = append(paths, path)
	}
	return paths, nil
}

type errPoints struct {
	plotter.XYs
	plotter.YErrors
}

func (r *Report) linePlot(p *plot.Plot, c curve, modes []string) error {
	p.X.Label.Text = "Services"
	for i, mode := range modes {
		var ms []*Measurement
		for _, m := range r.Measurements {
			if m.Metric == c.metric && m.Target == c.target && m.Mode == mode && m.Summary.N > 0 {
				ms = append(ms, m)
			}
		}
		if len(ms) == 0 {
			continue
		}
		sort.Slice(ms, func(a, b int) bool { return ms[a].X < ms[b].X })
		pts := errPoints{XYs: make(plotter.XYs, len(ms)), YErrors: make(plotter.YErrors, len(ms))}
		for j, m := range ms {
			pts.XYs[j] = plotter.XY{X: float64(m.X), Y: m.Summary.Median}
			pts.YErrors[j].Low = m.Summary.Median - m.Summary.Min
			pts.YErrors[j].High = m.Summary.Max - m.Summary.Median
		}
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return err
		}
		col := plotutil.Color(i)
		line.Color, points.Color = col, col
		points.Shape = plotutil.Shape(i)
		bars, err := plotter.NewYErrorBars(pts)
		if err != nil {
			return err
		}
		bars.Color = col
		p.Add(line, points, bars)
		p.Legend.Add(mode, line, points)
	}
	return nil
}

func (r *Report) barPlot(p *plot.Plot, c curve, modes []string) error {
	var vals plotter.Values
	var names []string
	var lows, highs []float64
	for _, mode := range modes {
		for _, m := range r.Measurements {
			if m.Metric == c.metric && m.Target == c.target && m.Mode == mode && m.Summary.N > 0 {
				vals = append(vals, m.Summary.Median)
				lows = append(lows, m.Summary.Median-m.Summary.Min)
				highs = append(highs, m.Summary.Max-m.Summary.Median)
				names = append(names, mode)
			}
		}
	}
	if len(vals) == 0 {
		return nil
	}
	bars, err := plotter.NewBarChart(vals, vg.Points(40))
	if err != nil {
		return err
	}
	bars.Color = color.RGBA{R: 70, G: 120, B: 190, A: 255}
	p.Add(bars)
	pts := errPoints{XYs: make(plotter.XYs, len(vals)), YErrors: make(plotter.YErrors, len(vals))}
	for i := range vals {
		pts.XYs[i] = plotter.XY{X: float64(i), Y: vals[i]}
		pts.YErrors[i].Low, pts.YErrors[i].High = lows[i], highs[i]
	}
	eb, err := plotter.NewYErrorBars(pts)
	if err != nil {
		return err
	}
	p.Add(eb)
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.75, float64(len(vals))-0.25
	return nil
}

func fileName(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p == "" {
			continue
		}
		var b strings.Builder
		for _, r := range strings.ToLower(p) {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
				b.WriteRune(r)
			default:
				if s := b.String(); len(s) > 0 && s[len(s)-1] != '-' {
					b.WriteByte('-')
				}
			}
		}
		out = append(out, strings.Trim(b.String(), "-"))
	}
	return strings.Join(out, "_")
}
