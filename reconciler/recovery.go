package reconciler

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/client"
)

// recovery brings workers back within a fraction of a second after a Temporal outage.
// While Temporal is down the SDK backs its pollers off, up to 10 s between attempts,
// and the shared gRPC connection backs off its reconnects the same way: left alone, a
// worker resumes polling up to about 12 s after Temporal answers again. While some
// worker's polls fail (or projects wait to retry a start that failed for Temporal),
// recovery probes Temporal's address every probeInterval; as soon as it accepts
// connections it resets the connection's backoff, checks that Temporal answers, and
// has every worker whose polls were still failing replaced (a restart: the new worker
// polls at once, the old one stops after it) and every waiting project retried. A
// worker whose polls recovered by themselves is left alone.
type recovery struct {
	address  string
	temporal client.Client
	health   *pollHealth
	workers  *workerSet
	failures *failures
	retry    func(id uuid.UUID) // reconcile a project now
	log      *slog.Logger

	runner
}

const (
	// probeInterval is how often Temporal is probed while polls fail.
	probeInterval = 250 * time.Millisecond
	// replaceAfter: a worker is replaced only once its polls have failed this long and
	// it is at least this old, so that a half-up Temporal does not make a restart loop.
	replaceAfter = time.Second
)

// Start runs the loop until Stop.
func (rc *recovery) Start(ctx context.Context) error {
	rc.start(ctx, rc.loop)
	return nil
}

// Stop ends the loop; idempotent.
func (rc *recovery) Stop() {
	rc.stop()
}

func (rc *recovery) loop(ctx context.Context) {
	ticker := time.NewTicker(probeInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		rc.round(ctx)
	}
}

// round probes Temporal if anything waits for it, and acts when it answers.
func (rc *recovery) round(ctx context.Context) {
	var failing []*projectWorker
	for _, pw := range rc.workers.List() {
		st := rc.health.state(pw.id)
		if !st.failingSince.IsZero() && !st.permanent && time.Since(st.failingSince) >= replaceAfter &&
			time.Since(pw.startedAt) >= replaceAfter && !pw.replace.Load() {
			failing = append(failing, pw)
		}
	}
	waiting := rc.failures.WaitingOnTemporal()
	if len(failing) == 0 && len(waiting) == 0 {
		return
	}
	conn, err := net.DialTimeout("tcp", rc.address, probeInterval)
	if err != nil {
		return // still down
	}
	conn.Close()
	rc.health.resetConnectBackoff()
	hctx, cancel := context.WithTimeout(ctx, time.Second)
	_, err = rc.temporal.CheckHealth(hctx, &client.CheckHealthRequest{})
	cancel()
	if err != nil {
		return
	}
	rc.log.Info("Temporal answers again; replacing the workers whose polls failed and retrying waiting projects",
		"workers", len(failing), "projects", len(waiting))
	for _, pw := range failing {
		pw.replace.Store(true)
		rc.retry(pw.project)
	}
	for _, id := range waiting {
		rc.failures.RetryNow(id)
		rc.retry(id)
	}
}
