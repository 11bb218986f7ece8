// Package apitest helps tests of API clients hold them to api/openapi.yaml:
// a reverse proxy in front of a real parleyd checks every request the
// client sends, and every answer, against the description.
package apitest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/parleyhq/parley/api"
)

func init() {
	// kin-openapi checks formats only when told how: UUIDs are RFC 4122's.
	openapi3.DefineStringFormatValidator("uuid", openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringForUUIDOfRFC4122))
}

// Router is the API description's router, for validating exchanges.
func Router(t testing.TB) routers.Router {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml is invalid: %v", err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return router
}

// ValidatingProxy serves, until the test ends, a proxy to the relay at
// target (http://host:port) that fails t for every request that is not in
// openapi.yaml or does not match it, and for every answer that does not
// match it. It returns the proxy's base URL, for the client under test.
func ValidatingProxy(t testing.TB, target string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	router := Router(t)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		req := resp.Request
		in, ok := req.Context().Value(inputKey{}).(*openapi3filter.RequestValidationInput)
		if !ok {
			return nil
		}
		var body []byte
		if resp.StatusCode != http.StatusSwitchingProtocols {
			var err error
			body, err = io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			resp.Body = io.NopCloser(bytes.NewReader(body))
		}
		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
			Body: io.NopCloser(bytes.NewReader(body)), Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
		if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
			t.Errorf("%s %s: %d answer does not match openapi.yaml: %v\n%s", req.Method, req.URL.Path, resp.StatusCode, err, body)
		}
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		vreq := r.Clone(context.Background())
		vreq.URL.Scheme, vreq.URL.Host = "http", "127.0.0.1:8080" // openapi.yaml's server
		vreq.Body = io.NopCloser(bytes.NewReader(body))
		route, params, err := router.FindRoute(vreq)
		if err != nil {
			t.Errorf("the client sent %s %s, which is not in openapi.yaml: %v", r.Method, r.URL.Path, err)
			rp.ServeHTTP(w, r)
			return
		}
		in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true}}
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			t.Errorf("the client's %s %s does not match openapi.yaml: %v\n%s", r.Method, r.URL.Path, err, body)
		}
		in.Request.Body = io.NopCloser(bytes.NewReader(body))
		rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), inputKey{}, in)))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

type inputKey struct{}
