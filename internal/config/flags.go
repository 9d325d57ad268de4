package config

import (
	"flag"
	"fmt"
)

// RegisterFlags registers on fs one flag per key, named after its path with
// dashes (sweep.batch_size becomes --sweep-batch-size; see Keys), for Load to
// apply. A flag only overrides the file and the environment when the command
// line sets it. Boolean flags may be given bare (--sweep-dry-run). A flag
// never fails to parse: Load checks its value and reports it with the key's
// name. The usage text is the key's documentation and environment variable.
func RegisterFlags(fs *flag.FlagSet) {
	d := Default()
	for i := range keys {
		k := &keys[i]
		name := flagName(k.path)
		if k.typ == "bool" {
			fs.Var(&boolFlagValue{flagValue{key: k}}, name, fmt.Sprintf("%s (env %s)", k.doc, envName(k.path)))
		} else {
			fs.Var(&flagValue{key: k}, name, fmt.Sprintf("%s (`%s`, env %s)", k.doc, k.typ, envName(k.path)))
		}
		fs.Lookup(name).DefValue = k.shown(k.format(&d))
	}
}

// keyFlag is a flag registered by RegisterFlags.
type keyFlag interface {
	flag.Value
	// entry returns the flag's key and the text the command line gave it.
	entry() (*key, string)
}

// flagValue holds a flag's text until Load parses it.
type flagValue struct {
	key *key
	raw string
}

// String returns the text given; for a secret, as DisplayDSN renders it.
func (v *flagValue) String() string {
	if v == nil || v.key == nil {
		return ""
	}
	return v.key.shown(v.raw)
}

// Set records s; Load parses it.
func (v *flagValue) Set(s string) error {
	v.raw = s
	return nil
}

func (v *flagValue) entry() (*key, string) { return v.key, v.raw }

// boolFlagValue is a flagValue that may be given without a value.
type boolFlagValue struct{ flagValue }

// IsBoolFlag lets the flag package accept --name for --name=true.
func (v *boolFlagValue) IsBoolFlag() bool { return true }

// String returns the text given; "false" for the zero value, so that usage
// does not print "(default false)".
func (v *boolFlagValue) String() string {
	if v == nil || v.key == nil {
		return "false"
	}
	return v.flagValue.String()
}
