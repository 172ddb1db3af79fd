package devenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// PgBouncer is a private PgBouncer in front of a private PostgreSQL cluster: the
// connection pooler Supabase's pooled connection strings go through.
type PgBouncer struct {
	dir  string
	port int
	proc *child
}

// StartPgBouncer starts PgBouncer on a free port in front of every database of pg,
// in pool mode mode ("transaction" or "session"). Clients log in without a password
// as the cluster's superuser, postgres, or one of users.
func StartPgBouncer(ctx context.Context, pg *Postgres, mode string, users ...string) (*PgBouncer, error) {
	bin, err := pgbouncerBinary()
	if err != nil {
		return nil, err
	}
	b := &PgBouncer{}
	if b.port, err = FreePort(); err != nil {
		return nil, err
	}
	if b.dir, err = os.MkdirTemp("", "reconciler-pgbouncer-"); err != nil {
		return nil, fmt.Errorf("create pgbouncer folder: %w", err)
	}
	ini := fmt.Sprintf(`[databases]
* = host=127.0.0.1 port=%d

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = %s
max_client_conn = 1000
default_pool_size = 20
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = %s
`, pg.Port(), b.port, filepath.Join(b.dir, "users.txt"), mode, filepath.Join(b.dir, "pgbouncer.log"))
	var authFile strings.Builder
	for _, u := range append([]string{pg.super, "postgres"}, users...) {
		fmt.Fprintf(&authFile, "%q \"\"\n", u)
	}
	if err := os.WriteFile(filepath.Join(b.dir, "users.txt"), []byte(authFile.String()), 0o644); err != nil {
		b.Close()
		return nil, err
	}
	iniPath := filepath.Join(b.dir, "pgbouncer.ini")
	if err := os.WriteFile(iniPath, []byte(ini), 0o644); err != nil {
		b.Close()
		return nil, err
	}
	if err := pg.chown(b.dir); err != nil { // PgBouncer refuses to run as root, like PostgreSQL
		b.Close()
		return nil, err
	}
	for _, f := range []string{iniPath, filepath.Join(b.dir, "users.txt")} {
		if err := pg.chown(f); err != nil {
			b.Close()
			return nil, err
		}
	}
	b.proc, err = startChild(bin, []string{iniPath}, b.dir, filepath.Join(b.dir, "stdout.log"), pg.cred)
	if err != nil {
		b.Close()
		return nil, err
	}
	err = b.proc.waitReady(ctx, func() error {
		conn, err := pgx.Connect(ctx, b.URL(pg.super, "postgres"))
		if err == nil {
			conn.Close(ctx)
		}
		return err
	})
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(b.dir, "pgbouncer.log"))
		b.Close()
		return nil, fmt.Errorf("pgbouncer did not accept connections: %w: %s", err, lastLines(log, 5))
	}
	return b, nil
}

// URL is the connection string of database through the pooler, as user (the pooler
// logs in to PostgreSQL as that user).
func (b *PgBouncer) URL(user, database string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", user, b.port, database)
}

// Port is the pooler's TCP port.
func (b *PgBouncer) Port() int { return b.port }

// Close stops PgBouncer and removes its folder.
func (b *PgBouncer) Close() {
	if b.proc != nil {
		b.proc.stop(syscall.SIGINT, 10*time.Second)
		b.proc = nil
	}
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
}

// pgbouncerBinary finds pgbouncer: PGBOUNCER, PATH, then Debian's /usr/sbin.
func pgbouncerBinary() (string, error) {
	if p := os.Getenv("PGBOUNCER"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/pgbouncer"); err == nil {
		return "/usr/sbin/pgbouncer", nil
	}
	return "", errors.New("pgbouncer not found: install it (apt-get install -y pgbouncer) or set PGBOUNCER")
}
