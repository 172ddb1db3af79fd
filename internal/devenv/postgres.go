// Package devenv starts the private servers that `reconciler dev` and the tests run
// against: a PostgreSQL cluster from the machine's server binaries and a Temporal dev
// server from the official CLI. Everything it starts lives in a temporary folder, listens
// on loopback on a free port and dies with the process that started it.
package devenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a private PostgreSQL cluster. Stop and Start may be called again to
// simulate an outage; Close removes the cluster for good.
type Postgres struct {
	super    string
	bin      string
	dir      string
	port     int
	settings []string
	cred     *syscall.Credential
	proc     *child
}

// PostgresOptions tune a private cluster.
type PostgresOptions struct {
	// Settings are extra server settings, e.g. "shared_preload_libraries=pg_stat_statements".
	Settings []string
	// Superuser is the bootstrap superuser's name (default postgres). A cluster laid
	// out like Supabase's has supabase_admin here and creates postgres itself, as an
	// ordinary role.
	Superuser string
}

// StartPostgres creates a cluster in a new temporary folder and starts it. When the
// process runs as root, the server runs as the postgres user, which PostgreSQL requires.
func StartPostgres(ctx context.Context) (*Postgres, error) {
	return StartPostgresWith(ctx, PostgresOptions{})
}

// StartPostgresWith is StartPostgres with options.
func StartPostgresWith(ctx context.Context, opts PostgresOptions) (*Postgres, error) {
	bin, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	p := &Postgres{bin: bin, settings: opts.Settings, super: opts.Superuser}
	if p.super == "" {
		p.super = "postgres"
	}
	if os.Geteuid() == 0 {
		cred, err := credentialOf("postgres")
		if err != nil {
			return nil, fmt.Errorf("start postgres as root: %w", err)
		}
		p.cred = cred
	}
	p.dir, err = os.MkdirTemp("", "reconciler-pg-")
	if err != nil {
		return nil, fmt.Errorf("create postgres folder: %w", err)
	}
	if err := p.chown(p.dir); err != nil {
		p.Close()
		return nil, err
	}
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"),
		"-D", p.dataDir(), "-U", p.super, "-A", "trust", "-E", "UTF8", "--no-locale", "-N")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Pdeathsig: syscall.SIGKILL}
	if out, err := initdb.CombinedOutput(); err != nil {
		p.Close()
		return nil, fmt.Errorf("initdb: %w: %s", err, lastLines(out, 5))
	}
	p.port, err = FreePort()
	if err != nil {
		p.Close()
		return nil, err
	}
	if err := p.Start(ctx); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// URL is the connection string for database name on this cluster, as the role
// postgres (the superuser, unless the cluster was made with another one).
func (p *Postgres) URL(database string) string {
	return p.URLAs("postgres", database)
}

// URLAs is the connection string for database name as role user (local connections
// are trusted: no password).
func (p *Postgres) URLAs(user, database string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", user, p.port, database)
}

// SuperURL is the connection string for database name as the bootstrap superuser.
func (p *Postgres) SuperURL(database string) string {
	return p.URLAs(p.super, database)
}

// Port is the TCP port the cluster listens on.
func (p *Postgres) Port() int { return p.port }

// Start starts the server on the cluster's port and waits until it accepts
// connections. It is an error to start a running server.
func (p *Postgres) Start(ctx context.Context) error {
	if p.proc != nil {
		return errors.New("postgres is already running")
	}
	args := []string{
		"-D", p.dataDir(),
		"-p", strconv.Itoa(p.port),
		"-k", p.dir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections=1000",
		"-c", "shared_buffers=128MB",
	}
	for _, s := range p.settings {
		args = append(args, "-c", s)
	}
	proc, err := startChild(filepath.Join(p.bin, "postgres"), args, p.dir, filepath.Join(p.dir, "postgres.log"), p.cred)
	if err != nil {
		return err
	}
	p.proc = proc
	err = proc.waitReady(ctx, func() error {
		conn, err := pgx.Connect(ctx, p.SuperURL("postgres"))
		if err == nil {
			conn.Close(ctx)
		}
		return err
	})
	if errors.Is(err, errExited) {
		p.proc = nil
		return fmt.Errorf("postgres exited at start: %s", p.tailLog())
	}
	if err != nil {
		p.Stop()
		return fmt.Errorf("postgres did not accept connections: %w", err)
	}
	return nil
}

// Stop shuts the server down (fast shutdown: sessions are disconnected) and keeps the
// cluster, so Start brings the same data back on the same port.
func (p *Postgres) Stop() {
	if p.proc == nil {
		return
	}
	p.proc.stop(syscall.SIGINT, 30*time.Second)
	p.proc = nil
}

// Close stops the server and removes the cluster.
func (p *Postgres) Close() {
	p.Stop()
	if p.dir != "" {
		_ = os.RemoveAll(p.dir)
	}
}

func (p *Postgres) dataDir() string { return filepath.Join(p.dir, "data") }

func (p *Postgres) chown(path string) error {
	if p.cred == nil {
		return nil
	}
	if err := os.Chown(path, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
		return fmt.Errorf("hand %s to the postgres user: %w", path, err)
	}
	return nil
}

func (p *Postgres) tailLog() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "postgres.log"))
	return lastLines(b, 5)
}

// postgresBinDir finds initdb and postgres: PG_BINDIR, then the newest Debian layout
// (/usr/lib/postgresql/N/bin), then PATH.
func postgresBinDir() (string, error) {
	if dir := os.Getenv("PG_BINDIR"); dir != "" {
		return dir, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(matches, func(i, j int) bool { return versionOf(matches[i]) > versionOf(matches[j]) })
	if len(matches) > 0 {
		return filepath.Dir(matches[0]), nil
	}
	if path, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(path), nil
	}
	return "", errors.New("PostgreSQL server binaries not found: install them (apt-get install -y postgresql) or set PG_BINDIR")
}

func versionOf(initdb string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return n
}

func credentialOf(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("look up user %s: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// FreePort returns a TCP port on loopback that nothing listens on right now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Listening reports whether something accepts TCP connections on address.
func Listening(address string) bool {
	conn, err := net.DialTimeout("tcp", address, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}
