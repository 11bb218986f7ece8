package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/mdp/qrterminal/v3"
	"golang.org/x/term"

	"github.com/parleyhq/parley/cli"
)

// cmdLink makes this machine a linked device: it prints the link URI (and,
// on a terminal, its QR code) and waits for the primary device's approval.
func cmdLink(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("link", flag.ContinueOnError)
	fs.String("n", "", "accepted for signal-cli compatibility (device names are not stored)")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	a, err := cli.Link(ctx, e.opts, func(uri string) {
		if f, ok := e.stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			fmt.Fprintln(f, "Scan this with the primary device, or run there: parley addDevice --uri URI")
			qrterminal.GenerateHalfBlock(uri, qrterminal.L, f)
		}
		fmt.Fprintln(e.stdout, uri)
	})
	if err != nil {
		return err
	}
	defer a.Close()
	fmt.Fprintf(e.stdout, "Linked: this is device %d of %s\n", a.DeviceID, a.Number)
	return nil
}

// cmdAddDevice approves a device that runs `parley link`.
func cmdAddDevice(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("addDevice", flag.ContinueOnError)
	uri := fs.String("uri", "", "the parley://link URI the new device shows")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *uri == "" {
		return fmt.Errorf("%w: addDevice needs --uri URI (shown by `parley link` on the new device)", cli.ErrUsage)
	}
	return withAccount(ctx, e, func(a *cli.Account) error { return a.AddDevice(ctx, *uri) })
}
