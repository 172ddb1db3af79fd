package reconciler

import (
	"bytes"
	"context"
	_ "embed"
	"html/template"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/flowbuilder/reconciler/db"
)

//go:embed fleet.html
var fleetHTML string

var fleetTemplate = template.Must(template.New("fleet").Parse(fleetHTML))

// fleetPage is the ops listener's `/`: every project's state as project_worker_health
// has it, the unhealthy first, rendered on the server and reloading itself. It is read
// only, like the rest of the ops listener: it has no form, no script and answers GET
// alone; what the service does is still decided by the database.
type fleetPage struct {
	read    func(ctx context.Context) ([]db.ProjectHealthRow, []db.ReplicaProblemsRow, error)
	replica string
	log     *slog.Logger
	refresh time.Duration
	maxRows int
}

// fleetRow is one project as the page shows it.
type fleetRow struct {
	ID, ShortID, Name, Desired, Actual    string
	Healthy                               bool
	GenerationDesired, GenerationObserved string
	Restarts                              int32
	Replica, HeartbeatAge, LastError      string
}

type fleetView struct {
	Rows                      []fleetRow
	Problems                  []db.ReplicaProblemsRow
	Total, Unhealthy, Running int
	Hidden                    int
	Replica, Now, Error       string
	Refresh                   int
}

func newFleetPage(store *db.Store, replica string, log *slog.Logger) *fleetPage {
	return &fleetPage{
		read: func(ctx context.Context) ([]db.ProjectHealthRow, []db.ReplicaProblemsRow, error) {
			rows, err := store.ProjectHealth(ctx)
			if err != nil {
				return nil, nil, err
			}
			problems, err := store.ReplicaProblems(ctx)
			return rows, problems, err
		},
		replica: replica,
		log:     log,
		refresh: 5 * time.Second,
		maxRows: 1000,
	}
}

func (f *fleetPage) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	ctx, cancel := context.WithTimeout(req.Context(), 5*time.Second)
	defer cancel()
	now := time.Now()
	rows, problems, err := f.read(ctx)
	v := fleetView{Replica: f.replica, Now: now.UTC().Format("2006-01-02 15:04:05 UTC"), Refresh: int(f.refresh.Seconds()), Problems: problems}
	if n, err := strconv.Atoi(req.URL.Query().Get("refresh")); err == nil && n >= 1 && n <= 3600 {
		v.Refresh = n // ?refresh=N: reload every N seconds instead
	}
	status := http.StatusOK
	if err != nil {
		f.log.Warn("fleet page: cannot read project_worker_health", "error", err)
		v.Error = err.Error()
		status = http.StatusServiceUnavailable
	}
	v.Total = len(rows)
	for _, r := range rows {
		if !r.IsHealthy {
			v.Unhealthy++
		}
		if r.ActualStatus == "running" {
			v.Running++
		}
	}
	if len(rows) > f.maxRows {
		v.Hidden = len(rows) - f.maxRows
		rows = rows[:f.maxRows]
	}
	for _, r := range rows {
		v.Rows = append(v.Rows, toFleetRow(r, now))
	}
	var body bytes.Buffer
	if err := fleetTemplate.Execute(&body, v); err != nil {
		http.Error(w, "render the fleet page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// Nothing runs on the page and nothing leaves it: no script, no form, no frame.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_, _ = w.Write(body.Bytes())
}

func toFleetRow(r db.ProjectHealthRow, now time.Time) fleetRow {
	id := r.ProjectID.String()
	row := fleetRow{
		ID: id, ShortID: id[:8], Name: r.ProjectName, Desired: r.DesiredStatus, Actual: dashIfEmpty(r.ActualStatus),
		Healthy: r.IsHealthy, GenerationDesired: strconv.FormatInt(r.GenerationDesired, 10), GenerationObserved: "-",
		Restarts: r.Restarts, Replica: dashIfEmpty(r.OwnerReplica), HeartbeatAge: "-", LastError: r.LastError,
	}
	if r.WorkerID != "" {
		row.GenerationObserved = strconv.FormatInt(r.GenerationObserved, 10)
	}
	if r.LastHeartbeat != nil {
		row.HeartbeatAge = max(now.Sub(*r.LastHeartbeat), 0).Round(100 * time.Millisecond).String()
	}
	if r.NextRetryAt != "" {
		row.LastError = strings.TrimSpace("retry at " + r.NextRetryAt + ": " + row.LastError)
	}
	return row
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
