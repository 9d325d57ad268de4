// Command mkdeb builds the sweeper .deb from deploy/nfpm.yaml with the nfpm
// library (no nfpm binary needed):
//
//	go run ./internal/tools/mkdeb -arch amd64 -version 1.2.3 \
//	    -binary dist/sweeper-linux-amd64 -out dist/
//
// It prints the package's path. The config's ${ARCH}, ${VERSION} and
// ${SWEEPER_BINARY} come from the flags; source paths in it are relative to
// -root (the repository root). SOURCE_DATE_EPOCH, when set, fixes the file
// times, as nfpm does.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("mkdeb", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.Config, "config", "deploy/nfpm.yaml", "nfpm config `file`, relative to -root")
	fs.StringVar(&o.Root, "root", ".", "repository root `dir`: source paths in the config are relative to it")
	fs.StringVar(&o.Arch, "arch", "amd64", "Debian `architecture` (amd64, arm64)")
	fs.StringVar(&o.Version, "version", "", "package `version`: a release (v1.2.3, 1.2.3-rc.1) or `git describe` output")
	fs.StringVar(&o.Binary, "binary", "", "static sweeper `binary` for -arch")
	fs.StringVar(&o.Out, "out", "dist", "output `dir` (or file ending in .deb)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 || o.Version == "" || o.Binary == "" {
		fmt.Fprintln(os.Stderr, "mkdeb: -version and -binary are required")
		fs.Usage()
		return 2
	}
	path, err := buildDeb(o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mkdeb: %v\n", err)
		return 1
	}
	fmt.Println(path)
	return 0
}

// options say which package to build.
type options struct {
	Config, Root, Arch, Version, Binary, Out string
}

// buildDeb writes the .deb and returns its path.
func buildDeb(o options) (string, error) {
	switch o.Arch {
	case "amd64", "arm64":
	default:
		return "", fmt.Errorf("unsupported -arch %q (amd64 or arm64)", o.Arch)
	}
	bin, err := filepath.Abs(o.Binary)
	if err != nil {
		return "", err
	}
	if st, err := os.Stat(bin); err != nil {
		return "", err
	} else if st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%s is not executable", bin)
	}
	out, err := filepath.Abs(o.Out)
	if err != nil {
		return "", err
	}
	root, err := filepath.Abs(o.Root)
	if err != nil {
		return "", err
	}
	vars := map[string]string{
		"ARCH":           o.Arch,
		"VERSION":        debVersion(o.Version),
		"SWEEPER_BINARY": bin,
	}
	cfg, err := nfpm.ParseFileWithEnvMapping(filepath.Join(root, o.Config), func(k string) string {
		if v, ok := vars[k]; ok {
			return v
		}
		return os.Getenv(k)
	})
	if err != nil {
		return "", fmt.Errorf("%s: %w", o.Config, err)
	}
	// Source paths in the config are relative to the repository root, not
	// to the working directory nfpm would use.
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(root, p)
	}
	for _, c := range cfg.Contents {
		c.Source = abs(c.Source)
	}
	s := &cfg.Scripts
	s.PreInstall, s.PostInstall, s.PreRemove, s.PostRemove = abs(s.PreInstall), abs(s.PostInstall), abs(s.PreRemove), abs(s.PostRemove)
	if err := cfg.Validate(); err != nil {
		return "", fmt.Errorf("%s: %w", o.Config, err)
	}
	info, err := cfg.Get("deb")
	if err != nil {
		return "", err
	}
	info = nfpm.WithDefaults(info)
	pkg, err := nfpm.Get("deb")
	if err != nil {
		return "", err
	}
	target := out
	if !strings.HasSuffix(out, ".deb") {
		if err := os.MkdirAll(out, 0o755); err != nil {
			return "", err
		}
		target = filepath.Join(out, pkg.ConventionalFileName(info))
	}
	info.Target = target
	f, err := os.Create(target)
	if err != nil {
		return "", err
	}
	if err := pkg.Package(info, f); err != nil {
		f.Close()
		os.Remove(target)
		return "", fmt.Errorf("packaging: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", errors.Join(err, os.Remove(target))
	}
	return target, nil
}

// debVersion turns a release or `git describe` version into one dpkg
// accepts: a leading v is dropped, a version that does not start with a digit
// (a bare commit such as ad87a29-dirty) becomes 0.0.0~git.<it>, which sorts
// before any release, and characters dpkg refuses become dots.
func debVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	if v == "" || v[0] < '0' || v[0] > '9' {
		v = "0.0.0~git." + v
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune(".+~-", r):
			return r
		}
		return '.'
	}, v)
}
