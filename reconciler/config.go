package reconciler

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/flowbuilder/reconciler/db"
)

// Config is every setting of the service, read from the environment. The README's
// configuration table lists the same variables; keep them in step.
type Config struct {
	// DatabaseURL is the PostgreSQL connection string (required by `run`).
	DatabaseURL string `envconfig:"DATABASE_URL"`
	// TemporalAddress is the Temporal frontend host:port.
	TemporalAddress string `envconfig:"TEMPORAL_ADDRESS" default:"localhost:7233"`
	// TemporalNamespace is the namespace every project's worker polls in.
	TemporalNamespace string `envconfig:"TEMPORAL_NAMESPACE" default:"default"`

	// PollInterval is the period of the resync that repairs lost notifications (jittered).
	PollInterval time.Duration `envconfig:"RECONCILER_POLL_INTERVAL" default:"30s"`
	// HeartbeatInterval is how often workflow_workers.last_heartbeat is refreshed.
	HeartbeatInterval time.Duration `envconfig:"RECONCILER_HEARTBEAT_INTERVAL" default:"10s"`
	// Concurrency bounds how many projects are reconciled at once.
	Concurrency int `envconfig:"RECONCILER_CONCURRENCY" default:"16"`
	// ReconcileTimeout bounds one reconcile of one project.
	ReconcileTimeout time.Duration `envconfig:"RECONCILER_RECONCILE_TIMEOUT" default:"30s"`
	// WorkerStopTimeout is how long a stopping worker lets in-flight activities finish.
	WorkerStopTimeout time.Duration `envconfig:"RECONCILER_WORKER_STOP_TIMEOUT" default:"10s"`
	// ShutdownTimeout bounds the whole drain on SIGTERM.
	ShutdownTimeout time.Duration `envconfig:"RECONCILER_SHUTDOWN_TIMEOUT" default:"30s"`
	// WorkflowPollers and ActivityPollers are the long polls each worker holds per task
	// type unless the project's worker_options say otherwise.
	WorkflowPollers int `envconfig:"RECONCILER_WORKFLOW_POLLERS" default:"2"`
	ActivityPollers int `envconfig:"RECONCILER_ACTIVITY_POLLERS" default:"2"`
	// MaxNodeExecutions ends a run that executes more nodes than this (runaway loops).
	MaxNodeExecutions int `envconfig:"RECONCILER_MAX_NODE_EXECUTIONS" default:"10000"`
	// DatabaseMaxConns bounds the service's connection pool (the listener has its own).
	DatabaseMaxConns int32 `envconfig:"RECONCILER_DATABASE_MAX_CONNS" default:"10"`

	// LogLevel is debug, info, warn or error; LogFormat is text or json.
	LogLevel  string `envconfig:"RECONCILER_LOG_LEVEL" default:"info"`
	LogFormat string `envconfig:"RECONCILER_LOG_FORMAT" default:"text"`
	// TemporalLogLevel filters the Temporal SDK's own log lines.
	TemporalLogLevel string `envconfig:"RECONCILER_TEMPORAL_LOG_LEVEL" default:"warn"`
}

// LoadConfig reads the environment and validates the result. The error names the
// variable at fault and never quotes a secret.
func LoadConfig() (Config, error) {
	var c Config
	if err := envconfig.Process("", &c); err != nil {
		return Config{}, configError(err)
	}
	return c, c.Validate()
}

// Validate checks every setting; it does not require DatabaseURL (see RequireDatabase).
func (c Config) Validate() error {
	var errs []error
	bad := func(variable, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s %s", variable, fmt.Sprintf(format, args...)))
	}
	if c.DatabaseURL != "" {
		if _, err := db.ParseURL(c.DatabaseURL); err != nil {
			errs = append(errs, err)
		}
	}
	if strings.TrimSpace(c.TemporalAddress) == "" || !strings.Contains(c.TemporalAddress, ":") {
		bad("TEMPORAL_ADDRESS", "must be host:port, got %q", c.TemporalAddress)
	}
	if strings.TrimSpace(c.TemporalNamespace) == "" {
		bad("TEMPORAL_NAMESPACE", "must not be empty")
	}
	positive := func(variable string, d time.Duration) {
		if d <= 0 {
			bad(variable, "must be a positive duration such as 10s, got %s", d)
		}
	}
	positive("RECONCILER_POLL_INTERVAL", c.PollInterval)
	positive("RECONCILER_HEARTBEAT_INTERVAL", c.HeartbeatInterval)
	positive("RECONCILER_RECONCILE_TIMEOUT", c.ReconcileTimeout)
	positive("RECONCILER_SHUTDOWN_TIMEOUT", c.ShutdownTimeout)
	if c.WorkerStopTimeout < 0 {
		bad("RECONCILER_WORKER_STOP_TIMEOUT", "must not be negative, got %s", c.WorkerStopTimeout)
	}
	if c.Concurrency < 1 || c.Concurrency > 1024 {
		bad("RECONCILER_CONCURRENCY", "must be between 1 and 1024, got %d", c.Concurrency)
	}
	if c.WorkflowPollers < 1 || c.WorkflowPollers > 100 {
		bad("RECONCILER_WORKFLOW_POLLERS", "must be between 1 and 100, got %d", c.WorkflowPollers)
	}
	if c.ActivityPollers < 1 || c.ActivityPollers > 100 {
		bad("RECONCILER_ACTIVITY_POLLERS", "must be between 1 and 100, got %d", c.ActivityPollers)
	}
	if c.MaxNodeExecutions < 1 {
		bad("RECONCILER_MAX_NODE_EXECUTIONS", "must be at least 1, got %d", c.MaxNodeExecutions)
	}
	if c.DatabaseMaxConns < 2 {
		bad("RECONCILER_DATABASE_MAX_CONNS", "must be at least 2, got %d", c.DatabaseMaxConns)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		bad("RECONCILER_LOG_LEVEL", "%s", err)
	}
	if _, err := parseLevel(c.TemporalLogLevel); err != nil {
		bad("RECONCILER_TEMPORAL_LOG_LEVEL", "%s", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("RECONCILER_LOG_FORMAT", "must be text or json, got %q", c.LogFormat)
	}
	return errors.Join(errs...)
}

// RequireDatabase is Validate plus a DATABASE_URL, for commands that cannot start a
// private database.
func (c Config) RequireDatabase() error {
	if strings.TrimSpace(c.DatabaseURL) == "" {
		return errors.New("DATABASE_URL is not set: give the PostgreSQL connection string, e.g. postgres://reconciler@db:5432/app")
	}
	return c.Validate()
}

// NewLogger builds the process logger from LogLevel and LogFormat.
func (c Config) NewLogger() *slog.Logger {
	level, _ := parseLevel(c.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("must be debug, info, warn or error, got %q", s)
	}
	return l, nil
}

// configError rewrites envconfig's message, which quotes the offending value, so that
// a secret put in the wrong variable is not printed.
func configError(err error) error {
	var pe *envconfig.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: cannot parse the value as %s", pe.KeyName, pe.TypeName)
	}
	return err
}
