// Command imagebuild builds the sweeper container image without a Docker
// daemon: the static binary goes onto an empty base (like FROM scratch) as
// /sweeper, with /etc/passwd and /etc/group naming the nonroot user 65532 and
// the CA bundle for TLS to PostgreSQL, and the image is written as a
// docker-load compatible tarball. The same tool reads a tarball back and
// prints what a user would check: entrypoint, user, labels, layers, sizes.
//
// It is a command of the tools module; `make image` and `make dist` build it
// as bin/imagebuild and run it from the repository root. Build:
//
//	bin/imagebuild -binary dist/sweeper-linux-amd64 \
//	    -arch amd64 -tag sweeper:1.2.3 -version 1.2.3 -revision abc1234 \
//	    -out dist/sweeper-image-amd64.tar
//
// Inspect (from tools/):
//
//	go run ./cmd/imagebuild -inspect ../dist/sweeper-image-amd64.tar
//
// Load it where there is an engine with `docker load -i FILE` or
// `podman load -i FILE`; push it with `crane push FILE REF`.
// Set SOURCE_DATE_EPOCH for a reproducible image (default: the Unix epoch).
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("imagebuild", flag.ContinueOnError)
	var (
		opts    buildOptions
		out     = fs.String("out", "", "write the image tarball to this `file`")
		tag     = fs.String("tag", "sweeper:dev", "image `reference` recorded in the tarball")
		inspect = fs.String("inspect", "", "print the contents of this image tarball `file` and exit")
	)
	fs.StringVar(&opts.Binary, "binary", "", "static linux `binary` to put at /sweeper")
	fs.StringVar(&opts.Arch, "arch", "amd64", "image `architecture` (amd64 or arm64); must match the binary")
	fs.StringVar(&opts.Version, "version", "", "org.opencontainers.image.version label (default \"dev\")")
	fs.StringVar(&opts.Revision, "revision", "", "org.opencontainers.image.revision label (default: the binary's VCS stamp)")
	fs.StringVar(&opts.CACerts, "ca-certs", defaultCACerts, "CA bundle `file` to install as /etc/ssl/certs/ca-certificates.crt (\"\" for none)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "imagebuild: unexpected arguments %q\n", fs.Args())
		return 2
	}

	if *inspect != "" {
		if err := inspectTarball(os.Stdout, *inspect); err != nil {
			fmt.Fprintf(os.Stderr, "imagebuild: %v\n", err)
			return 1
		}
		return 0
	}

	if opts.Binary == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "imagebuild: -binary and -out are required (or -inspect FILE)")
		fs.Usage()
		return 2
	}
	created, err := sourceDateEpoch()
	if err != nil {
		fmt.Fprintf(os.Stderr, "imagebuild: %v\n", err)
		return 2
	}
	opts.Created = created
	img, err := buildImage(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "imagebuild: %v\n", err)
		return 1
	}
	if err := writeTarball(*out, *tag, img); err != nil {
		fmt.Fprintf(os.Stderr, "imagebuild: %v\n", err)
		return 1
	}
	if err := inspectTarball(os.Stdout, *out); err != nil {
		fmt.Fprintf(os.Stderr, "imagebuild: reading back %s: %v\n", *out, err)
		return 1
	}
	return 0
}

// sourceDateEpoch returns the image creation time: $SOURCE_DATE_EPOCH, or
// the Unix epoch so that the same inputs always give the same image digest.
func sourceDateEpoch() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", s, err)
	}
	return time.Unix(n, 0).UTC(), nil
}
