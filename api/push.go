package api

import (
	"context"
	"net/http"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/push"
)

// PushTargets is where devices' push targets are kept.
type PushTargets interface {
	SetPushTarget(ctx context.Context, account uuid.UUID, device int, t push.Target) error
	RemovePushTarget(ctx context.Context, account uuid.UUID, device int) error
}

// PushConfig is what the API tells of and accepts for push wake-ups.
type PushConfig struct {
	Targets PushTargets
	// Kinds are the push services this relay is configured for.
	Kinds map[push.Kind]bool
	// VAPIDPublicKey is the relay's Web Push key (base64url), which Web
	// Push clients subscribe with (applicationServerKey); "" without Web
	// Push.
	VAPIDPublicKey string
	// APNsTopics are the apps (bundle ids) devices may register APNs
	// targets for.
	APNsTopics map[string]bool
}

type pushTargetRequest struct {
	Kind     push.Kind `json:"kind"`
	Token    string    `json:"token,omitzero"`
	Topic    string    `json:"topic,omitzero"`
	Sandbox  bool      `json:"sandbox,omitzero"`
	Endpoint string    `json:"endpoint,omitzero"`
	P256DH   *Bytes    `json:"p256dh,omitzero"`
	Auth     *Bytes    `json:"auth,omitzero"`
}

// setPushTarget is PUT /v1/devices/me/push: the calling device's one push
// target, replacing any other.
func (s *Server) setPushTarget(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	var req pushTargetRequest
	if err := decodeLimit(w, r, &req, 8<<10); err != nil {
		return err
	}
	t := push.Target{Kind: req.Kind, Token: req.Token, Topic: req.Topic, Sandbox: req.Sandbox, Endpoint: req.Endpoint}
	if req.P256DH != nil {
		t.P256DH = []byte(*req.P256DH)
	}
	if req.Auth != nil {
		t.Auth = []byte(*req.Auth)
	}
	if err := t.Validate(); err != nil {
		return err
	}
	if !s.Push.Kinds[t.Kind] {
		return errorf(http.StatusUnprocessableEntity, "push_service_not_configured", "this relay does not push through "+string(t.Kind))
	}
	if t.Kind == push.APNs && !s.Push.APNsTopics[t.Topic] {
		// The relay's team key could wake any app of the team.
		return errorf(http.StatusUnprocessableEntity, "invalid_push_target", "this relay does not wake the app "+t.Topic)
	}
	if err := s.Push.Targets.SetPushTarget(r.Context(), p.Account, p.Device, t); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// removePushTarget is DELETE /v1/devices/me/push.
func (s *Server) removePushTarget(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	if err := s.Push.Targets.RemovePushTarget(r.Context(), p.Account, p.Device); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type pushInfo struct {
	Services       []push.Kind `json:"services"`
	VAPIDPublicKey string      `json:"vapid_public_key,omitzero"`
}

// pushServices is GET /v1/push: which services this relay pushes through,
// and its VAPID key for Web Push subscriptions.
func (s *Server) pushServices(w http.ResponseWriter, r *http.Request) error {
	out := pushInfo{Services: []push.Kind{}, VAPIDPublicKey: s.Push.VAPIDPublicKey}
	for _, k := range []push.Kind{push.APNs, push.FCM, push.WebPush} {
		if s.Push.Kinds[k] {
			out.Services = append(out.Services, k)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
