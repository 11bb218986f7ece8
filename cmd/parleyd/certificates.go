package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"

	"github.com/parleyhq/parley/sealedsender"
)

const trustRootUsage = `Usage: parleyd trust-root --out FILE

Makes the operator's sealed-sender trust root: a key pair written to FILE
(JSON, mode 0600; an existing FILE is never replaced). It prints the public
key, which clients pin. Keep FILE offline: it is needed only to sign server
certificates (parleyd server-certificate), and whoever holds it can vouch
for any sender to every client.
`

const serverCertificateUsage = `Usage: parleyd server-certificate --trust-root FILE --key-id N --out FILE2

Makes a new server key pair and its certificate, with key id N (0 to
4294967295), signed by the trust root in FILE, and writes them with the
trust root's public key to FILE2 (JSON, mode 0600; an existing FILE2 is
never replaced). Give FILE2 to every replica (serve
--sender-certificate-file FILE2) as you give them the root secret. To
rotate the server key, make a new FILE2 with a new key id from the same
trust root and roll it out replica by replica: clients pin only the root,
so nothing changes for them.
`

// subcommand parses a command's flags: help exits 0, bad usage 2.
func subcommand(name, usage string, args []string, stderr io.Writer, define func(fs *flag.FlagSet)) (ok bool, code int) {
	fs := flag.NewFlagSet("parleyd "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	define(fs)
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stderr, usage+"\nFlags:\n")
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		return false, 0
	case err != nil:
		fmt.Fprintf(stderr, "parleyd %s: %v\n\n%s", name, err, usage)
		return false, 2
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "parleyd %s: unexpected arguments %q\n\n%s", name, fs.Args(), usage)
		return false, 2
	}
	return true, 0
}

// trustRoot runs `parleyd trust-root`.
func trustRoot(args []string, stdout, stderr io.Writer) int {
	var out string
	ok, code := subcommand("trust-root", trustRootUsage, args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&out, "out", "", "`file` to write the trust root to (mode 0600; never replaced)")
	})
	if !ok {
		return code
	}
	if out == "" {
		fmt.Fprintf(stderr, "parleyd trust-root: --out is required\n\n%s", trustRootUsage)
		return 2
	}
	root, err := sealedsender.GenerateTrustRoot(rand.Reader)
	if err == nil {
		err = root.WriteFile(out)
	}
	if err != nil {
		fmt.Fprintf(stderr, "parleyd trust-root: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s\n", base64.StdEncoding.EncodeToString(root.Public().Bytes()))
	fmt.Fprintf(stdout, "Wrote the trust root to %s. Keep that file offline: it only signs server certificates (parleyd server-certificate).\n", out)
	fmt.Fprintln(stdout, "Publish the public key above to your clients, which pin it; changing it later means telling every client.")
	return 0
}

// serverCertificate runs `parleyd server-certificate`.
func serverCertificate(args []string, stdout, stderr io.Writer) int {
	var rootFile, keyID, out string
	ok, code := subcommand("server-certificate", serverCertificateUsage, args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&rootFile, "trust-root", "", "`file` made by parleyd trust-root")
		fs.StringVar(&keyID, "key-id", "", "key id `N` of the new server certificate (0 to 4294967295); a new one for each rotation")
		fs.StringVar(&out, "out", "", "`file` to write the server certificate and key to (mode 0600; never replaced)")
	})
	if !ok {
		return code
	}
	var problems []string
	if rootFile == "" {
		problems = append(problems, "--trust-root is required")
	}
	if out == "" {
		problems = append(problems, "--out is required")
	}
	id, err := strconv.ParseUint(keyID, 10, 32)
	if err != nil {
		problems = append(problems, fmt.Sprintf("--key-id %q: want a whole number from 0 to 4294967295", keyID))
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintf(stderr, "parleyd server-certificate: %s\n", p)
		}
		fmt.Fprintf(stderr, "\n%s", serverCertificateUsage)
		return 2
	}
	root, err := sealedsender.LoadTrustRoot(rootFile)
	if err != nil {
		fmt.Fprintf(stderr, "parleyd server-certificate: %v\n", err)
		return 1
	}
	key, err := root.NewServerKey(rand.Reader, uint32(id))
	if err == nil {
		err = key.WriteFile(out)
	}
	if err != nil {
		fmt.Fprintf(stderr, "parleyd server-certificate: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "Wrote server certificate key id %d under trust root %s to %s.\n", key.KeyID(),
		base64.StdEncoding.EncodeToString(key.TrustRoot().Bytes()), out)
	fmt.Fprintln(stdout, "Give it to every replica (--sender-certificate-file, mode 0600) as you give them the root secret.")
	return 0
}

// loadSealedSender loads the sender certificate file, if configured, and
// makes the issuer of sender certificates; nil turns sealed sender off.
func loadSealedSender(cfg *config, log *slog.Logger) (*sealedsender.Issuer, error) {
	if cfg.SenderCertFile == "" {
		log.Info("sealed sender is off: no --sender-certificate-file")
		return nil, nil
	}
	key, err := sealedsender.LoadServerKey(cfg.SenderCertFile)
	if err != nil {
		return nil, fmt.Errorf("--sender-certificate-file: %w", err)
	}
	iss, err := sealedsender.NewIssuer(key, cfg.SenderCertLifetime)
	if err != nil {
		return nil, fmt.Errorf("--sender-certificate-lifetime: %w", err)
	}
	log.Info("sealed sender is on", "key_id", key.KeyID(), "trust_root", base64.StdEncoding.EncodeToString(key.TrustRoot().Bytes()),
		"certificate_lifetime", cfg.SenderCertLifetime.String())
	return iss, nil
}
