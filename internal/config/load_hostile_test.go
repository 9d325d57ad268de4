package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Hostile configuration files: whatever the path names, Load answers with a
// *Error naming the file, quickly and in bounded memory.
func TestLoadHostileFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := map[string]struct {
		path   string
		reason string
	}{
		"a directory":         {dir, "is a directory"},
		"a missing file":      {filepath.Join(dir, "nope.yaml"), "no such file"},
		"just over the limit": {write("big.yaml", []byte("# "+strings.Repeat("x", maxFileBytes)+"\n")), "larger than 1 MiB"},
		"NUL bytes":           {write("nul.yaml", make([]byte, 4096)), ""},
		"a YAML alias bomb": {write("bomb.yaml", []byte(`a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
`)), ""},
		"deep nesting": {write("deep.yaml", []byte(strings.Repeat("[", 100000)+strings.Repeat("]", 100000))), ""},
	}
	if _, err := os.Stat("/dev/zero"); err == nil {
		cases["/dev/zero"] = struct{ path, reason string }{"/dev/zero", "larger than 1 MiB"}
	}
	for name, c := range cases {
		start := time.Now()
		_, err := Load(c.path, nil, nil)
		var ce *Error
		if !errors.As(err, &ce) {
			t.Errorf("%s: Load = %v, want a *config.Error", name, err)
			continue
		}
		if !strings.Contains(err.Error(), c.reason) || !strings.Contains(err.Error(), filepath.Base(c.path)) {
			t.Errorf("%s: %v: want the file named and %q", name, err, c.reason)
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("%s: Load took %s", name, d)
		}
	}
	// At the limit, a file still loads.
	ok := write("ok.yaml", []byte("sweep:\n  batch_size: 7\n# "+strings.Repeat("x", maxFileBytes-40)+"\n"))
	if cfg, err := Load(ok, nil, nil); err != nil || cfg.Sweep.BatchSize != 7 {
		t.Errorf("a file just under the limit: %v, %v", cfg.Sweep.BatchSize, err)
	}
}
