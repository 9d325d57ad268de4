package api

import _ "embed"

// OpenAPIDocument is the OpenAPI 3.1 description of the API, served at
// /v1/openapi.json. The API's tests validate every response they receive
// against it, so it cannot drift from the handlers.
//
//go:embed openapi.json
var OpenAPIDocument []byte
