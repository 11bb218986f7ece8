package main

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite deploy/CONFIG.md")

// TestConfigReference keeps deploy/CONFIG.md equal to what the flags say,
// so the reference cannot drift from the binary.
func TestConfigReference(t *testing.T) {
	var b bytes.Buffer
	configReference(&b)
	const path = "../../deploy/CONFIG.md"
	if *update {
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	have, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(have, b.Bytes()) {
		t.Fatal("deploy/CONFIG.md is out of date: go test ./cmd/parleyd -run TestConfigReference -update")
	}
	for _, want := range []string{"`--tls-cert`", "`PARLEY_ATTACHMENT_URL_TTL`", "`--audit-retention`", "`PARLEY_TEST_NUMBERS`"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("reference lacks %s", want)
		}
	}
}
