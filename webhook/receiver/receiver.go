// Package receiver starts the Node webhook receiver of this folder
// (receiver.mjs) for tests: deliveries are verified by the Standard Webhooks
// reference library (the standardwebhooks npm package), not by sweeper's
// own code. It is test harness; the sweeper binary does not import it.
//
// The receiver needs `npm ci --prefix webhook/receiver` once; without it,
// Start skips the test, or fails it under SWEEPER_REQUIRE_DB=1.
package receiver

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Line is one line of the receiver's log.
type Line struct {
	Phase        string `json:"phase"` // received, then answered
	WebhookID    string `json:"webhook_id"`
	Path         string `json:"path"`
	Verified     bool   `json:"verified"`
	Status       int    `json:"status"`
	Type         string `json:"type"`
	EventID      int64  `json:"event_id"`
	DelegationID string `json:"delegation_id"`
	Error        string `json:"error"`
}

// Receiver is a running Node receiver.
type Receiver struct {
	// URL is its base URL, http://127.0.0.1:PORT.
	URL     string
	dir     string
	log     string
	secrets string
	mu      sync.Mutex
	paths   map[string]string
}

// Dir is the folder of the receiver (with its package.json).
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

// Start starts the receiver; it answers after delay. The test's cleanup
// stops it.
func Start(t testing.TB, delay time.Duration) *Receiver {
	t.Helper()
	dir := Dir()
	missing := ""
	if _, err := exec.LookPath("node"); err != nil {
		missing = "node is not installed (apt-get install nodejs)"
	} else if _, err := os.Stat(filepath.Join(dir, "node_modules", "standardwebhooks")); err != nil {
		missing = "the receiver's packages are not installed: run npm ci --prefix " + dir
	}
	if missing != "" {
		if v := os.Getenv("SWEEPER_REQUIRE_DB"); v == "1" || v == "true" {
			t.Fatalf("webhook receiver: %s", missing)
		}
		t.Skipf("webhook receiver: %s", missing)
	}
	tmp := t.TempDir()
	r := &Receiver{dir: dir, log: filepath.Join(tmp, "receiver.jsonl"), secrets: filepath.Join(tmp, "secrets.json"), paths: map[string]string{}}
	cmd := exec.Command("node", filepath.Join(dir, "receiver.mjs"))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "RECEIVER_LOG="+r.log, "RECEIVER_SECRETS_FILE="+r.secrets,
		fmt.Sprintf("RECEIVER_DELAY_MS=%d", delay.Milliseconds()))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the webhook receiver: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	select {
	case l := <-lines:
		port, ok := strings.CutPrefix(l, "listening ")
		if !ok {
			t.Fatalf("webhook receiver said %q", l)
		}
		r.URL = "http://127.0.0.1:" + port
	case <-time.After(30 * time.Second):
		t.Fatal("webhook receiver did not start within 30s")
	}
	return r
}

// SetSecret tells the receiver the secret that signs the deliveries to path
// (as "/hook/a").
func (r *Receiver) SetSecret(t testing.TB, path, secret string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.paths[path] = secret
	b, _ := json.Marshal(r.paths)
	tmp := r.secrets + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, r.secrets); err != nil {
		t.Fatal(err)
	}
}

// Lines returns what the receiver logged so far.
func (r *Receiver) Lines(t testing.TB) []Line {
	t.Helper()
	b, err := os.ReadFile(r.log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []Line
	for l := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		if l == "" {
			continue
		}
		var line Line
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			continue // a line being written
		}
		out = append(out, line)
	}
	return out
}

// Answered returns the answered lines.
func (r *Receiver) Answered(t testing.TB) []Line {
	t.Helper()
	var out []Line
	for _, l := range r.Lines(t) {
		if l.Phase == "answered" {
			out = append(out, l)
		}
	}
	return out
}
