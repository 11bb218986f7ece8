package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"time"
)

// check is a health probe for images without a shell or curl: it exits 0
// when url answers 200 within 5 seconds. With https it does not verify the
// certificate (it probes the local process, often by IP).
func check(args []string, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: parleyd check URL")
		return 2
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a local liveness probe, not a data path
	}}
	resp, err := client.Get(args[0])
	if err != nil {
		fmt.Fprintf(stderr, "parleyd check: %v\n", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "parleyd check: %s answered %d\n", args[0], resp.StatusCode)
		return 1
	}
	return 0
}
