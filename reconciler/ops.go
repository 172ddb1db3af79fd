package reconciler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.temporal.io/sdk/client"
)

// The ops listener serves /metrics, /healthz and /readyz. It has no control endpoint:
// everything the service does is decided by the database.

// loopTicks records when each periodic loop last went round, for /healthz.
type loopTicks struct {
	renew, fence, heartbeat atomic.Int64
}

func tick(t *atomic.Int64) { t.Store(time.Now().UnixNano()) }

// startOps binds the ops listener; the server runs until stopOps.
func (r *Reconciler) startOps() error {
	if r.cfg.OpsAddr == "" || r.cfg.OpsAddr == "off" {
		return nil
	}
	ln, err := net.Listen("tcp", r.cfg.OpsAddr)
	if err != nil {
		return fmt.Errorf("ops listener on RECONCILER_OPS_ADDR=%s: %w", r.cfg.OpsAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(r.metrics.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", r.serveHealthz)
	mux.HandleFunc("GET /readyz", r.serveReadyz)
	r.ops = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	r.opsAddr.Store(ln.Addr().String())
	r.opsDone = make(chan struct{})
	go func() {
		defer close(r.opsDone)
		if err := r.ops.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Error("ops listener stopped", "error", err)
		}
	}()
	r.log.Info("ops listener", "addr", ln.Addr().String())
	return nil
}

func (r *Reconciler) stopOps() {
	if r.ops == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = r.ops.Shutdown(ctx)
	<-r.opsDone
}

// OpsAddr is the address the ops listener is bound to ("" when disabled).
func (r *Reconciler) OpsAddr() string {
	if a, ok := r.opsAddr.Load().(string); ok {
		return a
	}
	return ""
}

// Healthy says whether the process's loops are going round.
func (r *Reconciler) Healthy() error {
	now := time.Now()
	for _, l := range []struct {
		name     string
		at       *atomic.Int64
		interval time.Duration
	}{
		{"lease renewal", &r.ticks.renew, r.cfg.LeaseRenewInterval},
		{"fencing", &r.ticks.fence, 100 * time.Millisecond},
		{"heartbeat", &r.ticks.heartbeat, r.cfg.HeartbeatInterval},
	} {
		allowed := max(3*l.interval, 5*time.Second)
		if last := l.at.Load(); last != 0 && now.Sub(time.Unix(0, last)) > allowed {
			return fmt.Errorf("the %s loop has not gone round for %s", l.name, now.Sub(time.Unix(0, last)).Round(time.Second))
		}
	}
	return nil
}

func (r *Reconciler) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	if err := r.Healthy(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

// Ready checks what the service needs to do its job: the database, the listener's
// connection and Temporal. The map holds "ok" or the problem for each.
func (r *Reconciler) Ready(ctx context.Context) (map[string]string, bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	checks := map[string]string{"database": "ok", "listener": "ok", "temporal": "ok"}
	if err := r.pool.Ping(ctx); err != nil {
		checks["database"] = err.Error()
	}
	if p := r.ListenerProblem(); p != "" {
		checks["listener"] = p
	} else if !r.listenerUp.Load() {
		checks["listener"] = "not connected"
	}
	if _, err := r.shared.temporal.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
		checks["temporal"] = err.Error()
	}
	if r.stopping.Load() {
		checks["shutdown"] = "draining"
	}
	ready := true
	for _, v := range checks {
		if v != "ok" {
			ready = false
		}
	}
	return checks, ready
}

func (r *Reconciler) serveReadyz(w http.ResponseWriter, req *http.Request) {
	checks, ready := r.Ready(req.Context())
	w.Header().Set("Content-Type", "application/json")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"ready": ready, "checks": checks})
}
