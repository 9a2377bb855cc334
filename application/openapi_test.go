package application_test

import (
	"context"
	"net/http"
	"os"
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
	// The server's own route table, from the source: every pattern is
	// documented.
	src, err := os.ReadFile("api.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`handle\("([A-Z]+) /api/v1([^"]+)"`).FindAllStringSubmatch(string(src), -1) {
		if !documented[m[1]+" "+m[2]] {
			t.Errorf("%s /api/v1%s is served but not documented", m[1], m[2])
		}
	}
	if len(documented) < 15 || len(doc.Servers) != 1 || doc.Servers[0].URL != "/api/v1" {
		t.Fatalf("%d operations", len(documented))
	}
}

func itoaStatus(n int) string { return strconv.Itoa(n) }
