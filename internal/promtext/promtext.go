// Package promtext gives Prometheus text the "# HELP" and "# TYPE" lines
// that VictoriaMetrics/metrics leaves out. That library can write metadata
// only through a process-wide switch (metrics.ExposeMetadata), and then
// with empty help texts; here each role passes its own table instead, so
// no global is set and every family says what it counts. Annotate drops
// whatever comment lines it is given, so its output is the same whichever
// way that switch is set.
package promtext

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"strings"
)

// Meta is the metadata of one metric family.
type Meta struct {
	Type string // counter, gauge, histogram or summary
	Help string
}

// Table maps a family name (without _bucket, _sum or _count) to its Meta.
type Table map[string]Meta

// With returns a new table holding t's entries and more's.
func (t Table) With(more Table) Table {
	out := make(Table, len(t)+len(more))
	maps.Copy(out, t)
	maps.Copy(out, more)
	return out
}

// Annotate writes src to w with HELP and TYPE lines before the first sample
// of each family in t. A family t does not know is written without them
// (the tests that run promtool on every /metrics catch it). Samples of one
// family must be contiguous, as VictoriaMetrics writes them.
func Annotate(w io.Writer, src []byte, t Table) error {
	var out bytes.Buffer
	out.Grow(len(src) + len(src)/4)
	prev := ""
	for len(src) > 0 {
		line := src
		if i := bytes.IndexByte(src, '\n'); i >= 0 {
			line, src = src[:i+1], src[i+1:]
		} else {
			src = nil
		}
		if len(bytes.TrimSpace(line)) == 0 || line[0] == '#' {
			continue
		}
		fam := t.family(sampleName(line))
		if fam != prev {
			prev = fam
			if m, ok := t[fam]; ok {
				fmt.Fprintf(&out, "# HELP %s %s\n# TYPE %s %s\n", fam, escapeHelp(m.Help), fam, m.Type)
			}
		}
		out.Write(line)
		if line[len(line)-1] != '\n' {
			out.WriteByte('\n')
		}
	}
	_, err := w.Write(out.Bytes())
	return err
}

func sampleName(line []byte) string {
	end := bytes.IndexAny(line, "{ ")
	if end < 0 {
		end = len(line)
	}
	return string(line[:end])
}

// family is the family a sample name belongs to: itself, or a histogram's
// or summary's name less its _bucket, _sum or _count.
func (t Table) family(name string) string {
	if _, ok := t[name]; ok {
		return name
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		if m, known := t[base]; known && (m.Type == "histogram" || m.Type == "summary") && (suffix != "_bucket" || m.Type == "histogram") {
			return base
		}
	}
	return name
}

// escapeHelp escapes a help text as the text format wants.
func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

// Process is the metadata of what metrics.WriteProcessMetrics writes
// (VictoriaMetrics/metrics v1.45). The process_io_*_total only ever grow,
// so they are counters here, where the library's own metadata calls them
// gauges. Three names break Prometheus' naming conventions
// (go_cgo_calls_count and go_gc_forced_count are counters without _total,
// go_cpu_count is a gauge ending in _count); they are kept as the library
// writes them, since dashboards know them by these names.
var Process = Table{
	"go_sched_latencies_seconds":          {"histogram", "Time goroutines spent runnable before they ran."},
	"go_mutex_wait_seconds_total":         {"counter", "Time goroutines spent blocked on a sync.Mutex or sync.RWMutex."},
	"go_gc_mark_assist_cpu_seconds_total": {"counter", "CPU time goroutines spent helping the garbage collector mark."},
	"go_gc_cpu_seconds_total":             {"counter", "CPU time spent in the garbage collector."},
	"go_gc_pauses_seconds":                {"histogram", "Stop-the-world pauses of the garbage collector."},
	"go_scavenge_cpu_seconds_total":       {"counter", "CPU time spent returning unused memory to the operating system."},
	"go_memlimit_bytes":                   {"gauge", "The Go memory limit (GOMEMLIMIT)."},
	"go_memstats_alloc_bytes":             {"gauge", "Bytes of live heap objects."},
	"go_memstats_alloc_bytes_total":       {"counter", "Bytes allocated on the heap since the start."},
	"go_memstats_buck_hash_sys_bytes":     {"gauge", "Bytes of memory in profiling bucket hash tables."},
	"go_memstats_frees_total":             {"counter", "Heap objects freed since the start."},
	"go_memstats_gc_cpu_fraction":         {"gauge", "Share of the available CPU time used by the garbage collector since the start."},
	"go_memstats_gc_sys_bytes":            {"gauge", "Bytes of memory in garbage collection metadata."},
	"go_memstats_heap_alloc_bytes":        {"gauge", "Bytes of allocated heap objects, live or not yet swept."},
	"go_memstats_heap_idle_bytes":         {"gauge", "Bytes in idle heap spans."},
	"go_memstats_heap_inuse_bytes":        {"gauge", "Bytes in in-use heap spans."},
	"go_memstats_heap_objects":            {"gauge", "Allocated heap objects."},
	"go_memstats_heap_released_bytes":     {"gauge", "Bytes of heap memory returned to the operating system."},
	"go_memstats_heap_sys_bytes":          {"gauge", "Bytes of heap memory obtained from the operating system."},
	"go_memstats_last_gc_time_seconds":    {"gauge", "When the last garbage collection finished, in seconds since the Unix epoch."},
	"go_memstats_lookups_total":           {"counter", "Pointer lookups done by the runtime."},
	"go_memstats_mallocs_total":           {"counter", "Heap objects allocated since the start."},
	"go_memstats_mcache_inuse_bytes":      {"gauge", "Bytes in use by mcache structures."},
	"go_memstats_mcache_sys_bytes":        {"gauge", "Bytes of memory obtained from the operating system for mcache structures."},
	"go_memstats_mspan_inuse_bytes":       {"gauge", "Bytes in use by mspan structures."},
	"go_memstats_mspan_sys_bytes":         {"gauge", "Bytes of memory obtained from the operating system for mspan structures."},
	"go_memstats_next_gc_bytes":           {"gauge", "Heap size at which the next garbage collection starts."},
	"go_memstats_other_sys_bytes":         {"gauge", "Bytes of memory in other runtime allocations."},
	"go_memstats_stack_inuse_bytes":       {"gauge", "Bytes in goroutine stack spans."},
	"go_memstats_stack_sys_bytes":         {"gauge", "Bytes of stack memory obtained from the operating system."},
	"go_memstats_sys_bytes":               {"gauge", "Bytes of memory obtained from the operating system in all."},
	"go_cgo_calls_count":                  {"counter", "Calls made from Go to C since the start."},
	"go_cpu_count":                        {"gauge", "Logical CPUs usable by the process."},
	"go_gc_duration_seconds":              {"summary", "Stop-the-world pauses of the garbage collector, as quantiles."},
	"go_gc_forced_count":                  {"counter", "Garbage collections forced by the application since the start."},
	"go_gomaxprocs":                       {"gauge", "GOMAXPROCS: threads that may run Go code at once."},
	"go_goroutines":                       {"gauge", "Goroutines that exist now."},
	"go_threads":                          {"gauge", "Operating system threads created by the runtime."},
	"go_info":                             {"gauge", "Always 1; the version label is the Go version that built the binary."},
	"go_info_ext":                         {"gauge", "Always 1; the labels say how the binary was built."},

	"process_cpu_seconds_system_total":              {"counter", "CPU time the process spent in the kernel."},
	"process_cpu_seconds_total":                     {"counter", "CPU time the process spent, user and kernel."},
	"process_cpu_seconds_user_total":                {"counter", "CPU time the process spent in user space."},
	"process_major_pagefaults_total":                {"counter", "Page faults that needed disk I/O."},
	"process_minor_pagefaults_total":                {"counter", "Page faults served without disk I/O."},
	"process_num_threads":                           {"gauge", "Threads of the process."},
	"process_resident_memory_bytes":                 {"gauge", "Resident memory (RSS) of the process."},
	"process_start_time_seconds":                    {"gauge", "When the process started, in seconds since the Unix epoch."},
	"process_virtual_memory_bytes":                  {"gauge", "Virtual memory size of the process."},
	"process_virtual_memory_peak_bytes":             {"gauge", "Largest virtual memory size the process has had."},
	"process_resident_memory_peak_bytes":            {"gauge", "Largest resident memory (RSS) the process has had."},
	"process_resident_memory_anon_bytes":            {"gauge", "Resident memory of anonymous mappings (the heap, stacks)."},
	"process_resident_memory_file_bytes":            {"gauge", "Resident memory of file mappings."},
	"process_resident_memory_shared_bytes":          {"gauge", "Resident memory shared with other processes."},
	"process_io_read_bytes_total":                   {"counter", "Bytes the process read through system calls."},
	"process_io_written_bytes_total":                {"counter", "Bytes the process wrote through system calls."},
	"process_io_read_syscalls_total":                {"counter", "Read system calls of the process."},
	"process_io_write_syscalls_total":               {"counter", "Write system calls of the process."},
	"process_io_storage_read_bytes_total":           {"counter", "Bytes the process caused to be read from storage."},
	"process_io_storage_written_bytes_total":        {"counter", "Bytes the process caused to be written to storage."},
	"process_pressure_cpu_waiting_seconds_total":    {"counter", "Time some tasks of the cgroup (v2) waited for a CPU."},
	"process_pressure_cpu_stalled_seconds_total":    {"counter", "Time all tasks of the cgroup (v2) waited for a CPU."},
	"process_pressure_io_waiting_seconds_total":     {"counter", "Time some tasks of the cgroup (v2) waited for I/O."},
	"process_pressure_io_stalled_seconds_total":     {"counter", "Time all tasks of the cgroup (v2) waited for I/O."},
	"process_pressure_memory_waiting_seconds_total": {"counter", "Time some tasks of the cgroup (v2) waited for memory."},
	"process_pressure_memory_stalled_seconds_total": {"counter", "Time all tasks of the cgroup (v2) waited for memory."},
	"process_cgroup_cpu_throttled_seconds_total":    {"counter", "Time the cgroup was throttled by its CPU quota."},
}
