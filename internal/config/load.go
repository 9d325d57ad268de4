package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// DatabaseURLFallbackEnv is the conventional variable (Heroku, Render, many
// CI services) read for database.url when neither the file nor
// SWEEPER_DATABASE_URL gave a non-empty value.
const DatabaseURLFallbackEnv = "DATABASE_URL"

// Load builds the configuration: the defaults, then the YAML file at path
// ("" for none), then the SWEEPER_* variables of environ (os.Environ's
// "NAME=value" form), then the flags registered by RegisterFlags on flags
// that the command line set (flags may be nil). A later source wins. The
// result has passed Validate; an empty database.url is left to
// RequireDatabase.
//
// The error, if any, joins one *Error per problem (errors.Join), each naming
// its key and source: every problem of the file, the environment and the
// flags is reported, not only the first.
func Load(path string, environ []string, flags *flag.FlagSet) (Config, error) {
	var data []byte
	if path != "" {
		b, err := readFile(path)
		if err != nil {
			reason := err.Error()
			var pe *fs.PathError
			if errors.As(err, &pe) {
				reason = pe.Err.Error() // the path is in Source
			}
			return Config{}, &Error{Source: "file " + path, Reason: "cannot read the config file: " + reason, Err: err}
		}
		data = b
	}
	return load(path, data, environ, flags)
}

// maxFileBytes bounds what Load reads of a configuration file (a real one is
// a few hundred bytes), so that a path such as /dev/zero or a huge file is an
// error rather than all the memory there is.
const maxFileBytes = 1 << 20

// errFileTooLarge is the reason for a file over maxFileBytes.
var errFileTooLarge = errors.New("it is larger than 1 MiB; a configuration file is a few hundred bytes")

// readFile reads the file at path, up to maxFileBytes.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFileBytes {
		return nil, errFileTooLarge
	}
	return b, nil
}

// load is Load with the file already read; name is the path shown in errors.
func load(name string, data []byte, environ []string, flags *flag.FlagSet) (Config, error) {
	l := loader{cfg: Default(), origins: map[string]origin{}}
	l.applyFile(name, data)
	l.applyEnviron(environ)
	if flags != nil {
		l.applyFlags(flags)
	}
	if len(l.errs) == 0 {
		// Each value was checked as it was set; this catches nothing unless
		// a check comes to depend on more than one key.
		l.errs = l.cfg.validate(l.origins)
	}
	if len(l.errs) > 0 {
		return Config{}, errors.Join(l.errs...)
	}
	return l.cfg, nil
}

// origin records where a key's value came from and how it was written.
type origin struct {
	source string
	raw    string
}

// loader accumulates the configuration and the problems found on the way.
type loader struct {
	cfg     Config
	origins map[string]origin
	errs    []error
}

// set stores the value written as raw for k, or records why it cannot. The
// value is checked here, not only once all sources are applied, so that a
// bad value is reported even when a later source overrides it.
func (l *loader) set(k *key, raw, source string) {
	reason := k.parse(&l.cfg, raw)
	if reason == "" {
		reason = k.check(&l.cfg)
	}
	if reason != "" {
		l.fail(&Error{Key: k.path, Value: k.shown(raw), Source: source, Reason: reason})
		return
	}
	l.origins[k.path] = origin{source: source, raw: raw}
}

// fail records a problem.
func (l *loader) fail(err *Error) { l.errs = append(l.errs, err) }

// Lookup tables derived from keys.
var (
	keyByPath = func() map[string]*key {
		m := make(map[string]*key, len(keys))
		for i := range keys {
			m[keys[i].path] = &keys[i]
		}
		return m
	}()
	keyByEnv = func() map[string]*key {
		m := make(map[string]*key, len(keys))
		for i := range keys {
			m[envName(keys[i].path)] = &keys[i]
		}
		return m
	}()
	// sectionNames lists the paths that hold keys: "database", "sweep", ...
	sectionNames = func() []string {
		var s []string
		for i := range keys {
			if section, _, ok := strings.Cut(keys[i].path, "."); ok && !slices.Contains(s, section) {
				s = append(s, section)
			}
		}
		return s
	}()
)

// topLevelNames lists the names a file may have at its top level: the
// sections, then the keys outside any section.
func topLevelNames() []string {
	names := slices.Clone(sectionNames)
	for i := range keys {
		if !strings.Contains(keys[i].path, ".") {
			names = append(names, keys[i].path)
		}
	}
	return names
}

// fileSource names line of the file in an Error's Source.
func fileSource(name string, line int) string {
	if name == "" {
		name = "<config>"
	}
	return "file " + name + ":" + strconv.Itoa(line)
}

// yamlLine pulls the line number out of a yaml.v3 syntax error.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlQuoted matches the text yaml.v3 quotes from the document in a few
// messages (unknown anchor 'name' referenced); single punctuation marks such
// as ',' or '}' are kept.
var yamlQuoted = regexp.MustCompile(`'[^']{2,}'`)

// applyFile applies the YAML document in data. The document is read as a node
// tree and walked against the key table, which is stricter than decoding
// into a struct with KnownFields: unknown keys are named by their full path,
// duplicate keys, lists, mappings and nulls in place of values are refused,
// and each value is parsed exactly as the same text in the environment.
func (l *loader) applyFile(name string, data []byte) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if !errors.Is(err, io.EOF) {
			l.fail(yamlError(name, err))
		}
		return
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			l.fail(yamlError(name, err))
		} else {
			l.fail(&Error{Source: fileSource(name, extra.Line), Reason: "holds a second YAML document; put every key in one"})
		}
		return
	}
	root := resolve(&doc)
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return
		}
		root = resolve(root.Content[0])
	}
	if isNull(root) {
		return
	}
	if root.Kind != yaml.MappingNode {
		l.fail(&Error{Source: fileSource(name, root.Line),
			Reason: "the file must be a YAML mapping of keys (" + strings.Join(topLevelNames(), ":, ") + ":)"})
		return
	}
	l.applyMapping(name, root, "")
}

// yamlError turns a yaml.v3 syntax error into an *Error with the line as
// its source. yaml.v3's messages describe the syntax; the few that quote a
// name from the document lose it, so no value is ever repeated.
func yamlError(name string, err error) *Error {
	msg := yamlQuoted.ReplaceAllString(err.Error(), "'...'")
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{Source: fileSource(name, line), Reason: "is not valid YAML: " + m[2]}
	}
	source := "file " + name
	if name == "" {
		source = "file <config>"
	}
	return &Error{Source: source, Reason: "is not valid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

// applyMapping applies the keys of m, whose path starts with prefix.
func (l *loader) applyMapping(name string, m *yaml.Node, prefix string) {
	seen := map[string]int{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		kn, vn := resolve(m.Content[i]), resolve(m.Content[i+1])
		source := fileSource(name, m.Content[i].Line)
		if kn.Kind != yaml.ScalarNode {
			l.fail(&Error{Key: strings.TrimSuffix(prefix, "."), Source: source, Reason: "has a key that is not a plain name"})
			continue
		}
		path := prefix + shownName(kn.Value)
		if first, dup := seen[kn.Value]; dup {
			l.fail(&Error{Key: path, Source: source, Reason: fmt.Sprintf("is set twice (first on line %d)", first)})
			continue
		}
		seen[kn.Value] = m.Content[i].Line
		if strings.Contains(kn.Value, ".") {
			// sweep.batch_size: 5 at the top level; nest it instead.
			l.fail(&Error{Key: path, Source: source, Reason: unknownReason("unknown key", nestedHint(path))})
			continue
		}
		if k := keyByPath[path]; k != nil {
			l.applyScalar(k, vn, source)
			continue
		}
		if slices.Contains(sectionNames, path) {
			switch {
			case isNull(vn):
			case vn.Kind == yaml.MappingNode:
				l.applyMapping(name, vn, path+".")
			default:
				l.fail(&Error{Key: path, Source: source, Reason: "must be a mapping of keys, not " + kindName(vn)})
			}
			continue
		}
		switch {
		case kn.Value == "<<":
			l.fail(&Error{Key: path, Source: source, Reason: "YAML merge keys (<<) are not supported; write the keys out"})
		default:
			l.fail(&Error{Key: path, Source: source, Reason: unknownReason("unknown key", suggestPath(path, prefix == ""))})
		}
	}
}

// shownName returns a key name as an error may show it: DSNNotShown when it
// looks like a connection string, which a misplaced line can turn into a key.
func shownName(name string) string {
	if strings.ContainsAny(name, "@=") || strings.Contains(name, "://") {
		return DSNNotShown
	}
	return name
}

// applyScalar applies the value node n of key k.
func (l *loader) applyScalar(k *key, n *yaml.Node, source string) {
	switch {
	case isNull(n):
		l.fail(&Error{Key: k.path, Source: source,
			Reason: `has no value; write one ("" for an empty string) or remove the key`})
	case n.Kind != yaml.ScalarNode:
		l.fail(&Error{Key: k.path, Source: source, Reason: "must be a single value, not " + kindName(n)})
	default:
		l.set(k, n.Value, source)
	}
}

// resolve follows aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; i < 100 && n.Kind == yaml.AliasNode && n.Alias != nil; i++ {
		n = n.Alias
	}
	return n
}

// isNull reports whether n is an empty or null scalar.
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// kindName names the kind of a node that is not where it belongs.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	default:
		return "a single value"
	}
}

// applyEnviron applies the SWEEPER_* variables of environ, then
// DATABASE_URL when database.url is still empty.
func (l *loader) applyEnviron(environ []string) {
	vars := map[string]string{}
	var names []string
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			continue
		}
		if _, dup := vars[name]; dup {
			continue // os.Getenv returns the first of duplicates
		}
		vars[name] = value
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if !strings.HasPrefix(name, envPrefix) || ignoredEnv(name) {
			continue
		}
		k := keyByEnv[name]
		if k == nil {
			hint := ""
			if p := suggestPath(strings.ToLower(strings.TrimPrefix(name, envPrefix)), false); p != "" {
				hint = envName(p)
			}
			l.fail(&Error{Key: name, Source: "environment",
				Reason: unknownReason("unknown environment variable", hint)})
			continue
		}
		l.set(k, vars[name], "env "+name)
	}
	if l.cfg.Database.URL == "" {
		if v := vars[DatabaseURLFallbackEnv]; v != "" {
			l.set(keyByPath["database.url"], v, "env "+DatabaseURLFallbackEnv)
		}
	}
}

// ignoredEnv reports whether a SWEEPER_* variable belongs to someone else:
// the test harness reads SWEEPER_TEST_* and SWEEPER_REQUIRE_DB.
func ignoredEnv(name string) bool {
	return strings.HasPrefix(name, envPrefix+"TEST_") || name == envPrefix+"REQUIRE_DB"
}

// applyFlags applies the flags of RegisterFlags that the command line set.
func (l *loader) applyFlags(fs *flag.FlagSet) {
	fs.Visit(func(f *flag.Flag) {
		if v, ok := f.Value.(keyFlag); ok {
			k, raw := v.entry()
			l.set(k, raw, "flag --"+f.Name)
		}
	})
}

// unknownReason words an unknown-name error with an optional suggestion.
func unknownReason(what, suggestion string) string {
	if suggestion == "" {
		return what
	}
	return what + "; did you mean " + suggestion + "?"
}

// nestedHint suggests the nested spelling of a dotted key written as one
// name, or "".
func nestedHint(path string) string {
	p := suggestPath(path, false)
	section, leaf, ok := strings.Cut(p, ".")
	if !ok {
		return p
	}
	return p + " (written as " + section + ": {" + leaf + ": ...})"
}

// suggestPath returns the key path (or, with sections, section name) most
// like the unknown name written, or "" when none is close. Section names are
// candidates only for a name written at the top level.
func suggestPath(written string, sections bool) string {
	candidates := make([]string, 0, len(keys)+len(sectionNames))
	for i := range keys {
		candidates = append(candidates, keys[i].path)
	}
	if sections {
		candidates = append(candidates, sectionNames...)
	}
	w := normalizeName(written)
	best, bestDist := "", 3
	for _, c := range candidates {
		nc := normalizeName(c)
		if nc == w {
			return c
		}
		if d := editDistance(w, nc); d < bestDist {
			best, bestDist = c, d
		}
	}
	if best != "" {
		return best
	}
	// The right key in the wrong place: the same last word.
	last := normalizeName(written[strings.LastIndexByte(written, '.')+1:])
	for i := range keys {
		p := keys[i].path
		if last != "" && normalizeName(p[strings.LastIndexByte(p, '.')+1:]) == last {
			return p
		}
	}
	return ""
}

// normalizeName lower-cases s and drops the separators _ - and . so that
// batchSize, batch-size and BATCH_SIZE compare equal.
func normalizeName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '_' || r == '-' || r == '.':
			return -1
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return r
	}, s)
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return max(len(a), len(b))
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
