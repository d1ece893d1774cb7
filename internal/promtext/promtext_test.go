package promtext

import (
	"bytes"
	"testing"

	"github.com/VictoriaMetrics/metrics"
)

func TestAnnotate(t *testing.T) {
	s := metrics.NewSet()
	s.NewCounter(`b_total{x="1"}`).Inc()
	s.NewCounter(`b_total{x="2"}`).Add(2)
	s.NewPrometheusHistogramExt(`a_seconds`, []float64{0.1, 1}).Update(0.5)
	s.NewGauge(`c_unknown`, func() float64 { return 3 })
	table := Table{
		"a_seconds": {"histogram", "Time of a.\nSecond line with a \\."},
		"b_total":   {"counter", "Count of b."},
	}
	want := `# HELP a_seconds Time of a.\nSecond line with a \\.
# TYPE a_seconds histogram
a_seconds_bucket{le="0.1"} 0
a_seconds_bucket{le="1"} 1
a_seconds_bucket{le="+Inf"} 1
a_seconds_sum 0.5
a_seconds_count 1
# HELP b_total Count of b.
# TYPE b_total counter
b_total{x="1"} 1
b_total{x="2"} 2
c_unknown 3
`
	// The same output whichever way the library's global switch is set.
	for _, expose := range []bool{false, true} {
		metrics.ExposeMetadata(expose)
		var src, out bytes.Buffer
		s.WritePrometheus(&src)
		if err := Annotate(&out, src.Bytes(), table); err != nil {
			t.Fatal(err)
		}
		if out.String() != want {
			t.Errorf("ExposeMetadata(%v): Annotate =\n%s\nwant\n%s", expose, out.String(), want)
		}
	}
	metrics.ExposeMetadata(false)
}
