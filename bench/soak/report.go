package main

// The results table (stdout, and -out as markdown), and the scan of the replicas'
// logs.

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// scanLogs counts panics (an invariant: a recovered panic is still a bug) and error
// lines in the replicas' logs.
func (s *soak) scanLogs() {
	for _, r := range s.replicas {
		f, err := os.Open(r.logPath)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, "panic") {
				s.res.panics++
				s.violation("no panic", "%s: %s", filepath.Base(r.logPath), truncate(line, 300))
			}
			if strings.Contains(line, "level=ERROR") {
				s.res.errorLines++
			}
		}
		f.Close()
	}
	s.res.replicaStarts = map[string]int{}
	for _, r := range s.replicas {
		r.mu.Lock()
		s.res.replicaStarts[r.name] = r.starts
		r.mu.Unlock()
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// report prints the table and writes it to -out.
func (s *soak) report() {
	r := &s.res
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	verdict := func(invariant string) string {
		s.mu.Lock()
		defer s.mu.Unlock()
		if n := len(s.violations[invariant]); n > 0 {
			return fmt.Sprintf("**FAILED** (%d)", n)
		}
		return "holds"
	}

	w("Seed %d (replay: `go run ./bench/soak -seed %d -duration %s -projects %d -rate %g -gap-min %s -gap-max %s -faults %s -pause-max %s`); faults for %s, %d projects, %d replicas, %.1f runs started per second.\n\n",
		s.o.seed, s.o.seed, s.o.duration, s.o.projects, s.o.rate, s.o.gapMin, s.o.gapMax, s.o.faults, s.o.pauseMax, s.o.duration, s.o.projects, s.o.replicas, s.o.rate)

	w("| fault | injected | duration drawn (min-max) | healed in (max) |\n|---|---|---|---|\n")
	total := 0
	for _, kind := range faultKinds {
		var n int
		var lo, hi, took time.Duration
		for _, f := range s.nem.log {
			if f.kind != kind {
				continue
			}
			n++
			if lo == 0 || f.length < lo {
				lo = f.length
			}
			hi = max(hi, f.length)
			if !f.healed.IsZero() {
				took = max(took, f.healed.Sub(f.injected))
			}
		}
		total += n
		w("| %s | %d | %s-%s | %s |\n", kind, n, lo, hi, took.Round(time.Millisecond))
	}
	w("| **all** | **%d** | | |\n\n", total)

	wl := s.wl
	w("| workload | count |\n|---|---|\n")
	w("| workflow runs started (quick / sleep 2-20 s / wait for a signal 3-30 s) | %d (%d / %d / %d) |\n", r.started, r.byKind[kindQuick], r.byKind[kindSleep], r.byKind[kindWait])
	w("| of which JSON definitions / TypeScript workflows | %d / %d |\n", r.byLanguage["json"], r.byLanguage["typescript"])
	w("| starts never acknowledged and unknown to Temporal (not counted as started) | %d |\n", r.neverStarted)
	w("| start requests refused and retried (Temporal down) | %d |\n", wl.startsRefused.Load())
	w("| compiles committed (refused while PostgreSQL was down) | %d (%d) |\n", wl.compiles.Load(), wl.compilesRefused.Load())
	w("| desired_status flips to stopped and back (refused) | %d (%d) |\n", wl.flips.Load(), wl.flipsRefused.Load())
	w("| restart_project_worker calls (refused) | %d (%d) |\n", wl.restarts.Load(), wl.restartsRefused.Load())
	w("| replica processes started (r1..r%d) | %s |\n\n", len(s.replicas), startsList(r.replicaStarts))

	w("| invariant | figure | bound | verdict |\n|---|---|---|---|\n")
	w("| every started run completed with its pinned version's result (\"n-n\") | %d completed, %d failed, %d lost, %d wrong version, %d duplicated (of %d started; %d executions listed) | all completed | %s |\n",
		r.completed, r.failed, r.lost, r.wrongVersion, r.duplicated, r.started, r.executions, verdict2(s, "workflows", "pinned version"))
	w("| runs pinned to a version older than the newest at their start (allowed: the worker had not loaded it yet) | %d | - | - |\n", r.olderPinned)
	maxOverlap := time.Duration(0)
	if len(r.overlaps) > 0 {
		maxOverlap = r.overlaps[0].d
	}
	s.sampler.mu.Lock()
	describes, describeErr, rowSamples := s.sampler.describes, s.sampler.describeErr, s.sampler.rowSamples
	s.sampler.mu.Unlock()
	w("| max overlap of two replicas' pollers of one project | %s (%d overlapping pairs; %d DescribeTaskQueue samples, %d failed; %d row samples) | <= %s | %s |\n",
		maxOverlap.Round(time.Millisecond), len(r.overlaps), describes, describeErr, rowSamples, pollOverlapBound, verdict("double polling"))
	w("| convergence after the last fault: max / p99 / median | %s / %s / %s (%d of %d projects) | <= %s | %s |\n",
		maxDuration(r.convergence).Round(time.Millisecond), quantile(r.convergence, 0.99).Round(time.Millisecond),
		quantile(r.convergence, 0.5).Round(time.Millisecond), len(r.convergence), len(s.projects), s.o.convergeMax, verdict("convergence"))
	w("| probe run on every project returns the newest version (run time max / median) | %d of %d (%s / %s) | all | %s |\n", r.probesOK, r.probes,
		maxDuration(r.probeLatency).Round(time.Millisecond), quantile(r.probeLatency, 0.5).Round(time.Millisecond), verdict("probe"))
	w("| live rows without a live replica process | %d | 0 | %s |\n", r.liveOrphans, verdict("no live row without a live replica"))
	w("| running projects whose live row is not exactly one, on the lease owner, with its term | %d | 0 | %s |\n", r.leaseProblems, verdict("leases consistent"))
	w("| replicas that exited by themselves; SIGTERM exits not 0 | %d; %d | 0 | %s |\n", len(s.violationsOf("replica crashed")), len(s.violationsOf("SIGTERM exits cleanly")), verdict2(s, "replica crashed", "SIGTERM exits cleanly"))
	w("| panics in the replicas' logs (ERROR lines, for information) | %d (%d) | 0 | %s |\n\n", r.panics, r.errorLines, verdict("no panic"))

	if len(r.overlaps) > 0 {
		w("Largest poller overlaps: ")
		for i, o := range r.overlaps[:min(3, len(r.overlaps))] {
			if i > 0 {
				w("; ")
			}
			w("%s", o)
		}
		w(".\n\n")
	}
	w("Replica settings: `%s`.\n\n", strings.Join(replicaEnv, " "))
	w("Fault schedule:\n\n```\n")
	for _, f := range s.nem.log {
		w("%3d  +%-8s %-40s %-3s %-7s", f.n, f.injected.Sub(s.began).Round(100*time.Millisecond), f.kind, f.target(s), f.length)
		if f.err != nil {
			w("  error: %v", f.err)
		}
		w("%s\n", f.note)
	}
	w("```\n")
	table := b.String()
	fmt.Println()
	fmt.Print(table)
	if s.o.out != "" {
		var md strings.Builder
		fmt.Fprintf(&md, "# Soak results\n\n`%s` on %s: %s, %d CPUs; whole run %s (checks %s).\n\n",
			strings.Join(append([]string{"go run ./bench/soak"}, os.Args[1:]...), " "), time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.Version(), runtime.NumCPU(),
			time.Since(s.began).Round(time.Second), r.checkTook.Round(time.Second))
		md.WriteString(table)
		if err := os.WriteFile(s.o.out, []byte(md.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "soak: write", s.o.out, err)
		} else {
			fmt.Printf("\nwritten to %s\n", s.o.out)
		}
	}
}

func verdict2(s *soak, a, b string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.violations[a]) + len(s.violations[b]); n > 0 {
		return fmt.Sprintf("**FAILED** (%d)", n)
	}
	return "holds"
}

func (s *soak) violationsOf(invariant string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.violations[invariant]
}

func startsList(m map[string]int) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprint(m[n]))
	}
	return strings.Join(parts, " / ")
}

func maxDuration(d []time.Duration) time.Duration {
	var m time.Duration
	for _, x := range d {
		m = max(m, x)
	}
	return m
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration{}, d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s)-1) + 0.5)
	return s[i]
}
