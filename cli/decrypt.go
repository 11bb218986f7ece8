package cli

import (
	"context"
	"errors"
	"fmt"

	"go.mau.fi/libsignal/protocol"
	"go.mau.fi/libsignal/session"
	"go.mau.fi/libsignal/signalerror"
	"go.mau.fi/libsignal/state/record"

	"github.com/parleyhq/parley/store/clientdb"
)

// go.mau.fi/libsignal v0.2.2 tries a session record's states in place: a
// state that fails to decrypt a message has already been ratcheted forward
// by the attempt, and if an older state then succeeds the damaged one is
// saved with the record. After both sides start a session at once
// ("simultaneous initiate"), every message on one of the two sessions
// then fails with "no valid sessions" (TestSimultaneousInitiate shows it).
// Java's libsignal tries a copy of each state; so do these functions: each
// state is tried alone in a record decoded fresh from the stored bytes, and
// the record saved is the winning state (promoted to current) followed by
// the untouched others.

// decryptSignalMessage decrypts an established-session message.
func decryptSignalMessage(ctx context.Context, st *signalStore, addr *protocol.SignalAddress, m *protocol.SignalMessage) ([]byte, error) {
	raw, err := st.tx.Session(ctx, addr.Name(), int(addr.DeviceID()))
	if errors.Is(err, clientdb.ErrNotFound) {
		return nil, fmt.Errorf("%w %s", signalerror.ErrNoSessionForUser, addr)
	}
	if err != nil {
		return nil, local(err)
	}
	rec, err := decryptIsolated(ctx, st, addr, raw, m)
	if err != nil {
		return nil, err
	}
	return rec.plaintext, st.StoreSession(ctx, addr, rec.record)
}

// decryptPreKeyMessage decrypts a session's first messages: the prekey
// part may add a new state (X3DH as the responder), then the message is
// decrypted as above and the one-time prekey it used is deleted.
func decryptPreKeyMessage(ctx context.Context, st *signalStore, addr *protocol.SignalAddress, m *protocol.PreKeySignalMessage) ([]byte, error) {
	current, err := st.LoadSession(ctx, addr)
	if err != nil {
		return nil, err
	}
	used, err := st.builder(addr).Process(ctx, current, m)
	if err != nil {
		return nil, err
	}
	out, err := decryptIsolated(ctx, st, addr, current.Serialize(), m.WhisperMessage())
	if err != nil {
		return nil, err
	}
	if err := st.StoreSession(ctx, addr, out.record); err != nil {
		return nil, err
	}
	if used != nil && !used.IsEmpty {
		if err := st.RemovePreKey(ctx, used.Value); err != nil {
			return nil, err
		}
	}
	return out.plaintext, nil
}

type decrypted struct {
	plaintext []byte
	record    *record.Session
}

func decryptIsolated(ctx context.Context, st *signalStore, addr *protocol.SignalAddress, raw []byte, m *protocol.SignalMessage) (decrypted, error) {
	fresh := func() (*record.SessionStructure, error) {
		r, err := record.NewSessionFromBytes(raw, serializer.Session, serializer.State)
		if err != nil {
			return nil, err
		}
		return r.Structure(), nil
	}
	s, err := fresh()
	if err != nil {
		return decrypted{}, err
	}
	all := append([]*record.StateStructure{s.SessionState}, s.PreviousStates...)
	cipher := session.NewCipher(st.builder(addr), addr)
	for i := range all {
		if all[i] == nil {
			continue
		}
		copyOf, err := fresh()
		if err != nil {
			return decrypted{}, err
		}
		states := append([]*record.StateStructure{copyOf.SessionState}, copyOf.PreviousStates...)
		alone, err := record.NewSessionFromStructure(&record.SessionStructure{SessionState: states[i]}, serializer.Session, serializer.State)
		if err != nil {
			return decrypted{}, err
		}
		plaintext, _, err := cipher.DecryptWithRecord(ctx, alone, m)
		if errors.Is(err, signalerror.ErrOldCounter) {
			return decrypted{}, err
		}
		if err != nil {
			continue
		}
		identity := alone.SessionState().RemoteIdentityKey()
		if ok, err := st.IsTrustedIdentity(ctx, addr, identity); err != nil || !ok {
			return decrypted{}, errors.Join(signalerror.ErrUntrustedIdentity, err)
		}
		if err := st.SaveIdentity(ctx, addr, identity); err != nil {
			return decrypted{}, err
		}
		// The winner first, then the others in their order, untouched
		// (all was decoded before any attempt and never handed to the library).
		prev := make([]*record.StateStructure, 0, len(all)-1)
		for j, o := range all {
			if j != i && o != nil {
				prev = append(prev, o)
			}
		}
		out, err := record.NewSessionFromStructure(&record.SessionStructure{SessionState: alone.Structure().SessionState, PreviousStates: prev},
			serializer.Session, serializer.State)
		return decrypted{plaintext: plaintext, record: out}, err
	}
	return decrypted{}, signalerror.ErrNoValidSessions
}
