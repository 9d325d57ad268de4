// Package pgdocker is the Docker client of pgserver's docker kind, through
// dockertest. It is a package of its own so that only the programs that
// start containers link a Docker client: the test harness (internal/testdb)
// and the benchmarks import it; the sweeper binary does not.
//
//	srv, err := pgserver.Start(ctx, pgserver.Options{Docker: pgdocker.Client{}})
package pgdocker

import (
	"context"
	"fmt"

	"github.com/ory/dockertest/v3"
	dc "github.com/ory/dockertest/v3/docker"

	"github.com/tasksweeper/sweeper/internal/pgserver"
)

// Client implements pgserver.Docker with dockertest. Its zero value is ready
// to use: it connects to the engine that DOCKER_HOST (or the default socket)
// names on first use.
type Client struct {
	// Endpoint is the engine's address; empty means DOCKER_HOST or the
	// default socket.
	Endpoint string
}

var _ pgserver.Docker = Client{}

func (c Client) pool() (*dockertest.Pool, error) {
	p, err := dockertest.NewPool(c.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("no Docker client: %w", err)
	}
	return p, nil
}

// Ping returns an error when no Docker engine answers.
func (c Client) Ping(ctx context.Context) error {
	p, err := c.pool()
	if err != nil {
		return err
	}
	return p.Client.PingWithContext(ctx)
}

// Run starts a container as spec says.
func (c Client) Run(_ context.Context, spec pgserver.ContainerSpec) (pgserver.Container, error) {
	p, err := c.pool()
	if err != nil {
		return nil, err
	}
	opts := &dockertest.RunOptions{
		Repository: spec.Repository,
		Tag:        spec.Tag,
		Env:        spec.Env,
		Cmd:        spec.Cmd,
		Labels:     spec.Labels,
	}
	if spec.Port != "" {
		opts.ExposedPorts = []string{spec.Port}
	}
	res, err := p.RunWithOptions(opts, func(hc *dc.HostConfig) {
		hc.AutoRemove = spec.AutoRemove
		if spec.AutoRemove {
			hc.RestartPolicy = dc.NeverRestart()
		}
		if len(spec.Tmpfs) > 0 {
			hc.Tmpfs = map[string]string{}
			for _, path := range spec.Tmpfs {
				hc.Tmpfs[path] = ""
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return &container{pool: p, res: res, port: spec.Port}, nil
}

// container is a running dockertest resource.
type container struct {
	pool *dockertest.Pool
	res  *dockertest.Resource
	port string
}

func (c *container) ID() string                { return c.res.Container.ID }
func (c *container) HostPort() string          { return c.res.GetHostPort(c.port) }
func (c *container) Expire(seconds uint) error { return c.res.Expire(seconds) }
func (c *container) Remove() error             { return c.pool.Purge(c.res) }
