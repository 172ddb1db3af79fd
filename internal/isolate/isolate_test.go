package isolate

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func init() {
	Register("test.echo", func(in []byte) ([]byte, error) { return append([]byte("echo:"), in...), nil })
	Register("test.fail", func(in []byte) ([]byte, error) { return nil, errors.New("refused: " + string(in)) })
	Register("test.panic", func([]byte) ([]byte, error) { panic("boom") })
	Register("test.deep", func([]byte) ([]byte, error) { return nil, errors.New(string(rune(deep(0)))) })
	Register("test.pid", func([]byte) ([]byte, error) {
		return []byte{byte(os.Getpid()), byte(os.Getpid() >> 8), byte(os.Getpid() >> 16)}, nil
	})
	// The behaviour under test: a call that never answers (the parent's timeout kills the child).
	Register("test.hang", func([]byte) ([]byte, error) { <-time.After(time.Hour); return nil, nil })
}

// deep recurses until the stack limit ends the process.
func deep(n int) int {
	var pad [256]byte
	pad[n%256] = byte(n)
	return deep(n+1) + int(pad[0])
}

func TestMain(m *testing.M) {
	RunChildIfRequested()
	os.Exit(m.Run())
}

func TestCall(t *testing.T) {
	ctx := context.Background()
	out, err := Call(ctx, "test.echo", []byte("hello"))
	if err != nil || string(out) != "echo:hello" {
		t.Fatalf("echo: %q, %v", out, err)
	}
	if _, err := Call(ctx, "test.fail", []byte("x")); err == nil || err.Error() != "refused: x" {
		t.Errorf("a function's error: %v, want its message", err)
	}
	if _, err := Call(ctx, "test.panic", nil); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("a panic: %v, want it as the error", err)
	}
	if _, err := Call(ctx, "test.missing", nil); err == nil || !strings.Contains(err.Error(), "no function") {
		t.Errorf("an unknown function: %v", err)
	}
}

// A stack overflow, fatal in Go, ends the child only: the call says why, and the next
// call is served by a new child.
func TestStackOverflowEndsOnlyTheChild(t *testing.T) {
	ctx := context.Background()
	before, err := Call(ctx, "test.pid", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Call(ctx, "test.deep", nil); !errors.Is(err, ErrTooDeep) {
		t.Fatalf("a stack overflow: %v, want ErrTooDeep", err)
	}
	out, err := Call(ctx, "test.echo", []byte("again"))
	if err != nil || string(out) != "echo:again" {
		t.Fatalf("after the overflow: %q, %v", out, err)
	}
	if after, _ := Call(ctx, "test.pid", nil); string(after) == string(before) && Size == 1 {
		t.Errorf("the child that overflowed still serves")
	}
}

// A call that does not end in time kills its child.
func TestTimeout(t *testing.T) {
	old := Timeout
	Timeout = 200 * time.Millisecond
	t.Cleanup(func() { Timeout = old })
	if _, err := Call(context.Background(), "test.hang", nil); !errors.Is(err, ErrCrashed) || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("a call that hangs: %v, want ErrCrashed, killed", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := Call(ctx, "test.echo", []byte("x")); err != nil || string(out) != "echo:x" {
		t.Fatalf("after the timeout: %q, %v", out, err)
	}
}

// BenchmarkCall is the cost of a call to a warm child.
func BenchmarkCall(b *testing.B) {
	ctx := context.Background()
	in := []byte(strings.Repeat("x", 2000))
	for b.Loop() {
		if _, err := Call(ctx, "test.echo", in); err != nil {
			b.Fatal(err)
		}
	}
}
