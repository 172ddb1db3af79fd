package main

// The results table, its statistics and bench/results.md.

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"
)

// row is one line of the results table.
type row struct {
	figure, median, p99, target, met, floor, ratio, note string
}

func (b *bench) add(r row) { b.rows = append(b.rows, r) }

func (b *bench) note(s string) { b.notes = append(b.notes, s) }

// report prints the table and writes results.md.
func (b *bench) report(ctx context.Context) error {
	var sb strings.Builder
	fmt.Fprintf(&sb, "| figure | median | p99 | target | met | floor | x floor |\n|---|---|---|---|---|---|---|\n")
	for _, r := range b.rows {
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s | %s | %s |\n", r.figure, r.median, r.p99, r.target, r.met, dash(r.floor), dash(r.ratio))
	}
	table := sb.String()
	fmt.Println()
	fmt.Print(table)
	fmt.Println()
	for _, r := range b.rows {
		if r.note != "" {
			fmt.Printf("- %s: %s\n", r.figure, r.note)
		}
	}

	var pgVersion string
	_ = b.pool.QueryRow(ctx, "SHOW server_version").Scan(&pgVersion)
	var md strings.Builder
	fmt.Fprintf(&md, "# Benchmark results\n\n`make bench` on %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&md, "Machine: %s, %d CPUs, %s RAM; %s; PostgreSQL %s (fsync off, private cluster); Temporal dev server (CLI v1.5.1, `frontend.namespaceCount` raised); "+
		"the service in-process with 2 workflow and 1 activity pollers per worker, `RECONCILER_CONCURRENCY=128`, except the SIGTERM figure (the built binary).\n\n",
		cpuModel(), runtime.NumCPU(), memTotal(), runtime.Version(), pgVersion)
	md.WriteString(table)
	md.WriteString("\n")
	for _, r := range b.rows {
		if r.note != "" {
			fmt.Fprintf(&md, "- **%s**: %s\n", r.figure, r.note)
		}
	}
	for _, n := range b.notes {
		fmt.Fprintf(&md, "- %s\n", n)
	}
	if err := os.WriteFile(b.o.out, []byte(md.String()), 0o644); err != nil {
		return err
	}
	fmt.Printf("\nwritten to %s\n", b.o.out)
	for _, r := range b.rows {
		if r.met == "no" {
			return fmt.Errorf("target missed: %s", r.figure)
		}
	}
	return nil
}

func median(d []time.Duration) time.Duration { return quantile(d, 0.5) }

func p99(d []time.Duration) time.Duration { return quantile(d, 0.99) }

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration{}, d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s)-1) + 0.5)
	return s[i]
}

func ms(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

func durations(d []time.Duration) string {
	parts := make([]string, len(d))
	for i, x := range d {
		parts[i] = ms(x)
	}
	return strings.Join(parts, ", ")
}

func ratio(d, floor time.Duration) string {
	if floor <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fx", float64(d)/float64(floor))
}

func yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "model name") {
			return strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
		}
	}
	return runtime.GOARCH
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "MemTotal:") {
			var kb int
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "MemTotal:")), "%d", &kb)
			return fmt.Sprintf("%.0f GiB", float64(kb)/1024/1024)
		}
	}
	return "?"
}
