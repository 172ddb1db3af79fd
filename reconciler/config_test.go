package reconciler

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestDefaultConfigIsValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

// Every variable the service reads is documented in the README's configuration table.
func TestEveryVariableIsInTheREADME(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	typ := reflect.TypeOf(Config{})
	for i := range typ.NumField() {
		name := typ.Field(i).Tag.Get("envconfig")
		if name == "" {
			continue
		}
		if !strings.Contains(string(readme), "| `"+name+"` |") {
			t.Errorf("%s is not in the README's configuration table", name)
		}
	}
}

func TestValidateNamesEveryBadVariable(t *testing.T) {
	c := DefaultConfig()
	c.PollInterval = 0
	c.Concurrency = 0
	c.LogFormat = "xml"
	c.BacklogSampleRate = -1
	c.BacklogSampleInterval = 0
	c.ComponentSandboxes = 0
	c.ComponentMemoryMB = 1 << 20
	c.DatabaseURL = "postgres://u:topsecret@h:port/db"
	err := c.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, name := range []string{"RECONCILER_POLL_INTERVAL", "RECONCILER_CONCURRENCY", "RECONCILER_LOG_FORMAT", "DATABASE_URL",
		"RECONCILER_BACKLOG_SAMPLE_RATE", "RECONCILER_BACKLOG_SAMPLE_INTERVAL", "RECONCILER_COMPONENT_SANDBOXES", "RECONCILER_COMPONENT_MEMORY_MB"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
	if strings.Contains(err.Error(), "topsecret") {
		t.Errorf("error %q leaks the password", err)
	}
}
