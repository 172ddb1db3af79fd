package reconciler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// opsServer is the ops listener: the fleet page (/), /metrics, /healthz and /readyz.
// It has no control endpoint: everything the service does is decided by the database.
type opsServer struct {
	addr     string // RECONCILER_OPS_ADDR; "" or "off": none
	fleet    http.Handler
	registry *prometheus.Registry
	healthy  func() error
	ready    func(ctx context.Context) (map[string]string, bool)
	log      *slog.Logger

	srv      *http.Server
	bound    atomic.Value // the address actually bound
	done     chan struct{}
	stopOnce sync.Once
}

// Start binds the listener (an error names RECONCILER_OPS_ADDR) and serves until Stop.
func (o *opsServer) Start(context.Context) error {
	if o.addr == "" || o.addr == "off" {
		return nil
	}
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("ops listener on RECONCILER_OPS_ADDR=%s: %w", o.addr, err)
	}
	mux := http.NewServeMux()
	if o.fleet != nil {
		mux.Handle("GET /{$}", o.fleet)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", o.serveHealthz)
	mux.HandleFunc("GET /readyz", o.serveReadyz)
	o.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	o.bound.Store(ln.Addr().String())
	o.done = make(chan struct{})
	go func() {
		defer close(o.done)
		if err := o.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.log.Error("ops listener stopped", "error", err)
		}
	}()
	o.log.Info("ops listener", "addr", ln.Addr().String())
	return nil
}

// Stop shuts the listener down; idempotent.
func (o *opsServer) Stop() {
	o.stopOnce.Do(func() {
		if o.srv == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = o.srv.Shutdown(ctx)
		<-o.done
	})
}

// Addr is the address the listener is bound to ("" when disabled).
func (o *opsServer) Addr() string {
	if a, ok := o.bound.Load().(string); ok {
		return a
	}
	return ""
}

func (o *opsServer) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	if err := o.healthy(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

func (o *opsServer) serveReadyz(w http.ResponseWriter, req *http.Request) {
	checks, ready := o.ready(req.Context())
	w.Header().Set("Content-Type", "application/json")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"ready": ready, "checks": checks})
}

// loopAlive checks that a periodic loop went round lately (last: unix nanos of its
// last round, 0 before the first).
func loopAlive(name string, last int64, interval time.Duration, now time.Time) error {
	allowed := max(3*interval, 5*time.Second)
	if last != 0 && now.Sub(time.Unix(0, last)) > allowed {
		return fmt.Errorf("the %s loop has not gone round for %s", name, now.Sub(time.Unix(0, last)).Round(time.Second))
	}
	return nil
}
