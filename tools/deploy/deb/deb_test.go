// Package deb checks the sweeper .deb that deploy/deb/build.sh makes from
// deploy/nfpm.yaml with the nfpm CLI: control fields, files with their modes
// and owners, conffiles, maintainer scripts, the version mapping, and the
// inputs it refuses. It has no code of its own, only this test.
package deb

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// buildScript is deploy/deb/build.sh, seen from this package's directory.
const buildScript = "../../../deploy/deb/build.sh"

// nfpmBinary builds the nfpm tool of this module once.
var nfpmBinary = sync.OnceValues(func() (string, error) {
	out, err := exec.Command("go", "tool", "-n", "nfpm").Output()
	return strings.TrimSpace(string(out)), err
})

// build runs build.sh with args and returns its output and error.
func build(t *testing.T, args ...string) (string, error) {
	t.Helper()
	nfpm, err := nfpmBinary()
	if err != nil {
		t.Fatalf("building nfpm (go tool -n nfpm): %v", err)
	}
	cmd := exec.Command(buildScript, args...)
	cmd.Env = append(os.Environ(), "NFPM="+nfpm, "SOURCE_DATE_EPOCH=1700000000")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func fakeBinary(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sweeper")
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho sweeper\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// needDpkgDeb skips the test where dpkg-deb is missing (a Mac); Debian and
// CI have it.
func needDpkgDeb(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not on PATH (apt-get install dpkg)")
	}
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
	needDpkgDeb(t)
	bin := fakeBinary(t)
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			out := t.TempDir()
			path, err := build(t, arch, "v1.2.3", bin, out)
			if err != nil {
				t.Fatalf("build.sh: %v\n%s", err, path)
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
			// SOURCE_DATE_EPOCH fixes the file times.
			if !strings.Contains(listing, "2023-11-14") {
				t.Errorf("file times are not SOURCE_DATE_EPOCH (2023-11-14):\n%s", listing)
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
	bin := fakeBinary(t)
	notExec := filepath.Join(t.TempDir(), "sweeper")
	if err := os.WriteFile(notExec, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, arch, binary, config, want string
	}{
		{"bad arch", "i386", bin, "", `unsupported ARCH "i386"`},
		{"missing binary", "amd64", filepath.Join(t.TempDir(), "nope"), "", "no such file"},
		{"not executable", "amd64", notExec, "", "is not executable"},
		{"missing config", "amd64", bin, "deploy/none.yaml", "deploy/none.yaml: no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.config != "" {
				t.Setenv("NFPM_CONFIG", tc.config)
			}
			out := t.TempDir()
			msg, err := build(t, tc.arch, "1.0.0", tc.binary, out)
			if err == nil {
				t.Fatalf("built a package: %s", msg)
			}
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not say %q", msg, tc.want)
			}
			if entries, _ := os.ReadDir(out); len(entries) != 0 {
				t.Errorf("left %d files in the output directory", len(entries))
			}
		})
	}
	if _, err := build(t, "amd64"); err == nil {
		t.Error("build.sh without VERSION, BINARY and OUTDIR succeeded")
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Errorf("build.sh without VERSION, BINARY and OUTDIR: %v, want exit 2", err)
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
		got, err := build(t, "--deb-version", in)
		if err != nil {
			t.Fatalf("build.sh --deb-version %q: %v\n%s", in, err, got)
		}
		if got != want {
			t.Errorf("deb version of %q = %q, want %q", in, got, want)
		}
	}
}

// TestGitDescribeVersionInstalls: a package built from an untagged commit
// carries a version dpkg accepts.
func TestGitDescribeVersionInstalls(t *testing.T) {
	needDpkgDeb(t)
	path, err := build(t, "amd64", "ad87a29-dirty", fakeBinary(t), t.TempDir())
	if err != nil {
		t.Fatalf("build.sh: %v\n%s", err, path)
	}
	if got := strings.TrimSpace(dpkgDeb(t, "-f", path, "Version")); got != "0.0.0~git.ad87a29-dirty" {
		t.Errorf("Version = %q", got)
	}
}
