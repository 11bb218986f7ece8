// Package signalcli renders what parley receives and does in signal-cli's
// JSON shapes: the "receive" notification and the results of its JSON-RPC
// methods, which are also what `parley -o json COMMAND` prints. Bots and
// bridges written against signal-cli (man signal-cli-jsonrpc(5)) read them
// unchanged.
//
// The shapes follow signal-cli's JSON records field for field, null where
// signal-cli writes null. Fields signal-cli has and parley cannot fill
// (profile names, stickers, mentions) are null or left out as signal-cli
// leaves them out; the few additions (storedFilename) are ones older
// signal-cli versions wrote.
package signalcli

import (
	"encoding/base64"
	"errors"
	"strings"
	"time"

	"github.com/parleyhq/parley/cli"
	"github.com/parleyhq/parley/cli/content"
	"github.com/parleyhq/parley/cli/relayclient"
)

// Received is one received envelope as signal-cli reports it: the
// "receive" notification's params and one line of `-o json receive`.
type Received struct {
	Envelope  *Envelope `json:"envelope,omitempty"`
	Account   string    `json:"account"`
	Exception *Error    `json:"exception,omitempty"`
}

// Error is signal-cli's description of a failure to decrypt or process an
// envelope.
type Error struct {
	Message string `json:"message"`
	Type    string `json:"type"`
}

// Envelope is signal-cli's MessageEnvelope.
type Envelope struct {
	Source                   *string         `json:"source"`
	SourceNumber             *string         `json:"sourceNumber"`
	SourceUUID               *string         `json:"sourceUuid"`
	SourceName               *string         `json:"sourceName"`
	SourceDevice             *int            `json:"sourceDevice"`
	Timestamp                int64           `json:"timestamp"`
	ServerReceivedTimestamp  int64           `json:"serverReceivedTimestamp"`
	ServerDeliveredTimestamp int64           `json:"serverDeliveredTimestamp"`
	DataMessage              *DataMessage    `json:"dataMessage,omitempty"`
	SyncMessage              *SyncMessage    `json:"syncMessage,omitempty"`
	ReceiptMessage           *ReceiptMessage `json:"receiptMessage,omitempty"`
	TypingMessage            *TypingMessage  `json:"typingMessage,omitempty"`
}

// DataMessage is signal-cli's DataMessage: a message, a timer change or a
// group update.
type DataMessage struct {
	Timestamp          int64        `json:"timestamp"`
	Message            *string      `json:"message"`
	ExpiresInSeconds   int64        `json:"expiresInSeconds"`
	IsExpirationUpdate bool         `json:"isExpirationUpdate"`
	ViewOnce           bool         `json:"viewOnce"`
	Attachments        []Attachment `json:"attachments,omitempty"`
	GroupInfo          *GroupInfo   `json:"groupInfo,omitempty"`
}

// Attachment is signal-cli's Attachment. ID names the file in the
// attachments folder; StoredFilename is its full path, as signal-cli
// wrote it before 0.11.
type Attachment struct {
	ContentType     string  `json:"contentType"`
	Filename        *string `json:"filename"`
	ID              *string `json:"id"`
	Size            *int64  `json:"size"`
	Width           *int    `json:"width"`
	Height          *int    `json:"height"`
	Caption         *string `json:"caption"`
	UploadTimestamp *int64  `json:"uploadTimestamp"`
	StoredFilename  string  `json:"storedFilename,omitempty"`
}

// GroupInfo is signal-cli's GroupInfo: Type is DELIVER for a message to
// the group, UPDATE for a change of it.
type GroupInfo struct {
	GroupID   string `json:"groupId"`
	GroupName string `json:"groupName"`
	Revision  int64  `json:"revision"`
	Type      string `json:"type"`
}

// SyncMessage is signal-cli's SyncMessage; parley syncs sent messages.
type SyncMessage struct {
	SentMessage *SentMessage `json:"sentMessage,omitempty"`
}

// SentMessage is signal-cli's SyncDataMessage: a message one of our other
// devices sent, with its destination.
type SentMessage struct {
	Destination       *string `json:"destination"`
	DestinationNumber *string `json:"destinationNumber"`
	DestinationUUID   *string `json:"destinationUuid"`
	DataMessage
}

// ReceiptMessage is signal-cli's ReceiptMessage.
type ReceiptMessage struct {
	When       int64   `json:"when"`
	IsDelivery bool    `json:"isDelivery"`
	IsRead     bool    `json:"isRead"`
	IsViewed   bool    `json:"isViewed"`
	Timestamps []int64 `json:"timestamps"`
}

// TypingMessage is signal-cli's TypingMessage: Action is STARTED or STOPPED.
type TypingMessage struct {
	Action    string `json:"action"`
	Timestamp int64  `json:"timestamp"`
	GroupID   string `json:"groupId,omitempty"`
}

// GroupID renders a parley group id the way signal-cli writes group ids
// (standard base64 with padding).
func GroupID(id string) string {
	b, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil {
		return id
	}
	return base64.StdEncoding.EncodeToString(b)
}

// ParseGroupID accepts a group id as signal-cli writes it or as parley
// does and returns parley's form.
func ParseGroupID(id string) (string, error) {
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding} {
		if b, err := enc.DecodeString(id); err == nil && len(b) > 0 {
			return base64.RawURLEncoding.EncodeToString(b), nil
		}
	}
	return "", errors.New("not a group id (base64)")
}

// Receive renders an event received by account (its number).
func Receive(account string, ev cli.Event) Received {
	out := Received{Account: account}
	env := &Envelope{Timestamp: ev.Timestamp, ServerReceivedTimestamp: ev.ServerTimestamp,
		ServerDeliveredTimestamp: ev.ServerTimestamp}
	if ev.SenderAccount != "" {
		source := ev.SenderAccount
		if ev.Sender != "" {
			source = ev.Sender
			env.SourceNumber = &ev.Sender
		}
		env.Source, env.SourceUUID, env.SourceDevice = &source, &ev.SenderAccount, &ev.SenderDevice
	}
	out.Envelope = env
	switch ev.Kind {
	case "error":
		out.Exception = &Error{Message: ev.Error, Type: "ProtocolException"}
		if ev.IdentityChanged && !ev.IdentityTrusted {
			out.Exception.Type = "UntrustedIdentityException"
		}
	case "receipt":
		env.ReceiptMessage = &ReceiptMessage{When: ev.Timestamp, Timestamps: ev.Receipt.Timestamps,
			IsDelivery: ev.Receipt.Type == content.Delivery, IsRead: ev.Receipt.Type == content.Read}
	case "typing":
		t := &TypingMessage{Action: "STOPPED", Timestamp: ev.Timestamp}
		if ev.Typing.Started {
			t.Action = "STARTED"
		}
		if ev.Group != "" {
			t.GroupID = GroupID(ev.Group)
		}
		env.TypingMessage = t
	case "sent":
		s := &SentMessage{DataMessage: dataMessage(ev)}
		if ev.DestinationAccount != "" {
			dest := ev.DestinationAccount
			if ev.Destination != "" {
				dest = ev.Destination
				s.DestinationNumber = &ev.Destination
			}
			s.Destination, s.DestinationUUID = &dest, &ev.DestinationAccount
		}
		env.SyncMessage = &SyncMessage{SentMessage: s}
	default: // message, timer, group_update
		d := dataMessage(ev)
		env.DataMessage = &d
	}
	return out
}

func dataMessage(ev cli.Event) DataMessage {
	d := DataMessage{Timestamp: ev.Timestamp, ExpiresInSeconds: ev.ExpireTimer, IsExpirationUpdate: ev.Kind == "timer"}
	if ev.Text != "" {
		d.Message = &ev.Text
	}
	if ev.Group != "" {
		d.GroupInfo = &GroupInfo{GroupID: GroupID(ev.Group), GroupName: ev.GroupName, Type: "DELIVER"}
		if ev.Kind == "group_update" {
			d.GroupInfo.Type = "UPDATE"
		}
	}
	for _, a := range ev.Attachments {
		out := Attachment{ContentType: a.ContentType, StoredFilename: a.Path}
		if out.ContentType == "" {
			out.ContentType = "application/octet-stream"
		}
		if a.FileName != "" {
			out.Filename = &a.FileName
		}
		if a.Path != "" {
			id := a.Path[strings.LastIndexByte(a.Path, '/')+1:]
			out.ID = &id
		}
		size := a.Size
		out.Size = &size
		d.Attachments = append(d.Attachments, out)
	}
	return d
}

// SendResults is the result of signal-cli's send, sendReceipt, quitGroup
// and updateGroup methods.
type SendResults struct {
	Timestamp int64        `json:"timestamp"`
	Results   []SendResult `json:"results"`
	GroupID   string       `json:"groupId,omitempty"`
}

// SendResult is signal-cli's SendMessageResult: Type is SUCCESS,
// NETWORK_FAILURE, UNREGISTERED_FAILURE, IDENTITY_FAILURE or
// RATE_LIMIT_FAILURE.
type SendResult struct {
	RecipientAddress  Address `json:"recipientAddress"`
	GroupID           string  `json:"groupId,omitempty"`
	Type              string  `json:"type"`
	RetryAfterSeconds *int64  `json:"retryAfterSeconds,omitempty"`
	// Error is parley's reason for a failure of type FAILURE or any other.
	Error string `json:"error,omitempty"`
}

// Address is signal-cli's RecipientAddress.
type Address struct {
	UUID     *string `json:"uuid"`
	Number   *string `json:"number"`
	Username *string `json:"username"`
}

func address(number, account string) Address {
	var a Address
	if number != "" {
		a.Number = &number
	}
	if account != "" {
		a.UUID = &account
	}
	return a
}

// Results renders s (group: the group's id, or "").
func Results(s cli.Sent, group string) SendResults {
	out := SendResults{Timestamp: s.Timestamp, Results: make([]SendResult, 0, len(s.Results))}
	if group != "" {
		out.GroupID = GroupID(group)
	}
	for _, r := range s.Results {
		res := SendResult{RecipientAddress: address(r.Recipient, r.Account), GroupID: out.GroupID, Type: ResultType(r.Err)}
		if r.Err != nil {
			res.Error = r.Err.Error()
			var re *relayclient.Error
			if errors.As(r.Err, &re) && re.RetryAfter > 0 {
				secs := int64((re.RetryAfter + time.Second - 1) / time.Second)
				res.RetryAfterSeconds = &secs
			}
		}
		out.Results = append(out.Results, res)
	}
	return out
}

// ResultType names the outcome of a send to one recipient as signal-cli
// does.
func ResultType(err error) string {
	switch {
	case err == nil:
		return "SUCCESS"
	case relayclient.IsCode(err, "number_not_registered"):
		return "UNREGISTERED_FAILURE"
	}
	switch cli.ExitCode(err) {
	case cli.ExitUntrusted:
		return "IDENTITY_FAILURE"
	case cli.ExitRateLimit:
		return "RATE_LIMIT_FAILURE"
	case cli.ExitIO:
		return "NETWORK_FAILURE"
	}
	return "FAILURE"
}

// Group is signal-cli's listGroups entry.
type Group struct {
	ID                    string          `json:"id"`
	Name                  string          `json:"name"`
	Description           string          `json:"description"`
	IsMember              bool            `json:"isMember"`
	IsBlocked             bool            `json:"isBlocked"`
	MessageExpirationTime int64           `json:"messageExpirationTime"`
	Members               []GroupMember   `json:"members"`
	PendingMembers        []MemberAddress `json:"pendingMembers"`
	RequestingMembers     []MemberAddress `json:"requestingMembers"`
	Admins                []MemberAddress `json:"admins"`
	Banned                []MemberAddress `json:"banned"`
	PermissionAddMember   string          `json:"permissionAddMember"`
	PermissionEditDetails string          `json:"permissionEditDetails"`
	PermissionSendMessage string          `json:"permissionSendMessage"`
	GroupInviteLink       *string         `json:"groupInviteLink"`
}

// GroupMember is a member in signal-cli's listGroups.
type GroupMember struct {
	Number  *string `json:"number"`
	UUID    string  `json:"uuid"`
	IsAdmin bool    `json:"isAdmin"`
}

// MemberAddress is signal-cli's short form of a member.
type MemberAddress struct {
	Number *string `json:"number"`
	UUID   string  `json:"uuid"`
}

// Groups renders parley's groups. Every parley member may change a group,
// so the permissions are EVERY_MEMBER and nobody is singled out as admin.
func Groups(gs []cli.Group) []Group {
	out := make([]Group, 0, len(gs))
	for _, g := range gs {
		j := Group{ID: GroupID(g.ID), Name: g.Name, IsMember: g.Active, MessageExpirationTime: g.ExpireTimer,
			Members: make([]GroupMember, 0, len(g.Members)), PendingMembers: []MemberAddress{},
			RequestingMembers: []MemberAddress{}, Admins: []MemberAddress{}, Banned: []MemberAddress{},
			PermissionAddMember: "EVERY_MEMBER", PermissionEditDetails: "EVERY_MEMBER", PermissionSendMessage: "EVERY_MEMBER"}
		for _, m := range g.Members {
			gm := GroupMember{UUID: m.Account}
			if m.Number != "" {
				gm.Number = &m.Number
			}
			j.Members = append(j.Members, gm)
		}
		out = append(out, j)
	}
	return out
}

// Contact is signal-cli's listContacts entry; parley has no profiles,
// names or blocking, so those fields are empty.
type Contact struct {
	Number                string    `json:"number"`
	UUID                  string    `json:"uuid"`
	Username              *string   `json:"username"`
	Name                  string    `json:"name"`
	GivenName             *string   `json:"givenName"`
	FamilyName            *string   `json:"familyName"`
	NickName              *string   `json:"nickName"`
	NickGivenName         *string   `json:"nickGivenName"`
	NickFamilyName        *string   `json:"nickFamilyName"`
	Note                  *string   `json:"note"`
	Color                 *string   `json:"color"`
	IsArchived            bool      `json:"isArchived"`
	IsBlocked             bool      `json:"isBlocked"`
	IsHidden              bool      `json:"isHidden"`
	MessageExpirationTime int64     `json:"messageExpirationTime"`
	ProfileSharing        bool      `json:"profileSharing"`
	Unregistered          bool      `json:"unregistered"`
	Profile               *struct{} `json:"profile"`
}

// Contacts renders parley's contacts.
func Contacts(cs []cli.Contact) []Contact {
	out := make([]Contact, 0, len(cs))
	for _, c := range cs {
		out = append(out, Contact{Number: c.Number, UUID: c.Account, MessageExpirationTime: c.ExpireTimer})
	}
	return out
}

// UserStatus is signal-cli's getUserStatus entry.
type UserStatus struct {
	Recipient    string  `json:"recipient"`
	Number       string  `json:"number,omitempty"`
	UUID         *string `json:"uuid"`
	IsRegistered bool    `json:"isRegistered"`
}

// UserStatuses renders parley's directory answers.
func UserStatuses(us []cli.UserStatus) []UserStatus {
	out := make([]UserStatus, 0, len(us))
	for _, u := range us {
		s := UserStatus{Recipient: u.Number, Number: u.Number, IsRegistered: u.Registered}
		if u.Account != "" {
			s.UUID = &u.Account
		}
		out = append(out, s)
	}
	return out
}

// Identity is signal-cli's listIdentities entry. Fingerprint is the
// identity key in hex; parley has no scannable safety-number code.
type Identity struct {
	Number                string  `json:"number"`
	UUID                  string  `json:"uuid"`
	Fingerprint           string  `json:"fingerprint"`
	SafetyNumber          string  `json:"safetyNumber"`
	ScannableSafetyNumber *string `json:"scannableSafetyNumber"`
	TrustLevel            string  `json:"trustLevel"`
	AddedTimestamp        int64   `json:"addedTimestamp"`
}

// Identities renders parley's identities.
func Identities(ids []cli.Identity) []Identity {
	out := make([]Identity, 0, len(ids))
	for _, id := range ids {
		out = append(out, Identity{Number: id.Number, UUID: id.Account, Fingerprint: id.Fingerprint,
			SafetyNumber: id.SafetyNumber, TrustLevel: id.TrustLevel, AddedTimestamp: id.AddedMS})
	}
	return out
}

// Device is signal-cli's listDevices entry (parley devices have no name).
type Device struct {
	ID                int     `json:"id"`
	Name              *string `json:"name"`
	CreatedTimestamp  int64   `json:"createdTimestamp"`
	LastSeenTimestamp int64   `json:"lastSeenTimestamp"`
}

// Devices renders the account's devices.
func Devices(ds []relayclient.Device) []Device {
	out := make([]Device, 0, len(ds))
	for _, d := range ds {
		out = append(out, Device{ID: d.DeviceID, CreatedTimestamp: millis(d.Created), LastSeenTimestamp: millis(d.LastSeen)})
	}
	return out
}

// millis reads the relay's RFC 3339 time or date as Unix milliseconds (0
// when absent).
func millis(s string) int64 {
	for _, layout := range []string{time.RFC3339Nano, time.DateOnly} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UnixMilli()
		}
	}
	return 0
}
