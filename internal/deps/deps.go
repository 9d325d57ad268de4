//go:build tools

package deps

import (
	_ "github.com/golang-migrate/migrate/v4"
	_ "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	_ "github.com/golang-migrate/migrate/v4/source/iofs"
	_ "github.com/google/go-containerregistry/pkg/v1/mutate"
	_ "github.com/goreleaser/nfpm/v2"
	_ "github.com/jackc/pgerrcode"
	_ "github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "github.com/ory/dockertest/v3"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/robfig/cron/v3"
	_ "go.uber.org/goleak"
	_ "go.uber.org/zap"
	_ "gonum.org/v1/plot"
	_ "gopkg.in/yaml.v3"
	_ "k8s.io/api/apps/v1"
	_ "pgregory.net/rapid"
	_ "sigs.k8s.io/yaml"
)
