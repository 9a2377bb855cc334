package application_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// TestOpenAPIDocument validates docs/openapi.yaml (OpenAPI 3.1, with
// kin-openapi's validator) and walks it against the routes the server
// registers: every documented operation is served, and every served route
// is documented.
func TestOpenAPIDocument(t *testing.T) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile("../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background(), openapi3.EnableSchemaPatternValidation()); err != nil {
		t.Fatalf("docs/openapi.yaml does not validate: %v", err)
	}
	c := newCluster(t)
	param := regexp.MustCompile(`\{[^}]+\}`)
	documented := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented[method+" "+path] = true
			concrete := param.ReplaceAllStringFunc(path, func(p string) string {
				if p == "{dimension}" {
					return "country"
				}
				return "x"
			})
			req, _ := http.NewRequest(method, c.api.URL+"/api/v1"+concrete, strings.NewReader("{}"))
			req.Header.Set("Authorization", "Bearer "+operatorKey)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			// 404 is acceptable for an unknown id only when the answer says
			// so; a missing route answers with "no such API route".
			if resp.StatusCode == http.StatusMethodNotAllowed {
				t.Errorf("%s %s: documented but not served (405)", method, path)
			}
			if _, ok := item.Operations()[method].Responses.Map()[itoaStatus(resp.StatusCode)]; !ok {
				t.Errorf("%s %s answered %d, which the document does not list", method, path, resp.StatusCode)
			}
		}
	}
	// The server's own route table, from the source: every registered
	// pattern, in any file of the package, is documented. Patterns carry a
	// method ("GET /api/v1/x") or, for routes that dispatch on the method
	// themselves, a path template ("/api/v1/x/{id}") or a plain path.
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	documentedPath := map[string]bool{}
	for k := range documented {
		documentedPath[k[strings.Index(k, " ")+1:]] = true
	}
	route := regexp.MustCompile(`mux\.Handle(?:Func)?\("(?:([A-Z]+) )?/api/v1(/[^"]*)"|handle\("([A-Z]+) /api/v1([^"]+)"`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range route.FindAllStringSubmatch(string(src), -1) {
			method, path := m[1], m[2]
			if m[3] != "" {
				method, path = m[3], m[4]
			}
			if path == "/" {
				continue // the catch-all answering unknown routes
			}
			if method != "" && !documented[method+" "+path] || method == "" && !documentedPath[path] {
				t.Errorf("%s %s /api/v1%s is served but not documented", f, method, path)
			}
		}
	}
	if len(documented) < 15 || len(doc.Servers) != 1 || doc.Servers[0].URL != "/api/v1" {
		t.Fatalf("%d operations", len(documented))
	}
}

func itoaStatus(n int) string { return strconv.Itoa(n) }
