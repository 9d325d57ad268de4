package api

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"strings"
)

// OpenAPIDocument is the OpenAPI 3.1 description of the API, served at
// /v1/openapi.json. The API's tests validate every response they receive
// against it, so it cannot drift from the handlers.
//
//go:embed openapi.json
var OpenAPIDocument []byte

// documentFor is the document this handler serves: OpenAPIDocument with the
// configured limits (api.max_batch, which bounds ids and beats of POST
// /v1/heartbeats together) in place of the defaults it states.
func documentFor(opts Options) ([]byte, error) {
	if opts.MaxBatch == MaxBatchDefault {
		return OpenAPIDocument, nil
	}
	var doc map[string]any
	if err := json.Unmarshal(OpenAPIDocument, &doc); err != nil {
		return nil, err
	}
	for _, at := range [][]string{
		{"components", "schemas", "HeartbeatsRequest", "properties", "ids"},
		{"components", "schemas", "HeartbeatsRequest", "properties", "beats"},
		{"components", "schemas", "HeartbeatsResponse", "properties", "not_live"},
	} {
		node := doc
		for _, k := range at {
			next, ok := node[k].(map[string]any)
			if !ok {
				return nil, fmt.Errorf("openapi.json has no %s", strings.Join(at, "."))
			}
			node = next
		}
		node["maxItems"] = opts.MaxBatch
	}
	return json.MarshalIndent(doc, "", "  ")
}
