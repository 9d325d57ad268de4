package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoRoot is the repository root, seen from this package's directory.
const repoRoot = "../../.."

// stageRoot copies what deploy/nfpm.yaml packages into a temp root. Files
// other people own (config.example.yaml, docs/operations.md) are copied when
// they exist and replaced by stand-ins when they do not yet.
func stageRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, f := range []string{
		"deploy/nfpm.yaml",
		"deploy/systemd/sweeper.service", "deploy/systemd/sweeper-once.service", "deploy/systemd/sweeper-once.timer",
		"deploy/systemd/sweeper.env.example", "deploy/systemd/README.md",
		"deploy/deb/postinst.sh", "deploy/deb/prerm.sh", "deploy/deb/postrm.sh",
		"config.example.yaml", "docs/operations.md",
	} {
		data, err := os.ReadFile(filepath.Join(repoRoot, f))
		if os.IsNotExist(err) && (f == "config.example.yaml" || f == "docs/operations.md") {
			t.Logf("%s not in the tree yet: packaging a stand-in", f)
			data, err = []byte("# stand-in for "+f+"\n"), nil
		}
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func fakeBinary(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sweeper")
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho sweeper\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func dpkgDeb(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("dpkg-deb", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestBuildDeb(t *testing.T) {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not on PATH")
	}
	root := stageRoot(t)
	bin := fakeBinary(t)
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
			out := t.TempDir()
			path, err := buildDeb(options{Config: "deploy/nfpm.yaml", Root: root, Arch: arch, Version: "v1.2.3", Binary: bin, Out: out})
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(out, "sweeper_1.2.3_"+arch+".deb"); path != want {
				t.Errorf("path = %s, want %s", path, want)
			}

			// Fields of the control file.
			for field, want := range map[string]string{
				"Package": "sweeper", "Version": "1.2.3", "Architecture": arch, "Section": "admin",
			} {
				if got := strings.TrimSpace(dpkgDeb(t, "-f", path, field)); got != want {
					t.Errorf("%s = %q, want %q", field, got, want)
				}
			}

			// Files, modes and owners.
			listing := dpkgDeb(t, "-c", path)
			for _, want := range []string{
				`-rwxr-xr-x root/root .* \./usr/bin/sweeper$`,
				`-rw-r--r-- root/root .* \./lib/systemd/system/sweeper\.service$`,
				`-rw-r--r-- root/root .* \./lib/systemd/system/sweeper-once\.service$`,
				`-rw-r--r-- root/root .* \./lib/systemd/system/sweeper-once\.timer$`,
				`-rw-r--r-- root/root .* \./etc/sweeper/config\.yaml$`,
				`-rw------- root/root .* \./etc/sweeper/sweeper\.env$`,
				`-rw-r--r-- root/root .* \./usr/share/doc/sweeper/operations\.md$`,
			} {
				if !regexp.MustCompile(`(?m)^` + want).MatchString(listing) {
					t.Errorf("contents lack %s:\n%s", want, listing)
				}
			}

			// Conffiles and maintainer scripts.
			ctl := t.TempDir()
			dpkgDeb(t, "-e", path, ctl)
			conffiles, err := os.ReadFile(filepath.Join(ctl, "conffiles"))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Fields(string(conffiles)); strings.Join(got, " ") != "/etc/sweeper/config.yaml /etc/sweeper/sweeper.env" {
				t.Errorf("conffiles = %q", got)
			}
			for _, s := range []string{"postinst", "prerm", "postrm"} {
				st, err := os.Stat(filepath.Join(ctl, s))
				if err != nil || st.Mode()&0o111 == 0 {
					t.Errorf("%s missing or not executable: %v", s, err)
				}
			}
		})
	}
}

func TestBuildDebRefuses(t *testing.T) {
	root := stageRoot(t)
	bin := fakeBinary(t)
	notExec := filepath.Join(t.TempDir(), "sweeper")
	if err := os.WriteFile(notExec, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := map[string]options{
		"bad arch":       {Config: "deploy/nfpm.yaml", Root: root, Arch: "i386", Version: "1.0.0", Binary: bin, Out: t.TempDir()},
		"missing binary": {Config: "deploy/nfpm.yaml", Root: root, Arch: "amd64", Version: "1.0.0", Binary: filepath.Join(root, "nope"), Out: t.TempDir()},
		"not executable": {Config: "deploy/nfpm.yaml", Root: root, Arch: "amd64", Version: "1.0.0", Binary: notExec, Out: t.TempDir()},
		"missing config": {Config: "deploy/none.yaml", Root: root, Arch: "amd64", Version: "1.0.0", Binary: bin, Out: t.TempDir()},
	}
	for name, o := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := buildDeb(o); err == nil {
				t.Fatal("built a package")
			}
		})
	}
	if code := run([]string{"-arch", "amd64"}); code != 2 {
		t.Errorf("no -version/-binary: exit %d, want 2", code)
	}
}

func TestDebVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3":            "1.2.3",
		"1.2.3-rc.1":        "1.2.3-rc.1",
		"ad87a29-dirty":     "0.0.0~git.ad87a29-dirty",
		"dev":               "0.0.0~git.dev",
		"v0.1.0-3-gad87a29": "0.1.0-3-gad87a29",
		"feature/x_y":       "0.0.0~git.feature.x.y",
	} {
		if got := debVersion(in); got != want {
			t.Errorf("debVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestGitDescribeVersionInstalls: a package built from an untagged commit
// carries a version dpkg accepts.
func TestGitDescribeVersionInstalls(t *testing.T) {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not on PATH")
	}
	path, err := buildDeb(options{Config: "deploy/nfpm.yaml", Root: stageRoot(t), Arch: "amd64", Version: "ad87a29-dirty", Binary: fakeBinary(t), Out: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(dpkgDeb(t, "-f", path, "Version")); got != "0.0.0~git.ad87a29-dirty" {
		t.Errorf("Version = %q", got)
	}
}
