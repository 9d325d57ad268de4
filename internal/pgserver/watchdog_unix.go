//go:build unix

package pgserver

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// watchdogScript cleans up after a Go process that ended without Close. It
// blocks reading its stdin, a pipe whose write end only the Go process holds
// (os.Pipe is close-on-exec, so no other child inherits it). Close writes
// "done" first; end-of-file without "done" means the Go process died, and the
// script stops the server and removes what it created.
//
// Arguments: local ROOT DATADIR, or docker CONTAINER_ID.
const watchdogScript = `
line=
read -r line || :
[ "$line" = done ] && exit 0
# The Go process is gone: clean up after it.
case $1 in
local)
	root=$2 data=$3
	pidfile=$data/postmaster.pid
	# alive PID: the process exists, is no zombie, and (where /proc tells)
	# runs in our data directory, so a reused pid is never signalled.
	alive() {
		kill -0 "$1" 2>/dev/null || return 1
		[ -d /proc/"$1" ] || return 0
		state=$(sed 's/^.*) \(.\).*$/\1/' /proc/"$1"/stat 2>/dev/null)
		[ "$state" = Z ] && return 1
		cwd=$(readlink /proc/"$1"/cwd 2>/dev/null) || return 0
		[ "$cwd" = "$data" ]
	}
	if [ -r "$pidfile" ]; then
		pid=$(sed -n 1p "$pidfile")
		shmid=$(sed -n 7p "$pidfile" | awk '{print $2}')
		case $pid in ''|*[!0-9]*) pid= ;; esac
		if [ -n "$pid" ] && alive "$pid"; then
			# Immediate shutdown: the postmaster stops its children and
			# frees its shared memory.
			kill -s QUIT "$pid" 2>/dev/null
			i=0
			while alive "$pid" && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
			alive "$pid" && kill -s KILL -- "-$pid" 2>/dev/null
		fi
		# A killed server leaves its shared memory segment behind.
		if [ -r "$pidfile" ] && [ -n "$shmid" ] && command -v ipcrm >/dev/null 2>&1; then
			ipcrm -m "$shmid" 2>/dev/null
		fi
	fi
	# Whatever else still works in our directory (initdb, backends, which
	# each lead their own process group).
	# One ls for all processes: a readlink per process is slow.
	for p in $(ls -l /proc/[0-9]*/cwd 2>/dev/null | awk -v r="$root" \
		'$NF == r || index($NF, r "/") == 1 { split($(NF-2), f, "/"); print f[3] }'); do
		kill -s KILL "$p" 2>/dev/null
	done
	rm -rf "$root" 2>/dev/null || { sleep 1; rm -rf "$root"; }
	;;
docker)
	docker rm -f -v "$2" >/dev/null 2>&1
	;;
esac
exit 0
`

// watchdog is a running watchdogScript.
type watchdog struct {
	cmd *exec.Cmd
	w   *os.File
}

// startWatchdog starts the watchdog in its own process group, so that a
// Ctrl-C in the terminal, which signals the foreground group, reaches the Go
// process and not the watchdog.
func startWatchdog(args ...string) (*watchdog, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("creating watchdog pipe: %w", err)
	}
	cmd := exec.Command("/bin/sh", append([]string{"-c", watchdogScript, "sweeper-pgserver-watchdog"}, args...)...)
	cmd.Stdin = r
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = r.Close()
		_ = w.Close()
		return nil, fmt.Errorf("starting watchdog: %w", err)
	}
	_ = r.Close()
	return &watchdog{cmd: cmd, w: w}, nil
}

// disarm tells the watchdog that cleanup is done and waits for it to exit.
func (wd *watchdog) disarm() error {
	_, werr := wd.w.WriteString("done\n")
	cerr := wd.w.Close()
	if err := wd.cmd.Wait(); err != nil {
		return fmt.Errorf("waiting for watchdog: %w", err)
	}
	if werr != nil {
		return fmt.Errorf("disarming watchdog: %w", werr)
	}
	return cerr
}

// fire makes the watchdog clean up now, as if the Go process had died, and
// waits for it.
func (wd *watchdog) fire() error {
	_ = wd.w.Close()
	if err := wd.cmd.Wait(); err != nil {
		return fmt.Errorf("waiting for watchdog: %w", err)
	}
	return nil
}
