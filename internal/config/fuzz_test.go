package config

import (
	"reflect"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to the file loader: it must not panic, every
// error must be a *Error with a reason, and an accepted configuration must
// pass Validate and survive a round trip through its text form (each key
// written as Keys documents it and read back from the environment).
//
// The seed corpus is in testdata/fuzz/FuzzLoad.
func FuzzLoad(f *testing.F) {
	f.Add([]byte("sweep:\n  batch_size: 5\n  heartbeat_timeout: 90s\n"))
	f.Add([]byte("database:\n  url: postgres://u:pw@db:5432/x\nhttp:\n  listen: \"\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := load("fuzz.yaml", data, nil, nil)
		if err != nil {
			for _, e := range configErrors(t, err) {
				if e.Reason == "" {
					t.Fatalf("error without a reason: %#v", e)
				}
			}
			if !reflect.DeepEqual(cfg, Config{}) {
				t.Fatalf("Load returned %v with its error", cfg)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Load accepted a configuration that Validate refuses: %v\ninput: %q", err, data)
		}
		var env []string
		for i := range keys {
			env = append(env, envName(keys[i].path)+"="+keys[i].format(&cfg))
		}
		again, err := load("", nil, env, nil)
		if err != nil {
			t.Fatalf("the text form of an accepted configuration does not load: %v", err)
		}
		if again != cfg {
			t.Fatalf("round trip changed the configuration:\n%v\n%v", cfg, again)
		}
	})
}
