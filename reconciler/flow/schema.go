package flow

import _ "embed"

// Schema is the JSON Schema (draft 2020-12) of the definition format: what it refuses,
// Parse refuses; its description lists what Parse checks beyond it. Tests hold the two
// to agree on every definition the tests use.
//
//go:embed schema.json
var Schema []byte
