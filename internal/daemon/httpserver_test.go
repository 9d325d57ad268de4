package daemon_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tasksweeper/sweeper/internal/daemon"
)

// TestHTTPServerLifecycle: bad input is an error, not a panic; Start
// listens and serves at once; a busy address is an error naming the key;
// Stop ends serving and is safe twice.
func TestHTTPServerLifecycle(t *testing.T) {
	t.Parallel()
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "OK") })
	if _, err := daemon.NewHTTPServer("127.0.0.1:0", nil, time.Second, nil); err == nil || !strings.Contains(err.Error(), "handler is nil") {
		t.Fatalf("nil handler: %v", err)
	}
	if _, err := daemon.NewHTTPServer("127.0.0.1:0", ok, 0, nil); err == nil || !strings.Contains(err.Error(), "grace") {
		t.Fatalf("zero grace: %v", err)
	}
	srv, err := daemon.NewHTTPServer("127.0.0.1:0", ok, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop() // never started
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + srv.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "OK" {
		t.Fatalf("body %q", body)
	}

	busy, err := daemon.NewHTTPServer(srv.Addr().String(), ok, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := busy.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "http.listen") {
		t.Fatalf("busy address: %v", err)
	}
	busy.Stop()

	srv.Stop()
	srv.Stop()
	if _, err := http.Get("http://" + srv.Addr().String() + "/"); err == nil {
		t.Fatal("still serving after Stop")
	}
	if _, open := <-srv.Failed(); open {
		t.Fatal("Failed not closed after Stop")
	}
}
