package retention

import (
	"bufio"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Archive files are named
//
//	sweeper-prune-<UTC time>-<status>-<random>.jsonl.gz
//
// and hold one JSON object per line: a delegation's columns, as the
// database renders them (row_to_json), plus "events", its events in id order.
// A file is written under a ".tmp" name and renamed once complete and
// synced, so a file with the final name is always whole.
const (
	archivePrefix = "sweeper-prune-"
	archiveSuffix = ".jsonl.gz"
	tmpSuffix     = ".tmp"
)

// ArchiveFile is one archive file written.
type ArchiveFile struct {
	Path  string
	Bytes int64 // compressed size
	Lines int   // delegations
}

// WriteArchive writes lines (one JSON object each, without newline) to a new
// gzip JSON Lines file in dir for a batch of status, and makes it durable:
// the file is synced, renamed to its final name and the directory synced.
// dir is created (0750) if missing.
func WriteArchive(dir, status string, lines []string) (ArchiveFile, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return ArchiveFile{}, fmt.Errorf("creating archive directory: %w", err)
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	name := archivePrefix + time.Now().UTC().Format("20060102T150405.000000000Z") + "-" + status + "-" +
		hex.EncodeToString(rnd[:]) + archiveSuffix
	final := filepath.Join(dir, name)
	tmp := final + tmpSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return ArchiveFile{}, fmt.Errorf("creating archive file: %w", err)
	}
	err = writeLines(f, lines)
	if err == nil {
		err = f.Sync()
	}
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return ArchiveFile{}, fmt.Errorf("writing archive file %s: %w", final, err)
	}
	st, err := os.Stat(final)
	if err != nil {
		return ArchiveFile{}, fmt.Errorf("archive file %s: %w", final, err)
	}
	return ArchiveFile{Path: final, Bytes: st.Size(), Lines: len(lines)}, nil
}

func writeLines(w io.Writer, lines []string) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	zw := gzip.NewWriter(bw)
	for _, l := range lines {
		if _, err := io.WriteString(zw, l); err != nil {
			return err
		}
		if _, err := io.WriteString(zw, "\n"); err != nil {
			return err
		}
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if closeErr := d.Close(); err == nil {
		err = closeErr
	}
	return err
}

// ArchiveReport is what VerifyArchive found.
type ArchiveReport struct {
	// Files, Delegations, Events and Bytes count the archive files checked
	// and what they hold.
	Files       int   `json:"files"`
	Delegations int   `json:"delegations"`
	Events      int   `json:"events"`
	Bytes       int64 `json:"bytes"`
	// Duplicates counts delegations found in more than one file: a batch
	// archived again after a crash before its delete committed. Harmless.
	Duplicates int `json:"duplicates"`
	// Incomplete lists files left under their temporary name by a crash
	// during the write; their batch was not deleted. They may be removed.
	Incomplete []string `json:"incomplete"`
	// Problems lists what is wrong, one entry per file and line; empty when
	// the archive is sound.
	Problems []string `json:"problems"`
}

// OK reports whether the archive has no problems.
func (r ArchiveReport) OK() bool { return len(r.Problems) == 0 }

// archivedDelegation is what VerifyArchive reads of a line.
type archivedDelegation struct {
	DelegationID *string `json:"delegation_id"`
	Status       *string `json:"status"`
	FinishedAt   *string `json:"finished_at"`
	Events       *[]struct {
		ID           *int64  `json:"id"`
		DelegationID *string `json:"delegation_id"`
	} `json:"events"`
}

// maxLine bounds one archive line: a delegation's previews are bounded by
// the schema, but its events are not.
const maxLine = 64 << 20

// VerifyArchive checks every archive file in dir: each decompresses whole
// (the gzip checksum and length match), and each line is a JSON object for a
// terminal delegation with a finished_at, whose events all belong to it. An
// error is returned only when dir cannot be read; what is wrong with the
// files is in the report's Problems.
func VerifyArchive(dir string) (ArchiveReport, error) {
	rep := ArchiveReport{Incomplete: []string{}, Problems: []string{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return rep, fmt.Errorf("reading archive directory: %w", err)
	}
	seen := map[string]int{}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, archivePrefix) || e.IsDir() {
			continue
		}
		switch {
		case strings.HasSuffix(name, archiveSuffix+tmpSuffix):
			rep.Incomplete = append(rep.Incomplete, name)
			continue
		case !strings.HasSuffix(name, archiveSuffix):
			continue
		}
		rep.Files++
		verifyFile(filepath.Join(dir, name), name, &rep, seen)
	}
	for _, n := range seen {
		if n > 1 {
			rep.Duplicates++
		}
	}
	if rep.Files == 0 && len(rep.Incomplete) == 0 {
		rep.Problems = append(rep.Problems, "no archive files ("+archivePrefix+"*"+archiveSuffix+") in "+dir)
	}
	return rep, nil
}

func verifyFile(path, name string, rep *ArchiveReport, seen map[string]int) {
	problem := func(format string, args ...any) {
		rep.Problems = append(rep.Problems, name+": "+fmt.Sprintf(format, args...))
	}
	f, err := os.Open(path)
	if err != nil {
		problem("%v", err)
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil {
		rep.Bytes += st.Size()
	}
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		problem("not a gzip file: %v", err)
		return
	}
	sc := bufio.NewScanner(zr)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	line := 0
	for sc.Scan() {
		line++
		var d archivedDelegation
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			problem("line %d: not a JSON object: %v", line, err)
			continue
		}
		switch {
		case d.DelegationID == nil || *d.DelegationID == "":
			problem("line %d: no delegation_id", line)
			continue
		case d.Status == nil || !slices.Contains(Statuses, *d.Status):
			problem("line %d: delegation %q: status is not terminal", line, *d.DelegationID)
		case d.FinishedAt == nil || *d.FinishedAt == "":
			problem("line %d: delegation %q: no finished_at", line, *d.DelegationID)
		case d.Events == nil:
			problem("line %d: delegation %q: no events array", line, *d.DelegationID)
		}
		rep.Delegations++
		seen[*d.DelegationID]++
		if d.Events == nil {
			continue
		}
		for i, ev := range *d.Events {
			if ev.ID == nil || ev.DelegationID == nil || *ev.DelegationID != *d.DelegationID {
				problem("line %d: delegation %q: event %d has no id or belongs to another delegation", line, *d.DelegationID, i)
			}
		}
		rep.Events += len(*d.Events)
	}
	err = sc.Err()
	if errors.Is(err, bufio.ErrTooLong) {
		problem("line %d: longer than %d bytes", line+1, maxLine)
	} else if err != nil {
		problem("after line %d: %v (truncated or corrupt)", line, err)
	}
	if line == 0 && err == nil {
		problem("empty")
	}
}
