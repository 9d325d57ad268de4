package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// buildHello compiles testdata/hello as a static binary for goarch, the way
// `make dist` builds sweeper.
func buildHello(t *testing.T, goarch string) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not on PATH")
	}
	out := filepath.Join(t.TempDir(), "hello-"+goarch)
	cmd := exec.Command(gobin, "build", "-trimpath",
		"-ldflags", "-s -w -X main.Version=1.2.3",
		"-o", out, "./testdata/hello")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

func TestBuildAndInspect(t *testing.T) {
	bin := buildHello(t, "amd64")
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	img, err := buildImage(buildOptions{Binary: bin, Arch: "amd64", Version: "1.2.3", Revision: "abc1234", Created: created, CACerts: writeFakeCA(t)})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "image.tar")
	if err := writeTarball(path, "sweeper:1.2.3", img); err != nil {
		t.Fatal(err)
	}

	// Digests, diff IDs, sizes and the manifest agree (what a registry or
	// `docker load` would check).
	back, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkDigests(t, back)

	r, err := readTarball(path)
	if err != nil {
		t.Fatal(err)
	}
	c := r.Config
	checks := []struct {
		what      string
		got, want any
	}{
		{"tags", r.Tags, []string{"sweeper:1.2.3"}},
		{"platform", r.Platform, "linux/amd64"},
		{"entrypoint", c.Entrypoint, []string{"/sweeper"}},
		{"cmd", len(c.Cmd), 0},
		{"user", c.User, "65532:65532"},
		{"exposed 9090", len(c.ExposedPorts), 1},
		{"layers", r.Layers, 1},
		{"entrypoint present", r.EntrypointPresent, true},
		{"entrypoint mode", r.EntrypointMode, int64(0o755)},
		{"version label", c.Labels["org.opencontainers.image.version"], "1.2.3"},
		{"revision label", c.Labels["org.opencontainers.image.revision"], "abc1234"},
		{"created label", c.Labels["org.opencontainers.image.created"], "2026-01-02T03:04:05Z"},
		{"source label", c.Labels["org.opencontainers.image.source"], sourceURL},
	}
	for _, ch := range checks {
		if !equal(ch.got, ch.want) {
			t.Errorf("%s = %v, want %v", ch.what, ch.got, ch.want)
		}
	}
	if _, ok := c.ExposedPorts["9090/tcp"]; !ok {
		t.Errorf("9090/tcp not exposed: %v", c.ExposedPorts)
	}
	st, _ := os.Stat(bin)
	if r.Compressed <= 0 || r.Compressed >= r.Uncompressed || r.Uncompressed < st.Size() {
		t.Errorf("sizes: compressed %d, uncompressed %d, binary %d", r.Compressed, r.Uncompressed, st.Size())
	}
	for _, want := range []string{"/etc/passwd", "/etc/group", defaultCACerts, "/sweeper"} {
		if !slices.ContainsFunc(r.Files, func(f string) bool { return strings.HasSuffix(f, " "+want) }) {
			t.Errorf("layer lacks %s: %v", want, r.Files)
		}
	}

	// The /sweeper in the image is the binary, byte for byte, and it runs.
	got := extractFile(t, path, "sweeper")
	want, _ := os.ReadFile(bin)
	if !bytes.Equal(got, want) {
		t.Fatalf("/sweeper differs from the binary (%d vs %d bytes)", len(got), len(want))
	}
	if runtime.GOOS == "linux" && runtime.GOARCH == "amd64" {
		x := filepath.Join(t.TempDir(), "sweeper")
		if err := os.WriteFile(x, got, 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(x).Output()
		if err != nil || !strings.HasPrefix(string(out), "hello 1.2.3") {
			t.Errorf("extracted binary: %q, %v", out, err)
		}
	}
	passwd := string(extractFile(t, path, "etc/passwd"))
	if !strings.Contains(passwd, "nonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd has no nonroot user 65532:\n%s", passwd)
	}

	var buf bytes.Buffer
	if err := inspectTarball(&buf, path); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`entrypoint:   ["/sweeper"]`, "user:         65532:65532", "exposed:      9090/tcp", "layers:       1", "org.opencontainers.image.version=1.2.3", "-rwxr-xr-x 0/0"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("inspect output lacks %q:\n%s", want, buf.String())
		}
	}
}

// TestReproducible: the same inputs give the same image digest.
func TestReproducible(t *testing.T) {
	bin := buildHello(t, "amd64")
	o := buildOptions{Binary: bin, Arch: "amd64", Version: "1", Revision: "r", Created: time.Unix(0, 0).UTC()}
	a, err := buildImage(o)
	if err != nil {
		t.Fatal(err)
	}
	b, err := buildImage(o)
	if err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Errorf("digests differ: %s vs %s", da, db)
	}
}

func TestArm64(t *testing.T) {
	bin := buildHello(t, "arm64")
	if _, err := buildImage(buildOptions{Binary: bin, Arch: "amd64"}); err == nil {
		t.Error("an arm64 binary was accepted for an amd64 image")
	}
	img, err := buildImage(buildOptions{Binary: bin, Arch: "arm64"})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Architecture != "arm64" || cf.OS != "linux" {
		t.Errorf("platform = %s/%s", cf.OS, cf.Architecture)
	}
}

func TestRefusesBadBinaries(t *testing.T) {
	notELF := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := buildImage(buildOptions{Binary: notELF, Arch: "amd64"}); err == nil {
		t.Error("a shell script was accepted")
	}
	if runtime.GOARCH == "amd64" {
		// /bin/sh on a Debian host is dynamically linked: no loader on an empty base.
		if _, err := buildImage(buildOptions{Binary: "/bin/sh", Arch: "amd64"}); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
			t.Errorf("dynamically linked /bin/sh: err = %v", err)
		}
	}
	if _, err := buildImage(buildOptions{Binary: notELF, Arch: "386"}); err == nil {
		t.Error("architecture 386 was accepted")
	}
}

func TestRunFlags(t *testing.T) {
	if code := run([]string{"-binary", "x"}); code != 2 {
		t.Errorf("missing -out: exit %d, want 2", code)
	}
	if code := run([]string{"-inspect", filepath.Join(t.TempDir(), "missing.tar")}); code != 1 {
		t.Errorf("missing tarball: exit %d, want 1", code)
	}
	bin := buildHello(t, "amd64")
	out := filepath.Join(t.TempDir(), "dist", "img.tar")
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	if code := run([]string{"-binary", bin, "-out", out, "-tag", "sweeper:t", "-ca-certs", ""}); code != 0 {
		t.Fatalf("build: exit %d", code)
	}
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	if got := cf.Created.UTC(); !got.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("created = %v, want SOURCE_DATE_EPOCH", got)
	}
	if slices.ContainsFunc(cf.Config.Env, func(e string) bool { return strings.HasPrefix(e, "SSL_CERT_FILE=") }) {
		t.Errorf("SSL_CERT_FILE set without a CA bundle: %v", cf.Config.Env)
	}
}

func writeFakeCA(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(p, []byte("-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// extractFile returns the content of name (no leading slash) in the image's
// flattened filesystem.
func extractFile(t *testing.T, tarPath, name string) []byte {
	t.Helper()
	img, err := tarball.ImageFromPath(tarPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("%s not in the image", name)
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

func equal(a, b any) bool {
	as, aok := a.([]string)
	bs, bok := b.([]string)
	if aok && bok {
		return slices.Equal(as, bs)
	}
	return a == b
}

// checkDigests recomputes every digest the manifest and config claim.
func checkDigests(t *testing.T, img v1.Image) {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if h, _, _ := v1.SHA256(bytes.NewReader(rawCfg)); h != m.Config.Digest {
		t.Errorf("config digest %s, manifest says %s", h, m.Config.Digest)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != len(m.Layers) || len(layers) != len(cf.RootFS.DiffIDs) {
		t.Fatalf("%d layers, manifest %d, diff_ids %d", len(layers), len(m.Layers), len(cf.RootFS.DiffIDs))
	}
	for i, l := range layers {
		for _, c := range []struct {
			open func() (io.ReadCloser, error)
			want v1.Hash
			size int64
		}{
			{l.Compressed, m.Layers[i].Digest, m.Layers[i].Size},
			{l.Uncompressed, cf.RootFS.DiffIDs[i], -1},
		} {
			rc, err := c.open()
			if err != nil {
				t.Fatal(err)
			}
			h, n, err := v1.SHA256(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			if h != c.want || (c.size >= 0 && n != c.size) {
				t.Errorf("layer %d: sha256 %s (%d B), want %s (%d B)", i, h, n, c.want, c.size)
			}
		}
	}
}

// TestDockerfileAgrees keeps the Dockerfile (for users with Docker) and this
// tool describing the same image.
func TestDockerfileAgrees(t *testing.T) {
	data, err := os.ReadFile("../../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(data)
	for _, want := range []string{
		`ENTRYPOINT ["` + entrypoint + `"]`,
		"USER " + nonroot,
		"EXPOSE " + strings.TrimSuffix(metricsPort, "/tcp"),
		"CGO_ENABLED=0",
		"-trimpath",
		"-X github.com/tasksweeper/sweeper/internal/version.Version=${VERSION}",
		"-X github.com/tasksweeper/sweeper/internal/version.Commit=${COMMIT}",
		"./cmd/sweeper",
		"FROM gcr.io/distroless/static-debian12:nonroot",
		"org.opencontainers.image.version=\"${VERSION}\"",
		"org.opencontainers.image.revision=\"${COMMIT}\"",
		"org.opencontainers.image.source=\"" + sourceURL + "\"",
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}
