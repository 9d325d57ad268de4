package config

import (
	"net/url"
	"strings"
)

// redactedPassword replaces a password in RedactDSN's output.
const redactedPassword = "xxxxx"

// kvSpace is the white space that separates keyword/value pairs, as libpq
// and pgx define it.
const kvSpace = " \t\n\r\v\f"

// RedactDSN returns dsn with every password replaced by "xxxxx", for logs and
// error messages. It handles both forms pgx accepts:
//
//	postgres://sweeper:secret@db:5432/sweeper?sslpassword=s  -> postgres://sweeper:xxxxx@db:5432/sweeper?sslpassword=xxxxx
//	host=db user=sweeper password='se cret'                  -> host=db user=sweeper password='xxxxx'
//
// The rest of the string is kept as written. For a string that pgx parses,
// RedactDSN masks exactly the text pgx reads as a password (the userinfo
// password, and every query parameter or keyword whose name contains
// "password"). For a malformed string, whose parts are ambiguous, it masks
// more rather than less: a password holding an unescaped '@' or '/', and
// in keyword/value form everything from the first part that does not parse
// (a string with no "=" at all, perhaps a bare password, becomes "xxxxx").
func RedactDSN(dsn string) string {
	body := strings.TrimLeft(dsn, kvSpace)
	if n := schemeLen(body); n > 0 {
		start := len(dsn) - len(body) + n
		return dsn[:start] + redactURL(dsn[start:])
	}
	return redactKeywordValue(dsn)
}

// schemeLen returns the length of the "scheme://" that starts s, or 0.
func schemeLen(s string) int {
	i := strings.Index(s, "://")
	if i <= 0 {
		return 0
	}
	for j := 0; j < i; j++ {
		c := s[j]
		switch {
		case c|0x20 >= 'a' && c|0x20 <= 'z':
		case j > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return 0
		}
	}
	return i + len("://")
}

// redactURL masks the passwords of a URL without its "scheme://".
//
// pgx and libpq end the userinfo at an '@' that comes before the first '/'.
// A password holding an unescaped '@' or '/' would then show in part, so
// the userinfo is taken to end at the last '@' before the query: masking
// more (an '@' in the database name) is harmless, masking less is not.
func redactURL(p string) string {
	var b strings.Builder
	rest := p
	if at := userinfoEnd(p); at >= 0 {
		userinfo := p[:at]
		if c := strings.IndexByte(userinfo, ':'); c >= 0 {
			b.WriteString(userinfo[:c+1])
			b.WriteString(redactedPassword)
		} else {
			b.WriteString(userinfo)
		}
		b.WriteByte('@')
		rest = p[at+1:]
	}
	q := strings.IndexByte(rest, '?')
	if q < 0 {
		b.WriteString(rest)
		return b.String()
	}
	b.WriteString(rest[:q+1])
	b.WriteString(redactQuery(rest[q+1:]))
	return b.String()
}

// userinfoEnd returns the index of the '@' that ends the userinfo of p, a
// URL without its "scheme://", or -1: the last '@' before the query, which
// starts at the first '?' after the path starts or, without a path, after
// the first '@'.
func userinfoEnd(p string) int {
	from := strings.IndexByte(p, '/')
	if from < 0 {
		from = max(strings.IndexByte(p, '@'), 0)
	}
	query := len(p)
	if q := strings.IndexByte(p[from:], '?'); q >= 0 {
		query = from + q
	}
	return strings.LastIndexByte(p[:query], '@')
}

// redactQuery masks the value of each query parameter whose name contains
// "password", and any following part without '=' (a password holding an
// unescaped '&').
func redactQuery(q string) string {
	parts := strings.Split(q, "&")
	secret := false
	for i, part := range parts {
		name, _, hasValue := strings.Cut(part, "=")
		switch {
		case hasValue:
			if decoded, err := url.PathUnescape(name); err == nil {
				name = decoded
			}
			secret = secretName(name)
			if secret {
				parts[i] = part[:strings.IndexByte(part, '=')+1] + redactedPassword
			}
		case secret && part != "":
			parts[i] = redactedPassword
		}
	}
	return strings.Join(parts, "&")
}

// secretName reports whether a connection parameter holds a password
// (password, sslpassword, or any spelling that contains the word).
func secretName(name string) bool {
	return indexFoldASCII(name, "password") >= 0
}

// redactKeywordValue masks the password values of a keyword/value string,
// reading it as pgx does: pairs separated by white space, values either
// single-quoted or running to the next white space, a backslash escaping the
// next character. From the first part that does not parse on, everything is
// masked; so is a string with no pair at all, which may be a bare password.
func redactKeywordValue(s string) string {
	var b strings.Builder
	i := 0
	for {
		j := skipSpace(s, i)
		if j == len(s) {
			b.WriteString(s[i:])
			return b.String()
		}
		eq := strings.IndexByte(s[j:], '=')
		if eq < 0 {
			b.WriteString(redactMalformed(s[i:]))
			return b.String()
		}
		name := strings.TrimRight(s[j:j+eq], kvSpace)
		if name == "" || strings.ContainsAny(name, kvSpace) {
			b.WriteString(redactMalformed(s[i:]))
			return b.String()
		}
		secret := secretName(name)
		v := skipSpace(s, j+eq+1)
		end, ok := kvValueEnd(s, v)
		if !ok {
			b.WriteString(s[i:v])
			b.WriteString(redactMalformed(s[v:]))
			return b.String()
		}
		b.WriteString(s[i:v])
		switch {
		case secret && v < len(s) && s[v] == '\'':
			b.WriteString("'" + redactedPassword + "'")
		case secret:
			b.WriteString(redactedPassword)
		default:
			b.WriteString(s[v:end])
		}
		i = end
	}
}

// skipSpace returns the index of the first byte at or after i that is not
// white space.
func skipSpace(s string, i int) int {
	for i < len(s) && strings.IndexByte(kvSpace, s[i]) >= 0 {
		i++
	}
	return i
}

// kvValueEnd returns the index just past the value that starts at v, and
// false for an unterminated quoted value.
func kvValueEnd(s string, v int) (int, bool) {
	if v < len(s) && s[v] == '\'' {
		for i := v + 1; i < len(s); i++ {
			switch s[i] {
			case '\\':
				i++
			case '\'':
				return i + 1, true
			}
		}
		return len(s), false
	}
	i := v
	for i < len(s) && strings.IndexByte(kvSpace, s[i]) < 0 {
		if s[i] == '\\' {
			i++
		}
		i++
	}
	return min(i, len(s)), true
}

// redactMalformed masks the part of a keyword/value string that does not
// parse, keeping its leading white space: it may be, or hold, a password
// (a missing "password=", an unterminated quote, a value with a space).
func redactMalformed(rest string) string {
	return rest[:skipSpace(rest, 0)] + redactedPassword
}

// indexFoldASCII is strings.Index ignoring ASCII case; word must be lower
// case. Unlike strings.ToLower, it keeps byte offsets of s.
func indexFoldASCII(s, word string) int {
	for i := 0; i+len(word) <= len(s); i++ {
		match := true
		for j := 0; j < len(word); j++ {
			c := s[i+j]
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != word[j] {
				match = false
				break
			}
		}
		if match {
			return i
		}
	}
	return -1
}
