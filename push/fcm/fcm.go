// Package fcm wakes Android apps through Firebase Cloud Messaging's HTTP
// v1 API, authenticated with a service account (OAuth 2 with a signed JWT
// assertion): a data-only message, high or normal priority, carrying
// nothing about any message.
package fcm

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/jwt"

	"github.com/parleyhq/parley/push"
)

// Scope is the OAuth 2 scope FCM sends need.
const Scope = "https://www.googleapis.com/auth/firebase.messaging"

// DefaultURL is FCM's API.
const DefaultURL = "https://fcm.googleapis.com"

// Config configures a Sender.
type Config struct {
	// ServiceAccountFile is the Firebase project's service account key
	// (JSON, as the console gives it; its token_uri is where access
	// tokens come from).
	ServiceAccountFile string
	// URL replaces DefaultURL (tests).
	URL string
	// Client carries every request (token and send); nil: a default one.
	Client *http.Client
	// TTL is how long FCM keeps a wake-up for a device that is off.
	TTL time.Duration
}

// Sender pushes through FCM.
type Sender struct {
	url     string
	project string
	tokens  oauth2.TokenSource
	client  *http.Client
	ttl     time.Duration
}

// New reads the service account and returns a Sender.
func New(cfg Config) (*Sender, error) {
	b, err := os.ReadFile(cfg.ServiceAccountFile)
	if err != nil {
		return nil, fmt.Errorf("FCM service account: %w", err)
	}
	var sa struct {
		Type         string `json:"type"`
		ProjectID    string `json:"project_id"`
		ClientEmail  string `json:"client_email"`
		PrivateKey   string `json:"private_key"`
		PrivateKeyID string `json:"private_key_id"`
		TokenURI     string `json:"token_uri"`
	}
	if err := json.Unmarshal(b, &sa); err != nil || sa.Type != "service_account" || sa.ProjectID == "" || sa.ClientEmail == "" ||
		sa.PrivateKey == "" || !strings.HasPrefix(sa.TokenURI, "https://") {
		return nil, fmt.Errorf("FCM service account %s: not a service account key (type, project_id, client_email, private_key, https token_uri)", cfg.ServiceAccountFile)
	}
	client := cfg.Client
	if client == nil {
		client = &http.Client{Timeout: 15 * time.Second}
	}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, client)
	jwtCfg := &jwt.Config{Email: sa.ClientEmail, PrivateKey: []byte(sa.PrivateKey), PrivateKeyID: sa.PrivateKeyID,
		TokenURL: sa.TokenURI, Scopes: []string{Scope}}
	if block, _ := pem.Decode([]byte(sa.PrivateKey)); block == nil {
		return nil, fmt.Errorf("FCM service account %s: private_key is not PEM", cfg.ServiceAccountFile)
	} else if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		return nil, fmt.Errorf("FCM service account %s: private_key: %w", cfg.ServiceAccountFile, err)
	}
	s := &Sender{url: strings.TrimRight(cfg.URL, "/"), project: sa.ProjectID, tokens: oauth2.ReuseTokenSource(nil, jwtCfg.TokenSource(ctx)),
		client: client, ttl: cfg.TTL}
	if s.url == "" {
		s.url = DefaultURL
	}
	if s.ttl <= 0 {
		s.ttl = 24 * time.Hour
	}
	return s, nil
}

type message struct {
	Message struct {
		Token   string            `json:"token"`
		Data    map[string]string `json:"data"`
		Android struct {
			Priority string `json:"priority"`
			TTL      string `json:"ttl"`
		} `json:"android"`
	} `json:"message"`
}

// Push implements push.Sender.
func (s *Sender) Push(ctx context.Context, t push.Target, urgent bool) error {
	if t.Kind != push.FCM {
		return fmt.Errorf("FCM sender given a %s target", t.Kind)
	}
	tok, err := s.tokens.Token()
	if err != nil {
		return fmt.Errorf("FCM access token: %w", err)
	}
	var m message
	m.Message.Token, m.Message.Data = t.Token, map[string]string{"parley": "wake"}
	m.Message.Android.Priority, m.Message.Android.TTL = "NORMAL", strconv.Itoa(int(s.ttl.Seconds()))+"s"
	if urgent {
		m.Message.Android.Priority = "HIGH"
	}
	body, _ := json.Marshal(m)
	req, err := http.NewRequestWithContext(ctx, "POST", s.url+"/v1/projects/"+s.project+"/messages:send", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	tok.SetAuthHeader(req)
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("FCM: %w", push.WithoutURL(err))
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var e struct {
		Error struct {
			Status  string `json:"status"`
			Details []struct {
				ErrorCode string `json:"errorCode"`
			} `json:"details"`
		} `json:"error"`
	}
	json.Unmarshal(raw, &e)
	for _, d := range e.Error.Details {
		if d.ErrorCode == "UNREGISTERED" {
			return push.ErrGone
		}
	}
	if resp.StatusCode == http.StatusTooManyRequests || e.Error.Status == "RESOURCE_EXHAUSTED" {
		after := time.Minute
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
			after = time.Duration(secs) * time.Second
		}
		return &push.RetryError{After: after}
	}
	return errors.New("FCM answered " + strconv.Itoa(resp.StatusCode) + " " + e.Error.Status)
}
