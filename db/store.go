package db

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
)

// ErrNotFound is returned when the row a query looks for does not exist.
var ErrNotFound = errors.New("not found")

// Store is the service's access to the database: the generated queries, with the
// driver's errors that callers branch on translated into this package's (a query that
// returns one row gives ErrNotFound rather than pgx.ErrNoRows).
type Store struct {
	*Queries
}

// NewStore wraps a pool (or a connection, or a transaction).
func NewStore(db DBTX) *Store { return &Store{Queries: New(db)} }

// GetCompiledVersion reads a compiled version of a project's workflow; ErrNotFound when
// there is none.
func (s *Store) GetCompiledVersion(ctx context.Context, arg GetCompiledVersionParams) (GetCompiledVersionRow, error) {
	row, err := s.Queries.GetCompiledVersion(ctx, arg)
	return row, translate(err)
}

func translate(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	return err
}
