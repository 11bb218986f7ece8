package main

import (
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/attachments"
	"github.com/parleyhq/parley/audit"
	"github.com/parleyhq/parley/internal/caroots"
	"github.com/parleyhq/parley/phone"
	"github.com/parleyhq/parley/provisioning"
	"github.com/parleyhq/parley/ratelimit"
	"github.com/parleyhq/parley/relay"
	"github.com/parleyhq/parley/sealedsender"
	"github.com/parleyhq/parley/store/sqlite"
	"github.com/parleyhq/parley/verify"
	"github.com/parleyhq/parley/wire"
)

// config is every setting of `parleyd serve`, from flags, each also readable
// from a PARLEY_* environment variable (flags win). Secrets come only from
// files or the environment, never from flags, so they do not show in ps.
type config struct {
	Push pushConfig

	Listen         string
	MetricsListen  string
	DataDir        string
	DatabaseURL    string
	SQLiteSync     string
	SecretFile     string
	LogFormat      string
	LogLevel       string
	ClientIPHeader string

	TestNumbers   map[string]string
	TestNumbersF  string
	AllowCodes    map[string]bool
	DenyCodes     map[string]bool
	SMSSender     string
	TwilioSID     string
	TwilioToken   string // from PARLEY_TWILIO_AUTH_TOKEN or the token file
	TwilioTokenF  string
	TwilioVerify  string
	TwilioFrom    string
	TwilioMsgSvc  string
	TwilioBaseURL string // tests only, from the --twilio-base-url flag: where Twilio's API is reached
	TwilioBaseEnv bool   // PARLEY_TWILIO_BASE_URL is set (refused: see validate)

	AllowInsecureListen bool

	WSFrameRate         float64
	WSFrameBurst        int
	WSReconnectBurst    int
	WSReconnectInterval time.Duration
	WSRequestBytes      int64

	SMSHourlyBudget        int
	SMSCountryHourlyBudget int
	AuditCoalesceWindow    time.Duration

	Retention         time.Duration
	QueueMaxEnvelopes int
	QueueMaxBytes     int64
	QueueSenderMax    int
	CommitWorkers     int
	QueueSenderBytes  int64
	StoreBytesBurst   int64
	StoreBytesPerHour int64
	StoreEnvBurst     int
	StoreEnvPerHour   int
	SendRate          float64
	SendBurst         int
	// Caps on unauthenticated requests, per client address and in total.
	PublicIPRate    float64
	PublicIPBurst   int
	PublicRate      float64
	PublicBurst     int
	Pprof           bool
	SweepInterval   time.Duration
	AuditRetention  time.Duration
	AuditCheckpoint time.Duration

	ProvisioningSockets           int
	ProvisioningSocketsPerAddress int

	TLSCert, TLSKey string
	ACMEDomains     []string
	ACMECacheDir    string
	ACMEEmail       string
	ACMEDirectory   string
	ACMEHTTPListen  string
	// ACMECAFile names PEM certificate authorities trusted, besides the
	// system's, for the HTTPS connection to the ACME directory (a private
	// ACME CA); ACMERoots is the pool loaded from it (nil: system roots).
	ACMECAFile string
	ACMERoots  *x509.CertPool
	// ACMERenewBefore is how long before expiry a certificate is renewed
	// (0: autocert's default, a third of its lifetime, at most 30 days).
	ACMERenewBefore time.Duration

	Attachments   string // disk or s3
	AttachmentDir string
	S3            attachments.S3Config
	Attach        attachments.Config

	// Sealed sender: the server certificate file every replica shares
	// (sealed sender is off without it) and the sender certificates' lifetime.
	SenderCertFile     string
	SenderCertLifetime time.Duration
}

// envName maps a flag to its environment variable: --data-dir → PARLEY_DATA_DIR.
func envName(flagName string) string {
	return "PARLEY_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// flagOnly lists the flags that no environment variable can set: settings
// that would let whoever controls the environment redirect secrets.
var flagOnly = map[string]bool{"twilio-base-url": true, "apns-url": true, "fcm-url": true}

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// serveFlags defines the serve flags on fs and returns a function that,
// after parsing, builds the config (applying env for unset flags).
func serveFlags(fs *flag.FlagSet) func() (*config, error) {
	c := &config{}
	str := func(p *string, name, def, usage string) {
		fs.StringVar(p, name, def, usage+" (env "+envName(name)+")")
	}
	str(&c.Listen, "listen", "127.0.0.1:8080", "`address` of the public API")
	str(&c.MetricsListen, "metrics-listen", "127.0.0.1:9090", "`address` for Prometheus /metrics; empty disables it")
	str(&c.DataDir, "data-dir", "data", "`directory` for the embedded database and the generated root secret")
	str(&c.DatabaseURL, "database-url", "", "PostgreSQL `URL` (postgres://…); empty uses embedded SQLite in --data-dir")
	str(&c.SQLiteSync, "sqlite-synchronous", string(sqlite.Full), "durability of the embedded database: full syncs every commit to disk before a send is acknowledged, so acknowledged envelopes survive a power cut or OS crash; normal syncs only at checkpoints (faster, but a power cut or OS crash can lose the last acknowledged envelopes)")
	str(&c.SecretFile, "secret-file", "", "`file` holding the 32-byte root secret that keys number hashes and stored codes; default DATA-DIR/root.key (generated on first start with SQLite; must exist with PostgreSQL so all replicas share it: create it with `parleyd init-secret FILE`)")
	str(&c.LogFormat, "log-format", "json", "log format: json or text")
	str(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	str(&c.ClientIPHeader, "client-ip-header", "", "`header` (X-Forwarded-For, X-Real-IP) set by a trusted reverse proxy that carries the client address for per-IP limits")
	str(&c.SMSSender, "sms-sender", "log", "how codes are sent: log (development: codes in the server log), twilio-verify, or twilio-sms")
	str(&c.TwilioSID, "twilio-account-sid", "", "Twilio account `SID` (AC…)")
	str(&c.TwilioTokenF, "twilio-auth-token-file", "", "`file` holding the Twilio auth token (or set PARLEY_TWILIO_AUTH_TOKEN)")
	str(&c.TwilioVerify, "twilio-verify-service-sid", "", "Twilio Verify service `SID` (VA…), for --sms-sender twilio-verify")
	str(&c.TwilioFrom, "twilio-from", "", "sender `number` for --sms-sender twilio-sms")
	str(&c.TwilioMsgSvc, "twilio-messaging-service-sid", "", "Twilio Messaging Service `SID` (MG…), instead of --twilio-from")
	fs.StringVar(&c.TwilioBaseURL, "twilio-base-url", "", "tests only: send every Twilio API request, with the auth token, to this base `URL` (a local fake) instead of *.twilio.com; logged as a warning at start. A command-line flag only: no environment variable sets it, and PARLEY_TWILIO_BASE_URL is refused")
	fs.BoolVar(&c.AllowInsecureListen, "allow-insecure-listen", false, "development only: serve with --sms-sender log on a --listen address that is not loopback (verification codes in the log, usable by anyone who reads it); refused without this flag (env PARLEY_ALLOW_INSECURE_LISTEN)")
	def := relay.DefaultConfig()
	fs.Float64Var(&c.WSFrameRate, "ws-frame-rate", def.FrameRate, "frames per second a device may send over its WebSocket, sustained; a device over it is closed with 4002 (env PARLEY_WS_FRAME_RATE)")
	fs.IntVar(&c.WSFrameBurst, "ws-frame-burst", def.FrameBurst, "frames a device may send over its WebSocket in a burst (env PARLEY_WS_FRAME_BURST)")
	fs.IntVar(&c.WSReconnectBurst, "ws-reconnect-burst", def.ReconnectBurst, "WebSocket connections a device may open in a burst on one node; more answer 429 (env PARLEY_WS_RECONNECT_BURST)")
	fs.DurationVar(&c.WSReconnectInterval, "ws-reconnect-interval", def.ReconnectInterval, "after a burst, one more WebSocket connection per device per this `interval` (env PARLEY_WS_RECONNECT_INTERVAL)")
	fs.Int64Var(&c.WSRequestBytes, "ws-request-bytes", def.RequestBytes, "`bytes` of WebSocket request frames this node serves at once, all connections together (4 MiB of them per connection); a connection whose frame does not fit reads nothing more until it does, holding that one frame besides; at least 1048576, the largest frame (env PARLEY_WS_REQUEST_BYTES)")
	vdef := verify.DefaultConfig()
	fs.IntVar(&c.SMSHourlyBudget, "sms-hourly-budget", vdef.HourlyBudget, "most verification codes sent per clock hour by all replicas together (counted in the database); more answer 429 sms_budget_exhausted; 0 disables (env PARLEY_SMS_HOURLY_BUDGET)")
	fs.IntVar(&c.SMSCountryHourlyBudget, "sms-country-hourly-budget", vdef.CountryHourlyBudget, "most verification codes sent per clock hour to one country calling code, all replicas together; 0 disables (env PARLEY_SMS_COUNTRY_HOURLY_BUDGET)")
	fs.DurationVar(&c.AuditCoalesceWindow, "audit-coalesce-window", audit.DefaultCoalesceWindow, "identical audit events within this `window` are written once, then as one entry with their count (env PARLEY_AUDIT_COALESCE_WINDOW)")
	fs.DurationVar(&c.Retention, "message-retention", def.Retention, "longest an undelivered envelope is kept; no sender can ask for more (env PARLEY_MESSAGE_RETENTION)")
	fs.IntVar(&c.QueueMaxEnvelopes, "queue-max-envelopes", def.QueueMaxEnvelopes, "most envelopes queued for one device; a device at its cap is skipped (named in the send's answer) and the recipient's other devices still get the send; a send that reaches no device gets 429 queue_full (env PARLEY_QUEUE_MAX_ENVELOPES)")
	fs.Int64Var(&c.QueueMaxBytes, "queue-max-bytes", def.QueueMaxBytes, "most ciphertext `bytes` queued for one device (env PARLEY_QUEUE_MAX_BYTES)")
	fs.IntVar(&c.CommitWorkers, "commit-workers", def.Committers, "batches of sends stored at once (group commit: the sends that arrive while a batch commits form the next one); more than 1 only helps PostgreSQL, and concurrent batches wait on each other's device locks, so 1 measured fastest there too (env PARLEY_COMMIT_WORKERS)")
	fs.IntVar(&c.QueueSenderMax, "queue-sender-max-envelopes", def.QueueSenderMaxEnvelopes, "most envelopes one sending account may have queued for another account's device; past it that device is skipped for this sender (named in the answer) while others still reach it; 0: no share (env PARLEY_QUEUE_SENDER_MAX_ENVELOPES)")
	fs.Int64Var(&c.QueueSenderBytes, "queue-sender-max-bytes", def.QueueSenderMaxBytes, "most ciphertext `bytes` one sending account may have queued for another account's device; 0: no share (env PARLEY_QUEUE_SENDER_MAX_BYTES)")
	fs.Int64Var(&c.StoreBytesBurst, "store-bytes-burst", def.StoreBytesBurst, "ciphertext `bytes` one account's sends may store at once, counted once per recipient device (multi-recipient sends included); further sends get 429 rate_limited; 0: no budget (env PARLEY_STORE_BYTES_BURST)")
	fs.Int64Var(&c.StoreBytesPerHour, "store-bytes-per-hour", def.StoreBytesPerHour, "`bytes` an hour by which an account's stored-bytes budget refills (env PARLEY_STORE_BYTES_PER_HOUR)")
	fs.IntVar(&c.StoreEnvBurst, "store-envelopes-burst", def.StoreEnvelopesBurst, "envelopes (recipient devices) one account's sends may store at once; 0: no budget (env PARLEY_STORE_ENVELOPES_BURST)")
	fs.IntVar(&c.StoreEnvPerHour, "store-envelopes-per-hour", def.StoreEnvelopesPerHour, "envelopes an hour by which an account's stored-envelopes budget refills (env PARLEY_STORE_ENVELOPES_PER_HOUR)")
	fs.Float64Var(&c.SendRate, "send-rate", def.SendRate, "send requests per second each device may make, sustained (env PARLEY_SEND_RATE)")
	fs.IntVar(&c.SendBurst, "send-burst", def.SendBurst, "send requests a device may make in a burst (env PARLEY_SEND_BURST)")
	pdef := provisioning.DefaultLimits()
	fs.IntVar(&c.ProvisioningSockets, "provisioning-sockets", pdef.Total, "most provisioning sockets (devices waiting to be linked, unauthenticated) open on this node; more get 503 provisioning_busy (env PARLEY_PROVISIONING_SOCKETS)")
	fs.IntVar(&c.ProvisioningSocketsPerAddress, "provisioning-sockets-per-address", pdef.PerAddress, "most provisioning sockets one client address may hold open; more get 429 too_many_sockets (env PARLEY_PROVISIONING_SOCKETS_PER_ADDRESS)")
	fs.Float64Var(&c.PublicIPRate, "public-ip-rate", perSecond(api.DefaultPublicPerIP), "unauthenticated requests (verification, registration) per second from one client address (IPv4 address or IPv6 /64), sustained (env PARLEY_PUBLIC_IP_RATE)")
	fs.IntVar(&c.PublicIPBurst, "public-ip-burst", api.DefaultPublicPerIP.Burst, "unauthenticated requests one client address may make in a burst (env PARLEY_PUBLIC_IP_BURST)")
	fs.Float64Var(&c.PublicRate, "public-rate", perSecond(api.DefaultPublicGlobal), "unauthenticated requests per second from all clients together, sustained, per relay node (env PARLEY_PUBLIC_RATE)")
	fs.IntVar(&c.PublicBurst, "public-burst", api.DefaultPublicGlobal.Burst, "unauthenticated requests from all clients together in a burst, per relay node (env PARLEY_PUBLIC_BURST)")
	str(&c.TLSCert, "tls-cert", "", "serve HTTPS with this PEM certificate (chain) `file`; reloaded when it changes")
	str(&c.TLSKey, "tls-key", "", "PEM private key `file` for --tls-cert")
	str(&c.ACMECacheDir, "acme-cache-dir", "", "`directory` for ACME account keys and certificates (default DATA-DIR/acme)")
	str(&c.ACMEEmail, "acme-email", "", "contact `address` given to the ACME CA")
	str(&c.ACMEDirectory, "acme-directory-url", "", "ACME directory `URL` (default Let's Encrypt production)")
	str(&c.ACMEHTTPListen, "acme-http-listen", "", "`address` (such as :80) answering ACME HTTP-01 challenges and redirecting other requests to HTTPS")
	str(&c.ACMECAFile, "acme-ca-file", "", "PEM `file` of certificate authorities trusted, in addition to the system's, for the HTTPS connection to the ACME directory: a private ACME CA (step-ca, Pebble in tests) whose own TLS certificate is not publicly trusted")
	fs.DurationVar(&c.ACMERenewBefore, "acme-renew-before", 0, "renew an ACME certificate this long before it expires, 1m to 720h; 0 leaves it to autocert: a third of the certificate's lifetime, at most 720h. Keep it below the certificates' lifetime, which a CA of short-lived certificates sets (otherwise each is renewed as soon as it is issued), and leave room for retries: a failed renewal is tried again 30 to 60 minutes later (env PARLEY_ACME_RENEW_BEFORE)")
	str(&c.Attachments, "attachments", "disk", "where attachment objects live: disk (files under --attachment-dir, served by parleyd) or s3")
	str(&c.AttachmentDir, "attachment-dir", "", "`directory` of the disk backend (default DATA-DIR/attachments); one per node, so use s3 with several replicas")
	str(&c.S3.Bucket, "s3-bucket", "", "S3 `bucket` for --attachments s3; credentials come from the standard AWS variables, profile or role")
	str(&c.S3.Prefix, "s3-prefix", "attachments/", "key `prefix` for every object in the S3 bucket")
	str(&c.S3.Region, "s3-region", "", "S3 `region` (default from the AWS configuration, else us-east-1)")
	str(&c.S3.Endpoint, "s3-endpoint", "", "base `URL` of an S3-compatible store (path-style addressing); empty for AWS")
	str(&c.S3.PublicEndpoint, "s3-public-endpoint", "", "base `URL` clients reach the S3 store at, for the upload and download URLs they are given, when parleyd reaches it at an internal address (--s3-endpoint), as in deploy/docker-compose.yml; default: the same")
	str(&c.S3.SSE, "s3-sse", "AES256", "server-side encryption uploads must request: AES256, aws:kms or none")
	ad := attachments.DefaultConfig()
	fs.Int64Var(&c.Attach.MaxObjectBytes, "attachment-max-bytes", ad.MaxObjectBytes, "largest encrypted attachment in `bytes` (env PARLEY_ATTACHMENT_MAX_BYTES)")
	fs.Int64Var(&c.Attach.QuotaBytes, "attachment-bucket-quota", ad.QuotaBytes, "most `bytes` of live objects one chat bucket may hold (env PARLEY_ATTACHMENT_BUCKET_QUOTA)")
	fs.DurationVar(&c.Attach.DefaultRetention, "attachment-retention", ad.DefaultRetention, "how long a bucket keeps objects unless its admin sets less (env PARLEY_ATTACHMENT_RETENTION)")
	fs.DurationVar(&c.Attach.MaxRetention, "attachment-max-retention", ad.MaxRetention, "longest retention any bucket may set (env PARLEY_ATTACHMENT_MAX_RETENTION)")
	fs.DurationVar(&c.Attach.URLTTL, "attachment-url-ttl", ad.URLTTL, "how long upload and download URLs stay valid (env PARLEY_ATTACHMENT_URL_TTL)")
	fs.DurationVar(&c.Attach.ReconcileEvery, "attachment-reconcile-interval", ad.ReconcileEvery, "how often the sweeper lists the object store and deletes objects that have no row, such as uploads made with a URL whose object had expired (env PARLEY_ATTACHMENT_RECONCILE_INTERVAL)")
	fs.DurationVar(&c.AuditRetention, "audit-retention", audit.DefaultRetention, "how long audit log entries are kept (env PARLEY_AUDIT_RETENTION)")
	fs.DurationVar(&c.AuditCheckpoint, "audit-checkpoint-interval", 15*time.Minute, "how often the audit log's head (SEQ:MAC, no secret) is written to the server log as an \"audit checkpoint\" line, also at start and shutdown; keep those lines outside the database's reach and check with parleyd admin audit verify --expect-head (env PARLEY_AUDIT_CHECKPOINT_INTERVAL)")
	fs.DurationVar(&c.SweepInterval, "sweep-interval", time.Minute, "how often expired sessions, envelopes and attachments are deleted (env PARLEY_SWEEP_INTERVAL)")
	str(&c.SenderCertFile, "sender-certificate-file", "", "`file` made by parleyd server-certificate (server certificate, its private key, the trust root's public key; mode 0600, group or world access refused) that turns sealed sender on: devices get sender certificates from GET /v1/certificate/delivery; every replica gets the same file. Without it sealed sender is off")
	fs.DurationVar(&c.SenderCertLifetime, "sender-certificate-lifetime", sealedsender.DefaultLifetime, "how long a sender certificate is valid after it is issued, 1m to 168h (env PARLEY_SENDER_CERTIFICATE_LIFETIME)")
	c.Push.flags(fs, str)
	str(&c.TestNumbersF, "test-numbers-file", "", "`file` of test numbers, one +E164=CODE per line (# comments), for QA and load tests with many numbers")
	fs.BoolVar(&c.Pprof, "pprof", false, "serve Go's /debug/pprof profiles on the metrics listener (env PARLEY_PPROF)")
	var tests, allow, deny, acmeDomains multiFlag
	fs.Var(&acmeDomains, "acme-domain", "serve HTTPS with certificates obtained by ACME (Let's Encrypt) for this `domain`; repeatable (env PARLEY_ACME_DOMAIN, comma-separated)")
	fs.Var(&tests, "test-number", "a test number `+E164=CODE`, verified with that fixed 6-digit code and never sent SMS; repeatable (env PARLEY_TEST_NUMBERS, comma-separated)")
	fs.Var(&allow, "allow-calling-codes", "comma-separated country calling `codes` (44,49) the only ones served; repeatable (env PARLEY_ALLOW_CALLING_CODES)")
	fs.Var(&deny, "deny-calling-codes", "comma-separated country calling `codes` refused; repeatable (env PARLEY_DENY_CALLING_CODES)")

	return func() (*config, error) {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		var errs []error
		fs.VisitAll(func(f *flag.Flag) {
			env := envName(f.Name)
			if f.Name == "test-number" {
				env = "PARLEY_TEST_NUMBERS"
			}
			v, ok := os.LookupEnv(env)
			if set[f.Name] || !ok || flagOnly[f.Name] {
				return
			}
			if _, multi := f.Value.(*multiFlag); multi {
				for _, part := range strings.Split(v, ",") {
					if part = strings.TrimSpace(part); part != "" {
						_ = f.Value.Set(part)
					}
				}
				return
			}
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			}
		})
		c.TwilioToken = os.Getenv("PARLEY_TWILIO_AUTH_TOKEN")
		_, c.TwilioBaseEnv = os.LookupEnv("PARLEY_TWILIO_BASE_URL")
		c.TestNumbers = map[string]string{}
		if c.TestNumbersF != "" {
			b, err := os.ReadFile(c.TestNumbersF)
			if err != nil {
				errs = append(errs, fmt.Errorf("--test-numbers-file: %w", err))
			}
			for line := range strings.Lines(string(b)) {
				if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
					tests = append(tests, line)
				}
			}
		}
		for _, t := range tests {
			num, code, ok := strings.Cut(t, "=")
			n, err := phone.Parse(num)
			switch {
			case !ok:
				errs = append(errs, fmt.Errorf("--test-number %q: want +E164=CODE", t))
			case err != nil:
				errs = append(errs, fmt.Errorf("--test-number: %w", err))
			default:
				c.TestNumbers[n.String()] = code
			}
		}
		c.ACMEDomains = acmeDomains
		if c.ACMECAFile != "" {
			roots, err := caroots.Load(c.ACMECAFile)
			if err != nil {
				errs = append(errs, fmt.Errorf("--acme-ca-file: %w", err))
			}
			c.ACMERoots = roots
		}
		c.AllowCodes, errs = callingCodes("allow-calling-codes", allow, errs)
		c.DenyCodes, errs = callingCodes("deny-calling-codes", deny, errs)
		if c.AttachmentDir == "" {
			c.AttachmentDir = filepath.Join(c.DataDir, "attachments")
		}
		if c.SecretFile == "" {
			c.SecretFile = filepath.Join(c.DataDir, "root.key")
		}
		return c, errors.Join(append(errs, c.validate()...)...)
	}
}

func callingCodes(name string, vals []string, errs []error) (map[string]bool, []error) {
	m := map[string]bool{}
	for _, v := range vals {
		for _, cc := range strings.Split(v, ",") {
			cc = strings.TrimPrefix(strings.TrimSpace(cc), "+")
			if !phone.IsCallingCode(cc) {
				errs = append(errs, fmt.Errorf("--%s: %q is not an assigned geographic country calling code", name, cc))
				continue
			}
			m[cc] = true
		}
	}
	return m, errs
}

// perSecond is a rule's sustained rate.
func perSecond(r ratelimit.Rule) float64 { return float64(time.Second) / float64(r.Every) }

// rule is a token bucket refilling rate tokens a second.
func rule(rate float64, burst int) ratelimit.Rule {
	return ratelimit.Rule{Burst: burst, Every: max(time.Nanosecond, time.Duration(float64(time.Second)/rate))}
}

// validate reports every problem at once.
func (c *config) validate() []error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("--listen must not be empty"))
	}
	if c.DatabaseURL == "" && c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir must not be empty when --database-url is not set"))
	}
	if c.DatabaseURL != "" && !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") {
		errs = append(errs, errors.New("--database-url must be a postgres:// URL"))
	}
	if _, err := sqlite.ParseSynchronous(c.SQLiteSync); err != nil {
		errs = append(errs, fmt.Errorf("--sqlite-synchronous %q: want full or normal", c.SQLiteSync))
	}
	switch c.LogFormat {
	case "json", "text":
	default:
		errs = append(errs, fmt.Errorf("--log-format %q: want json or text", c.LogFormat))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.LogLevel))
	}
	for n, code := range c.TestNumbers {
		if len(code) != 6 || strings.Trim(code, "0123456789") != "" {
			errs = append(errs, fmt.Errorf("--test-number %s: code must be 6 digits", n))
		}
	}
	for cc := range c.AllowCodes {
		if c.DenyCodes[cc] {
			errs = append(errs, fmt.Errorf("calling code %s is both allowed and denied", cc))
		}
	}
	if c.Retention < time.Minute {
		errs = append(errs, fmt.Errorf("--message-retention %v: must be at least 1m", c.Retention))
	}
	if c.QueueMaxEnvelopes < 1 || c.QueueMaxBytes < relay.MaxContentBytes {
		errs = append(errs, fmt.Errorf("--queue-max-envelopes must be at least 1 and --queue-max-bytes at least %d", relay.MaxContentBytes))
	}
	if c.CommitWorkers < 1 || c.CommitWorkers > 64 {
		errs = append(errs, errors.New("--commit-workers must be 1 to 64"))
	}
	if c.QueueSenderMax < 0 || c.QueueSenderBytes < 0 {
		errs = append(errs, errors.New("--queue-sender-max-envelopes and --queue-sender-max-bytes must not be negative"))
	}
	if c.QueueSenderBytes > 0 && c.QueueSenderBytes < relay.MaxContentBytes {
		errs = append(errs, fmt.Errorf("--queue-sender-max-bytes must be 0 or at least %d", relay.MaxContentBytes))
	}
	if c.StoreBytesBurst < 0 || c.StoreEnvBurst < 0 {
		errs = append(errs, errors.New("--store-bytes-burst and --store-envelopes-burst must not be negative"))
	}
	if c.StoreBytesBurst > 0 && c.StoreBytesBurst < relay.MaxContentBytes {
		errs = append(errs, fmt.Errorf("--store-bytes-burst must be 0 or at least %d (one envelope)", relay.MaxContentBytes))
	}
	if (c.StoreBytesBurst > 0 && c.StoreBytesPerHour < 1) || (c.StoreEnvBurst > 0 && c.StoreEnvPerHour < 1) {
		errs = append(errs, errors.New("--store-bytes-per-hour and --store-envelopes-per-hour must be at least 1 when their burst is set"))
	}
	if c.SendRate <= 0 || c.SendBurst < 1 {
		errs = append(errs, errors.New("--send-rate must be positive and --send-burst at least 1"))
	}
	if c.ProvisioningSockets < 1 || c.ProvisioningSocketsPerAddress < 1 {
		errs = append(errs, errors.New("--provisioning-sockets and --provisioning-sockets-per-address must be at least 1"))
	}
	if c.PublicIPRate <= 0 || c.PublicIPBurst < 1 || c.PublicRate <= 0 || c.PublicBurst < 1 {
		errs = append(errs, errors.New("--public-ip-rate and --public-rate must be positive, --public-ip-burst and --public-burst at least 1"))
	}
	switch c.Attachments {
	case "disk":
	case "s3":
		if c.S3.Bucket == "" {
			errs = append(errs, errors.New("--attachments s3 needs --s3-bucket"))
		}
		for _, e := range []struct{ flag, url string }{{"s3-endpoint", c.S3.Endpoint}, {"s3-public-endpoint", c.S3.PublicEndpoint}} {
			if u, err := url.Parse(e.url); e.url != "" && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
				errs = append(errs, fmt.Errorf("--%s %q: want an http:// or https:// URL", e.flag, e.url))
			}
		}
		switch c.S3.SSE {
		case "AES256", "aws:kms", "none":
		default:
			errs = append(errs, fmt.Errorf("--s3-sse %q: want AES256, aws:kms or none", c.S3.SSE))
		}
	default:
		errs = append(errs, fmt.Errorf("--attachments %q: want disk or s3", c.Attachments))
	}
	errs = append(errs, validateTLS(c)...)
	if err := c.Attach.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.AuditRetention < 24*time.Hour {
		errs = append(errs, errors.New("--audit-retention must be at least 24h"))
	}
	if c.AuditCheckpoint < time.Second {
		errs = append(errs, errors.New("--audit-checkpoint-interval must be at least 1s"))
	}
	if c.SenderCertLifetime < sealedsender.MinLifetime || c.SenderCertLifetime > sealedsender.MaxLifetime {
		errs = append(errs, fmt.Errorf("--sender-certificate-lifetime %v: must be 1m to 168h", c.SenderCertLifetime))
	}
	if c.SweepInterval < time.Second {
		errs = append(errs, errors.New("--sweep-interval must be at least 1s"))
	}
	errs = append(errs, c.Push.validate()...)
	twilio := func() {
		if c.TwilioSID == "" {
			errs = append(errs, fmt.Errorf("--sms-sender %s needs --twilio-account-sid", c.SMSSender))
		}
		if c.TwilioToken == "" && c.TwilioTokenF == "" {
			errs = append(errs, fmt.Errorf("--sms-sender %s needs PARLEY_TWILIO_AUTH_TOKEN or --twilio-auth-token-file", c.SMSSender))
		}
	}
	if c.TwilioBaseEnv {
		errs = append(errs, errors.New("PARLEY_TWILIO_BASE_URL is set: the Twilio API address (where the auth token goes) is not read from the environment; unset it, and in tests pass --twilio-base-url on the command line"))
	}
	if c.SMSSender == "log" && !c.AllowInsecureListen && !loopback(c.Listen) {
		errs = append(errs, fmt.Errorf("--listen %s is not a loopback address, and --sms-sender log writes every verification code "+
			"to the server log, so anyone who reads the log can register any number (TLS does not change that): "+
			"configure a Twilio sender, or pass --allow-insecure-listen to accept this for development", c.Listen))
	}
	if c.WSFrameRate <= 0 || c.WSFrameBurst < 1 || c.WSReconnectBurst < 1 || c.WSReconnectInterval <= 0 {
		errs = append(errs, errors.New("--ws-frame-rate and --ws-reconnect-interval must be positive, --ws-frame-burst and --ws-reconnect-burst at least 1"))
	}
	if c.WSRequestBytes < wire.MaxClientFrame {
		errs = append(errs, fmt.Errorf("--ws-request-bytes must be at least %d, the largest frame a client may send", wire.MaxClientFrame))
	}
	if c.SMSHourlyBudget < 0 || c.SMSCountryHourlyBudget < 0 {
		errs = append(errs, errors.New("--sms-hourly-budget and --sms-country-hourly-budget must not be negative (0 disables)"))
	}
	if c.AuditCoalesceWindow < 0 {
		errs = append(errs, errors.New("--audit-coalesce-window must not be negative (0 disables coalescing)"))
	}
	switch c.SMSSender {
	case "log":
	case "twilio-verify":
		twilio()
		if c.TwilioVerify == "" {
			errs = append(errs, errors.New("--sms-sender twilio-verify needs --twilio-verify-service-sid"))
		}
	case "twilio-sms":
		twilio()
		if (c.TwilioFrom == "") == (c.TwilioMsgSvc == "") {
			errs = append(errs, errors.New("--sms-sender twilio-sms needs exactly one of --twilio-from and --twilio-messaging-service-sid"))
		}
	default:
		errs = append(errs, fmt.Errorf("--sms-sender %q: want log, twilio-verify or twilio-sms", c.SMSSender))
	}
	return errs
}

// loopback reports whether the listen address only accepts connections
// from this host: a loopback IP or "localhost". An empty host (":8080")
// listens on every interface.
func loopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
