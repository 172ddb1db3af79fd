package testenv

import (
	"testing"

	"github.com/flowbuilder/reconciler/internal/devenv"
)

// Proxy is a devenv.Proxy closed when the test ends: Cut closes every connection and
// refuses new ones, as a network partition would; Restore lets them through again.
type Proxy struct {
	*devenv.Proxy
}

// StartProxy listens on a free loopback port, forwarding to target. It is closed when
// t ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := devenv.StartProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return &Proxy{p}
}

// Restore accepts connections again on the same address, or fails t.
func (p *Proxy) Restore(t testing.TB) {
	t.Helper()
	if err := p.Proxy.Restore(); err != nil {
		t.Fatal(err)
	}
}
