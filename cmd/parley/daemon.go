package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/parleyhq/parley/cli"
	"github.com/parleyhq/parley/cli/rpc"
)

// defaultTCP is signal-cli's default JSON-RPC TCP address.
const defaultTCP = "localhost:7583"

// defaultSocket is where `daemon --socket` listens without a path:
// $XDG_RUNTIME_DIR/parley/socket, as signal-cli uses
// $XDG_RUNTIME_DIR/signal-cli/socket.
func defaultSocket() string {
	dir := os.Getenv("XDG_RUNTIME_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("parley-%d", os.Getuid()))
	}
	return filepath.Join(dir, "parley", "socket")
}

// optionalValues rewrites `--socket PATH` as `--socket=PATH` for flags
// whose value is optional (signal-cli's `--socket[=PATH]`), so both
// spellings work while `--socket` alone still means the default.
func optionalValues(args []string, names ...string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name := strings.TrimLeft(a, "-")
		if strings.HasPrefix(a, "-") && !strings.Contains(a, "=") && slices.Contains(names, name) &&
			i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			out = append(out, a+"="+args[i+1])
			i++
			continue
		}
		out = append(out, a)
	}
	return out
}

// optional is a flag with an optional value: given alone it takes def.
type optional struct {
	value, def string
}

func (o *optional) String() string { return o.value }
func (o *optional) Set(s string) error {
	if s == "true" { // the flag alone
		s = o.def
	}
	o.value = s
	return nil
}
func (o *optional) IsBoolFlag() bool { return true }

// receiveFlags are the receiving options jsonRpc and daemon share.
type receiveFlags struct {
	mode         string
	readReceipts bool
}

func (r *receiveFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.mode, "receive-mode", "on-start", "on-start: push every received envelope; manual: only to subscribeReceive subscriptions")
	fs.BoolVar(&r.readReceipts, "send-read-receipts", false, "mark received messages read to their senders")
}

func (r *receiveFlags) parse() (rpc.ReceiveMode, error) {
	switch strings.ReplaceAll(r.mode, "_", "-") {
	case "on-start":
		return rpc.OnStart, nil
	case "manual":
		return rpc.Manual, nil
	}
	return 0, fmt.Errorf("%w: --receive-mode is on-start or manual, not %q", cli.ErrUsage, r.mode)
}

// cmdJSONRPC serves signal-cli's JSON-RPC on stdin/stdout until stdin
// closes, receiving meanwhile (signal-cli's jsonRpc command).
func cmdJSONRPC(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("jsonRpc", flag.ContinueOnError)
	var rf receiveFlags
	rf.register(fs)
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	return serveRPC(ctx, e, rf, true, nil)
}

// cmdDaemon serves the same JSON-RPC on stdin/stdout and, as signal-cli's
// daemon does, on a unix socket and a TCP address, while receiving.
func cmdDaemon(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("daemon", flag.ContinueOnError)
	socket := &optional{def: defaultSocket()}
	tcp := &optional{def: defaultTCP}
	fs.Var(socket, "socket", "also serve on a unix socket, created 0600 (`PATH`, default "+defaultSocket()+")")
	fs.Var(tcp, "tcp", "also serve on TCP (`HOST:PORT`, default "+defaultTCP+"); anyone who can connect acts as this account")
	noStdio := fs.Bool("no-stdio", false, "do not serve on stdin/stdout")
	var rf receiveFlags
	rf.register(fs)
	if _, err := parse(fs, optionalValues(args, "socket", "tcp"), 0, 0); err != nil {
		return err
	}
	if *noStdio && socket.value == "" && tcp.value == "" {
		return fmt.Errorf("%w: daemon --no-stdio needs --socket or --tcp", cli.ErrUsage)
	}
	var listeners []net.Listener
	defer func() {
		for _, ln := range listeners {
			ln.Close()
		}
	}()
	if socket.value != "" {
		ln, err := listenUnix(socket.value)
		if err != nil {
			return err
		}
		defer os.Remove(socket.value)
		listeners = append(listeners, ln)
	}
	if tcp.value != "" {
		ln, err := net.Listen("tcp", tcp.value)
		if err != nil {
			return fmt.Errorf("daemon --tcp: %w", err)
		}
		listeners = append(listeners, ln)
	}
	return serveRPC(ctx, e, rf, !*noStdio, listeners)
}

// listenUnix listens on a unix socket only its owner may connect to.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("daemon --socket: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("daemon --socket: %w", err)
	}
	old := umask(0o177)
	ln, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("daemon --socket: %w", err)
	}
	return ln, nil
}

// serveRPC answers JSON-RPC on stdin/stdout (if stdio) and every listener
// while receiving: every envelope becomes a "receive" notification. It
// returns when stdin closes (with no listener), receiving fails for good,
// or ctx ends.
func serveRPC(ctx context.Context, e *env, rf receiveFlags, stdio bool, listeners []net.Listener) error {
	mode, err := rf.parse()
	if err != nil {
		return err
	}
	a, err := open(ctx, e)
	if err != nil {
		return err
	}
	defer a.Close()
	if !a.Registered() {
		return cli.ErrNotRegistered
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := rpc.New(a, mode, e.opts.Log)
	done := make(chan error, len(listeners)+2)
	for _, ln := range listeners {
		go func() { <-ctx.Done(); ln.Close() }()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					if ctx.Err() == nil {
						done <- err
					}
					return
				}
				go func() {
					defer c.Close()
					go func() { <-ctx.Done(); c.Close() }()
					srv.Serve(ctx, c, c)
				}()
			}
		}()
	}
	if stdio {
		go func() {
			err := srv.Serve(ctx, e.stdin, e.stdout)
			if len(listeners) == 0 {
				done <- err // stdin closed: nothing left to serve
			}
		}()
	}
	go func() {
		if mode == rpc.Manual {
			select {
			case <-srv.Subscribed():
			case <-ctx.Done():
				return
			}
		}
		done <- receiveForever(ctx, a, cli.ReceiveOptions{Timeout: -1, Handle: srv.Notify, SendReadReceipts: rf.readReceipts}, logRetry(ctx, e))
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return nil
	}
}

// receiveForever keeps the receiving socket up, reconnecting with backoff
// after network failures and when a relay shuts down (a rolling restart);
// it stops when the device is no longer registered, another connection of
// it took over, or the relay's certificate is not trusted. The daemon, chat
// and `receive --timeout -1` use it.
// Each interruption is reported to retrying (logRetry logs it).
func receiveForever(ctx context.Context, a *cli.Account, o cli.ReceiveOptions, retrying func(err error, in time.Duration)) error {
	backoff := time.Second
	for {
		start := time.Now()
		err := a.Receive(ctx, o)
		if ctx.Err() != nil {
			return nil
		}
		var certErr *tls.CertificateVerificationError
		if cli.ExitCode(err) != cli.ExitIO || errors.Is(err, cli.ErrReplaced) || errors.As(err, &certErr) {
			return err // retrying would not help, or would fight another connection
		}
		if time.Since(start) > time.Minute {
			backoff = time.Second
		}
		retrying(err, backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Minute)
	}
}

// logRetry reports receiveForever's interruptions in the log.
func logRetry(ctx context.Context, e *env) func(error, time.Duration) {
	return func(err error, in time.Duration) {
		e.opts.Log.WarnContext(ctx, "receiving interrupted; reconnecting", "in", in, "err", err)
	}
}
