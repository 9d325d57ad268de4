package pgserver

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/ory/dockertest/v3"
	dc "github.com/ory/dockertest/v3/docker"
)

// dockerExpire is how long a container may outlive a Go process that died
// where no docker CLI lets the watchdog remove it.
const dockerExpire = 2 * 60 * 60

// dockerServer is a postgres container.
type dockerServer struct {
	pool     *dockertest.Pool
	res      *dockertest.Resource
	watchdog *watchdog // nil when the docker CLI is missing
}

func startDocker(ctx context.Context, opts Options) (*Server, error) {
	pool, err := dockertest.NewPool("")
	if err != nil {
		return nil, unavailable("no Docker client: %v", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := pool.Client.PingWithContext(pingCtx); err != nil {
		return nil, unavailable("no Docker engine answers: %v", err)
	}

	image := opts.DockerImage
	if image == "" {
		image = DockerImageDefault
	}
	repo, tag, _ := strings.Cut(image, ":")
	cmd := []string{"postgres"}
	for _, s := range opts.settings(nil) {
		cmd = append(cmd, "-c", s)
	}
	opts.logf("starting container %s", image)
	res, err := pool.RunWithOptions(&dockertest.RunOptions{
		Repository: repo,
		Tag:        tag,
		Env:        []string{"POSTGRES_HOST_AUTH_METHOD=trust", "POSTGRES_INITDB_ARGS=--no-sync"},
		Cmd:        cmd,
		Labels:     map[string]string{"org.tasksweeper.pgserver": "throwaway"},
	}, func(hc *dc.HostConfig) {
		hc.AutoRemove = true
		hc.RestartPolicy = dc.NeverRestart()
		hc.Tmpfs = map[string]string{"/var/lib/postgresql/data": ""}
	})
	if err != nil {
		return nil, fmt.Errorf("running container %s: %w", image, err)
	}
	d := &dockerServer{pool: pool, res: res}
	if _, err := exec.LookPath("docker"); err == nil {
		d.watchdog, err = startWatchdog("docker", res.Container.ID)
		if err != nil {
			return nil, errors.Join(err, d.close())
		}
	} else if err := res.Expire(dockerExpire); err != nil {
		return nil, errors.Join(fmt.Errorf("setting container expiry: %w", err), d.close())
	}

	url := "postgres://postgres@" + res.GetHostPort("5432/tcp") + "/postgres?sslmode=disable"
	err = waitReady(ctx, url, nil, func(err error) error {
		return fmt.Errorf("%w; container %s", err, res.Container.ID)
	})
	if err != nil {
		return nil, errors.Join(err, d.close())
	}
	return &Server{URL: url, Kind: KindDocker, b: d}, nil
}

func (d *dockerServer) close() error {
	err := d.pool.Purge(d.res)
	if d.watchdog == nil {
		return err
	}
	if err != nil {
		return errors.Join(fmt.Errorf("removing container: %w", err), d.watchdog.fire())
	}
	return d.watchdog.disarm()
}

func (d *dockerServer) kill() error                   { return ErrNotLocal }
func (d *dockerServer) restart(context.Context) error { return ErrNotLocal }
