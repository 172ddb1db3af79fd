package reconciler

import (
	"context"
	"fmt"
	"log/slog"

	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"google.golang.org/grpc"
)

// newTemporalClient makes the one client every project's worker shares. It is lazy: it
// connects on first use, so the service starts while Temporal is down and its workers
// report the outage in their rows instead. Every poll goes through health.
func newTemporalClient(cfg Config, log *slog.Logger, health *pollHealth) (client.Client, error) {
	level, _ := parseLevel(cfg.TemporalLogLevel)
	c, err := client.NewLazyClient(client.Options{
		HostPort:  cfg.TemporalAddress,
		Namespace: cfg.TemporalNamespace,
		Logger:    tlog.NewStructuredLogger(slog.New(minLevel{log.Handler(), level}).With("component", "temporal-sdk")),
		ConnectionOptions: client.ConnectionOptions{
			DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(health.interceptor())},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("temporal client for %s: %w", cfg.TemporalAddress, err)
	}
	return c, nil
}

// minLevel drops records below its level: the SDK logs every worker start at info,
// which is noise with thousands of projects.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(attrs), h.level}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.level}
}
