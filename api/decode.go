package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"
	"unicode/utf8"
)

// decodeJSON reads a JSON request body into v, refusing: a content type
// other than application/json (415), a body over the limit (413, through
// the http.MaxBytesReader the handler installed), invalid UTF-8, unknown
// fields (naming the field), values of the wrong type (naming the field),
// and anything after the object.
func decodeJSON(r *http.Request, v any) error {
	if err := checkContentType(r.Header.Get("Content-Type")); err != nil {
		return err
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return mbe
		}
		return errInvalidJSON("", "the body could not be read")
	}
	return decodeBody(body, v)
}

// decodeOptionalJSON is decodeJSON for a body that may be absent: an empty
// body (whatever its content type) leaves v as it is.
func decodeOptionalJSON(r *http.Request, v any) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return mbe
		}
		return errInvalidJSON("", "the body could not be read")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if err := checkContentType(r.Header.Get("Content-Type")); err != nil {
		return err
	}
	return decodeBody(body, v)
}

func checkContentType(ct string) error {
	unsupported := newProblem(http.StatusUnsupportedMediaType, "unsupported-media-type",
		"Unsupported content type", "send Content-Type: application/json")
	if ct == "" {
		return unsupported
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return unsupported
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		unsupported.Detail = "the body must be UTF-8 (charset=utf-8 or none)"
		return unsupported
	}
	return nil
}

// decodeBody is decodeJSON after the headers: the part the fuzz test drives.
func decodeBody(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return errInvalidJSON("", "the body is empty; send a JSON object")
	}
	if !utf8.Valid(body) {
		return errInvalidJSON("", "the body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonProblem(err)
	}
	if dec.More() {
		return errInvalidJSON("", "the body has data after the JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errInvalidJSON("", "the body has data after the JSON object")
	}
	return exactKeys(body, v)
}

// exactKeys refuses keys that encoding/json matched to a field only
// case-insensitively ("Delegation_ID"): the documented names are exact.
func exactKeys(body []byte, v any) error {
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(body, &keys); err != nil {
		return errInvalidJSON("", "the body must be a JSON object")
	}
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	known := map[string]bool{}
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		known[name] = true
	}
	for k := range keys {
		if !known[k] {
			return errInvalidJSON(k, fmt.Sprintf("unknown field %q", k))
		}
	}
	return nil
}

func jsonProblem(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return errInvalidJSON("", fmt.Sprintf("malformed JSON at byte %d", syn.Offset))
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return errInvalidJSON("", fmt.Sprintf("the body must be a JSON object, not %s", typ.Value))
		}
		return errInvalidJSON(field, fmt.Sprintf("field %q must be %s, not %s", field, jsonKind(typ.Type.Kind().String()), typ.Value))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errInvalidJSON("", "the JSON ends early")
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		return errInvalidJSON(name, fmt.Sprintf("unknown field %q", name))
	}
	var p problemError
	if errors.As(err, &p) {
		return p.p
	}
	return errInvalidJSON("", "the body is not valid JSON")
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "slice":
		return "an array"
	case "float64", "int", "int64":
		return "a number"
	case "bool":
		return "true or false"
	case "struct", "ptr":
		return "a value of its documented type"
	}
	return "of its documented type"
}

// problemError carries a problem out of a json.Unmarshaler.
type problemError struct{ p *Problem }

func (e problemError) Error() string { return e.p.Error() }
