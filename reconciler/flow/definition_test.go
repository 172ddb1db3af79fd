package flow

import (
	"strings"
	"testing"
)

func known(names ...string) func(string) bool {
	set := map[string]bool{}
	for _, n := range names {
		set[n] = true
	}
	return func(n string) bool { return set[n] }
}

var testCatalog = Catalog{Activity: known("echo", "log", "http.request", "charge"), Workflow: known("child")}

func TestParseAcceptsEveryNodeType(t *testing.T) {
	code := `{
	  "version": 1,
	  "start": "a",
	  "name": "everything",
	  "nodes": {
	    "a": {"type": "activity", "activity": "echo", "input": {"x": "${input.x}"}, "timeout": "30s",
	          "retry": {"maximum_attempts": 3, "initial_interval": "1s", "backoff_coefficient": 2,
	                    "maximum_interval": "10s", "non_retryable_errors": ["Bad"]}, "next": "b"},
	    "b": {"type": "condition", "if": "nodes.a.output.x > 1", "then": "c", "else": "d", "label": "big?"},
	    "c": {"type": "sleep", "duration": "1s", "next": "d"},
	    "d": {"type": "parallel", "branches": ["e", "f"], "next": "g"},
	    "e": {"type": "wait_signal", "signal": "approve", "timeout": "1h", "on_timeout": "h"},
	    "f": {"type": "child_workflow", "workflow": "child", "input": "${signals.approve}"},
	    "g": {"type": "return", "value": "${nodes.d.output}"},
	    "h": {"type": "fail", "message": "timed out"}
	  }
	}`
	def, err := Parse([]byte(code), testCatalog)
	if err != nil {
		t.Fatal(err)
	}
	if def.Start != "a" || len(def.Nodes) != 8 {
		t.Fatalf("start %q, %d nodes", def.Start, len(def.Nodes))
	}
	if got := strings.Join(def.Signals, ","); got != "approve" {
		t.Errorf("signals = %q", got)
	}
	if got := strings.Join(def.Children, ","); got != "child" {
		t.Errorf("children = %q", got)
	}
	a := def.Nodes["a"]
	if a.Retry == nil || a.Retry.MaximumAttempts != 3 || a.Retry.BackoffCoefficient != 2 || a.Timeout.String() != "30s" {
		t.Errorf("activity node parsed as %+v / %+v", a, a.Retry)
	}
	if def.Nodes["c"].Duration == nil || def.Nodes["e"].WaitTimeout == nil {
		t.Error("durations not parsed")
	}
}

func TestParseRejectsBadDefinitionsWithClearReasons(t *testing.T) {
	cases := []struct {
		name, code, want string
	}{
		{"not JSON", `{"version": 1,`, "not a JSON object"},
		{"missing start", `{"version": 1, "nodes": {"a": {"type": "return"}}}`, `"start" is missing`},
		{"start names nothing", `{"version": 1, "start": "x", "nodes": {"a": {"type": "return"}}}`, `"start" names node "x"`},
		{"wrong version", `{"version": 2, "start": "a", "nodes": {"a": {"type": "return"}}}`, `"version" must be 1`},
		{"unknown node type", `{"version": 1, "start": "a", "nodes": {"a": {"type": "loop"}}}`, `unknown type "loop"`},
		{"dangling next", `{"version": 1, "start": "a", "nodes": {"a": {"type": "activity", "activity": "echo", "next": "b"}}}`, `"next" names node "b", which does not exist`},
		{"dangling branch", `{"version": 1, "start": "a", "nodes": {"a": {"type": "parallel", "branches": ["z"]}}}`, `"branches[0]" names node "z"`},
		{"unknown activity", `{"version": 1, "start": "a", "nodes": {"a": {"type": "activity", "activity": "sendMail"}}}`, `unknown activity "sendMail"`},
		{"unknown child", `{"version": 1, "start": "a", "nodes": {"a": {"type": "child_workflow", "workflow": "nope"}}}`, `child workflow "nope" is not an active workflow`},
		{"bad expression", `{"version": 1, "start": "a", "nodes": {"a": {"type": "return", "value": "${input.name +}"}}}`, "bad expression"},
		{"unknown variable", `{"version": 1, "start": "a", "nodes": {"a": {"type": "return", "value": "${inptu.name}"}}}`, "bad expression"},
		{"reads a missing node", `{"version": 1, "start": "a", "nodes": {"a": {"type": "return", "value": "${nodes.gone.output}"}}}`, `there is no node "gone"`},
		{"unclosed template", `{"version": 1, "start": "a", "nodes": {"a": {"type": "return", "value": "${input"}}}`, "unclosed ${"},
		{"wrong field type", `{"version": 1, "start": "a", "nodes": {"a": {"type": "activity", "activity": "echo", "timeout": 30}}}`, `"timeout" must be a duration string`},
		{"bad duration", `{"version": 1, "start": "a", "nodes": {"a": {"type": "sleep", "duration": "soon"}}}`, `"duration" must be a duration`},
		{"unknown field", `{"version": 1, "start": "a", "nodes": {"a": {"type": "return", "valu": 1}}}`, `unknown field "valu"`},
		{"field of another type", `{"version": 1, "start": "a", "nodes": {"a": {"type": "return", "next": "a"}}}`, `unknown field "next"`},
		{"bad retry", `{"version": 1, "start": "a", "nodes": {"a": {"type": "activity", "activity": "echo", "retry": {"maximum_attempts": -1}}}}`, "retry.maximum_attempts"},
		{"retry typo", `{"version": 1, "start": "a", "nodes": {"a": {"type": "activity", "activity": "echo", "retry": {"max_attempts": 2}}}}`, `unknown field "max_attempts"`},
		{"empty branches", `{"version": 1, "start": "a", "nodes": {"a": {"type": "parallel", "branches": []}}}`, `"branches" must be a non-empty array`},
		{"on_timeout without timeout", `{"version": 1, "start": "a", "nodes": {"a": {"type": "wait_signal", "signal": "s", "on_timeout": "a"}}}`, `"on_timeout" needs a "timeout"`},
		{"fail without message", `{"version": 1, "start": "a", "nodes": {"a": {"type": "fail"}}}`, `"message" is missing`},
		{"node not an object", `{"version": 1, "start": "a", "nodes": {"a": 5}}`, `node "a": must be an object`},
		{"nodes not an object", `{"version": 1, "start": "a", "nodes": []}`, `"nodes" must be an object`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.code), testCatalog)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
		})
	}
}
