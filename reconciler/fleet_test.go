package reconciler_test

import (
	"bytes"
	"context"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowbuilder/reconciler/internal/testenv"
	"github.com/flowbuilder/reconciler/reconciler"
)

// fleetRow is one row of the fleet page's table, by cell class.
type fleetRow map[string]string

var (
	rowRE  = regexp.MustCompile(`(?s)<tr class="(ok|bad)" data-project-id="([^"]+)">(.*?)</tr>`)
	cellRE = regexp.MustCompile(`(?s)<td class="([^"]+)"[^>]*>(.*?)</td>`)
)

// fleetRows reads the table out of the page as the browser built it.
func fleetRows(dom string) []fleetRow {
	var rows []fleetRow
	for _, m := range rowRE.FindAllStringSubmatch(dom, -1) {
		r := fleetRow{"row": m[1], "project_id": m[2]}
		for _, c := range cellRE.FindAllStringSubmatch(m[3], -1) {
			for _, class := range strings.Fields(c[1]) {
				r[class] = html.UnescapeString(strings.TrimSpace(c[2]))
			}
		}
		rows = append(rows, r)
	}
	return rows
}

// crashLoopTemporal is a private dev server that refuses task queue names longer
// than a limit, and such a name: a project with it crash-loops (every worker's polls
// fail with InvalidArgument), while projects with ordinary names run.
func crashLoopTemporal(t *testing.T) (address, badQueue string) {
	t.Helper()
	host, _ := os.Hostname()
	limit := max(60, len(host)+40) // worker identities and workflow ids stay under it
	srv := testenv.PrivateTemporal(t, fmt.Sprintf("limit.maxIDLength=%d", limit))
	return srv.Address(), "crash-" + strings.Repeat("x", limit)
}

// The fleet page, loaded in headless Chromium from a service running as the
// least-privilege role: one project runs, the other crash-loops and is listed first
// with its error and restarts; the page has no control of any kind, reloads itself,
// and a screenshot is saved.
func TestFleetPageInChromium(t *testing.T) {
	t.Parallel()
	address, badQueue := crashLoopTemporal(t)
	db := testenv.Database(t)
	login := "fleet_" + db.Name
	exec(t, db.Pool, `CREATE ROLE `+login+` LOGIN IN ROLE reconciler_service`)
	t.Cleanup(func() { _, _ = db.Pool.Exec(context.Background(), `DROP ROLE IF EXISTS `+login) })
	svc := startService(t, db, func(c *reconciler.Config) {
		c.OpsAddr = "127.0.0.1:0"
		c.DatabaseURL = db.URLAs(login)
		c.TemporalAddress = address
		c.BackoffBase, c.BackoffMax = 5*time.Second, 5*time.Second // failed for 5 s, then polling for 1 s
	})
	base := "http://" + svc.OpsAddr() + "/"

	good, _ := project(t, db.Pool)
	workflow(t, db.Pool, good, "greet", greetV1)
	bad, _ := project(t, db.Pool)
	exec(t, db.Pool, `UPDATE projects SET task_queue_name = $2 WHERE id = $1`, bad, badQueue)
	workflow(t, db.Pool, bad, "greet", greetV1)
	setDesired(t, db.Pool, good, "running")
	setDesired(t, db.Pool, bad, "running")
	waitWorker(t, db.Pool, good, 30*time.Second, hasStatus("running"))
	waitWorker(t, db.Pool, bad, 30*time.Second, hasStatus("failed"))

	// Read the table, and take the screenshot while it shows the failure.
	var rows []fleetRow
	var dom string
	shot := filepath.Join(testenv.ArtifactDir(t), "fleet-page.png")
	failing := func() bool {
		dom = testenv.Chromium(t, "--dump-dom", base)
		rows = fleetRows(dom)
		return len(rows) == 2 && rows[0]["row"] == "bad" && rows[1]["heartbeat"] != "-"
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		if !failing() {
			return false, fmt.Sprintf("rows %v", rows)
		}
		testenv.Chromium(t, "--screenshot="+shot, "--window-size=1400,360", base)
		return failing(), fmt.Sprintf("rows after the screenshot %v", rows)
	})
	first, second := rows[0], rows[1]
	if first["project_id"] != bad.String() || first["row"] != "bad" || first["health"] != "NOT HEALTHY" ||
		first["desired"] != "running" || !strings.Contains(first["error"], "InvalidArgument") || first["restarts"] == "0" {
		t.Errorf("first row should be the crash-looping project %s: %v", bad, first)
	}
	if second["project_id"] != good.String() || second["row"] != "ok" || second["health"] != "healthy" || second["actual"] != "running" ||
		second["generation-desired"] != second["generation-observed"] || second["replica"] == "-" || second["restarts"] != "0" {
		t.Errorf("second row should be the running project %s: %v", good, second)
	}
	if !strings.Contains(dom, "2 projects") || !strings.Contains(dom, "1 not healthy") {
		t.Errorf("no summary line in the page")
	}
	t.Logf("unhealthy first: %s %s, %s restarts, %.80s", first["id"], first["health"], first["restarts"], first["error"])
	for _, control := range []string{"<form", "<button", "<input", "<select", "<textarea", "<script", "method="} {
		if strings.Contains(strings.ToLower(dom), control) {
			t.Errorf("the fleet page contains %s: it must offer no control", control)
		}
	}
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		req, _ := http.NewRequest(method, base, strings.NewReader("desired_status=stopped"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s /: %d, want 405", method, resp.StatusCode)
		}
	}

	png, err := os.ReadFile(shot)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))

	// It reloads by itself: through a proxy that notes when it is fetched, a page asking
	// for a reload every second and left open in the browser is fetched again about a
	// second after the first time.
	target, _ := url.Parse(base)
	var mu sync.Mutex
	var fetched []time.Time
	proxy := httputil.NewSingleHostReverseProxy(target)
	counting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			mu.Lock()
			fetched = append(fetched, time.Now())
			mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	}))
	defer counting.Close()
	times := func() []time.Time {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(fetched)
	}
	testenv.ChromiumOpen(t, counting.URL+"/?refresh=1", 30*time.Second, func() bool { return len(times()) >= 3 })
	got := times()
	if len(got) < 3 {
		t.Fatalf("the page was fetched %d times in 30 s with a 1 s refresh: it does not reload itself", len(got))
	}
	if gap := got[2].Sub(got[1]); gap < 500*time.Millisecond || gap > 3*time.Second {
		t.Errorf("reloaded %s after the previous load, want about 1 s", gap)
	}
	t.Logf("reloaded by itself every %s", got[2].Sub(got[1]).Round(10*time.Millisecond))
}
