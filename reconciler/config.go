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
	"github.com/flowbuilder/reconciler/reconciler/component"
	"github.com/flowbuilder/reconciler/reconciler/lease"
	"github.com/flowbuilder/reconciler/reconciler/script"
)

// Config is every setting of the service, read from the environment. The README's
// configuration table lists the same variables; keep them in step.
type Config struct {
	// DatabaseURL is the PostgreSQL connection string (required by `run`). It may go
	// through a transaction-mode pooler when ListenDatabaseURL is set.
	DatabaseURL string `envconfig:"DATABASE_URL"`
	// ListenDatabaseURL, when set, is the connection the listener holds for
	// LISTEN/NOTIFY: a direct or session-mode connection string of the same database,
	// for deployments whose DATABASE_URL goes through a transaction-mode pooler
	// (Supabase's pooled URL), where notifications cannot arrive.
	ListenDatabaseURL string `envconfig:"RECONCILER_LISTEN_DATABASE_URL"`
	// TemporalAddress is the Temporal frontend host:port.
	TemporalAddress string `envconfig:"TEMPORAL_ADDRESS"`
	// TemporalNamespace is the namespace every project's worker polls in.
	TemporalNamespace string `envconfig:"TEMPORAL_NAMESPACE"`

	// PollInterval is the period of the resync that repairs lost notifications (jittered).
	PollInterval time.Duration `envconfig:"RECONCILER_POLL_INTERVAL"`
	// HeartbeatInterval is how often workflow_workers.last_heartbeat is refreshed.
	HeartbeatInterval time.Duration `envconfig:"RECONCILER_HEARTBEAT_INTERVAL"`
	// Concurrency bounds how many projects are reconciled at once.
	Concurrency int `envconfig:"RECONCILER_CONCURRENCY"`
	// ReconcileTimeout bounds one reconcile of one project.
	ReconcileTimeout time.Duration `envconfig:"RECONCILER_RECONCILE_TIMEOUT"`
	// WorkerStopTimeout is how long a stopping worker lets in-flight activities finish.
	WorkerStopTimeout time.Duration `envconfig:"RECONCILER_WORKER_STOP_TIMEOUT"`
	// ShutdownTimeout bounds the whole drain on SIGTERM.
	ShutdownTimeout time.Duration `envconfig:"RECONCILER_SHUTDOWN_TIMEOUT"`
	// WorkflowPollers and ActivityPollers are the long polls each worker holds per task
	// type unless the project's worker_options say otherwise.
	WorkflowPollers int `envconfig:"RECONCILER_WORKFLOW_POLLERS"`
	ActivityPollers int `envconfig:"RECONCILER_ACTIVITY_POLLERS"`
	// MaxPollersPerProject caps each poller count a project's worker_options may ask;
	// MaxTaskSlotsPerProject each of its max_concurrent_* values.
	MaxPollersPerProject   int `envconfig:"RECONCILER_MAX_POLLERS_PER_PROJECT"`
	MaxTaskSlotsPerProject int `envconfig:"RECONCILER_MAX_TASK_SLOTS_PER_PROJECT"`
	// PollerBudget bounds the polls of each type this replica's workers hold in all:
	// pollers beyond the defaults are granted only within it.
	PollerBudget int `envconfig:"RECONCILER_POLLER_BUDGET"`
	// MaxNodeExecutions ends a run when one of its paths (the main path, a parallel
	// branch, a foreach iteration) executes more nodes than this in it (runaway loops).
	MaxNodeExecutions int `envconfig:"RECONCILER_MAX_NODE_EXECUTIONS"`
	// UnservedGrace is how long a run of a workflow the project does not serve waits
	// (its workflow task retried) before it fails with WorkflowNotServed.
	UnservedGrace time.Duration `envconfig:"RECONCILER_UNSERVED_GRACE"`
	// DatabaseMaxConns bounds the service's connection pool (the listener has its own).
	DatabaseMaxConns int32 `envconfig:"RECONCILER_DATABASE_MAX_CONNS"`

	// BackoffBase, BackoffMax: a failing project is retried after BackoffBase, doubling
	// up to BackoffMax (jittered); after BackoffResetAfter without failure it starts over.
	BackoffBase       time.Duration `envconfig:"RECONCILER_BACKOFF_BASE"`
	BackoffMax        time.Duration `envconfig:"RECONCILER_BACKOFF_MAX"`
	BackoffResetAfter time.Duration `envconfig:"RECONCILER_BACKOFF_RESET_AFTER"`
	// PollFailureThreshold is how long a worker's polls may fail before its row shows
	// it (outage) or it is restarted (an error retrying cannot fix).
	PollFailureThreshold time.Duration `envconfig:"RECONCILER_POLL_FAILURE_THRESHOLD"`
	// ListenerPingInterval is how often the listener proves it still receives
	// notifications (a NOTIFY to itself); ListenerPingTimeout how long it may take.
	ListenerPingInterval time.Duration `envconfig:"RECONCILER_LISTENER_PING_INTERVAL"`
	ListenerPingTimeout  time.Duration `envconfig:"RECONCILER_LISTENER_PING_TIMEOUT"`
	// StaleAfter: a live row of another host whose heartbeat is older is closed as
	// orphaned (its process is gone).
	StaleAfter time.Duration `envconfig:"RECONCILER_STALE_AFTER"`
	// RowRetention is how long stopped and failed rows are kept (each project's newest
	// row is always kept).
	RowRetention time.Duration `envconfig:"RECONCILER_ROW_RETENTION"`

	// ReplicaID names this process among the replicas sharing the database (default
	// host-pid: stable across container restarts, unique on a host).
	ReplicaID string `envconfig:"RECONCILER_REPLICA_ID"`
	// LeaseTTL is how long a project's lease lasts without renewal; renewals happen every
	// LeaseRenewInterval. A killed replica's projects move after at most about TTL +
	// renew interval; workers survive a database outage of up to TTL - renew interval -
	// 0.5 s when other replicas exist (a lone replica never stops them).
	LeaseTTL           time.Duration `envconfig:"RECONCILER_LEASE_TTL"`
	LeaseRenewInterval time.Duration `envconfig:"RECONCILER_LEASE_RENEW_INTERVAL"`
	// MaxProjects caps the projects this replica runs.
	MaxProjects int `envconfig:"RECONCILER_MAX_PROJECTS"`

	// OpsAddr is where the fleet page (/), /metrics, /healthz and /readyz are served
	// ("off" disables).
	OpsAddr string `envconfig:"RECONCILER_OPS_ADDR"`
	// MetricsProjectLabels labels per-project metrics (ours and the SDK's) with
	// project_id; turn it off for very large fleets.
	MetricsProjectLabels bool `envconfig:"RECONCILER_METRICS_PROJECT_LABELS"`

	// BacklogSampleRate bounds the DescribeTaskQueue requests that sample the running
	// projects' task-queue backlog (two per project: workflow and activity tasks), in
	// requests per second whatever the project count; 0 turns sampling off.
	// BacklogSampleInterval is the least time between two samples of one project.
	BacklogSampleRate     float64       `envconfig:"RECONCILER_BACKLOG_SAMPLE_RATE"`
	BacklogSampleInterval time.Duration `envconfig:"RECONCILER_BACKLOG_SAMPLE_INTERVAL"`

	// HTTPAllowPrivate lets http.request reach loopback, private and link-local
	// addresses (refused by default: workflows run user code).
	HTTPAllowPrivate bool `envconfig:"RECONCILER_HTTP_ALLOW_PRIVATE"`
	// HTTPMaxResponseBytes caps the response body http.request reads.
	HTTPMaxResponseBytes int64 `envconfig:"RECONCILER_HTTP_MAX_RESPONSE_BYTES"`
	// HTTPTimeout bounds an http.request that names no timeout of its own.
	HTTPTimeout time.Duration `envconfig:"RECONCILER_HTTP_TIMEOUT"`
	// ComponentTimeout interrupts a JavaScript component call.
	ComponentTimeout time.Duration `envconfig:"RECONCILER_COMPONENT_TIMEOUT"`
	// ComponentMemoryMB bounds the memory of one component call: its sandbox is stopped
	// when its heap grows by more, and killed when its resident memory passes its idle
	// size plus 1.5 times this (see component.Pool).
	ComponentMemoryMB int `envconfig:"RECONCILER_COMPONENT_MEMORY_MB"`
	// ComponentSandboxes is the number of sandbox processes that run component calls,
	// each one call at a time; a project gets at most all but one of them at once.
	ComponentSandboxes int `envconfig:"RECONCILER_COMPONENT_SANDBOXES"`

	// WorkflowCodeTimeout bounds the JavaScript time of one workflow task of a
	// TypeScript or JavaScript run (below the SDK's 1 s deadlock detector);
	// WorkflowCodeMemoryMB bounds the memory of the run's VM.
	WorkflowCodeTimeout  time.Duration `envconfig:"RECONCILER_WORKFLOW_CODE_TIMEOUT"`
	WorkflowCodeMemoryMB int           `envconfig:"RECONCILER_WORKFLOW_CODE_MEMORY_MB"`

	// LogLevel is debug, info, warn or error; LogFormat is text or json.
	LogLevel  string `envconfig:"RECONCILER_LOG_LEVEL"`
	LogFormat string `envconfig:"RECONCILER_LOG_FORMAT"`
	// TemporalLogLevel filters the Temporal SDK's own log lines.
	TemporalLogLevel string `envconfig:"RECONCILER_TEMPORAL_LOG_LEVEL"`
}

// maxHTTPResponseBytes is the largest http.request response body that still fits,
// with its status and headers, in one Temporal payload.
const maxHTTPResponseBytes = 1_800_000

// DefaultConfig is the configuration of an empty environment (without DATABASE_URL).
func DefaultConfig() Config {
	return Config{
		TemporalAddress:        "localhost:7233",
		TemporalNamespace:      "default",
		PollInterval:           30 * time.Second,
		HeartbeatInterval:      10 * time.Second,
		Concurrency:            16,
		ReconcileTimeout:       30 * time.Second,
		WorkerStopTimeout:      10 * time.Second,
		ShutdownTimeout:        30 * time.Second,
		WorkflowPollers:        2,
		ActivityPollers:        2,
		MaxPollersPerProject:   8,
		MaxTaskSlotsPerProject: 1000,
		PollerBudget:           1000,
		MaxNodeExecutions:      10000,
		UnservedGrace:          5 * time.Minute,
		DatabaseMaxConns:       10,
		BackoffBase:            time.Second,
		BackoffMax:             5 * time.Minute,
		BackoffResetAfter:      10 * time.Minute,
		PollFailureThreshold:   15 * time.Second,
		ListenerPingInterval:   15 * time.Second,
		ListenerPingTimeout:    5 * time.Second,
		StaleAfter:             time.Minute,
		RowRetention:           7 * 24 * time.Hour,
		LeaseTTL:               13 * time.Second,
		LeaseRenewInterval:     time.Second,
		MaxProjects:            5000,
		OpsAddr:                ":9090",
		MetricsProjectLabels:   true,
		BacklogSampleRate:      10,
		BacklogSampleInterval:  15 * time.Second,
		HTTPMaxResponseBytes:   1 << 20,
		HTTPTimeout:            30 * time.Second,
		ComponentTimeout:       10 * time.Second,
		ComponentMemoryMB:      128,
		ComponentSandboxes:     component.DefaultPoolSize(),
		WorkflowCodeTimeout:    script.DefaultLimits.Yield,
		WorkflowCodeMemoryMB:   int(script.DefaultLimits.Memory >> 20),
		LogLevel:               "info",
		LogFormat:              "text",
		TemporalLogLevel:       "warn",
	}
}

// LoadConfig reads the environment over DefaultConfig and validates the result. The
// error names the variable at fault and never quotes a secret.
func LoadConfig() (Config, error) {
	c := DefaultConfig()
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
	if c.ListenDatabaseURL != "" {
		if _, err := db.ParseURLOf("RECONCILER_LISTEN_DATABASE_URL", c.ListenDatabaseURL); err != nil {
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
	if c.WorkflowPollers < 2 || c.WorkflowPollers > 100 {
		bad("RECONCILER_WORKFLOW_POLLERS", "must be between 2 and 100 (the Temporal SDK needs two: one polls the sticky queue), got %d", c.WorkflowPollers)
	}
	if c.ActivityPollers < 1 || c.ActivityPollers > 100 {
		bad("RECONCILER_ACTIVITY_POLLERS", "must be between 1 and 100, got %d", c.ActivityPollers)
	}
	if c.MaxPollersPerProject < max(c.WorkflowPollers, c.ActivityPollers) || c.MaxPollersPerProject > 10000 {
		bad("RECONCILER_MAX_POLLERS_PER_PROJECT", "must be between the default pollers (%d) and 10000, got %d", max(c.WorkflowPollers, c.ActivityPollers), c.MaxPollersPerProject)
	}
	if c.MaxTaskSlotsPerProject < 2 || c.MaxTaskSlotsPerProject > 10000 {
		bad("RECONCILER_MAX_TASK_SLOTS_PER_PROJECT", "must be between 2 and 10000, got %d", c.MaxTaskSlotsPerProject)
	}
	if c.PollerBudget < 1 {
		bad("RECONCILER_POLLER_BUDGET", "must be at least 1, got %d", c.PollerBudget)
	}
	if c.UnservedGrace < 0 {
		bad("RECONCILER_UNSERVED_GRACE", "must not be negative, got %s", c.UnservedGrace)
	}
	if c.MaxNodeExecutions < 1 {
		bad("RECONCILER_MAX_NODE_EXECUTIONS", "must be at least 1, got %d", c.MaxNodeExecutions)
	}
	if c.DatabaseMaxConns < 2 {
		bad("RECONCILER_DATABASE_MAX_CONNS", "must be at least 2, got %d", c.DatabaseMaxConns)
	}
	positive("RECONCILER_BACKOFF_BASE", c.BackoffBase)
	positive("RECONCILER_BACKOFF_RESET_AFTER", c.BackoffResetAfter)
	if c.BackoffMax < c.BackoffBase {
		bad("RECONCILER_BACKOFF_MAX", "must be at least RECONCILER_BACKOFF_BASE (%s), got %s", c.BackoffBase, c.BackoffMax)
	}
	positive("RECONCILER_POLL_FAILURE_THRESHOLD", c.PollFailureThreshold)
	positive("RECONCILER_LISTENER_PING_INTERVAL", c.ListenerPingInterval)
	positive("RECONCILER_LISTENER_PING_TIMEOUT", c.ListenerPingTimeout)
	if c.StaleAfter < 2*c.HeartbeatInterval {
		bad("RECONCILER_STALE_AFTER", "must be at least twice RECONCILER_HEARTBEAT_INTERVAL (%s), got %s", 2*c.HeartbeatInterval, c.StaleAfter)
	}
	positive("RECONCILER_ROW_RETENTION", c.RowRetention)
	positive("RECONCILER_LEASE_RENEW_INTERVAL", c.LeaseRenewInterval)
	if c.LeaseTTL < 3*c.LeaseRenewInterval+lease.Margin {
		bad("RECONCILER_LEASE_TTL", "must be at least three renew intervals plus %s (%s), got %s", lease.Margin, 3*c.LeaseRenewInterval+lease.Margin, c.LeaseTTL)
	}
	if c.MaxProjects < 0 {
		bad("RECONCILER_MAX_PROJECTS", "must not be negative, got %d", c.MaxProjects)
	}
	if len(c.ReplicaID) > 200 {
		bad("RECONCILER_REPLICA_ID", "must be at most 200 characters")
	}
	if c.BacklogSampleRate < 0 || c.BacklogSampleRate > 1000 {
		bad("RECONCILER_BACKLOG_SAMPLE_RATE", "must be between 0 (off) and 1000 requests per second, got %g", c.BacklogSampleRate)
	}
	if c.BacklogSampleInterval < 100*time.Millisecond {
		bad("RECONCILER_BACKLOG_SAMPLE_INTERVAL", "must be at least 100ms, got %s", c.BacklogSampleInterval)
	}
	if c.HTTPMaxResponseBytes < 1 || c.HTTPMaxResponseBytes > maxHTTPResponseBytes {
		bad("RECONCILER_HTTP_MAX_RESPONSE_BYTES", "must be between 1 and %d (a response must fit, with its headers, in a Temporal payload of 2 MB), got %d", maxHTTPResponseBytes, c.HTTPMaxResponseBytes)
	}
	positive("RECONCILER_HTTP_TIMEOUT", c.HTTPTimeout)
	positive("RECONCILER_COMPONENT_TIMEOUT", c.ComponentTimeout)
	if c.ComponentMemoryMB < 1 || c.ComponentMemoryMB > 16<<10 {
		bad("RECONCILER_COMPONENT_MEMORY_MB", "must be between 1 and 16384, got %d", c.ComponentMemoryMB)
	}
	if c.ComponentSandboxes < 1 || c.ComponentSandboxes > 1024 {
		bad("RECONCILER_COMPONENT_SANDBOXES", "must be between 1 and 1024, got %d", c.ComponentSandboxes)
	}
	if c.WorkflowCodeTimeout < 10*time.Millisecond || c.WorkflowCodeTimeout > 900*time.Millisecond {
		bad("RECONCILER_WORKFLOW_CODE_TIMEOUT", "must be between 10ms and 900ms (the Temporal SDK fails a workflow task that does not yield for 1s), got %s", c.WorkflowCodeTimeout)
	}
	if c.WorkflowCodeMemoryMB < 2 || c.WorkflowCodeMemoryMB > 4096 {
		bad("RECONCILER_WORKFLOW_CODE_MEMORY_MB", "must be between 2 and 4096, got %d", c.WorkflowCodeMemoryMB)
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

func (c Config) workerLimits() workerLimits {
	return workerLimits{
		MaxPollers:      c.MaxPollersPerProject,
		MaxSlots:        c.MaxTaskSlotsPerProject,
		PollerBudget:    c.PollerBudget,
		WorkflowPollers: c.WorkflowPollers,
		ActivityPollers: c.ActivityPollers,
	}
}

func (c Config) componentLimits() component.Limits {
	l := component.DefaultLimits
	l.Timeout = c.ComponentTimeout
	l.Memory = int64(c.ComponentMemoryMB) << 20
	return l
}

func (c Config) componentPool(log *slog.Logger) component.PoolConfig {
	return component.PoolConfig{Size: c.ComponentSandboxes, Limits: c.componentLimits(), Log: log}
}

func (c Config) scriptLimits() script.Limits {
	return script.Limits{Memory: int64(c.WorkflowCodeMemoryMB) << 20, Yield: c.WorkflowCodeTimeout}
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
