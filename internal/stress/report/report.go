// Package report carries the figures of a stress run from the tests that
// measure them to the table `make stress` prints.
//
// A test records its figures with Record; when the environment variable
// EnvOut names a directory, they are written there as one JSON file per
// test, and the stressrun command sums them (Load) into the summary table
// (Summary.Table). Without EnvOut, Record only returns the line it would
// write, for the test's log.
package report

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// EnvOut names the directory that receives the figures of a run.
const EnvOut = "SWEEPER_STRESS_OUT"

// Figure names shared by the tests and the summary table.
const (
	Writers          = "writers"           // concurrent writers of the race storm
	WriterOps        = "writer_ops"        // operations the writers made (and logged)
	Daemons          = "daemons"           // sweeper daemon processes that swept together
	Transitions      = "transitions"       // status changes, inserts excluded, from the event log
	Inserts          = "inserts"           // rows inserted
	Stuck            = "stuck"             // rows marked stuck by a sweeper
	StuckHeartbeat   = "stuck_heartbeat"   // of which by heartbeat_timeout
	StuckDeadline    = "stuck_deadline"    // of which by deadline_exceeded
	Notifications    = "notifications"     // delegation_stuck notifications received
	ReviveAttempts   = "revive_attempts"   // attempts to change a terminal row, all refused
	LiveHeartbeats   = "live_heartbeats"   // heartbeats acknowledged Live=true
	LostRaces        = "lost_races"        // heartbeats or completions told the row was already terminal
	Checks           = "checks"            // individual invariant checks evaluated
	Violations       = "violations"        // invariant checks that failed
	FaultsSurvived   = "faults_survived"   // fault scenarios the system came through whole
	BrokenConfigs    = "broken_configs"    // broken configurations and flag sets, each refused with exit 2
	HostileInputs    = "hostile_inputs"    // hostile ledger inputs: refused with a typed error or stored verbatim
	FuzzExecs        = "fuzz_execs"        // executions of the native fuzz targets
	FuzzTargets      = "fuzz_targets"      // fuzz targets run
	SecretChecks     = "secret_checks"     // captured outputs grepped for the DSN password
	MigrationRacers  = "migration_racers"  // `sweeper migrate up` processes run at once
	PrivilegeRefusal = "privilege_refusal" // statements the daemon role tried and PostgreSQL refused
)

// Figures are one test's measurements.
type Figures map[string]int64

// Record writes the figures of the test named name to the directory named by
// EnvOut, when set, and returns them as one line for the test's log.
func Record(name string, f Figures) (string, error) {
	line := name + ": " + f.String()
	dir := os.Getenv(EnvOut)
	if dir == "" {
		return line, nil
	}
	b, err := json.Marshal(f)
	if err != nil {
		return line, err
	}
	file := filepath.Join(dir, safeName(name)+".json")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		return line, fmt.Errorf("recording figures: %w", err)
	}
	return line, nil
}

// String renders the figures as name=value pairs in name order.
func (f Figures) String() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(f)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, f[k]))
	}
	return strings.Join(parts, " ")
}

func safeName(name string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' || r == os.PathSeparator {
			return '_'
		}
		return r
	}, name)
}

// Load reads every figures file of dir and sums them by name. It also returns
// the per-test figures, by test name.
func Load(dir string) (Figures, map[string]Figures, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, nil, err
	}
	total := Figures{}
	per := map[string]Figures{}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, nil, err
		}
		var f Figures
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", file, err)
		}
		per[strings.TrimSuffix(filepath.Base(file), ".json")] = f
		for k, v := range f {
			total[k] += v
		}
	}
	return total, per, nil
}

// Row is one line of the summary table.
type Row struct {
	What  string
	Value string
	Note  string
}

// Table renders rows as an aligned text table with a header.
func Table(rows []Row) string {
	w1, w2 := len("what"), len("value")
	for _, r := range rows {
		w1 = max(w1, len(r.What))
		w2 = max(w2, len(r.Value))
	}
	var b strings.Builder
	line := func(a, v, n string) {
		fmt.Fprintf(&b, "| %-*s | %*s | %s\n", w1, a, w2, v, n)
	}
	line("what", "value", "from")
	fmt.Fprintf(&b, "|-%s-|-%s-|-%s\n", strings.Repeat("-", w1), strings.Repeat("-", w2), strings.Repeat("-", 20))
	for _, r := range rows {
		line(r.What, r.Value, cmp.Or(r.Note, ""))
	}
	return b.String()
}
