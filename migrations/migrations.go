// Package migrations embeds the schema migrations so that the reconciler binary can
// apply them (`reconciler migrate up`). The same files work with the upstream CLI:
// migrate -path migrations -database "$DATABASE_URL" up.
package migrations

import "embed"

// FS holds every NNNNNN_title.up.sql / .down.sql pair.
//
//go:embed *.sql
var FS embed.FS
