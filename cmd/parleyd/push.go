package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/push"
	"github.com/parleyhq/parley/push/apns"
	"github.com/parleyhq/parley/push/fcm"
	"github.com/parleyhq/parley/push/webpush"
)

// pushConfig is the push wake-up settings of serve.
type pushConfig struct {
	Delay, Interval time.Duration
	Workers, Queue  int

	VAPIDFile      string
	Subscriber     string
	WebPushPrivate bool
	WebPushTTL     time.Duration

	APNsKeyFile, APNsKeyID, APNsTeamID string
	APNsTopics                         multiFlag // the apps (bundle ids) the team key may wake
	APNsURL                            string    // tests only: a flag, never the environment
	FCMServiceAccount                  string
	FCMURL                             string // tests only: a flag, never the environment
}

func (c *pushConfig) flags(fs *flag.FlagSet, str func(p *string, name, def, usage string)) {
	d := push.DefaultConfig
	fs.DurationVar(&c.Delay, "push-delay", d.Delay, "how long after envelopes are stored for a device with no socket here it is checked, and woken if they are still undelivered (env PARLEY_PUSH_DELAY)")
	fs.DurationVar(&c.Interval, "push-interval", d.Interval, "the least time between two wake-ups of one device, across every replica (env PARLEY_PUSH_INTERVAL)")
	fs.IntVar(&c.Workers, "push-workers", d.Workers, "wake-ups each push service may have in flight at once; a slow service (or slow client-given Web Push endpoints) holds only its own (env PARLEY_PUSH_WORKERS)")
	fs.IntVar(&c.Queue, "push-queue", d.Queue, "wake-ups waiting to be sent before more are dropped (and counted in parley_push_dropped_total) (env PARLEY_PUSH_QUEUE)")
	str(&c.VAPIDFile, "webpush-vapid-file", "", "`file` made by parleyd webpush-keys (the relay's VAPID key pair, mode 0600) that turns Web Push (UnifiedPush) wake-ups on; every replica gets the same file")
	str(&c.Subscriber, "webpush-subscriber", "", "the operator's contact for Web Push services, a mailto: or https:// `URL` (required with --webpush-vapid-file)")
	fs.BoolVar(&c.WebPushPrivate, "webpush-allow-private-endpoints", false, "let Web Push endpoints resolve to loopback, private and link-local addresses (a push server on this network; tests). Off: client-given endpoints cannot make parleyd reach its own network (env PARLEY_WEBPUSH_ALLOW_PRIVATE_ENDPOINTS)")
	fs.DurationVar(&c.WebPushTTL, "webpush-ttl", 24*time.Hour, "how long a Web Push service keeps an undelivered wake-up (env PARLEY_WEBPUSH_TTL)")
	str(&c.APNsKeyFile, "apns-key-file", "", "the team's APNs authentication key `file` (.p8) that turns APNs wake-ups on (with --apns-key-id and --apns-team-id)")
	str(&c.APNsKeyID, "apns-key-id", "", "the APNs key's `id` (10 characters, from Apple's developer site)")
	str(&c.APNsTeamID, "apns-team-id", "", "the Apple developer team `id`")
	fs.Var(&c.APNsTopics, "apns-topic", "an app's bundle `id` devices may register APNs targets for (the team key could wake any of the team's apps); repeatable, required with --apns-key-file (env PARLEY_APNS_TOPIC, comma-separated)")
	fs.StringVar(&c.APNsURL, "apns-url", "", "tests only: send APNs pushes to this base `URL` (a local server) instead of Apple's hosts. A command-line flag only")
	str(&c.FCMServiceAccount, "fcm-service-account-file", "", "the Firebase project's service account key `file` (JSON, mode 0600) that turns FCM wake-ups on")
	fs.StringVar(&c.FCMURL, "fcm-url", "", "tests only: send FCM requests to this base `URL` (a local server) instead of fcm.googleapis.com. A command-line flag only")
}

func (c *pushConfig) validate() []error {
	var errs []error
	if c.Delay < 100*time.Millisecond || c.Delay > time.Hour {
		errs = append(errs, errors.New("--push-delay must be 100ms to 1h (a connected device must have time to drain first)"))
	}
	if c.Interval < time.Second {
		errs = append(errs, errors.New("--push-interval must be at least 1s"))
	}
	if c.Workers < 1 || c.Queue < 1 {
		errs = append(errs, errors.New("--push-workers and --push-queue must be at least 1"))
	}
	if (c.APNsKeyFile != "") != (c.APNsKeyID != "") || (c.APNsKeyFile != "") != (c.APNsTeamID != "") {
		errs = append(errs, errors.New("APNs needs all of --apns-key-file, --apns-key-id and --apns-team-id"))
	} else if c.APNsKeyFile != "" {
		if len(c.APNsTopics) == 0 {
			errs = append(errs, errors.New("--apns-key-file needs at least one --apns-topic (the app's bundle id)"))
		}
		if _, err := apns.New(apns.Config{KeyFile: c.APNsKeyFile, KeyID: c.APNsKeyID, TeamID: c.APNsTeamID}); err != nil {
			errs = append(errs, fmt.Errorf("--apns-key-file: %w", err))
		}
		if err := private(c.APNsKeyFile); err != nil {
			errs = append(errs, fmt.Errorf("--apns-key-file: %w", err))
		}
	}
	if c.FCMServiceAccount != "" {
		if _, err := fcm.New(fcm.Config{ServiceAccountFile: c.FCMServiceAccount}); err != nil {
			errs = append(errs, fmt.Errorf("--fcm-service-account-file: %w", err))
		}
		if err := private(c.FCMServiceAccount); err != nil {
			errs = append(errs, fmt.Errorf("--fcm-service-account-file: %w", err))
		}
	}
	if c.VAPIDFile != "" {
		if c.Subscriber == "" {
			errs = append(errs, errors.New("--webpush-vapid-file needs --webpush-subscriber (mailto: or https:// URL)"))
		}
		if keys, err := webpush.LoadKeys(c.VAPIDFile); err != nil {
			errs = append(errs, fmt.Errorf("--webpush-vapid-file: %w", err))
		} else if _, err := webpush.New(webpush.Config{Keys: keys, Subscriber: c.Subscriber}); err != nil && c.Subscriber != "" {
			errs = append(errs, fmt.Errorf("--webpush-subscriber: %w", err))
		}
	}
	return errs
}

// pushSetup builds the push senders the config turns on, and what the API
// tells of them.
func pushSetup(c pushConfig, log *slog.Logger) (map[push.Kind]push.Sender, api.PushConfig, error) {
	senders := map[push.Kind]push.Sender{}
	info := api.PushConfig{Kinds: map[push.Kind]bool{}}
	if c.VAPIDFile != "" {
		keys, err := webpush.LoadKeys(c.VAPIDFile)
		if err != nil {
			return nil, info, fmt.Errorf("--webpush-vapid-file: %w", err)
		}
		s, err := webpush.New(webpush.Config{Keys: keys, Subscriber: c.Subscriber, TTL: c.WebPushTTL, AllowPrivate: c.WebPushPrivate})
		if err != nil {
			return nil, info, err
		}
		senders[push.WebPush], info.Kinds[push.WebPush], info.VAPIDPublicKey = s, true, keys.PublicKey
		if c.WebPushPrivate {
			log.Warn("Web Push endpoints may reach private and loopback addresses (--webpush-allow-private-endpoints)")
		}
	}
	if c.APNsKeyFile != "" {
		if c.APNsURL != "" {
			log.Warn("APNs pushes go to --apns-url instead of Apple: for tests only", "url", c.APNsURL)
		}
		s, err := apns.New(apns.Config{KeyFile: c.APNsKeyFile, KeyID: c.APNsKeyID, TeamID: c.APNsTeamID, URL: c.APNsURL})
		if err != nil {
			return nil, info, err
		}
		senders[push.APNs], info.Kinds[push.APNs] = s, true
		info.APNsTopics = map[string]bool{}
		for _, t := range c.APNsTopics {
			info.APNsTopics[t] = true
		}
	}
	if c.FCMServiceAccount != "" {
		if c.FCMURL != "" {
			log.Warn("FCM requests go to --fcm-url instead of Google: for tests only", "url", c.FCMURL)
		}
		s, err := fcm.New(fcm.Config{ServiceAccountFile: c.FCMServiceAccount, URL: c.FCMURL})
		if err != nil {
			return nil, info, err
		}
		senders[push.FCM], info.Kinds[push.FCM] = s, true
	}
	var on []push.Kind
	for k := range info.Kinds {
		on = append(on, k)
	}
	log.Info("push wake-ups", "services", on)
	return senders, info, nil
}

// newDispatcher returns the push dispatcher; live is resolved when called,
// so the relay it asks can be made after it.
func newDispatcher(c pushConfig, store push.Store, senders map[push.Kind]push.Sender, live *func(uuid.UUID, int) bool,
	log *slog.Logger, reg prometheus.Registerer) *push.Dispatcher {
	return push.NewDispatcher(store, senders, func(a uuid.UUID, d int) bool { return (*live)(a, d) },
		push.Config{Delay: c.Delay, Interval: c.Interval, Workers: c.Workers, Queue: c.Queue, Timeout: 10 * time.Second}, log, reg)
}

// private refuses a secret file others may read.
func private(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s is accessible by group or others (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	return nil
}

const webpushKeysUsage = `Usage: parleyd webpush-keys --out FILE

Makes the relay's VAPID key pair for Web Push (UnifiedPush) wake-ups and
writes it to FILE (JSON, mode 0600; an existing FILE is never replaced).
It prints the public key, which Web Push clients subscribe with (GET
/v1/push tells it too). Give FILE to every replica (serve
--webpush-vapid-file FILE).
`

// webpushKeys runs `parleyd webpush-keys`.
func webpushKeys(args []string, stdout, stderr io.Writer) int {
	var out string
	ok, code := subcommand("webpush-keys", webpushKeysUsage, args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&out, "out", "", "the `FILE` to write")
	})
	if !ok {
		return code
	}
	if out == "" {
		fmt.Fprintf(stderr, "parleyd webpush-keys: --out FILE is required\n\n%s", webpushKeysUsage)
		return 2
	}
	keys, err := webpush.GenerateKeys()
	if err == nil {
		var b []byte
		b, _ = json.MarshalIndent(keys, "", "  ")
		var f *os.File
		if f, err = os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
			_, err = f.Write(append(b, '\n'))
			err = errors.Join(err, f.Close())
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "parleyd webpush-keys:", err)
		return 1
	}
	fmt.Fprintln(stdout, keys.PublicKey)
	fmt.Fprintln(stderr, "VAPID key pair written to", out, "- give it to every replica with --webpush-vapid-file")
	return 0
}
