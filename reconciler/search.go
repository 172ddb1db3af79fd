package reconciler

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// The search attributes every run sets when its namespace has them, so that a
// project's runs, and the runs of one compiled version, can be listed in the Temporal
// UI and CLI:
//
//	temporal workflow list --query "ReconcilerProjectId = '<project id>' AND ReconcilerCompiledVersion = 3"
const (
	// SearchAttributeProject (Keyword) is the run's project id.
	SearchAttributeProject = "ReconcilerProjectId"
	// SearchAttributeVersion (Int) is the compiled_workflows.version the run is pinned to.
	SearchAttributeVersion = "ReconcilerCompiledVersion"
)

// SearchAttributes are the service's search attributes with their types, in the
// "Name=Type" form of `temporal server start-dev --search-attribute`.
func SearchAttributes() []string {
	return []string{SearchAttributeProject + "=Keyword", SearchAttributeVersion + "=Int"}
}

var searchAttributeTypes = []struct {
	name string
	typ  enums.IndexedValueType
}{
	{SearchAttributeProject, enums.INDEXED_VALUE_TYPE_KEYWORD},
	{SearchAttributeVersion, enums.INDEXED_VALUE_TYPE_INT},
}

// RegisterSearchAttributes adds the service's search attributes that the namespace
// lacks (OperatorService.AddSearchAttributes) and returns the names it added. An
// attribute of the same name and another type is an error: rename one of them.
func RegisterSearchAttributes(ctx context.Context, tc client.Client, namespace string) ([]string, error) {
	have, err := tc.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		return nil, fmt.Errorf("list search attributes of namespace %s: %w", namespace, err)
	}
	missing := map[string]enums.IndexedValueType{}
	var added []string
	for _, a := range searchAttributeTypes {
		typ, ok := have.GetCustomAttributes()[a.name]
		switch {
		case !ok:
			missing[a.name] = a.typ
			added = append(added, a.name)
		case typ != a.typ:
			return nil, fmt.Errorf("namespace %s has search attribute %s of type %s, the service needs %s", namespace, a.name, typ, a.typ)
		}
	}
	if len(missing) == 0 {
		return nil, nil
	}
	_, err = tc.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace: namespace, SearchAttributes: missing,
	})
	if err != nil {
		return nil, fmt.Errorf("add search attributes %v to namespace %s: %w", added, namespace, err)
	}
	sort.Strings(added)
	return added, nil
}

// searchIndex knows which of the service's search attributes the namespace has. It
// asks once at start (retrying from every second until Temporal answers), then every
// searchRefresh, so that attributes registered later are used within that time. A
// run reads it once, when it starts, and records the answer in its pinned SideEffect:
// a namespace without the attributes never sees an upsert (no failed workflow task),
// and replays do not depend on what the namespace has now.
type searchIndex struct {
	temporal  client.Client
	namespace string
	log       *slog.Logger
	available *prometheus.GaugeVec // attribute: 1 the namespace has it, 0 not (absent before the first answer)

	project, version atomic.Bool
	checked          atomic.Bool // answered at least once

	runner
}

const searchRefresh = time.Minute

// Start runs the loop until Stop.
func (s *searchIndex) Start(ctx context.Context) error {
	s.start(ctx, s.loop)
	return nil
}

// Stop ends the loop; idempotent.
func (s *searchIndex) Stop() {
	s.stop()
}

func (s *searchIndex) loop(ctx context.Context) {
	known, retry := false, time.Second
	for {
		next := searchRefresh
		if err := s.check(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			if !known {
				// Not answered yet: again soon, backing off to the refresh interval (a
				// Temporal that refuses the call is asked once a minute).
				next, retry = retry, min(2*retry, searchRefresh)
			}
			s.log.Debug("cannot list the namespace's search attributes", "error", err)
		} else {
			known = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
	}
}

// check asks the namespace which attributes it has.
func (s *searchIndex) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := s.temporal.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: s.namespace})
	if err != nil {
		return err
	}
	attrs := resp.GetCustomAttributes()
	project := attrs[SearchAttributeProject] == enums.INDEXED_VALUE_TYPE_KEYWORD
	version := attrs[SearchAttributeVersion] == enums.INDEXED_VALUE_TYPE_INT
	s.available.WithLabelValues(SearchAttributeProject).Set(b2f(project))
	s.available.WithLabelValues(SearchAttributeVersion).Set(b2f(version))
	wasProject, wasVersion := s.project.Swap(project), s.version.Swap(version)
	if s.checked.Swap(true) && wasProject == project && wasVersion == version {
		return nil
	}
	if project && version {
		s.log.Info("runs are indexed by project and compiled version", "namespace", s.namespace, "search_attributes", SearchAttributes())
	} else {
		s.log.Warn("the namespace lacks the service's search attributes: runs are not indexed by project and version; register them with `reconciler search-attributes`",
			"namespace", s.namespace, SearchAttributeProject, project, SearchAttributeVersion, version)
	}
	return nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// pin is what a run starting now records: the attributes to upsert (nil: none).
func (s *searchIndex) pin(project string) *pinnedSearch {
	if s == nil {
		return nil
	}
	p := &pinnedSearch{Version: s.version.Load()}
	if s.project.Load() {
		p.ProjectID = project
	}
	if p.ProjectID == "" && !p.Version {
		return nil
	}
	return p
}

// pinnedSearch is the search attributes a run upserts when it starts, decided then and
// recorded in its pinned SideEffect.
type pinnedSearch struct {
	ProjectID string `json:"project_id,omitempty"` // "": the namespace has no ReconcilerProjectId
	Version   bool   `json:"version,omitempty"`    // set ReconcilerCompiledVersion to the pinned version
}

var (
	searchProjectKey = temporal.NewSearchAttributeKeyKeyword(SearchAttributeProject)
	searchVersionKey = temporal.NewSearchAttributeKeyInt64(SearchAttributeVersion)
)

// upsertSearch sets the run's search attributes as its pin says (nothing for runs
// pinned before the service set any, or in a namespace without them).
func upsertSearch(ctx workflow.Context, pin pinned) error {
	if pin.Search == nil {
		return nil
	}
	var updates []temporal.SearchAttributeUpdate
	if pin.Search.ProjectID != "" {
		updates = append(updates, searchProjectKey.ValueSet(pin.Search.ProjectID))
	}
	if pin.Search.Version {
		updates = append(updates, searchVersionKey.ValueSet(int64(pin.Version)))
	}
	if len(updates) == 0 {
		return nil
	}
	return workflow.UpsertTypedSearchAttributes(ctx, updates...)
}
