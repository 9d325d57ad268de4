package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tasksweeper/sweeper/internal/startstop"
)

// HTTPServer serves a handler on a TCP address, in the startstop shape:
// Start listens and returns, Stop shuts the server down (waiting up to its
// grace for requests in flight, then closing their connections) and returns
// when it has stopped.
type HTTPServer struct {
	addr    string
	handler http.Handler
	grace   time.Duration
	log     *zap.Logger

	lifecycle startstop.Base

	mu     sync.Mutex
	bound  net.Addr
	failed chan error
}

// NewHTTPServer returns a server of handler on addr (host:port; port 0 picks
// one). Stop waits at most grace for requests in flight. A nil handler or a
// grace that is not positive is an error; the address is checked by Start.
func NewHTTPServer(addr string, handler http.Handler, grace time.Duration, log *zap.Logger) (*HTTPServer, error) {
	switch {
	case handler == nil:
		return nil, errors.New("http server: handler is nil")
	case grace <= 0:
		return nil, fmt.Errorf("http server: shutdown grace must be positive, got %s", grace)
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &HTTPServer{addr: addr, handler: handler, grace: grace, log: log}, nil
}

// Start listens on the address and serves in the background. A listen error
// is returned, naming the http.listen key.
func (h *HTTPServer) Start(ctx context.Context) error {
	runCtx, err := h.lifecycle.StartInit(ctx)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", h.addr)
	if err != nil {
		h.lifecycle.StartFailed()
		return fmt.Errorf("http.listen: %w", err)
	}
	srv := &http.Server{Handler: h.handler, ReadHeaderTimeout: 5 * time.Second}
	failed := make(chan error, 1)
	h.mu.Lock()
	h.bound, h.failed = ln.Addr(), failed
	h.mu.Unlock()
	h.lifecycle.Go(func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			failed <- err
		}
		close(failed)
	})
	h.lifecycle.Go(func() {
		<-runCtx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), h.grace)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			h.log.Warn("http server: requests still running at shutdown; closing them", zap.Error(err))
			_ = srv.Close()
		}
	})
	h.log.Info("serving metrics and health", zap.String("address", ln.Addr().String()))
	return nil
}

// Stop shuts the server down and returns once it has stopped. Safe twice.
func (h *HTTPServer) Stop() { h.lifecycle.Stop() }

// Failed receives the error of a Serve that ended on its own, and is closed
// when the server stops.
func (h *HTTPServer) Failed() <-chan error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failed
}

// Addr is the address the server listens on since Start (nil before).
func (h *HTTPServer) Addr() net.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bound
}
