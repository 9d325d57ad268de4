package api_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/tasksweeper/sweeper/api"
	"github.com/tasksweeper/sweeper/ledger"
	"github.com/tasksweeper/sweeper/webhook"
)

// boundsReq is a request that the API accepts, which TestDocumentedBounds
// changes one value of at a time.
type boundsReq struct {
	token string
	id    string         // the {id} of the path, if it has one
	query map[string]any // query parameters
	body  map[string]any // JSON body; nil for none
}

// boundsBase gives, per operationId, an accepted request; i makes its
// delegations unique to the case. An operation whose document states a bound
// needs one here: the test fails naming it otherwise.
var boundsBase = map[string]func(e *env, i int) boundsReq{
	"insertDelegation": func(e *env, i int) boundsReq {
		return boundsReq{token: "admin", body: map[string]any{
			"delegation_id": fmt.Sprintf("ins-%d", i), "caller_id": "billing", "callee_id": "agent-a"}}
	},
	"listDelegations": func(e *env, i int) boundsReq {
		return boundsReq{token: "admin", query: map[string]any{"status": "queued"}}
	},
	"getDelegation": func(e *env, i int) boundsReq {
		return boundsReq{token: "admin", id: e.boundsRow(i, ledger.StatusQueued)}
	},
	"delegationEvents": func(e *env, i int) boundsReq {
		return boundsReq{token: "admin", id: e.boundsRow(i, ledger.StatusQueued)}
	},
	"delegationAttempts": func(e *env, i int) boundsReq {
		return boundsReq{token: "admin", id: e.boundsRow(i, ledger.StatusQueued)}
	},
	"heartbeat": func(e *env, i int) boundsReq {
		return boundsReq{token: "admin", id: e.boundsRow(i, ledger.StatusInProgress)}
	},
	"transition": func(e *env, i int) boundsReq {
		return boundsReq{token: "admin", id: e.boundsRow(i, ledger.StatusInProgress), body: map[string]any{"to": "completed"}}
	},
	"retryDelegation": func(e *env, i int) boundsReq {
		return boundsReq{token: "admin", id: e.boundsRow(i, ledger.StatusFailed), body: map[string]any{}}
	},
	// ids and beats share api.max_batch: the base sends neither, so that
	// each is probed at its bound alone.
	"heartbeats": func(e *env, i int) boundsReq { return boundsReq{token: "admin", body: map[string]any{}} },
	"claimDelegations": func(e *env, i int) boundsReq {
		return boundsReq{token: "admin", body: map[string]any{"callee_id": "agent-a", "limit": 1}}
	},
	"feed":    func(e *env, i int) boundsReq { return boundsReq{token: "admin", query: map[string]any{}} },
	"summary": func(e *env, i int) boundsReq { return boundsReq{token: "admin", query: map[string]any{}} },
	"createWebhook": func(e *env, i int) boundsReq {
		return boundsReq{token: "admin", body: map[string]any{"url": fmt.Sprintf("https://hooks.example.com/%d", i)}}
	},
	"getWebhook":          func(e *env, i int) boundsReq { return boundsReq{token: "admin", id: e.boundsWebhook()} },
	"deleteWebhook":       func(e *env, i int) boundsReq { return boundsReq{token: "admin", id: e.boundsWebhook()} },
	"rotateWebhookSecret": func(e *env, i int) boundsReq { return boundsReq{token: "admin", id: e.boundsWebhook()} },
	"resumeWebhook":       func(e *env, i int) boundsReq { return boundsReq{token: "admin", id: e.boundsWebhook()} },
	"webhookAttempts": func(e *env, i int) boundsReq {
		return boundsReq{token: "admin", id: e.boundsWebhook(), query: map[string]any{}}
	},
}

// boundsWebhook creates a webhook subscription and returns its id.
func (e *env) boundsWebhook() string {
	e.t.Helper()
	c, err := webhook.NewStore(e.db.Pool).Create(context.Background(), webhook.NewSubscription{URL: "https://hooks.example.com/bounds"})
	if err != nil {
		e.t.Fatal(err)
	}
	return c.ID
}

// boundsRow inserts delegation row-<i> (billing to agent-a) and moves it to
// st.
func (e *env) boundsRow(i int, st ledger.Status) string {
	e.t.Helper()
	id := fmt.Sprintf("row-%d", i)
	initial := st
	if st.Terminal() {
		initial = ledger.StatusInProgress
	}
	e.seed(id, "billing", "agent-a", initial)
	if st != initial {
		if _, err := e.l.SetStatus(context.Background(), id, st, ledger.Change{Actor: "test"}); err != nil {
			e.t.Fatal(err)
		}
	}
	return id
}

// validAt overrides the value of a given length for parameters whose
// strings of x are not valid: it must be accepted at length n.
var validAt = map[string]func(n int) string{
	// A list cursor is base64url of "<unix ns>:<delegation_id>".
	"cursor": func(n int) string {
		raw := "-1000000000000000000:"
		s := base64.RawURLEncoding.EncodeToString([]byte(raw + strings.Repeat("x", (n*3/4)-len(raw))))
		return s[:n]
	},
	// A wait of parts that add up to 0 (no long poll).
	"wait": func(n int) string { return strings.Repeat("0", n-23) + "s0000000000s0000000000s" },
	// A webhook's destination: an https URL of a name (an IP literal
	// could be a private address).
	"url": func(n int) string {
		const base = "https://hooks.example.com/"
		if n < len(base) {
			return "https://" + strings.Repeat("a", n-len("https://"))
		}
		return base + strings.Repeat("x", n-len(base))
	},
}

// validFor is validAt for the values of a pattern, whatever the name of
// the parameter (the {id} of a webhook's path).
var validFor = map[string]func(n int) string{
	// A webhook subscription id (which names none: 404).
	"^wh_[0-9a-f]{24}$": func(n int) string { return "wh_" + strings.Repeat("0", n-3) },
}

// uniq makes the strings of the cases unique.
var uniq int

// atRefused names the bounds whose value at the bound the server refuses
// for another reason, which the test then does not send, and why.
var atRefused = map[string]string{
	"after maximum": "the feed refuses an after that names no event yet; int64's maximum is the type's bound",
}

// A bound the document states, and the two values that probe it.
type boundCase struct {
	in, name  string // path, query or body; parameter or field path
	what      string // the bound, for messages
	at, past  any    // a value at the bound (nil: none to send) and one past it
	itemIndex bool   // the value is one element of an array (field name[0])
}

// TestDocumentedBounds holds every bound the served OpenAPI document states
// (maxLength, minLength, maxItems, minimum, maximum, exclusiveMinimum,
// pattern, enum, format date-time) against the server: a value at the bound
// is accepted, a value past it is refused with the documented problem (body
// 422 invalid-field, query 400 invalid-parameter, path 422 invalid-field,
// field naming it). The bounds come from the document, so one added later
// is tested too.
func TestDocumentedBounds(t *testing.T) {
	t.Parallel()
	const maxBatch = 100 // the served document states the configured api.max_batch
	e := newEnv(t, api.Options{MaxBatch: maxBatch})
	r := e.do("reader", "GET", "/v1/openapi.json", nil)
	if r.Code != 200 {
		t.Fatalf("openapi.json: %d", r.Code)
	}
	doc, err := openapi3.NewLoader().LoadFromData(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got := doc.Components.Schemas["HeartbeatsRequest"].Value.Properties["ids"].Value.MaxItems; got == nil || *got != maxBatch {
		t.Fatalf("served document: ids maxItems %v, want the configured %d", got, maxBatch)
	}

	i, tested := 0, map[string]int{}
	for _, path := range doc.Paths.InMatchingOrder() {
		item := doc.Paths.Value(path)
		for method, op := range item.Operations() {
			var cases []boundCase
			for _, p := range append(append(openapi3.Parameters{}, item.Parameters...), op.Parameters...) {
				cases = append(cases, schemaCases(t, p.Value.In, p.Value.Name, p.Value.Schema.Value)...)
			}
			if op.RequestBody != nil {
				if mt := op.RequestBody.Value.Content.Get("application/json"); mt != nil {
					s := mt.Schema.Value
					for _, name := range sortedKeys(s.Properties) {
						cases = append(cases, schemaCases(t, "body", name, s.Properties[name].Value)...)
					}
				}
			}
			if len(cases) == 0 {
				continue
			}
			base, ok := boundsBase[op.OperationID]
			if !ok {
				t.Errorf("%s %s (%s) states bounds but boundsBase has no request for it", method, path, op.OperationID)
				continue
			}
			for _, c := range cases {
				if _, skip := atRefused[c.name+" "+c.what]; c.at != nil && !skip {
					i++
					r := e.boundsSend(method, path, base(e, i), c, c.at)
					if r.Code >= 400 && !(r.Code == 404 && c.in == "path") {
						t.Errorf("%s %s: %s %s %s: the value at the bound was refused: %d %s", method, path, c.in, c.name, c.what, r.Code, r.Body)
					}
				}
				i++
				r := e.boundsSend(method, path, base(e, i), c, c.past)
				want, slug := 422, "invalid-field"
				if c.in == "query" {
					want, slug = 400, "invalid-parameter"
				}
				field := c.name
				if c.itemIndex {
					field += "[0]"
				}
				if r.Code != want {
					t.Errorf("%s %s: %s %s past %s: %d %s, want %d %s", method, path, c.in, c.name, c.what, r.Code, r.Body, want, slug)
					continue
				}
				p := r.json(t)
				if p["type"] != api.ProblemTypePrefix+slug || (c.in != "path" && p["field"] != field) || (c.in == "path" && p["field"] == "") {
					t.Errorf("%s %s: %s %s past %s: %s, want type %s and field %s", method, path, c.in, c.name, c.what, r.Body, slug, field)
				}
				tested[c.what]++
			}
		}
	}
	// The document states each kind of bound somewhere; a change that lost
	// them all would otherwise pass here.
	for _, kind := range []string{"maxLength", "minLength", "maxItems", "minimum", "maximum", "exclusiveMinimum", "pattern", "enum", "format"} {
		if tested[kind] == 0 {
			t.Errorf("no %s bound was tested", kind)
		}
	}
	t.Logf("bounds tested: %v", tested)
}

// schemaCases lists the bounds of one parameter or body field.
func schemaCases(t *testing.T, in, name string, s *openapi3.Schema) []boundCase {
	t.Helper()
	var cs []boundCase
	switch {
	case s.Type.Is("string"):
		gen, generated := validAt[name]
		if !generated {
			gen, generated = validFor[s.Pattern]
		}
		valid := func(n int) string {
			if generated {
				return gen(n)
			}
			if s.Format == "date-time" {
				return "2099-12-01T18:00:00." + strings.Repeat("0", max(0, n-21)) + "Z"
			}
			// Unique: an id at the bound of one case is not taken by another's.
			uniq++
			u := fmt.Sprintf("u%d-", uniq)
			if n < len(u) {
				return strings.Repeat("x", n)
			}
			return u + strings.Repeat("x", n-len(u))
		}
		if s.MaxLength != nil {
			n := int(*s.MaxLength)
			past := valid(n) + "x"
			if !generated {
				past = valid(n + 1)
			}
			cs = append(cs, boundCase{in: in, name: name, what: "maxLength", at: valid(n), past: past})
		}
		// An empty path segment is another URL, not a short id.
		if s.MinLength > 0 && in != "path" {
			n := int(s.MinLength)
			cs = append(cs, boundCase{in: in, name: name, what: "minLength", at: valid(n), past: valid(n - 1)})
		}
		if s.Pattern != "" {
			re := regexp.MustCompile(s.Pattern)
			var bad string
			for _, c := range []string{"a\x01b", "a\x00b", "a+b/c", "!"} {
				if !re.MatchString(c) {
					bad = c
					break
				}
			}
			if bad == "" {
				t.Fatalf("%s %s: no value outside the pattern %q to send", in, name, s.Pattern)
			}
			cs = append(cs, boundCase{in: in, name: name, what: "pattern", past: bad})
		}
		if len(s.Enum) > 0 {
			cs = append(cs, boundCase{in: in, name: name, what: "enum", past: "not-a-member"})
		}
		if s.Format == "date-time" {
			cs = append(cs, boundCase{in: in, name: name, what: "format", past: "tomorrow"})
		}
	case s.Type.Is("integer"), s.Type.Is("number"):
		num := func(f float64) any {
			if in == "query" {
				return big.NewFloat(f).Text('f', -1)
			}
			return f
		}
		if s.Max != nil {
			at, past := num(*s.Max), num(*s.Max+1)
			if *s.Max >= 1<<53 { // int64's maximum: float64 cannot say it
				at, past = "9223372036854775807", "9223372036854775808"
			}
			cs = append(cs, boundCase{in: in, name: name, what: "maximum", at: at, past: past})
		}
		if s.Min != nil {
			cs = append(cs, boundCase{in: in, name: name, what: "minimum", at: num(*s.Min), past: num(*s.Min - 1)})
		}
		if s.ExclusiveMin.Value != nil {
			cs = append(cs, boundCase{in: in, name: name, what: "exclusiveMinimum", at: num(*s.ExclusiveMin.Value + 1), past: num(*s.ExclusiveMin.Value)})
		}
	case s.Type.Is("array"):
		items := s.Items.Value
		if s.MaxItems != nil {
			n := int(*s.MaxItems)
			list := func(n int) []any {
				out := make([]any, n)
				for j := range out {
					out[j] = fmt.Sprintf("item-%d", j)
					switch {
					case len(items.Enum) > 0: // members, each once up to the enum's size
						out[j] = items.Enum[j%len(items.Enum)]
					case items.Type.Is("object"):
						out[j] = minimalObject(t, items, j)
					}
				}
				return out
			}
			cs = append(cs, boundCase{in: in, name: name, what: "maxItems", at: list(n), past: list(n + 1)})
		}
		for _, c := range schemaCases(t, in, name, items) {
			c.itemIndex = true
			if c.at != nil {
				c.at = []any{c.at}
			}
			c.past = []any{c.past}
			cs = append(cs, c)
		}
	}
	return cs
}

// minimalObject is a valid value of the object schema s with only its
// required properties: strings item-<j> (unique within an array), nested
// objects built the same way. A required property of another type fails
// the test, which must then learn to build it.
func minimalObject(t *testing.T, s *openapi3.Schema, j int) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, name := range s.Required {
		p := s.Properties[name].Value
		switch {
		case len(p.Enum) > 0:
			out[name] = p.Enum[0]
		case p.Type.Is("string") && p.Format == "" && p.MinLength <= 8:
			out[name] = fmt.Sprintf("item-%d", j)
		case p.Type.Is("object"):
			out[name] = minimalObject(t, p, j)
		default:
			t.Fatalf("minimalObject: no value for the required property %q (%v)", name, p.Type)
		}
	}
	return out
}

// boundsSend sends base with the value of case c set to v.
func (e *env) boundsSend(method, path string, base boundsReq, c boundCase, v any) resp {
	e.t.Helper()
	id := base.id
	switch c.in {
	case "path":
		id = v.(string)
	case "query":
		base.query[c.name] = v
	case "body":
		base.body[c.name] = v
	}
	u := strings.Replace(path, "{id}", url.PathEscape(id), 1)
	if len(base.query) > 0 {
		q := url.Values{}
		for k, v := range base.query {
			q.Set(k, fmt.Sprint(v))
		}
		u += "?" + q.Encode()
	}
	var body any
	if base.body != nil {
		raw, err := json.Marshal(base.body)
		if err != nil {
			e.t.Fatal(err)
		}
		body = raw
	}
	return e.do(base.token, method, u, body)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
