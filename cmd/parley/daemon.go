package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/parleyhq/parley/cli"
	"github.com/parleyhq/parley/cli/rpc"
)

// cmdDaemon serves JSON-RPC 2.0 (cli/rpc) on stdin/stdout and, with
// --socket, on a unix socket, while receiving continuously: every envelope
// becomes a "receive" notification on every connection.
func cmdDaemon(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("daemon", flag.ContinueOnError)
	socket := fs.String("socket", "", "also serve JSON-RPC on this unix socket (created 0600)")
	noStdio := fs.Bool("no-stdio", false, "do not serve on stdin/stdout")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *noStdio && *socket == "" {
		return fmt.Errorf("%w: daemon --no-stdio needs --socket PATH", cli.ErrUsage)
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
	srv := rpc.New(a, e.opts.Log)
	done := make(chan error, 3)

	if *socket != "" {
		if err := os.Remove(*socket); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		old := umask(0o177)
		ln, err := net.Listen("unix", *socket)
		umask(old)
		if err != nil {
			return err
		}
		defer os.Remove(*socket)
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
	if !*noStdio {
		go func() {
			err := srv.Serve(ctx, e.stdin, e.stdout)
			if *socket == "" {
				done <- err // stdin closed: nothing left to serve
			}
		}()
	}
	go func() { done <- receiveForever(ctx, a, srv.Notify, e) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return nil
	}
}

// receiveForever keeps the receiving socket up, reconnecting with backoff
// after network failures; it stops when the device is no longer registered.
func receiveForever(ctx context.Context, a *cli.Account, handle func(cli.Event), e *env) error {
	backoff := time.Second
	for {
		start := time.Now()
		err := a.Receive(ctx, cli.ReceiveOptions{Timeout: -1, Handle: handle})
		if ctx.Err() != nil {
			return nil
		}
		if cli.ExitCode(err) != cli.ExitIO {
			return err
		}
		if time.Since(start) > time.Minute {
			backoff = time.Second
		}
		e.opts.Log.WarnContext(ctx, "receiving interrupted; reconnecting", "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Minute)
	}
}
