package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/golang-migrate/migrate/v4"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/flowbuilder/reconciler/migrations"
)

// Migrator applies the embedded migrations under golang-migrate's advisory lock.
type Migrator struct {
	m  *migrate.Migrate
	db *sql.DB
}

// NewMigrator connects to databaseURL for migrating. Close it when done.
func NewMigrator(ctx context.Context, databaseURL string) (*Migrator, error) {
	cfg, err := ParseURL(databaseURL)
	if err != nil {
		return nil, err
	}
	sqldb := stdlib.OpenDB(*cfg.ConnConfig)
	if err := sqldb.PingContext(ctx); err != nil {
		sqldb.Close()
		return nil, fmt.Errorf("connect for migrations: %w", err)
	}
	driver, err := migratepgx.WithInstance(sqldb, &migratepgx.Config{})
	if err != nil {
		sqldb.Close()
		return nil, fmt.Errorf("prepare migrations: %w", err)
	}
	src, err := iofs.New(migrations.FS, ".")
	if err != nil {
		sqldb.Close()
		return nil, fmt.Errorf("read embedded migrations: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", driver)
	if err != nil {
		sqldb.Close()
		return nil, fmt.Errorf("prepare migrations: %w", err)
	}
	return &Migrator{m: m, db: sqldb}, nil
}

// Up applies every migration not applied yet. Nothing to do is not an error.
func (g *Migrator) Up() error {
	if err := g.m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("migrate up: %w", err)
	}
	return nil
}

// Down reverts the n newest migrations.
func (g *Migrator) Down(n int) error {
	if n <= 0 {
		return fmt.Errorf("migrate down: the number of migrations to revert must be positive, got %d", n)
	}
	if err := g.m.Steps(-n); err != nil {
		return fmt.Errorf("migrate down %d: %w", n, err)
	}
	return nil
}

// Version reports the applied version; ok is false on a database never migrated.
func (g *Migrator) Version() (version uint, dirty, ok bool, err error) {
	version, dirty, err = g.m.Version()
	if errors.Is(err, migrate.ErrNilVersion) {
		return 0, false, false, nil
	}
	if err != nil {
		return 0, false, false, fmt.Errorf("migration version: %w", err)
	}
	return version, dirty, true, nil
}

// Close releases the connection.
func (g *Migrator) Close() error {
	srcErr, dbErr := g.m.Close()
	return errors.Join(srcErr, dbErr)
}

// Migrate applies every pending migration to databaseURL.
func Migrate(ctx context.Context, databaseURL string) error {
	g, err := NewMigrator(ctx, databaseURL)
	if err != nil {
		return err
	}
	defer g.Close()
	return g.Up()
}
