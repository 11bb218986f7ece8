package api_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// redocly is the linter scripts/with-redocly provides (make test); without
// it these tests skip, unless it was required.
func redocly(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("PARLEY_REDOCLY")
	if bin == "" {
		if os.Getenv("PARLEY_REDOCLY_REQUIRED") != "" {
			t.Fatal("PARLEY_REDOCLY_REQUIRED is set but PARLEY_REDOCLY is not")
		}
		t.Skip("Redocly's linter is not installed; run under scripts/with-redocly (make test)")
	}
	return bin
}

// The API description mobile developers generate clients from lints clean
// under Redocly's recommended rules (every operation has an operationId);
// the two exceptions are listed, with why, in .redocly.lint-ignore.yaml.
func TestOpenAPILintsClean(t *testing.T) {
	bin := redocly(t)
	cmd := exec.Command(bin, "lint", "openapi.yaml", "--format=json")
	cmd.Env = append(os.Environ(), "REDOCLY_TELEMETRY=off", "REDOCLY_SUPPRESS_UPDATE_NOTICE=true")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("redocly lint: %v\n%s", err, out)
	}
	var report struct {
		Totals struct{ Errors, Warnings, Ignored int } `json:"totals"`
	}
	if err := json.Unmarshal(out[strings.IndexByte(string(out), '{'):], &report); err != nil {
		t.Fatalf("redocly lint output: %v\n%s", err, out)
	}
	if report.Totals.Errors != 0 || report.Totals.Warnings != 0 || report.Totals.Ignored != 2 {
		t.Errorf("redocly lint: %+v, want no errors or warnings and the 2 listed exceptions\n%s", report.Totals, out)
	}
}

// A client generated from the description by a third-party generator
// (oapi-codegen, types and client) compiles.
func TestGeneratedClientCompiles(t *testing.T) {
	redocly(t) // the same tooling run (it needs the module proxy)
	dir := t.TempDir()
	gen := exec.Command("go", "run", "github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen@v2.8.2",
		"-generate", "types,client", "-package", "parleyapi", "-o", filepath.Join(dir, "client.go"), "openapi.yaml")
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("oapi-codegen: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/parleyapi\n\ngo 1.26\n\nrequire github.com/oapi-codegen/runtime v1.9.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"mod", "tidy"}, {"build", "./..."}, {"vet", "./..."}} {
		c := exec.Command("go", args...)
		c.Dir = dir
		c.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("go %s on the generated client: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	src, _ := os.ReadFile(filepath.Join(dir, "client.go"))
	for _, op := range []string{"SendMessage(", "SendMultiRecipientMessage(", "GetPreKeyBundle(", "RegisterAccount("} {
		if !strings.Contains(string(src), op) {
			t.Errorf("the generated client has no %s method (named by the operationIds)", op)
		}
	}
}
