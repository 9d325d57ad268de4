package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tasksweeper/sweeper/api"
	"github.com/tasksweeper/sweeper/console"
	"github.com/tasksweeper/sweeper/internal/config"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/webhook"
)

// APIServer is the ledger's HTTP API on its own listener (api.listen), and
// the console next to it: the API owns /v1/, the console every other path.
type APIServer struct {
	srv     *http.Server
	h       *api.Handler
	console *console.Handler
	ln      net.Listener
	errc    chan error
	once    sync.Once
	err     error
	// closeListen closes the pool of database.listen_url, if any.
	closeListen func()
}

// StartAPI serves the API and the console as cfg.API says, and returns once
// it listens. It returns nil, nil when api.listen is empty. Configuration
// problems are *config.Error naming the key. The console's overview is not
// told of sweeper runs; the daemon uses StartAPIWithRuns.
func StartAPI(ctx context.Context, cfg config.Config, pool *pgxpool.Pool, reg prometheus.Registerer, log *zap.Logger) (*APIServer, error) {
	return StartAPIWithRuns(ctx, cfg, pool, reg, log, nil)
}

// StartAPIWithRuns is StartAPI whose console shows the sweeper's runs as
// runs reports them (nil: not known).
func StartAPIWithRuns(ctx context.Context, cfg config.Config, pool *pgxpool.Pool, reg prometheus.Registerer, log *zap.Logger, runs func() console.Runs) (*APIServer, error) {
	return startAPI(ctx, cfg, pool, nil, reg, log, runs)
}

// startAPI is StartAPIWithRuns whose lists and summaries run on reads (a
// *ReadRouter) when it is not nil.
func startAPI(ctx context.Context, cfg config.Config, pool *pgxpool.Pool, reads ledger.DB, reg prometheus.Registerer, log *zap.Logger, runs func() console.Runs) (*APIServer, error) {
	c := cfg.API
	if c.Listen == "" {
		return nil, nil
	}
	tlsCfg, err := apiTLS(c)
	if err != nil {
		return nil, err
	}
	if c.WriteTimeout <= c.MaxWait {
		return nil, &config.Error{Key: "api.write_timeout", Value: c.WriteTimeout.String(),
			Reason: fmt.Sprintf("must be longer than api.max_wait (%s), or long polls are cut off", c.MaxWait)}
	}
	opts := api.Options{
		Pool: pool, Reads: reads, Logger: log.Named("api"), Registerer: reg,
		MaxBodyBytes: int64(c.MaxBodyBytes), MaxBatch: c.MaxBatch,
		RateLimit: float64(c.RateLimit), RateBurst: c.RateBurst, MaxWait: c.MaxWait,
		WebhooksAllowHTTP: cfg.Webhooks.AllowHTTP, WebhooksAllowPrivateNetworks: cfg.Webhooks.AllowPrivateNetworks,
	}
	// The feed's LISTEN needs a session: a transaction pooler cannot give
	// one, so it gets database.listen_url, or long polls poll.
	listenPool, err := openListenPool(ctx, cfg)
	if err != nil {
		return nil, err
	}
	opts.ListenPool = listenPool
	if listenPool == nil && cfg.Database.TransactionPooler() {
		opts.FeedPoll = config.FeedPollInterval
		log.Warn("database.pooler is transaction and database.listen_url is not set: "+
			"feed long polls and the console's live page re-read the feed every interval instead of being woken by LISTEN; "+
			"set database.listen_url to a direct connection to wake them at once",
			zap.Duration("interval", config.FeedPollInterval))
	}
	closeListen := func() {
		if listenPool != nil {
			listenPool.Close()
		}
	}
	h, err := api.NewHandler(opts)
	if err != nil {
		closeListen()
		return nil, err
	}
	// The console's live page waits on the API's Waiter: the same rule for
	// its LISTEN (database.listen_url, else polling behind a transaction
	// pooler), one connection for both.
	ch, err := console.NewHandler(console.Config{
		Pool: pool, Reads: reads, HeartbeatTimeout: cfg.Sweep.HeartbeatTimeout, Runs: runs, Logger: log.Named("console"),
		Waiter: h.Waiter(),
		WebhookTester: webhook.NewTester(pool, webhook.TesterConfig{Timeout: cfg.Webhooks.Timeout,
			AllowHTTP: cfg.Webhooks.AllowHTTP, AllowPrivateNetworks: cfg.Webhooks.AllowPrivateNetworks}),
	})
	if err != nil {
		closeListen()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", h)
	mux.Handle("/", ch)
	if err := h.Start(ctx); err != nil {
		closeListen()
		return nil, fmt.Errorf("api: %w", err)
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		h.Stop()
		ch.Close()
		closeListen()
		return nil, fmt.Errorf("api.listen: %w", err)
	}
	s := &APIServer{
		h: h, console: ch, ln: ln, errc: make(chan error, 1), closeListen: closeListen,
		srv: &http.Server{
			Handler:           mux,
			TLSConfig:         tlsCfg,
			ReadHeaderTimeout: c.ReadHeaderTimeout,
			ReadTimeout:       c.ReadTimeout,
			WriteTimeout:      c.WriteTimeout,
			IdleTimeout:       c.IdleTimeout,
			MaxHeaderBytes:    c.MaxHeaderBytes,
			// net/http's own messages (TLS handshakes, bad requests) never
			// carry headers; keep them out of info logs.
			ErrorLog: newDebugStdLog(log.Named("api_http")),
		},
	}
	go func() {
		var err error
		if tlsCfg != nil {
			err = s.srv.ServeTLS(ln, "", "")
		} else {
			err = s.srv.Serve(ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			s.errc <- err
		}
	}()
	log.Info("serving the ledger API", zap.String("api_address", ln.Addr().String()), zap.Bool("tls", tlsCfg != nil),
		zap.Bool("client_certificates", tlsCfg != nil && tlsCfg.ClientCAs != nil))
	return s, nil
}

// newDebugStdLog is a *log.Logger for net/http that writes at debug level.
func newDebugStdLog(l *zap.Logger) *stdlog.Logger {
	sl, err := zap.NewStdLogAt(l, zap.DebugLevel)
	if err != nil {
		return zap.NewStdLog(l)
	}
	return sl
}

// apiTLS builds the TLS configuration of the API, or nil without TLS.
func apiTLS(c config.APIConfig) (*tls.Config, error) {
	switch {
	case c.TLSCertFile == "" && c.TLSKeyFile == "":
		if c.ClientCAFile != "" {
			return nil, &config.Error{Key: "api.client_ca_file", Value: c.ClientCAFile,
				Reason: "needs TLS: set api.tls_cert_file and api.tls_key_file too"}
		}
		return nil, nil
	case c.TLSCertFile == "":
		return nil, &config.Error{Key: "api.tls_cert_file", Reason: "is empty while api.tls_key_file is set; set both or neither"}
	case c.TLSKeyFile == "":
		return nil, &config.Error{Key: "api.tls_key_file", Reason: "is empty while api.tls_cert_file is set; set both or neither"}
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
	if err != nil {
		return nil, &config.Error{Key: "api.tls_cert_file", Value: c.TLSCertFile,
			Reason: "with api.tls_key_file is not a usable PEM certificate and key: " + err.Error()}
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.ClientCAFile != "" {
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return nil, &config.Error{Key: "api.client_ca_file", Value: c.ClientCAFile, Reason: "cannot be read: " + err.Error()}
		}
		cas := x509.NewCertPool()
		if !cas.AppendCertsFromPEM(pem) {
			return nil, &config.Error{Key: "api.client_ca_file", Value: c.ClientCAFile, Reason: "holds no PEM certificate"}
		}
		tc.ClientCAs = cas
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// Addr is the address the API listens on.
func (s *APIServer) Addr() string { return s.ln.Addr().String() }

// Errors reports a failure of the server; nil (never ready) on a nil server.
func (s *APIServer) Errors() <-chan error {
	if s == nil {
		return nil
	}
	return s.errc
}

// Shutdown ends waiting long polls, stops accepting requests and waits for
// those running, until ctx ends. A nil server, or a second call, does
// nothing.
func (s *APIServer) Shutdown(ctx context.Context) error {
	if s == nil {
		return nil
	}
	s.once.Do(func() {
		s.h.Stop()
		defer s.closeListen()
		s.console.Close() // ends the live streams, which Shutdown would wait for
		if err := s.srv.Shutdown(ctx); err != nil {
			s.err = fmt.Errorf("stopping the api server: %w", err)
		}
	})
	return s.err
}

// apiService runs the APIServer as one of the daemon's services (the
// startstop shape): Start listens, Stop shuts it down within the grace.
type apiService struct {
	cfg  config.Config
	pool *pgxpool.Pool
	reg  prometheus.Registerer
	log  *zap.Logger
	runs func() console.Runs // the sweeper's runs, for the console's overview
	// reads, when not nil, runs the API's and console's lists and summaries
	// (the replica router of database.read_url).
	reads ledger.DB

	srv    *APIServer
	failed chan error
	done   chan struct{}
	fwd    sync.WaitGroup
}

// Start serves the API; configuration and listen errors are returned.
func (a *apiService) Start(ctx context.Context) error {
	s, err := startAPI(ctx, a.cfg, a.pool, a.reads, a.reg, a.log, a.runs)
	if err != nil {
		return err
	}
	a.srv, a.failed, a.done = s, make(chan error, 1), make(chan struct{})
	a.fwd.Go(func() {
		defer close(a.failed)
		select {
		case err := <-s.Errors():
			a.failed <- err
		case <-a.done:
		}
	})
	return nil
}

// Stop ends long polls and waits for running requests up to the shutdown
// grace. Safe on a service that never started.
func (a *apiService) Stop() {
	if a.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownGrace)
	defer cancel()
	if err := a.srv.Shutdown(ctx); err != nil {
		a.log.Warn("api server: requests still running at shutdown; closing them", zap.Error(err))
		_ = a.srv.srv.Close()
	}
	select {
	case <-a.done:
	default:
		close(a.done)
	}
	a.fwd.Wait()
}

// Failed receives the error of a server that stopped serving on its own.
func (a *apiService) Failed() <-chan error { return a.failed }
