package main

import (
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/meshrole/meshrole/test/load/loadgen"
)

// row is one line of the table: a figure, its target, and whether it is
// met. A row with an empty target is context for the rows that have one.
type row struct {
	section string // a section heading, when set (other fields empty)
	figure  string
	value   string
	target  string
	met     *bool
}

type table struct{ rows []row }

func (t *table) section(title string) { t.rows = append(t.rows, row{section: title}) }

// info adds a row without a target.
func (t *table) info(figure, value string) {
	t.rows = append(t.rows, row{figure: figure, value: value})
}

// check adds a row with a target and whether it is met.
func (t *table) check(figure, value, target string, met bool) {
	t.rows = append(t.rows, row{figure: figure, value: value, target: target, met: &met})
}

// missed lists the figures whose target is not met.
func (t *table) missed() []string {
	var m []string
	for _, r := range t.rows {
		if r.met != nil && !*r.met {
			m = append(m, strings.TrimSpace(r.figure))
		}
	}
	return m
}

// write prints the table with aligned columns; section headings span the
// row and do not widen the first column.
func (t *table) write(w io.Writer) error {
	lines := [][4]string{{"FIGURE", "VALUE", "TARGET", "STATUS"}}
	for _, r := range t.rows {
		if r.section != "" {
			lines = append(lines, [4]string{r.section})
			continue
		}
		target, status := r.target, ""
		if target == "" {
			target = "-"
		}
		if r.met != nil {
			status = "met"
			if !*r.met {
				status = "NOT MET"
			}
		}
		lines = append(lines, [4]string{"  " + r.figure, r.value, target, status})
	}
	var width [3]int
	for _, l := range lines {
		if l[1] == "" && l[2] == "" {
			continue // a section heading
		}
		for i := range width {
			width[i] = max(width[i], utf8.RuneCountInString(l[i]))
		}
	}
	var b strings.Builder
	for _, l := range lines {
		if l[1] == "" && l[2] == "" {
			fmt.Fprintln(&b, l[0])
			continue
		}
		var line strings.Builder
		for i, c := range l {
			line.WriteString(c)
			if i < len(width) {
				line.WriteString(strings.Repeat(" ", width[i]-utf8.RuneCountInString(c)+2))
			}
		}
		fmt.Fprintln(&b, strings.TrimRight(line.String(), " "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Formatting helpers.

func dur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d >= time.Microsecond:
		return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond))
	default:
		return fmt.Sprintf("%d ns", d.Nanoseconds())
	}
}

func ns(v float64) string { return dur(time.Duration(v)) }

func ratio(v float64) string { return fmt.Sprintf("%.2f×", v) }

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func rate(v float64) string { return fmt.Sprintf("%s/s", thousands(int64(v+0.5))) }

func thousands(n int64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func pcts(l loadgen.Latency) string {
	return fmt.Sprintf("%s / %s / %s", dur(l.P50), dur(l.P95), dur(l.P99))
}
