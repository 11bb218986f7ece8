// Command parleyd is the Parley relay server: it verifies phone numbers,
// stores public prekey bundles and relays ciphertext between devices.
//
//	parleyd serve [flags]        run the relay (embedded SQLite by default)
//	parleyd migrate [flags]      apply database migrations and exit
//	parleyd init-secret FILE     create a root secret file for shared deployments
//	parleyd trust-root --out FILE
//	                             make the operator's sealed-sender trust root
//	parleyd server-certificate --trust-root FILE --key-id N --out FILE2
//	                             make a server certificate (and key) signed by it
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/google/uuid"
	"github.com/parleyhq/parley/accounts"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/attachments"
	"github.com/parleyhq/parley/audit"
	"github.com/parleyhq/parley/directory"
	"github.com/parleyhq/parley/phone"
	"github.com/parleyhq/parley/prekeys"
	"github.com/parleyhq/parley/provisioning"
	"github.com/parleyhq/parley/ratelimit"
	"github.com/parleyhq/parley/relay"
	"github.com/parleyhq/parley/secrets"
	"github.com/parleyhq/parley/store"
	"github.com/parleyhq/parley/store/postgres"
	"github.com/parleyhq/parley/store/sqlite"
	"github.com/parleyhq/parley/verify"
	"github.com/parleyhq/parley/verify/twilio"
	"github.com/parleyhq/parley/version"
)

const usage = `parleyd is the Parley end-to-end encrypted messenger relay.

Usage:
  parleyd serve [flags]       run the relay (see parleyd serve --help)
  parleyd migrate [flags]     apply database migrations and exit
  parleyd init-secret FILE    create a new root secret file (mode 0600)
  parleyd webpush-keys --out FILE
  parleyd trust-root --out FILE
                              make the sealed-sender trust root (keep FILE offline;
                              clients pin the public key it prints)
  parleyd server-certificate --trust-root FILE --key-id N --out FILE2
                              make a server certificate signed by the trust root,
                              for serve --sender-certificate-file FILE2
  parleyd config-reference    print the configuration reference (deploy/CONFIG.md)
  parleyd check URL           exit 0 if URL answers 200 (container health checks)
  parleyd admin COMMAND       operator commands: audit export|verify, revoke-device,
                              delete-account, config, purge (parleyd admin for help)
  parleyd version             this build of parleyd
`

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "serve", "migrate":
		fs := flag.NewFlagSet("parleyd "+args[0], flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		load := serveFlags(fs)
		if err := fs.Parse(args[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(stderr)
				fmt.Fprintf(stderr, "Usage of parleyd %s:\n", args[0])
				fs.PrintDefaults()
				return 0
			}
			fmt.Fprintf(stderr, "parleyd %s: %v (parleyd %s --help lists the flags)\n", args[0], err, args[0])
			return 2
		}
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "parleyd %s: unexpected arguments %q\n", args[0], fs.Args())
			return 2
		}
		cfg, cerr := load()
		if cerr != nil {
			fmt.Fprintf(stderr, "parleyd: invalid configuration:\n%v\n", cerr)
			return 2
		}
		log := newLogger(cfg, stderr)
		if args[0] == "serve" {
			err = serve(ctx, cfg, log)
		} else {
			err = migrate(ctx, cfg, log)
		}
	case "admin":
		return admin(ctx, args[1:], os.Stdout, stderr)
	case "check":
		return check(args[1:], stderr)
	case "config-reference":
		configReference(os.Stdout)
		return 0
	case "webpush-keys":
		return webpushKeys(args[1:], os.Stdout, stderr)
	case "trust-root":
		return trustRoot(args[1:], os.Stdout, stderr)
	case "server-certificate":
		return serverCertificate(args[1:], os.Stdout, stderr)
	case "init-secret":
		if len(args) != 2 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		var created bool
		if _, created, err = secrets.LoadOrCreate(args[1]); err == nil && !created {
			err = fmt.Errorf("%s already exists; not replacing it (that would change every stored number hash)", args[1])
		}
	case "-h", "--help", "help":
		fmt.Fprint(stderr, usage)
		return 0
	case "version", "--version":
		fmt.Println(version.String("parleyd"))
		return 0
	default:
		fmt.Fprintf(stderr, "parleyd: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "parleyd: %v\n", err)
		return 1
	}
	return 0
}

func newLogger(cfg *config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func openStore(ctx context.Context, cfg *config) (*store.DB, error) {
	if cfg.DatabaseURL != "" {
		return postgres.Open(ctx, cfg.DatabaseURL)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	return sqlite.OpenWith(ctx, cfg.DataDir+"/parley.db", sqlite.Options{Synchronous: sqlite.Synchronous(cfg.SQLiteSync)})
}

func migrate(ctx context.Context, cfg *config, log *slog.Logger) error {
	db, err := openStore(ctx, cfg) // opening applies migrations
	if err != nil {
		return err
	}
	log.Info("database schema is up to date", "database", db.Dialect())
	return db.Close()
}

func loadSecret(cfg *config, log *slog.Logger) (*secrets.Root, error) {
	if cfg.DatabaseURL != "" {
		// Replicas share the database, so they must share the secret: never
		// generate one silently here.
		return secrets.Load(cfg.SecretFile)
	}
	root, created, err := secrets.LoadOrCreate(cfg.SecretFile)
	if created {
		log.Info("generated a new root secret; back it up with the database", "file", cfg.SecretFile)
	}
	return root, err
}

func serve(ctx context.Context, cfg *config, log *slog.Logger) error {
	sealed, err := loadSealedSender(cfg, log)
	if err != nil {
		return err
	}
	root, err := loadSecret(cfg, log)
	if err != nil {
		return err
	}
	db, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	hasher, err := phone.NewHasher(root.Derive("phone number hash"))
	if err != nil {
		return err
	}
	vopts := verify.Options{Store: db, Hasher: hasher, CodeKey: root.Derive("verification code"), Log: log}
	tw := twilio.Config{
		AccountSID: cfg.TwilioSID, AuthToken: cfg.TwilioToken, VerifyServiceSID: cfg.TwilioVerify,
		From: cfg.TwilioFrom, MessagingServiceSID: cfg.TwilioMsgSvc, BaseURL: cfg.TwilioBaseURL,
	}
	if tw.BaseURL != "" {
		log.Warn("Twilio API requests, with the auth token, go to --twilio-base-url instead of Twilio: for tests only", "base_url", tw.BaseURL)
	}
	if cfg.TwilioTokenF != "" {
		b, err := os.ReadFile(cfg.TwilioTokenF)
		if err != nil {
			return fmt.Errorf("read Twilio auth token: %w", err)
		}
		tw.AuthToken = string(bytes.TrimRight(b, "\r\n "))
	}
	switch cfg.SMSSender {
	case "twilio-verify":
		vopts.Provider, err = twilio.NewVerify(tw)
	case "twilio-sms":
		vopts.Sender, err = twilio.NewSMS(tw)
	default:
		vopts.Sender = verify.LogSender{Log: log}
	}
	if err != nil {
		return err
	}
	vcfg := verify.DefaultConfig()
	vcfg.TestNumbers, vcfg.AllowCallingCodes, vcfg.DenyCallingCodes = cfg.TestNumbers, cfg.AllowCodes, cfg.DenyCodes
	vcfg.HourlyBudget, vcfg.CountryHourlyBudget = cfg.SMSHourlyBudget, cfg.SMSCountryHourlyBudget
	vopts.Metrics = reg
	verifier, err := verify.New(vcfg, vopts)
	if err != nil {
		return err
	}
	accts, err := accounts.New(db, verifier, root.Derive("device credential"), root.Derive("registration lock"), log, nil)
	if err != nil {
		return err
	}
	pre := prekeys.NewService(db, prekeys.Limits{
		PerRequester: ratelimit.New(prekeys.DefaultRequesterRule, nil),
		PerPair:      ratelimit.New(prekeys.DefaultPairRule, nil),
		PerTarget:    ratelimit.New(prekeys.DefaultTargetRule, nil),
	})

	rcfg := relay.DefaultConfig()
	rcfg.Retention, rcfg.QueueMaxEnvelopes, rcfg.QueueMaxBytes = cfg.Retention, cfg.QueueMaxEnvelopes, cfg.QueueMaxBytes
	rcfg.SendRate, rcfg.SendBurst = cfg.SendRate, cfg.SendBurst
	rcfg.QueueSenderMaxEnvelopes, rcfg.QueueSenderMaxBytes = cfg.QueueSenderMax, cfg.QueueSenderBytes
	rcfg.StoreBytesBurst, rcfg.StoreBytesPerHour = cfg.StoreBytesBurst, cfg.StoreBytesPerHour
	rcfg.StoreEnvelopesBurst, rcfg.StoreEnvelopesPerHour = cfg.StoreEnvBurst, cfg.StoreEnvPerHour
	rcfg.FrameRate, rcfg.FrameBurst = cfg.WSFrameRate, cfg.WSFrameBurst
	rcfg.ReconnectBurst, rcfg.ReconnectInterval = cfg.WSReconnectBurst, cfg.WSReconnectInterval
	rcfg.RequestBytes = cfg.WSRequestBytes
	rcfg.Metrics = reg
	var bus relay.Bus = relay.LocalBus{}
	if cfg.DatabaseURL != "" {
		bus = postgres.NewBus(cfg.DatabaseURL, log)
	}
	rcfg.Committers = cfg.CommitWorkers
	senders, pushInfo, err := pushSetup(cfg.Push, log)
	if err != nil {
		return err
	}
	pushInfo.Targets = db
	var live func(uuid.UUID, int) bool
	dispatcher := newDispatcher(cfg.Push, db, senders, &live, log, reg)
	if len(senders) > 0 { // else no store pays for a push check
		rcfg.Stored = dispatcher.Stored
	}
	rel := relay.New(rcfg, db, bus, log, nil)
	live = rel.Connected
	// Provisioning sockets wait on the relay's bus: wired before it runs.
	plim := provisioning.DefaultLimits()
	plim.Total, plim.PerAddress = cfg.ProvisioningSockets, cfg.ProvisioningSocketsPerAddress
	prov := provisioning.New(db, log, plim, rel)
	rel.OnProvisioning(prov.Wake)
	accts.OnDevicesRemoved = rel.Disconnect
	runCtx, stopRelay := context.WithCancel(context.Background())
	defer stopRelay()
	go func() { _ = rel.Run(runCtx) }()
	go dispatcher.Run(runCtx)

	sigChecks := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "parley_registration_signature_checks_total",
		Help: "Key signatures verified for registrations (work done for unauthenticated requests).",
	})
	reg.MustRegister(sigChecks)
	accts.OnSignatureChecks = func(n int) { sigChecks.Add(float64(n)) }
	dir := directory.New(db, hasher, ratelimit.New(directory.DefaultRule, nil), ratelimit.New(directory.DefaultAddressRule, nil))
	att, err := newAttachments(ctx, cfg, db, root, log)
	if err != nil {
		return err
	}
	auditLog, err := audit.New(db, root.Derive("audit log"), cfg.AuditRetention, log)
	if err != nil {
		return err
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "parley_provisioning_sockets", Help: "Provisioning sockets open on this node."},
			func() float64 { return float64(prov.Sockets()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "parley_provisioning_mailbox_reads_total", Help: "Reads of provisioning mailboxes by waiting sockets."},
			func() float64 { return float64(prov.MailboxReads()) }))
	// Refuse a root secret the audit log was not written with: appending
	// under it would break the chain for good.
	if err := auditLog.CheckKey(ctx); err != nil {
		return err
	}
	auditLog.SetCoalesceWindow(cfg.AuditCoalesceWindow)
	srv := &api.Server{Accounts: accts, Verify: verifier, PreKeys: pre, Keys: db, Relay: rel, Directory: dir, Attachments: att,
		Provisioning: prov, Audit: auditLog, SealedSender: sealed, Push: pushInfo, DB: db, Log: log, ClientIPHeader: cfg.ClientIPHeader, Metrics: reg,
		Public: api.PublicLimits{
			PerIP:  ratelimit.New(rule(cfg.PublicIPRate, cfg.PublicIPBurst), nil),
			Global: ratelimit.New(rule(cfg.PublicRate, cfg.PublicBurst), nil),
		}}

	tlsCfg, acmeMgr, err := serverTLS(cfg, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	handler := srv.Handler()
	if tlsCfg != nil {
		handler = hsts(handler)
		ln = tls.NewListener(ln, tlsCfg)
	}
	httpSrv := newHTTPServer(handler, log)
	httpSrv.TLSConfig = tlsCfg
	errc := make(chan error, 3)
	go func() { errc <- httpSrv.Serve(ln) }()
	if acmeMgr != nil && cfg.ACMEHTTPListen != "" {
		aln, err := net.Listen("tcp", cfg.ACMEHTTPListen)
		if err != nil {
			return errors.Join(fmt.Errorf("ACME HTTP listener: %w", err), httpSrv.Close())
		}
		challenge := newHTTPServer(acmeChallenges(acmeMgr), log)
		go func() { errc <- challenge.Serve(aln) }()
		defer challenge.Close()
	}
	var metricsSrv *http.Server
	if cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return errors.Join(fmt.Errorf("metrics listener: %w", err), httpSrv.Close())
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		if cfg.Pprof {
			mux.HandleFunc("GET /debug/pprof/", pprof.Index)
			mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		}
		metricsSrv = newHTTPServer(mux, log)
		go func() { errc <- metricsSrv.Serve(mln) }()
		log.Info("metrics listening", "addr", mln.Addr().String())
	}
	go purger{db: db, att: att, audit: auditLog, log: log}.sweep(ctx, cfg.SweepInterval)
	go checkpoints(ctx, auditLog, cfg.AuditCheckpoint)
	if cfg.SMSSender == "log" && !loopback(cfg.Listen) {
		log.Warn("verification codes are written to this log while the API listens beyond loopback (allowed by --allow-insecure-listen): for development only", "addr", cfg.Listen)
	}
	log.Info("parleyd listening", "addr", ln.Addr().String(), "tls", tlsCfg != nil, "database", db.Dialect(), "sms_sender", cfg.SMSSender,
		"attachments", att.Backend().Name(), "test_numbers", len(cfg.TestNumbers))

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "connections", rel.Connections())
	shutCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Stop accepting and finish in-flight requests (a send that is being
	// stored still gets its 200), while the relay closes every socket with
	// "going away" and deletes the last acknowledged envelopes.
	httpDone := make(chan error, 1)
	go func() { httpDone <- httpSrv.Shutdown(shutCtx) }()
	err = rel.Shutdown(shutCtx)
	err = errors.Join(err, <-httpDone, auditLog.Flush(shutCtx, true))
	if metricsSrv != nil {
		err = errors.Join(err, metricsSrv.Shutdown(shutCtx))
	}
	_ = auditLog.Checkpoint(shutCtx) // the head after the last requests; a failure is logged
	log.Info("stopped")
	return err
}

// checkpoints writes the audit log's head to the server log now and every
// interval until ctx ends, so a later cut at the end of the log shows
// against a line the database cannot change.
func checkpoints(ctx context.Context, l *audit.Log, every time.Duration) {
	_ = l.Checkpoint(ctx) // failures are logged
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = l.Checkpoint(ctx)
		}
	}
}

func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// newAttachments builds the attachment service on the configured backend,
// checking that an S3 bucket is reachable before serving.
func newAttachments(ctx context.Context, cfg *config, db *store.DB, root *secrets.Root, log *slog.Logger) (*attachments.Service, error) {
	var backend attachments.Backend
	switch cfg.Attachments {
	case "s3":
		b, err := attachments.NewS3(ctx, cfg.S3)
		if err != nil {
			return nil, err
		}
		if err := b.Check(ctx); err != nil {
			return nil, err
		}
		backend = b
	default:
		if cfg.DatabaseURL != "" {
			log.Warn("attachments are on this node's disk; with several replicas use --attachments s3", "dir", cfg.AttachmentDir)
		}
		b, err := attachments.NewDisk(cfg.AttachmentDir, root.Derive("attachment url"))
		if err != nil {
			return nil, err
		}
		backend = b
	}
	return attachments.New(cfg.Attach, attachments.Options{
		Store: db, Backend: backend, HashKey: root.Derive("attachment secret"), Log: log,
		Limit:  ratelimit.New(attachments.DefaultLimit, nil),
		Create: ratelimit.New(attachments.DefaultCreateLimit, nil),
	})
}
