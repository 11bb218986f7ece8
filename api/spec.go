package api

import _ "embed"

// OpenAPI is the API description (openapi.yaml), served nowhere but kept in
// the binary so tools and tests use exactly what was built.
//
//go:embed openapi.yaml
var OpenAPI []byte
