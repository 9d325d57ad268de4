package pgserver

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// dockerExpire is how long a container may outlive a Go process that died
// where no docker CLI lets the watchdog remove it.
const dockerExpire = 2 * 60 * 60

// Docker is the Docker client of the docker kind. This package holds none:
// package pgdocker implements Docker with dockertest, and only programs that
// import it (the test harness, the benchmarks) can start containers. The
// sweeper binary, which links pgserver for `sweeper dev`, links no Docker
// client.
type Docker interface {
	// Ping returns an error when no Docker engine answers.
	Ping(ctx context.Context) error
	// Run starts a container as spec says.
	Run(ctx context.Context, spec ContainerSpec) (Container, error)
}

// ContainerSpec is the container the docker kind asks Docker.Run for.
type ContainerSpec struct {
	// Repository and Tag name the image, e.g. "postgres" and "15".
	Repository, Tag string
	// Env holds the container's NAME=value environment.
	Env []string
	// Cmd is the command run in the container.
	Cmd []string
	// Labels are set on the container.
	Labels map[string]string
	// Tmpfs lists paths in the container mounted as tmpfs.
	Tmpfs []string
	// Port is the container port published on the host, e.g. "5432/tcp".
	Port string
	// AutoRemove removes the container when it stops; it is never restarted.
	AutoRemove bool
}

// Container is a container started by Docker.Run.
type Container interface {
	// ID is the container's id.
	ID() string
	// HostPort is the host:port where ContainerSpec.Port is published.
	HostPort() string
	// Expire makes the engine remove the container after seconds, in case
	// nothing else does.
	Expire(seconds uint) error
	// Remove stops and removes the container and its volumes.
	Remove() error
}

// dockerServer is a postgres container.
type dockerServer struct {
	c        Container
	watchdog *watchdog // nil when the docker CLI is missing
}

func startDocker(ctx context.Context, opts Options) (*Server, error) {
	if opts.Docker == nil {
		return nil, unavailable("no Docker client in this program (Options.Docker is nil; the test harness sets it with package pgdocker)")
	}
	pingCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := opts.Docker.Ping(pingCtx); err != nil {
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
	c, err := opts.Docker.Run(ctx, ContainerSpec{
		Repository: repo,
		Tag:        tag,
		Env:        []string{"POSTGRES_HOST_AUTH_METHOD=trust", "POSTGRES_INITDB_ARGS=--no-sync"},
		Cmd:        cmd,
		Labels:     map[string]string{"org.tasksweeper.pgserver": "throwaway"},
		Tmpfs:      []string{"/var/lib/postgresql/data"},
		Port:       "5432/tcp",
		AutoRemove: true,
	})
	if err != nil {
		return nil, fmt.Errorf("running container %s: %w", image, err)
	}
	d := &dockerServer{c: c}
	if _, err := exec.LookPath("docker"); err == nil {
		d.watchdog, err = startWatchdog("docker", c.ID())
		if err != nil {
			return nil, errors.Join(err, d.close())
		}
	} else if err := c.Expire(dockerExpire); err != nil {
		return nil, errors.Join(fmt.Errorf("setting container expiry: %w", err), d.close())
	}

	url := "postgres://postgres@" + c.HostPort() + "/postgres?sslmode=disable"
	err = waitReady(ctx, url, nil, func(err error) error {
		return fmt.Errorf("%w; container %s", err, c.ID())
	})
	if err != nil {
		return nil, errors.Join(err, d.close())
	}
	return &Server{URL: url, Kind: KindDocker, b: d}, nil
}

func (d *dockerServer) close() error {
	err := d.c.Remove()
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
