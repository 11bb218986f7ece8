package main_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestComposeCluster drives, from the host, the cluster that make
// test-deploy (scripts/test-deploy) builds from deploy/Dockerfile and runs
// with deploy/docker-compose.yml: two parleyd containers behind HAProxy
// (TLS from a private CA, trusted with PARLEY_CA_FILE), PostgreSQL and
// versitygw. A file sent through one replica arrives byte-identical through
// the other; then each replica is restarted in turn while one user sends a
// steady stream and the other stays connected: no send may fail, and every
// message arrives exactly once (after dropping copies with the same sender
// and timestamp, which is what a client does).
func TestComposeCluster(t *testing.T) {
	if os.Getenv("PARLEY_TEST_CLUSTER") == "" {
		t.Skip("runs against the cluster of make test-deploy (scripts/test-deploy)")
	}
	lb := os.Getenv("PARLEY_TEST_CLUSTER_URL")
	replicas := strings.Split(os.Getenv("PARLEY_TEST_CLUSTER_REPLICAS"), ",")
	compose := os.Getenv("PARLEY_TEST_COMPOSE")
	t.Setenv("PARLEY_CA_FILE", os.Getenv("PARLEY_TEST_CLUSTER_CA"))

	// deploy/parleyd.env's test numbers, verified with 123456.
	alice := &user{t: t, number: "+15555550100", config: t.TempDir(), server: lb}
	bob := &user{t: t, number: "+15555550101", config: t.TempDir(), server: lb}
	for _, u := range []*user{alice, bob} {
		u.ok("register")
		u.ok("verify", "123456")
	}
	via := func(u *user, server string) *user {
		c := *u
		c.server = server
		return &c
	}

	file := filepath.Join(t.TempDir(), "scan.bin")
	data := make([]byte, 300<<10)
	rand.Read(data)
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	via(alice, replicas[0]).ok("send", "-m", "through replica 1", "-a", file, bob.number)
	out := t.TempDir()
	if got := via(bob, replicas[1]).ok("receive", "--json", "--timeout", "1", "--output", out); !strings.Contains(got, "through replica 1") {
		t.Fatalf("bob, on replica 2, received %s", got)
	}
	if saved, err := os.ReadFile(filepath.Join(out, "scan.bin")); err != nil || !bytes.Equal(saved, data) {
		t.Fatalf("the file through replica 2 is not the one sent through replica 1 (%v)", err)
	}

	// Bob stays connected through HAProxy for the whole rolling restart.
	rx := newListener(t, bob)

	// The stream stops when the restarts are done, or when the test fails
	// before that; no send may take longer than a minute.
	stop := make(chan struct{})
	var stopOnce sync.Once
	var sent int
	var failures []string
	streamDone := make(chan struct{})
	t.Cleanup(func() { stopOnce.Do(func() { close(stop) }); <-streamDone })
	go func() {
		defer close(streamDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			out, err := alice.cmdContext(ctx, "send", "-m", fmt.Sprintf("stream %d", i), bob.number).CombinedOutput()
			cancel()
			sent++
			if err != nil {
				failures = append(failures, fmt.Sprintf("send %d at %s: %v: %s", i, time.Now().Format("15:04:05.000"), err, out))
			}
		}
	}()
	time.Sleep(2 * time.Second)
	for i, name := range []string{"parleyd-1", "parleyd-2"} {
		// Stopped for a few seconds, then replaced by a new container, as
		// an upgrade does: HAProxy meets the draining replica, then a
		// closed port, marks it down, and finds the new container through
		// Docker's DNS.
		began := time.Now()
		for _, args := range [][]string{{"stop", name}, {"up", "-d", "--no-deps", "--force-recreate", name}} {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			out, err := exec.CommandContext(ctx, compose, args...).CombinedOutput()
			cancel()
			if err != nil {
				t.Fatalf("%v: %v\n%s", args, err, out)
			}
			if args[0] == "stop" {
				time.Sleep(3 * time.Second)
			}
		}
		waitReady(t, replicas[i], 90*time.Second)
		t.Logf("%s stopped, replaced and ready again in %.1f s", name, time.Since(began).Seconds())
		// HAProxy takes it back after two good checks a second apart.
		time.Sleep(3 * time.Second)
	}
	stopOnce.Do(func() { close(stop) })
	<-streamDone
	if len(failures) > 0 {
		t.Errorf("%d of %d sends failed during the rolling restart:\n%s", len(failures), sent, strings.Join(failures, "\n"))
	}
	if sent < 20 {
		t.Errorf("only %d sends during the rolling restart; the stream stalled", sent)
	}

	// Every message once: copies with the same sender and timestamp are
	// one message; the same text under two timestamps is a duplicate.
	want := make(map[string]bool, sent)
	for i := range sent {
		want[fmt.Sprintf("stream %d", i)] = true
	}
	got := rx.wait(t, want, 60*time.Second)
	for text, stamps := range got {
		if len(stamps) > 1 {
			t.Errorf("%q arrived as %d different messages", text, len(stamps))
		}
	}
	var missing []string
	for text := range want {
		if _, ok := got[text]; !ok {
			missing = append(missing, text)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d messages never arrived: %v", len(missing), sent, missing)
	}
	t.Logf("%d sends during two replica restarts: %d failed, %d arrived once", sent, len(failures), len(got))
}

// listener is a `parley receive` that runs until the test ends, collecting
// message texts with the timestamps they arrived under.
type listener struct {
	mu     sync.Mutex
	stamps map[string]map[int64]bool
	exited chan error
	stderr bytes.Buffer
}

func newListener(t *testing.T, u *user) *listener {
	t.Helper()
	l := &listener{stamps: map[string]map[int64]bool{}, exited: make(chan error, 1)}
	c := u.cmd("receive", "--json", "--timeout", "-1")
	c.Stderr = &l.stderr
	stdout, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); <-l.exited })
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var e struct {
				Type      string `json:"type"`
				Text      string `json:"text"`
				Timestamp int64  `json:"timestamp"`
			}
			if json.Unmarshal(sc.Bytes(), &e) != nil || e.Type != "message" {
				continue
			}
			l.mu.Lock()
			if l.stamps[e.Text] == nil {
				l.stamps[e.Text] = map[int64]bool{}
			}
			l.stamps[e.Text][e.Timestamp] = true
			l.mu.Unlock()
		}
		l.exited <- c.Wait()
	}()
	return l
}

// wait returns what arrived once every wanted text has, or at the deadline.
func (l *listener) wait(t *testing.T, want map[string]bool, d time.Duration) map[string]map[int64]bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		l.mu.Lock()
		n := 0
		for text := range want {
			if l.stamps[text] != nil {
				n++
			}
		}
		done := n == len(want)
		l.mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		select {
		case err := <-l.exited:
			l.exited <- err
			t.Fatalf("parley receive exited during the test (%v): %s", err, l.stderr.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	got := make(map[string]map[int64]bool, len(l.stamps)) // the reader goes on writing
	for text, stamps := range l.stamps {
		got[text] = maps.Clone(stamps)
	}
	return got
}

// waitReady waits until a replica's /readyz answers 200.
func waitReady(t *testing.T, base string, d time.Duration) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if resp, err := c.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s/readyz did not answer 200 within %s", base, d)
}
