package reconciler_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/flowbuilder/reconciler/internal/testenv"
)

// A response bigger than the cap fails clearly at once (it would not fit a Temporal
// payload anyway), instead of failing with a size error after the request succeeded.
func TestHTTPResponseOverTheCapFailsClearly(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	tc := testenv.TemporalClient(t)
	startService(t, db)
	big := strings.Repeat("x", 3<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(big[:len(big)*len(r.URL.Query().Get("n"))/3]))
	}))
	defer srv.Close()

	id, queue := project(t, db.Pool)
	workflow(t, db.Pool, id, "fetch", `{"version": 1, "start": "h", "nodes": {
		"h": {"type": "activity", "activity": "http.request", "input": {"url": "${input}"}, "next": "r"},
		"r": {"type": "return", "value": "${len(nodes.h.output.body)}"}}}`)
	setDesired(t, db.Pool, id, "running")
	waitWorker(t, db.Pool, id, 30*time.Second, hasStatus("running"))

	var n float64
	if err := execute(t, tc, queue, "fetch", srv.URL+"/?n=", &n); err != nil || n != 0 {
		t.Fatalf("an empty response: %v, %v", n, err)
	}
	var out any
	err := execute(t, tc, queue, "fetch", srv.URL+"/?n=xxx", &out)
	if app := failureOfType(err, "HTTPResponseTooLarge"); app == nil || !app.NonRetryable() {
		t.Fatalf("a 3 MiB response: %v, %v; want a non-retryable HTTPResponseTooLarge", out, err)
	}
}
