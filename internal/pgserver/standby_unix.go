//go:build unix

package pgserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// StartStandby makes a streaming standby of primary, a local server: a base
// backup (pg_basebackup -R, WAL streamed) into a fresh data directory, started
// on a free port of its own as the primary is (same user, clean-up and
// watchdog), and waits until the primary streams to it (Synchronous: until
// the standby is its synchronous standby). The standby accepts read-only
// queries (hot standby) until Promote. Initdb's pg_hba.conf already lets
// local replication connections in, and PostgreSQL's defaults (wal_level
// replica, max_wal_senders 10) already allow streaming, so Start needs no
// extra setting. The caller must Close the standby; closing the primary first
// is fine. Other kinds of primary return ErrNotLocal.
func StartStandby(ctx context.Context, primary *Server, opts StandbyOptions) (*Server, error) {
	primary.mu.Lock()
	closed := primary.closed
	pl, isLocal := primary.b.(*local)
	primary.mu.Unlock()
	switch {
	case closed:
		return nil, fmt.Errorf("starting a standby: primary: %w", ErrClosed)
	case !isLocal:
		return nil, fmt.Errorf("starting a standby of a %s server: %w", primary.Kind, ErrNotLocal)
	}
	if opts.ApplicationName == "" {
		opts.ApplicationName = StandbyApplicationNameDefault
	}
	if !identifier.MatchString(opts.ApplicationName) {
		return nil, fmt.Errorf("starting a standby: application name %q: want lower-case letters, digits and underscores", opts.ApplicationName)
	}
	if opts.Slot != "" && !identifier.MatchString(opts.Slot) {
		return nil, fmt.Errorf("starting a standby: slot name %q: want lower-case letters, digits and underscores", opts.Slot)
	}
	so := pl.opts
	so.Kinds = []Kind{KindLocal}
	if opts.Settings != nil {
		so.Settings = opts.Settings
	}
	if opts.Logf != nil {
		so.Logf = opts.Logf
	}
	if opts.StartTimeout != 0 {
		so.StartTimeout = opts.StartTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, so.startTimeout())
	defer cancel()
	began := time.Now()

	if opts.Synchronous {
		if err := checkSynchronousCommit(ctx, primary.URL); err != nil {
			return nil, err
		}
	}
	l := &local{opts: so, binDir: pl.binDir, cred: pl.cred, primaryConninfo: fmt.Sprintf(
		"host=127.0.0.1 port=%d user=postgres application_name=%s", pl.port, opts.ApplicationName)}
	if err := l.makeRoot(); err != nil {
		return nil, err
	}
	var err error
	if l.watchdog, err = startWatchdog("local", l.root, l.data); err != nil {
		_ = os.RemoveAll(l.root)
		return nil, err
	}
	if err := l.baseBackup(ctx, opts.Slot); err != nil {
		return nil, errors.Join(err, l.close())
	}
	if err := l.startFreshPort(ctx); err != nil {
		return nil, errors.Join(err, l.close())
	}
	standby := &Server{URL: l.url(), Kind: KindLocal, b: l}
	if err := waitStreaming(ctx, primary.URL, opts.ApplicationName, opts.Synchronous); err != nil {
		return nil, errors.Join(err, standby.Close())
	}
	so.logf("standby %s of port %d ready on port %d in %v (synchronous: %v)",
		opts.ApplicationName, pl.port, l.port, time.Since(began).Round(time.Millisecond), opts.Synchronous)
	return standby, nil
}

// baseBackup copies the primary into l.data as a standby: pg_basebackup
// writes standby.signal and primary_conninfo (-R); start passes
// primary_conninfo again so that the application name is ours.
func (l *local) baseBackup(ctx context.Context, slot string) error {
	args := []string{"-D", l.data, "-d", l.primaryConninfo, "-R", "-X", "stream", "-c", "fast", "--no-sync"}
	if slot != "" {
		args = append(args, "-C", "-S", slot)
	}
	bin, err := clientTool(l.binDir, "pg_basebackup")
	if err != nil {
		return err
	}
	cmd := l.prepare(exec.CommandContext(ctx, bin, args...))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("running pg_basebackup: %w\n%s", err, tail(out, 20))
	}
	return nil
}

// clientTool finds a client program of the server in binDir: there, in the
// directory of the postgres binary when binDir only holds links to it
// (/usr/local/bin/postgres -> /usr/lib/postgresql/15/bin/postgres), or in
// PATH.
func clientTool(binDir, name string) (string, error) {
	dirs := []string{binDir}
	if real, err := filepath.EvalSymlinks(filepath.Join(binDir, "postgres")); err == nil {
		dirs = append(dirs, filepath.Dir(real))
	}
	for _, d := range dirs {
		if p := filepath.Join(d, name); isExecutable(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("no %s in %s or PATH (Debian/Ubuntu: apt-get install postgresql-client)", name, strings.Join(dirs, ", "))
}
