// Package egress is the built-in http.request activity and its guard. Workflows run
// code that the builder's users wrote, so by default a request may not reach the
// service's own network: loopback, private, link-local (cloud metadata), CGNAT,
// multicast and unspecified addresses are refused. The check is made on the address
// actually dialled, after DNS, for every connection, so neither a hostname that
// resolves inward nor a redirect gets around it.
package egress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Options configure the guard.
type Options struct {
	// AllowPrivate lets requests reach loopback, private and link-local addresses
	// (the dev mode and the tests).
	AllowPrivate bool
	// MaxResponseBytes caps the response body read.
	MaxResponseBytes int64
	// DefaultTimeout applies when a request names none; MaxTimeout caps what it names.
	DefaultTimeout time.Duration
	MaxTimeout     time.Duration
}

// DeniedError is a request the guard refused.
type DeniedError struct {
	Host    string
	Address netip.Addr
	Reason  string
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("http.request to %s refused: %s is a %s address (set RECONCILER_HTTP_ALLOW_PRIVATE=true to allow)", e.Host, e.Address, e.Reason)
}

// Request is the activity's input.
type Request struct {
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers"`
	Body    any               `json:"body"`
	Timeout string            `json:"timeout"`
}

// Response is the activity's output. Body is decoded when the response is JSON.
type Response struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	Body    any               `json:"body"`
}

// Client performs guarded requests.
type Client struct {
	opts Options
	http *http.Client
}

// New builds a client. Its transport never uses an environment proxy: a proxy would
// be dialled instead of the target and make the address check meaningless.
func New(opts Options) *Client {
	if opts.MaxResponseBytes <= 0 {
		opts.MaxResponseBytes = 1 << 20
	}
	if opts.DefaultTimeout <= 0 {
		opts.DefaultTimeout = 30 * time.Second
	}
	if opts.MaxTimeout <= 0 {
		opts.MaxTimeout = 5 * time.Minute
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if !opts.AllowPrivate {
		dialer.Control = refusePrivate
	}
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &Client{opts: opts, http: &http.Client{
		Transport: transport,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			return nil
		},
	}}
}

// refusePrivate runs for every connection, on the resolved address about to be dialled.
func refusePrivate(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("http.request: cannot check address %q: %w", address, err)
	}
	if reason := Forbidden(ap.Addr()); reason != "" {
		return &DeniedError{Host: address, Address: ap.Addr(), Reason: reason}
	}
	return nil
}

var (
	cgnat     = netip.MustParsePrefix("100.64.0.0/10")
	thisNet   = netip.MustParsePrefix("0.0.0.0/8")
	benchmark = netip.MustParsePrefix("198.18.0.0/15")
	ietf      = netip.MustParsePrefix("192.0.0.0/24")
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
)

// Forbidden says why a destination is refused by default, or "" when it is public.
func Forbidden(a netip.Addr) string {
	if a.Is4In6() {
		a = a.Unmap()
	}
	if a.Is6() && nat64.Contains(a) { // an IPv4 address behind NAT64
		v4 := a.As16()
		a = netip.AddrFrom4([4]byte{v4[12], v4[13], v4[14], v4[15]})
	}
	switch {
	case a.IsLoopback():
		return "loopback"
	case a.IsPrivate():
		return "private"
	case a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast():
		return "link-local"
	case a.IsUnspecified(), thisNet.Contains(a):
		return "unspecified"
	case a.IsMulticast(), a.IsInterfaceLocalMulticast():
		return "multicast"
	case cgnat.Contains(a), benchmark.Contains(a), ietf.Contains(a):
		return "reserved"
	}
	return ""
}

// Do performs req and reads at most MaxResponseBytes of the answer.
func (c *Client) Do(ctx context.Context, r Request) (*Response, error) {
	method := strings.ToUpper(strings.TrimSpace(r.Method))
	if method == "" {
		method = http.MethodGet
	}
	u, err := url.Parse(r.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, &InputError{fmt.Sprintf("http.request: url must be an absolute http or https URL, got %q", r.URL)}
	}
	timeout := c.opts.DefaultTimeout
	if r.Timeout != "" {
		d, err := time.ParseDuration(r.Timeout)
		if err != nil || d <= 0 {
			return nil, &InputError{fmt.Sprintf("http.request: timeout must be a duration like \"10s\", got %q", r.Timeout)}
		}
		timeout = min(d, c.opts.MaxTimeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	var body io.Reader
	contentType := ""
	switch b := r.Body.(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return nil, &InputError{fmt.Sprintf("http.request: body cannot be encoded as JSON: %s", err)}
		}
		body, contentType = bytes.NewReader(data), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, &InputError{fmt.Sprintf("http.request: %s", err)}
	}
	for k, v := range r.Headers {
		req.Header.Set(k, v)
	}
	if contentType != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", contentType)
	}

	resp, err := c.http.Do(req)
	if err != nil {
		var denied *DeniedError
		if errors.As(err, &denied) {
			denied.Host = u.Host
			return nil, denied
		}
		return nil, fmt.Errorf("http.request %s %s: %w", method, redactURL(u), unwrapURLError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.opts.MaxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("http.request %s %s: read response: %w", method, redactURL(u), err)
	}
	if int64(len(data)) > c.opts.MaxResponseBytes {
		return nil, &TooLargeError{fmt.Sprintf("http.request %s %s: the response body exceeds %d bytes (RECONCILER_HTTP_MAX_RESPONSE_BYTES; a workflow's payloads must fit Temporal's 2 MB)", method, redactURL(u), c.opts.MaxResponseBytes)}
	}
	out := &Response{Status: resp.StatusCode, Headers: map[string]string{}, Body: string(data)}
	keys := make([]string, 0, len(resp.Header))
	for k := range resp.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out.Headers[strings.ToLower(k)] = strings.Join(resp.Header[k], ", ")
	}
	if isJSON(resp.Header.Get("Content-Type")) && len(data) > 0 {
		var v any
		if json.Unmarshal(data, &v) == nil {
			out.Body = v
		}
	}
	return out, nil
}

// InputError is a request that cannot succeed however often it is retried.
// TooLargeError is a response whose body exceeds the limit: retrying gives the same.
type TooLargeError struct{ msg string }

func (e *TooLargeError) Error() string { return e.msg }

type InputError struct{ msg string }

func (e *InputError) Error() string { return e.msg }

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// redactURL drops credentials and the query (which often carries tokens) from errors.
func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.Fragment = ""
	return c.String()
}

// unwrapURLError removes *url.Error's copy of the full URL (with its query) from the message.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
