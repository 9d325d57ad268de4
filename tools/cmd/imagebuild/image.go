package main

import (
	"archive/tar"
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const (
	// entrypoint is where the binary lives in the image.
	entrypoint = "/sweeper"
	// nonroot is the user and group the image runs as (distroless's nonroot).
	nonroot = "65532:65532"
	// metricsPort is the daemon's default http.listen port.
	metricsPort = "9090/tcp"
	// sourceURL is the project's repository, for the OCI source label.
	sourceURL = "https://github.com/tasksweeper/sweeper"
	// defaultCACerts is Debian's CA bundle, copied into the image when present.
	defaultCACerts = "/etc/ssl/certs/ca-certificates.crt"
)

// elfMachines maps an image architecture to the ELF machine its binary must have.
var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64,
	"arm64": elf.EM_AARCH64,
}

// buildOptions says what goes into the image.
type buildOptions struct {
	Binary   string    // path of the static linux binary
	Arch     string    // amd64 or arm64
	Version  string    // OCI version label; default "dev"
	Revision string    // OCI revision label; default the binary's VCS stamp, else "unknown"
	CACerts  string    // CA bundle to install; "" for none
	Created  time.Time // creation time of the image and its files
}

// checkStaticBinary refuses a file that is not a statically linked ELF
// executable for arch: on an empty base there is no dynamic loader or libc.
func checkStaticBinary(path, arch string) error {
	want, ok := elfMachines[arch]
	if !ok {
		return fmt.Errorf("unsupported architecture %q (want amd64 or arm64)", arch)
	}
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s is not an ELF binary: %w", path, err)
	}
	defer f.Close()
	if f.Machine != want {
		return fmt.Errorf("%s is built for %v, not %s (%v)", path, f.Machine, arch, want)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (has an ELF interpreter); build it with CGO_ENABLED=0", path)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		return fmt.Errorf("%s needs shared libraries %v; build it with CGO_ENABLED=0", path, libs)
	}
	return nil
}

// revisionFromBinary returns the VCS revision Go stamped into the binary
// (go build inside a git checkout), or "" (-buildvcs=false, or no checkout).
// The -ldflags are not recorded in -trimpath builds, so the version itself
// must be passed with -version.
func revisionFromBinary(path string) string {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return ""
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" && dirty {
		rev += "-dirty"
	}
	return rev
}

// tarFile is one entry of the image's single layer.
type tarFile struct {
	name string
	mode int64
	data []byte
}

// layerTar renders files (and their parent directories) as a tar archive with
// root ownership and fixed times, so equal inputs give an equal layer digest.
func layerTar(files []tarFile, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, f := range files {
		// Parent directories first, each once.
		var parents []string
		for d := filepath.Dir(f.name); d != "/" && d != "."; d = filepath.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{
				Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755,
				ModTime: mtime, Format: tar.FormatPAX,
			}); err != nil {
				return nil, err
			}
		}
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg, Name: strings.TrimPrefix(f.name, "/"), Mode: f.mode,
			Size: int64(len(f.data)), ModTime: mtime, Format: tar.FormatPAX,
		}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// buildImage puts the binary on an empty base and sets the runtime config:
// entrypoint /sweeper, user 65532:65532, port 9090, OCI labels.
func buildImage(o buildOptions) (v1.Image, error) {
	if err := checkStaticBinary(o.Binary, o.Arch); err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, err
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.Revision == "" {
		o.Revision = revisionFromBinary(o.Binary)
	}
	if o.Revision == "" {
		o.Revision = "unknown"
	}

	files := []tarFile{
		{name: "/etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{name: "/etc/group", mode: 0o644, data: []byte("root:x:0:\nnonroot:x:65532:\n")},
	}
	if o.CACerts != "" {
		ca, err := os.ReadFile(o.CACerts)
		if err != nil {
			return nil, fmt.Errorf("CA bundle: %w (pass -ca-certs \"\" to build without one)", err)
		}
		files = append(files, tarFile{name: defaultCACerts, mode: 0o644, data: ca})
	}
	files = append(files, tarFile{name: entrypoint, mode: 0o755, data: bin})
	layerBytes, err := layerTar(files, o.Created)
	if err != nil {
		return nil, fmt.Errorf("building the layer: %w", err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("building the layer: %w", err)
	}

	created := v1.Time{Time: o.Created}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   created,
			CreatedBy: "imagebuild: COPY sweeper /sweeper",
			Comment:   "static binary, /etc/passwd, /etc/group, CA bundle",
		},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = o.Arch
	cf.Created = created
	cf.Config = v1.Config{
		Entrypoint:   []string{entrypoint},
		User:         nonroot,
		WorkingDir:   "/",
		Env:          []string{"PATH=/", "SSL_CERT_FILE=" + defaultCACerts},
		ExposedPorts: map[string]struct{}{metricsPort: {}},
		Labels: map[string]string{
			"org.opencontainers.image.title":       "sweeper",
			"org.opencontainers.image.description": "Stuck-task sweeper for the delegation ledger in PostgreSQL",
			"org.opencontainers.image.version":     o.Version,
			"org.opencontainers.image.revision":    o.Revision,
			"org.opencontainers.image.created":     o.Created.Format(time.RFC3339),
			"org.opencontainers.image.source":      sourceURL,
			"org.opencontainers.image.url":         sourceURL,
		},
	}
	if o.CACerts == "" {
		cf.Config.Env = cf.Config.Env[:1]
	}
	return mutate.ConfigFile(img, cf)
}

// writeTarball writes img under tag as a `docker load` tarball.
func writeTarball(path, tag string, img v1.Image) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("tag %q: %w", tag, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return tarball.WriteToFile(path, ref, img)
}

// imageReport is what inspectTarball finds in a tarball.
type imageReport struct {
	Tags              []string
	Digest            string
	Platform          string
	Config            v1.Config
	Layers            int
	Compressed        int64
	Uncompressed      int64
	FileSize          int64
	Files             []string // "mode uid/gid size path", in layer order
	EntrypointMode    int64    // mode of the entrypoint file, 0 when missing
	EntrypointPresent bool
}

// readTarball loads the single image of a tarball and summarizes it.
func readTarball(path string) (*imageReport, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(path) })
	if err != nil {
		return nil, err
	}
	if len(m) != 1 {
		return nil, fmt.Errorf("%s holds %d images, want 1", path, len(m))
	}
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	r := &imageReport{
		Tags:     m[0].RepoTags,
		Digest:   digest.String(),
		Platform: cf.OS + "/" + cf.Architecture,
		Config:   cf.Config,
		Layers:   len(layers),
		FileSize: st.Size(),
	}
	for _, l := range layers {
		size, err := l.Size()
		if err != nil {
			return nil, err
		}
		r.Compressed += size
		if err := r.readLayer(l); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// readLayer lists a layer's files and counts its uncompressed size.
func (r *imageReport) readLayer(l v1.Layer) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	counter := &countingReader{r: rc}
	tr := tar.NewReader(counter)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		p := "/" + strings.TrimPrefix(h.Name, "./")
		r.Files = append(r.Files, fmt.Sprintf("%v %d/%d %9d %s", os.FileMode(h.Mode).Perm()|typeBits(h), h.Uid, h.Gid, h.Size, p))
		if strings.TrimSuffix(p, "/") == entrypoint && h.Typeflag == tar.TypeReg {
			r.EntrypointPresent = true
			r.EntrypointMode = h.Mode
		}
	}
	if _, err := io.Copy(io.Discard, counter); err != nil {
		return err
	}
	r.Uncompressed += counter.n
	return nil
}

func typeBits(h *tar.Header) os.FileMode {
	if h.Typeflag == tar.TypeDir {
		return os.ModeDir
	}
	return 0
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// inspectTarball prints the report of the image in path.
func inspectTarball(w io.Writer, path string) error {
	r, err := readTarball(path)
	if err != nil {
		return err
	}
	c := r.Config
	fmt.Fprintf(w, "image:        %s\n", path)
	fmt.Fprintf(w, "tags:         %s\n", strings.Join(r.Tags, " "))
	fmt.Fprintf(w, "digest:       %s\n", r.Digest)
	fmt.Fprintf(w, "platform:     %s\n", r.Platform)
	fmt.Fprintf(w, "entrypoint:   %q\n", c.Entrypoint)
	fmt.Fprintf(w, "cmd:          %q\n", c.Cmd)
	fmt.Fprintf(w, "user:         %s\n", c.User)
	fmt.Fprintf(w, "workdir:      %s\n", c.WorkingDir)
	fmt.Fprintf(w, "env:          %q\n", c.Env)
	ports := make([]string, 0, len(c.ExposedPorts))
	for p := range c.ExposedPorts {
		ports = append(ports, p)
	}
	sort.Strings(ports)
	fmt.Fprintf(w, "exposed:      %s\n", strings.Join(ports, " "))
	fmt.Fprintf(w, "labels:\n")
	keys := make([]string, 0, len(c.Labels))
	for k := range c.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %s=%s\n", k, c.Labels[k])
	}
	fmt.Fprintf(w, "layers:       %d\n", r.Layers)
	fmt.Fprintf(w, "files:\n")
	for _, f := range r.Files {
		fmt.Fprintf(w, "  %s\n", f)
	}
	fmt.Fprintf(w, "size:         %s compressed, %s uncompressed, tarball %s\n",
		humanBytes(r.Compressed), humanBytes(r.Uncompressed), humanBytes(r.FileSize))
	return nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB (%d B)", float64(n)/(1<<20), n)
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB (%d B)", float64(n)/(1<<10), n)
	}
	return fmt.Sprintf("%d B", n)
}
