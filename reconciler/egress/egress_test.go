package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestForbidden(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1":          "loopback",
		"::1":                "loopback",
		"::ffff:127.0.0.1":   "loopback",
		"10.1.2.3":           "private",
		"172.16.0.1":         "private",
		"192.168.1.1":        "private",
		"fd00::1":            "private",
		"169.254.169.254":    "link-local",
		"fe80::1":            "link-local",
		"0.0.0.0":            "unspecified",
		"100.64.0.1":         "reserved",
		"64:ff9b::a9fe:a9fe": "link-local", // 169.254.169.254 through NAT64
		"239.1.1.1":          "multicast",
		"8.8.8.8":            "",
		"2606:4700::1111":    "",
	} {
		if got := Forbidden(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Forbidden(%s) = %q, want %q", addr, got, want)
		}
	}
}

// The SSRF test: loopback, the cloud metadata address and a private address are
// refused by default and reached when configured.
func TestRequestsToPrivateDestinationsAreRefusedUnlessAllowed(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path": %q, "method": %q}`, r.URL.Path, r.Method)
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port

	guarded := New(Options{})
	for _, target := range []string{
		srv.URL + "/secret",                        // 127.0.0.1
		fmt.Sprintf("http://localhost:%d/x", port), // a name that resolves to loopback
		"http://169.254.169.254/latest/meta-data/", // cloud metadata
		"http://10.0.0.1/admin",                    // private
		"http://[::ffff:127.0.0.1]:1/",             // loopback dressed as IPv6
	} {
		_, err := guarded.Do(context.Background(), Request{URL: target})
		var denied *DeniedError
		if !errors.As(err, &denied) {
			t.Errorf("%s: got %v, want a refusal", target, err)
			continue
		}
		if !strings.Contains(err.Error(), "RECONCILER_HTTP_ALLOW_PRIVATE") {
			t.Errorf("%s: message %q does not say how to allow it", target, err)
		}
	}

	allowed := New(Options{AllowPrivate: true})
	resp, err := allowed.Do(context.Background(), Request{Method: "post", URL: srv.URL + "/ok", Body: map[string]any{"a": 1}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := resp.Body.(map[string]any)
	if resp.Status != 200 || body["path"] != "/ok" || body["method"] != "POST" {
		t.Fatalf("allowed request: %+v", resp)
	}
}

func TestRedirectsIntoThePrivateNetworkAreRefused(t *testing.T) {
	// Both test servers listen on loopback. The first hop stands for a public server
	// (dialled without the guard); the redirect it answers leads to loopback, and that
	// second connection goes through the guarded dialer like every real one.
	inner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "inner") }))
	defer inner.Close()
	outer := httptest.NewServer(http.RedirectHandler(inner.URL, http.StatusFound))
	defer outer.Close()

	c := New(Options{})
	calls := 0
	c.http.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		calls++
		if calls == 1 { // the first hop stands for a public server
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}
		d := &net.Dialer{Control: refusePrivate}
		return d.DialContext(ctx, network, addr)
	}
	_, err := c.Do(context.Background(), Request{URL: outer.URL})
	var denied *DeniedError
	if !errors.As(err, &denied) || calls != 2 {
		t.Fatalf("redirect to loopback: %v after %d dials, want a refusal on the second", err, calls)
	}
}

func TestResponseSizeIsCapped(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat("x", 2000)))
	}))
	defer srv.Close()
	c := New(Options{AllowPrivate: true, MaxResponseBytes: 1000})
	_, err := c.Do(context.Background(), Request{URL: srv.URL})
	var tooLarge *TooLargeError
	if !errors.As(err, &tooLarge) || !strings.Contains(err.Error(), "exceeds 1000 bytes") {
		t.Fatalf("got %v", err)
	}
}

func TestBadRequestsAreInputErrors(t *testing.T) {
	c := New(Options{})
	for _, r := range []Request{{URL: "ftp://example.com/x"}, {URL: "not a url"}, {URL: "http://example.com", Timeout: "soon"}} {
		_, err := c.Do(context.Background(), r)
		var input *InputError
		if !errors.As(err, &input) {
			t.Errorf("%+v: got %v, want an input error", r, err)
		}
	}
}
