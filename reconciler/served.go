package reconciler

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/google/uuid"

	"github.com/flowbuilder/reconciler/db"
	"github.com/flowbuilder/reconciler/reconciler/component"
	"github.com/flowbuilder/reconciler/reconciler/flow"
	"github.com/flowbuilder/reconciler/reconciler/script"
)

// What a worker serves: the project's active workflows at their highest valid
// compiled version and its active components, loaded from the reconcile's one read of
// the project (db.LoadProjects), validated, and swapped into the worker atomically by
// a start or a reload. Runs pin the version they started with (see worker.go), and the
// parsed definitions of pinned versions are cached by compiled id.

// servedSet is what a worker serves at one generation.
type servedSet struct {
	generation      int64
	workflows       map[string]*servedWorkflow
	errors          map[string]string // workflow name -> why it is not served
	components      map[string]*servedComponent
	componentErrors map[string]string // component name -> why it cannot run
}

type servedComponent struct {
	program *component.Program // nil when the code does not compile
	err     error
}

type servedWorkflow struct {
	name       string
	compiledID uuid.UUID
	version    int32
	code       string
	def        *flow.Definition
	language   string          // compiled_workflows.language
	program    *script.Program // for typescript and javascript (def is nil)
}

// metadata is what workflow_workers.metadata says about this worker's served set.
func (s *servedSet) metadata() map[string]any {
	workflows := map[string]any{}
	for name, sw := range s.workflows {
		workflows[name] = sw.version
	}
	md := map[string]any{"workflows": workflows}
	if len(s.errors) > 0 {
		md["workflow_errors"] = s.errors
	}
	if len(s.components) > 0 {
		md["components"] = slices.Sorted(maps.Keys(s.components))
	}
	if len(s.componentErrors) > 0 {
		md["component_errors"] = s.componentErrors
	}
	return md
}

// servedFrom validates what LoadProject read for a project (its definitions must
// have been read).
func servedFrom(p db.LoadProjectsRow, scripts *script.Cache) (*servedSet, error) {
	set, err := buildServed(p.Generation, p.Workflows, p.Components, scripts)
	if err != nil {
		return nil, fmt.Errorf("load definitions of project %s: %w", p.ID, err)
	}
	return set, nil
}

// bundleWorkflow and bundleComponent are the JSON elements of LoadProject's workflows and components.
type bundleWorkflow struct {
	Name       string     `json:"name"`
	CompiledID *uuid.UUID `json:"compiled_id"`
	Version    int32      `json:"version"`
	Language   string     `json:"language"`
	Code       *string    `json:"code"`
	// Fallback is the newest older version known to be valid (compiled_workflow_checks).
	Fallback *bundleVersion `json:"fallback"`
}

type bundleVersion struct {
	CompiledID uuid.UUID `json:"compiled_id"`
	Version    int32     `json:"version"`
	Language   string    `json:"language"`
	Code       string    `json:"code"`
}

// serveVersion validates one compiled version of a workflow: a JSON definition against
// the catalog, a TypeScript / JavaScript module by compiling it (cached by compiled id).
func serveVersion(name string, v bundleVersion, cat flow.Catalog, scripts *script.Cache) (*servedWorkflow, error) {
	if script.Is(v.Language) {
		prog, problems := scripts.Get(v.CompiledID.String(), v.Code, v.Language)
		if problems != nil {
			return nil, problems
		}
		return &servedWorkflow{name: name, compiledID: v.CompiledID, version: v.Version, code: v.Code, language: v.Language, program: prog}, nil
	}
	def, err := flow.Parse([]byte(v.Code), cat)
	if err != nil {
		return nil, err
	}
	return &servedWorkflow{name: name, compiledID: v.CompiledID, version: v.Version, code: v.Code, def: def}, nil
}

type bundleComponent struct {
	Name     string `json:"name"`
	Language string `json:"language"`
	Code     string `json:"code"`
}

// buildServed validates every active workflow of a bundle. A workflow that fails is
// left out with its reason; so is one whose child workflows are not served.
func buildServed(generation int64, workflowsJSON, componentsJSON []byte, scripts *script.Cache) (*servedSet, error) {
	var wfs []bundleWorkflow
	if err := json.Unmarshal(workflowsJSON, &wfs); err != nil {
		return nil, fmt.Errorf("decode workflows: %w", err)
	}
	var comps []bundleComponent
	if err := json.Unmarshal(componentsJSON, &comps); err != nil {
		return nil, fmt.Errorf("decode components: %w", err)
	}
	set := &servedSet{generation: generation, workflows: map[string]*servedWorkflow{}, errors: map[string]string{},
		components: map[string]*servedComponent{}, componentErrors: map[string]string{}}
	activities := map[string]bool{}
	for name := range builtinActivities {
		activities[name] = true
	}
	for _, c := range comps {
		// A component that does not compile stays callable: its calls fail with the
		// syntax error, where the workflow's author sees it.
		activities[c.Name] = true
		code, err := c.Code, error(nil)
		if c.Language == script.TypeScript {
			code, err = transpileComponent(c.Code) // scripted.go
		}
		var prog *component.Program
		if err == nil {
			prog, err = component.Compile(c.Name, code)
		}
		if err != nil {
			set.componentErrors[c.Name] = err.Error()
		}
		set.components[c.Name] = &servedComponent{program: prog, err: err}
	}
	active := map[string]bool{}
	for _, wf := range wfs {
		active[wf.Name] = true
	}
	cat := catalog(slices.Collect(maps.Keys(activities)), slices.Collect(maps.Keys(active)))
	for _, wf := range wfs {
		if wf.CompiledID == nil || wf.Code == nil {
			set.errors[wf.Name] = "the workflow is active but has no compiled version"
			continue
		}
		sw, err := serveVersion(wf.Name, bundleVersion{CompiledID: *wf.CompiledID, Version: wf.Version, Language: wf.Language, Code: *wf.Code}, cat, scripts)
		if err == nil {
			set.workflows[wf.Name] = sw
			continue
		}
		// A bad compile never takes a live workflow offline: its last valid version
		// keeps serving.
		set.errors[wf.Name] = fmt.Sprintf("version %d: %s", wf.Version, err)
		if f := wf.Fallback; f != nil {
			if sw, ferr := serveVersion(wf.Name, *f, cat, scripts); ferr == nil {
				set.errors[wf.Name] += fmt.Sprintf(" (serving version %d)", f.Version)
				set.workflows[wf.Name] = sw
			}
		}
	}
	// A workflow that starts an unserved child would hang: leave it out too, until
	// nothing changes.
	for changed := true; changed; {
		changed = false
		for _, name := range slices.Sorted(maps.Keys(set.workflows)) {
			if set.workflows[name].def == nil {
				continue // a module names its children at run time
			}
			for _, child := range set.workflows[name].def.Children {
				if _, ok := set.workflows[child]; !ok {
					set.errors[name] = fmt.Sprintf("version %d: child workflow %q is not served", set.workflows[name].version, child)
					delete(set.workflows, name)
					changed = true
					break
				}
			}
		}
	}
	return set, nil
}

// definitionCache keeps parsed definitions of pinned versions by compiled id, so that
// replaying runs of an old version does not parse it again each time. Compiled rows are
// immutable, so an id always maps to the same code.
type definitionCache struct {
	mu    sync.Mutex
	max   int
	items map[string]*flow.Definition
}

func newDefinitionCache(max int) *definitionCache {
	return &definitionCache{max: max, items: map[string]*flow.Definition{}}
}

func (c *definitionCache) get(id, code string) (*flow.Definition, error) {
	c.mu.Lock()
	def, ok := c.items[id]
	c.mu.Unlock()
	if ok {
		return def, nil
	}
	// Pinned code was valid when it was served; names it calls are checked at run time.
	def, err := flow.ParsePinned([]byte(code))
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.items) >= c.max {
		for k := range c.items { // evict an arbitrary entry
			delete(c.items, k)
			break
		}
	}
	c.items[id] = def
	return def, nil
}

// catalog is what a project's definitions may call: these activities (built in and
// active components) and child workflows (active workflows of the project).
func catalog(activities, workflows []string) flow.Catalog {
	acts, wfs := map[string]bool{}, map[string]bool{}
	for _, a := range activities {
		acts[a] = true
	}
	for _, w := range workflows {
		wfs[w] = true
	}
	return flow.Catalog{
		Activity: func(name string) bool { return acts[name] },
		Workflow: func(name string) bool { return wfs[name] },
	}
}
