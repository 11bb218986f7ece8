// Command parley-bench is Parley's load generator. It starts a parleyd (or
// uses a running one), registers devices, connects their WebSockets and
// relays envelopes between random pairs, then prints throughput, end-to-end
// latency percentiles and the relay's CPU and memory.
//
//	parley-bench --parleyd bin/parleyd run     throughput, then latency at half of it
//	parley-bench --parleyd bin/parleyd idle    memory per idle connection
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/parleyhq/parley/bench"
)

const code = "123456"

type options struct {
	parleyd, server, databaseURL string
	pid                          int
	devices, envelopes, size     int
	senders, sourceAddrs         int
	rate                         float64
	half, http                   bool
	label                        string
	serverLog                    string
	parleydArgs                  []string
	json                         string
}

func main() {
	var o options
	fs := flag.NewFlagSet("parley-bench", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: parley-bench [flags] run|idle\n       parley-bench table FILE   side-by-side table of the JSON lines in FILE (parleyd's first)")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.parleyd, "parleyd", "", "start this parleyd `binary` for the run (SQLite in a temporary directory unless --database-url)")
	fs.StringVar(&o.server, "server", "", "use the relay at this `URL` instead (it must serve the benchmark test numbers)")
	fs.IntVar(&o.pid, "pid", 0, "with --server, the relay's process id, to report its CPU and memory")
	fs.StringVar(&o.databaseURL, "database-url", "", "PostgreSQL `URL` for the started parleyd")
	fs.IntVar(&o.devices, "devices", 200, "devices to register and connect (an idle connection is a descriptor here and one in the relay: `ulimit -n` bounds them)")
	fs.IntVar(&o.envelopes, "envelopes", 20000, "envelopes to relay")
	fs.IntVar(&o.size, "size", 1024, "ciphertext `bytes` per envelope")
	fs.IntVar(&o.senders, "senders", 32, "concurrent senders")
	fs.Float64Var(&o.rate, "rate", 0, "offered envelopes per second; 0 sends as fast as the senders go")
	fs.StringVar(&o.json, "json", "", "append the run's figures as one JSON line to `file` (the shape scripts/bench-peers writes; see the table command)")
	fs.BoolVar(&o.http, "http", false, "send with one HTTP request per envelope instead of request frames on the sender's WebSocket")
	fs.BoolVar(&o.half, "half", true, "after a run at full speed, run again at half the measured rate to report latency under load")
	fs.IntVar(&o.sourceAddrs, "source-addrs", 4, "spread connections over this many 127.0.0.x source addresses")
	fs.StringVar(&o.label, "label", "", "label printed with the results")
	fs.StringVar(&o.serverLog, "server-log", "", "`file` for the started parleyd's log (default: discarded)")
	fs.Func("parleyd-arg", "extra `argument` for the started parleyd, repeatable (e.g. --parleyd-arg=--pprof --parleyd-arg=--metrics-listen=127.0.0.1:9191 to profile it)", func(v string) error {
		o.parleydArgs = append(o.parleydArgs, v)
		return nil
	})
	if len(os.Args) == 3 && os.Args[1] == "table" {
		if err := table(os.Stdout, os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "parley-bench:", err)
			os.Exit(1)
		}
		return
	}
	cpuProfile := fs.String("cpuprofile", "", "write the generator's own CPU profile to `file`")
	fs.Parse(os.Args[1:])
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "parley-bench:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if fs.NArg() != 1 || (fs.Arg(0) != "run" && fs.Arg(0) != "idle") || (o.parleyd == "") == (o.server == "") {
		fs.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	if fs.Arg(0) == "run" {
		err = run(ctx, o)
	} else {
		err = idle(ctx, o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "parley-bench:", err)
		os.Exit(1)
	}
}

// relayUnderTest starts parleyd (or names the running one).
type relayUnderTest struct {
	o    options
	dir  string
	srv  *bench.Server
	log  io.Writer
	base string
	pid  int
}

func (r *relayUnderTest) start() error {
	if r.o.server != "" {
		r.base, r.pid = r.o.server, r.o.pid
		return nil
	}
	// Throughput runs lift the per-sender limits; they measure the relay, not its policy.
	args := []string{"--send-rate", "1000000", "--send-burst", "1000000", "--ws-frame-rate", "1000000", "--ws-frame-burst", "1000000",
		"--queue-sender-max-envelopes", "0", "--queue-sender-max-bytes", "0", "--store-bytes-burst", "0", "--store-envelopes-burst", "0",
		// Registering the devices is many unauthenticated requests from one address.
		"--public-ip-burst", "1000000", "--public-ip-rate", "1000000", "--public-burst", "1000000", "--public-rate", "1000000"}
	if r.o.databaseURL != "" {
		secret := filepath.Join(r.dir, "root.key")
		if _, err := os.Stat(secret); err != nil {
			if out, err := exec.Command(r.o.parleyd, "init-secret", secret).CombinedOutput(); err != nil {
				return fmt.Errorf("init-secret: %v: %s", err, out)
			}
		}
		args = append(args, "--database-url", r.o.databaseURL, "--secret-file", secret)
	} else {
		args = append(args, "--data-dir", r.dir)
	}
	args = append(args, r.o.parleydArgs...)
	srv, err := bench.Spawn(r.o.parleyd, r.dir, r.o.devices, code, r.log, args...)
	if err != nil {
		return err
	}
	r.srv, r.base, r.pid = srv, srv.Base, srv.PID()
	return nil
}

func (r *relayUnderTest) stop() error {
	if r.srv == nil {
		return nil
	}
	err := r.srv.Stop()
	r.srv = nil
	return err
}

func setup(o options) (*relayUnderTest, func(), error) {
	dir, err := os.MkdirTemp("", "parley-bench")
	if err != nil {
		return nil, nil, err
	}
	r := &relayUnderTest{o: o, dir: dir, log: io.Discard}
	var logFile *os.File
	if o.serverLog != "" {
		if logFile, err = os.Create(o.serverLog); err != nil {
			return nil, nil, err
		}
		r.log = logFile
	}
	cleanup := func() {
		r.stop()
		if logFile != nil {
			logFile.Close()
		}
		os.RemoveAll(dir)
	}
	if err := r.start(); err != nil {
		cleanup()
		return nil, nil, err
	}
	return r, cleanup, nil
}

func backend(o options) string {
	if o.server != "" {
		return o.server
	}
	if o.databaseURL != "" {
		return "PostgreSQL"
	}
	return "SQLite"
}

func run(ctx context.Context, o options) error {
	r, cleanup, err := setup(o)
	if err != nil {
		return err
	}
	defer cleanup()
	c := bench.NewClient(r.base, o.senders)
	c.SourceAddrs, c.Progress = o.sourceAddrs, os.Stderr
	t0 := time.Now()
	devs, err := c.RegisterAll(ctx, o.devices, 8, code)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "registered %d devices in %.1fs\n", len(devs), time.Since(t0).Seconds())
	label := o.label
	if label == "" {
		label = backend(o)
	}
	sc := bench.Scenario{Envelopes: o.envelopes, Size: o.size, Senders: o.senders, Rate: o.rate, HTTP: o.http}
	res, err := c.Run(ctx, devs, sc, r.pid)
	if err != nil {
		return err
	}
	mode := "closed loop, as fast as possible"
	if o.http {
		mode += ", one HTTP request per send"
	} else {
		mode += ", sends as WebSocket request frames"
	}
	if o.rate > 0 {
		mode = fmt.Sprintf("offered %.0f/s", o.rate)
	}
	fmt.Printf("%s: %d devices, %d-byte envelopes, %d senders, %s:\n  %s\n", label, len(devs), o.size, o.senders, mode, res)
	if o.json != "" {
		if err := appendResult(o.json, label, res); err != nil {
			return err
		}
	}
	if o.half && o.rate == 0 {
		sc.Rate = res.SendRate() / 2
		sc.Envelopes = max(1000, int(sc.Rate*10)) // about ten seconds
		half, err := c.Run(ctx, devs, sc, r.pid)
		if err != nil {
			return err
		}
		fmt.Printf("%s: at half that rate (offered %.0f/s):\n  %s\n", label, sc.Rate, half)
	}
	return nil
}

// idle measures the relay's memory per idle connection: register the
// devices, restart the relay (so registration garbage is gone), then
// compare its RSS before and after every device connects.
func idle(ctx context.Context, o options) error {
	if o.server != "" {
		return errors.New("idle needs --parleyd: it restarts the relay before measuring")
	}
	r, cleanup, err := setup(o)
	if err != nil {
		return err
	}
	defer cleanup()
	c := bench.NewClient(r.base, 16)
	c.SourceAddrs, c.Progress = o.sourceAddrs, os.Stderr
	devs, err := c.RegisterAll(ctx, o.devices, 8, code)
	if err != nil {
		return err
	}
	if err := r.stop(); err != nil {
		return err
	}
	if err := r.start(); err != nil {
		return err
	}
	c.Base = r.base
	time.Sleep(3 * time.Second)
	before, err := bench.ReadUsage(r.pid)
	if err != nil {
		return err
	}
	conns := make([]*bench.Conn, 0, len(devs))
	defer func() {
		for _, cn := range conns {
			cn.Close()
		}
	}()
	for i, d := range devs {
		cn, err := c.Connect(ctx, d, i)
		if err != nil {
			return fmt.Errorf("connect device %d: %w", i, err)
		}
		conns = append(conns, cn)
		go cn.Receive(func(*bench.WireEnvelope) {})
		if (i+1)%2000 == 0 {
			fmt.Fprintf(os.Stderr, "connected %d/%d\n", i+1, len(devs))
		}
	}
	time.Sleep(5 * time.Second)
	after, err := bench.ReadUsage(r.pid)
	if err != nil {
		return err
	}
	per := float64(after.RSS-before.RSS) / float64(len(devs))
	fmt.Printf("%s: %d idle connections: relay RSS %.1f MiB → %.1f MiB, %.1f KiB per connection (user space; the kernel adds its socket buffers)\n",
		backend(o), len(devs), float64(before.RSS)/(1<<20), float64(after.RSS)/(1<<20), per/1024)
	return nil
}
