package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/go-json-experiment/json"

	"github.com/parleyhq/parley/bench"
)

// result is one system's run, as a JSON line (the shape scripts/bench-peers
// writes for the other brokers).
type result struct {
	System     string  `json:"system"`
	Messages   int     `json:"messages"`
	Seconds    float64 `json:"seconds"`
	Rate       float64 `json:"rate"`
	P50MS      float64 `json:"p50_ms"`
	P99MS      float64 `json:"p99_ms"`
	Failed     int     `json:"failed"`
	Duplicates int     `json:"duplicates"`
}

// appendResult appends r as a JSON line to file.
func appendResult(file, system string, r bench.Result) error {
	failed := 0
	for _, n := range r.Failed {
		failed += n
	}
	line, err := json.Marshal(result{
		System: system, Messages: r.Delivered, Seconds: r.Elapsed.Seconds(), Rate: r.SendRate(),
		P50MS: float64(r.P50.Microseconds()) / 1000, P99MS: float64(r.P99.Microseconds()) / 1000,
		Failed: failed, Duplicates: r.Redelivered,
	})
	if err != nil {
		return err
	}
	f, err := os.OpenFile(file, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// table prints the runs of file side by side: each system's rate and
// latency, and each parleyd run's ratio to every other system.
func table(w io.Writer, file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	var rs []result
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var r result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		rs = append(rs, r)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(rs) == 0 {
		return errors.New(file + ": no results")
	}
	var ours []result
	for _, r := range rs {
		if strings.HasPrefix(r.System, "parleyd") {
			ours = append(ours, r)
		}
	}
	head := "| system | messages/s | p50 ms | p99 ms | failed |"
	rule := "| --- | --- | --- | --- | --- |"
	for _, o := range ours {
		head += " " + o.System + " ÷ it |"
		rule += " --- |"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, rule)
	for _, r := range rs {
		fmt.Fprintf(w, "| %s | %.0f | %.2f | %.2f | %d |", r.System, r.Rate, r.P50MS, r.P99MS, r.Failed)
		for _, o := range ours {
			if r.Rate > 0 {
				fmt.Fprintf(w, " %.2f× |", o.Rate/r.Rate)
			} else {
				fmt.Fprint(w, " – |")
			}
		}
		fmt.Fprintln(w)
	}
	return nil
}
