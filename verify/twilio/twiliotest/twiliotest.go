// Package twiliotest is a local HTTP server that speaks the parts of Twilio's
// REST API the relay uses (Verify v2 verifications and checks, Programmable
// SMS messages), with Twilio's limits and error answers, so the real
// twilio-go client can be exercised without the network.
package twiliotest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Server is a fake Twilio. Create it with New; Close it when done.
type Server struct {
	*httptest.Server
	AccountSID, AuthToken string

	mu            sync.Mutex
	verifications map[string]*verification // by SID
	sendsTo       map[string][]time.Time
	messages      []Message
	throttle      bool
	now           func() time.Time
}

// Message is an SMS sent through the Messages API.
type Message struct {
	To, From, MessagingServiceSID, Body string
}

type verification struct {
	sid, to, code string
	checks        int
	approved      bool
	created       time.Time
}

// New starts a fake Twilio accepting the given credentials.
func New(accountSID, authToken string) *Server {
	s := &Server{
		AccountSID: accountSID, AuthToken: authToken,
		verifications: map[string]*verification{}, sendsTo: map[string][]time.Time{}, now: time.Now,
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// Throttle makes every request answer Twilio's 20429 "Too Many Requests".
func (s *Server) Throttle(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttle = on
}

// LastCode returns the code of the newest pending Verify verification to.
func (s *Server) LastCode(to string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best *verification
	for _, v := range s.verifications {
		if v.to == to && (best == nil || v.created.After(best.created)) {
			best = v
		}
	}
	if best == nil {
		return ""
	}
	return best.code
}

// Messages returns the SMS sent so far.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

var e164 = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	user, pass, ok := r.BasicAuth()
	if !ok || user != s.AccountSID || pass != s.AuthToken {
		twilioError(w, 401, 20003, "Authenticate")
		return
	}
	if s.throttle {
		twilioError(w, 429, 20429, "Too Many Requests")
		return
	}
	if r.Method != http.MethodPost || r.ParseForm() != nil {
		twilioError(w, 405, 20004, "Method not allowed")
		return
	}
	host := r.Header.Get("X-Twilio-Host")
	path := r.URL.Path
	switch {
	case host == "verify.twilio.com" && strings.HasSuffix(path, "/Verifications") && strings.HasPrefix(path, "/v2/Services/VA"):
		s.createVerification(w, r)
	case host == "verify.twilio.com" && strings.HasSuffix(path, "/VerificationCheck") && strings.HasPrefix(path, "/v2/Services/VA"):
		s.checkVerification(w, r)
	case host == "api.twilio.com" && path == "/2010-04-01/Accounts/"+s.AccountSID+"/Messages.json":
		s.createMessage(w, r)
	default:
		twilioError(w, 404, 20404, "The requested resource "+path+" was not found")
	}
}

func (s *Server) createVerification(w http.ResponseWriter, r *http.Request) {
	to := r.PostForm.Get("To")
	if !e164.MatchString(to) {
		twilioError(w, 400, 60200, "Invalid parameter `To`")
		return
	}
	if r.PostForm.Get("Channel") != "sms" {
		twilioError(w, 400, 60200, "Invalid parameter: Channel")
		return
	}
	now := s.now()
	recent := s.sendsTo[to][:0]
	for _, t := range s.sendsTo[to] {
		if now.Sub(t) < 10*time.Minute {
			recent = append(recent, t)
		}
	}
	if len(recent) >= 5 {
		twilioError(w, 429, 60203, "Max send attempts reached")
		return
	}
	s.sendsTo[to] = append(recent, now)
	// Twilio resends the pending verification for the same number.
	for _, v := range s.verifications {
		if v.to == to && !v.approved && now.Sub(v.created) < 10*time.Minute {
			writeJSON(w, 201, s.verificationJSON(v, "pending"))
			return
		}
	}
	v := &verification{sid: "VE" + randHex(16), to: to, code: randCode(), created: now}
	s.verifications[v.sid] = v
	writeJSON(w, 201, s.verificationJSON(v, "pending"))
}

func (s *Server) checkVerification(w http.ResponseWriter, r *http.Request) {
	var v *verification
	if sid := r.PostForm.Get("VerificationSid"); sid != "" {
		v = s.verifications[sid]
	} else {
		for _, c := range s.verifications {
			if c.to == r.PostForm.Get("To") && !c.approved {
				v = c
			}
		}
	}
	if v == nil || v.approved || s.now().Sub(v.created) >= 10*time.Minute {
		twilioError(w, 404, 20404, "The requested resource was not found")
		return
	}
	if v.checks >= 5 {
		twilioError(w, 429, 60202, "Max check attempts reached")
		return
	}
	v.checks++
	status := "pending"
	if r.PostForm.Get("Code") == v.code {
		v.approved = true
		status = "approved"
	}
	writeJSON(w, 200, s.verificationJSON(v, status))
}

func (s *Server) verificationJSON(v *verification, status string) map[string]any {
	return map[string]any{
		"sid": v.sid, "account_sid": s.AccountSID, "to": v.to, "channel": "sms",
		"status": status, "valid": status == "approved", "date_created": v.created.UTC().Format(time.RFC3339),
	}
}

func (s *Server) createMessage(w http.ResponseWriter, r *http.Request) {
	f := r.PostForm
	if !e164.MatchString(f.Get("To")) {
		twilioError(w, 400, 21211, "The 'To' number is not a valid phone number.")
		return
	}
	if (f.Get("From") == "") == (f.Get("MessagingServiceSid") == "") || f.Get("Body") == "" {
		twilioError(w, 400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required")
		return
	}
	s.messages = append(s.messages, Message{To: f.Get("To"), From: f.Get("From"), MessagingServiceSID: f.Get("MessagingServiceSid"), Body: f.Get("Body")})
	writeJSON(w, 201, map[string]any{"sid": "SM" + randHex(16), "account_sid": s.AccountSID, "to": f.Get("To"), "status": "queued"})
}

func twilioError(w http.ResponseWriter, status, code int, msg string) {
	writeJSON(w, status, map[string]any{
		"code": code, "message": msg, "status": status,
		"more_info": fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code),
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func randCode() string {
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("%06d", (uint32(b[0])<<24|uint32(b[1])<<16|uint32(b[2])<<8|uint32(b[3]))%1_000_000)
}
