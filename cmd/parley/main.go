// Command parley is the reference Parley client: Signal-protocol messaging
// from the terminal and from scripts, following signal-cli's conventions.
//
//	parley [-a ACCOUNT] [--server URL] [--config DIR] COMMAND [ARGS…]
//
// Run `parley help` for the commands and exit codes.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/parleyhq/parley/cli"
	"github.com/parleyhq/parley/cli/relayclient"
	"github.com/parleyhq/parley/version"
)

const usage = `usage: parley [-a ACCOUNT] [-o json] [--server URL] [--config DIR] [--trust-new-identities MODE] COMMAND [ARGS…]

Global options:
  -a, --account NUMBER         the account (E.164); optional when only one exists
  --server URL                 the relay (default: the account's, $PARLEY_SERVER, or %s)
  --config DIR                 where accounts live (default %s)
  --trust-new-identities MODE  on-first-use (default), always or never
  --passphrase-file FILE       passphrase for a protected key file (or $PARLEY_PASSPHRASE)
  --ca-file FILE               trust the certificate authorities in this PEM file too (or $PARLEY_CA_FILE)
  --trust-root KEY             the relay operator's sealed-sender trust root (base64; or
                               $PARLEY_TRUST_ROOT); without it the relay's is pinned at registration
  -o, --output json            results as signal-cli prints them with -o json
  -v, --verbose                log to stderr

Commands:
  register [--pin PIN]                  request a verification code by SMS
  verify CODE [--pin PIN]               finish registering with the code
  send [-m TEXT | --message-from-stdin] [-a FILE]… [--notify-self] RECIPIENT…
                                        (your own number, or --note-to-self: a note to self)
  receive [--timeout SECONDS] [--json] [--send-read-receipts] [--output DIR]
  chat RECIPIENT                        interactive conversation (/attach PATH sends a file)
  sendTyping RECIPIENT [--stop]
  sendReceipt RECIPIENT -t TIMESTAMP…   mark their messages read
  listContacts [RECIPIENT…]             people this account knows
  getUserStatus NUMBER…                 whether numbers are registered on the relay
  updateContact RECIPIENT -e SECONDS    disappearing-message timer (0: off)
  listIdentities [-n NUMBER] [--json]
  trust RECIPIENT (--verified-safety-number N | --trust-all-known-keys)
  setPin PIN | removePin
  link                                  make this machine a linked device (shows a QR code and URI)
  addDevice --uri URI                   approve a linked device (on the primary); it gets contacts, trust, groups
  listDevices [--json] | removeDevice -d ID
  unregister [--delete-local-account-data]
  setPassphrase                         protect the key file (passphrase from $PARLEY_NEW_PASSPHRASE or --new-passphrase-file)
  jsonRpc [--receive-mode MODE]         signal-cli's JSON-RPC on stdin/stdout (man signal-cli-jsonrpc)
  daemon [--socket [PATH]] [--tcp [HOST:PORT]] [--no-stdio] [--receive-mode MODE]
                                        the same JSON-RPC on stdin/stdout, a unix socket and TCP
  updateGroup [-g ID] [-n NAME] [-m MEMBER]… [-r MEMBER]… [-e SECONDS]
                                        create a group (without -g) or change one
  quitGroup -g ID                       leave a group
  listGroups [--json]
  send -g ID [-m TEXT] [-a FILE]…       send to a group
  updateAccount --unrestricted-unidentified-sender true|false
                                        let anyone send you sealed messages, or only people you wrote to
  setPush --webpush URL                 wake this device through a UnifiedPush / Web Push endpoint when offline
  removePush                            stop those wake-ups
  listAccounts                          the accounts in the config directory
  version                               this build of parley
  help                                  this text; COMMAND --help shows a command's flags

Exit codes: 0 success, 1 user error, 2 unexpected error, 3 server or network
error, 4 untrusted identity, 5 rate limited.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// env is what every command gets.
type env struct {
	// json is -o json: results in signal-cli's JSON shapes (cli/signalcli).
	json   bool
	opts   cli.Options
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	g := flag.NewFlagSet("parley", flag.ContinueOnError)
	g.SetOutput(io.Discard)
	var account, server, dir, trust, passFile string
	var verbose bool
	g.StringVar(&account, "a", "", "")
	g.StringVar(&account, "account", "", "")
	g.StringVar(&server, "server", os.Getenv("PARLEY_SERVER"), "")
	g.StringVar(&dir, "config", cli.DefaultDir(), "")
	g.StringVar(&trust, "trust-new-identities", string(cli.TrustOnFirstUse), "")
	g.StringVar(&passFile, "passphrase-file", "", "")
	trustRoot := g.String("trust-root", os.Getenv("PARLEY_TRUST_ROOT"), "")
	caFile := g.String("ca-file", os.Getenv("PARLEY_CA_FILE"), "")
	output := g.String("o", "plain-text", "")
	g.StringVar(output, "output", "plain-text", "")
	g.BoolVar(&verbose, "v", false, "")
	g.BoolVar(&verbose, "verbose", false, "")
	if err := g.Parse(args); err != nil || g.NArg() == 0 {
		if errors.Is(err, flag.ErrHelp) { // parley --help: what was asked for
			fmt.Fprintf(stdout, usage, cli.DefaultServer, cli.DefaultDir())
			return cli.ExitOK
		}
		fmt.Fprintf(stderr, usage, cli.DefaultServer, cli.DefaultDir())
		if err != nil {
			fmt.Fprintln(stderr, "parley:", err)
		}
		return cli.ExitUser
	}
	mode, err := cli.ParseTrustMode(trust)
	if err != nil {
		return report(stderr, err)
	}
	var root []byte
	if *trustRoot != "" {
		if root, err = base64.StdEncoding.DecodeString(*trustRoot); err != nil {
			return report(stderr, fmt.Errorf("%w: --trust-root is the operator's public key in base64 (parleyd trust-root prints it)", cli.ErrUsage))
		}
	}
	if *output != "plain-text" && *output != "json" {
		return report(stderr, fmt.Errorf("%w: -o is plain-text or json, not %q", cli.ErrUsage, *output))
	}
	level := slog.LevelError + 1
	if verbose {
		level = slog.LevelDebug
	}
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, json: *output == "json", opts: cli.Options{
		Dir: dir, Number: account, Server: server, Trust: mode, TrustRoot: root, CAFile: *caFile,
		Passphrase: passphraseSource(passFile, "PARLEY_PASSPHRASE"),
		Log:        slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
		Progress:   progressFor(stderr),
		Notice:     func(s string) { fmt.Fprintln(stderr, "parley:", s) },
	}}
	name, rest := g.Arg(0), g.Args()[1:]
	cmd, ok := commands[name]
	if !ok {
		switch name {
		case "help":
			fmt.Fprintf(stdout, usage, cli.DefaultServer, cli.DefaultDir())
			return cli.ExitOK
		case "version":
			if e.json {
				json.NewEncoder(stdout).Encode(map[string]string{"version": strings.TrimPrefix(version.String("parley"), "parley ")})
			} else {
				fmt.Fprintln(stdout, version.String("parley"))
			}
			return cli.ExitOK
		}
		fmt.Fprintf(stderr, "parley: unknown command %q (parley help lists them)\n", name)
		return cli.ExitUser
	}
	err = cmd(ctx, e, rest)
	var help helpRequested
	if errors.As(err, &help) {
		for _, l := range strings.Split(usage, "\n") {
			if strings.HasPrefix(l, "  "+name+" ") || l == "  "+name {
				fmt.Fprintln(stdout, "usage: parley [global options]"+strings.TrimPrefix(l, " "))
			}
		}
		help.fs.SetOutput(stdout)
		help.fs.PrintDefaults()
		return cli.ExitOK
	}
	return report(stderr, err)
}

// passphraseSource reads a passphrase from a file, else from an
// environment variable; nil if neither is set.
func passphraseSource(file, envVar string) func() ([]byte, error) {
	if file == "" && os.Getenv(envVar) == "" {
		return nil
	}
	return func() ([]byte, error) {
		if file != "" {
			b, err := os.ReadFile(file)
			return []byte(strings.TrimRight(string(b), "\r\n")), err
		}
		return []byte(os.Getenv(envVar)), nil
	}
}

// report prints err and returns its exit code.
func report(stderr io.Writer, err error) int {
	if err == nil {
		return cli.ExitOK
	}
	if !errors.As(err, new(reported)) { // printed already, per recipient
		fmt.Fprintln(stderr, "parley:", strings.TrimPrefix(err.Error(), "usage: "))
	}
	var re *relayclient.Error
	if errors.As(err, &re) && re.Status == 401 {
		fmt.Fprintln(stderr, "parley: the relay no longer knows this device: the number was registered again "+
			"(from another device or directory), or the device was removed. Run `parley -a NUMBER register` "+
			"and `verify` to register it again; contacts will see a new identity key.")
	}
	return cli.ExitCode(err)
}
