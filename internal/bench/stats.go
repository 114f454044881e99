package bench

import (
	"fmt"
	"math"
	"sort"
)

// Summary is what a table cell shows of a set of samples.
type Summary struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// Summarize returns the median, minimum and maximum of samples.
func Summarize(samples []float64) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	s := sorted(samples)
	return Summary{N: len(s), Median: Percentile(s, 50), Min: s[0], Max: s[len(s)-1]}
}

func sorted(samples []float64) []float64 {
	s := append([]float64(nil), samples...)
	sort.Float64s(s)
	return s
}

// Percentile returns the p-th percentile (0..100) of samples by linear
// interpolation between closest ranks (p=50 of an even count is the mean
// of the two middle values). NaN for no samples.
func Percentile(samples []float64, p float64) float64 {
	if len(samples) == 0 {
		return math.NaN()
	}
	s := samples
	if !sort.Float64sAreSorted(s) {
		s = sorted(samples)
	}
	if p <= 0 {
		return s[0]
	}
	if p >= 100 {
		return s[len(s)-1]
	}
	rank := p / 100 * float64(len(s)-1)
	lo := int(math.Floor(rank))
	hi := int(math.Ceil(rank))
	frac := rank - float64(lo)
	return s[lo] + (s[hi]-s[lo])*frac
}

// Ratio is how many times better mode A is than mode B on a metric:
// above 1 when A is better, whichever direction "better" is.
func Ratio(a, b float64, lowerIsBetter bool) float64 {
	if lowerIsBetter {
		if a == 0 {
			return math.NaN()
		}
		return b / a
	}
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// FormatRatio prints a ratio as "5.2x", with two significant digits
// below 10 and none above.
func FormatRatio(r float64) string {
	switch {
	case math.IsNaN(r) || math.IsInf(r, 0):
		return "n/a"
	case r >= 10:
		return fmt.Sprintf("%.0fx", r)
	case r >= 1:
		return fmt.Sprintf("%.2fx", r)
	default:
		return fmt.Sprintf("%.2fx", r)
	}
}

// FormatValue prints a measured value with 3 significant digits.
func FormatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case v == 0:
		return "0"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	case math.Abs(v) >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// FormatSummary prints "median [min–max]".
func FormatSummary(s Summary) string {
	if s.N == 0 {
		return "-"
	}
	if s.N == 1 {
		return FormatValue(s.Median)
	}
	return fmt.Sprintf("%s [%s–%s]", FormatValue(s.Median), FormatValue(s.Min), FormatValue(s.Max))
}
