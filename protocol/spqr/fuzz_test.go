package spqr

import (
	"bytes"
	"testing"
)

// fuzzFixture returns states of both sides a few epochs into a session and
// some valid messages for B, all deterministic.
func fuzzFixture(t testing.TB) (a, b []byte, msgs [][]byte) {
	r := testRand(40)
	a, b = newPair(t)
	for i := 0; i < 150; i++ {
		var m []byte
		a, _, m = mustSend(t, a, r)
		if i%5 != 4 {
			b, _ = mustRecv(t, b, m)
		} else {
			msgs = append(msgs, m)
		}
		b, _, m = mustSend(t, b, r)
		a, _ = mustRecv(t, a, m)
	}
	for i := 0; i < 8; i++ {
		var m []byte
		a, _, m = mustSend(t, a, r)
		msgs = append(msgs, m)
	}
	return a, b, msgs
}

// maxStateGrowth bounds how much one Recv may grow a state: a decoder's
// points plus the skipped-key history of one chain (default parameters).
const maxStateGrowth = 4*2*ekPayloadSize/2 + (defaultMaxOOOKeys*11/10+1+defaultMaxOOOKeys)*keyHistEntry + 4096

// FuzzRecv feeds hostile message bytes to a valid state: Recv must not
// panic, must either fail or return a parsable state, and must not grow
// the state beyond a fixed bound.
func FuzzRecv(f *testing.F) {
	_, b, msgs := fuzzFixture(f)
	for _, m := range msgs {
		f.Add(m)
	}
	f.Add([]byte{})
	f.Add([]byte{1, 1, 1, 0})
	f.Add([]byte{1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 1, 0xff, 0xff, 0xff, 0xff, 0x0f, 2, 0xff, 0xff, 0x03})
	f.Fuzz(func(t *testing.T, msg []byte) {
		st, _, err := Recv(b, msg)
		if err != nil {
			if st != nil {
				t.Fatal("state returned with error")
			}
			return
		}
		if len(st) > len(b)+maxStateGrowth {
			t.Fatalf("state grew from %d to %d bytes", len(b), len(st))
		}
		if len(st) > 0 {
			if _, err := parseState(st); err != nil {
				t.Fatalf("Recv produced an unparsable state: %v", err)
			}
		}
	})
}

// FuzzState feeds hostile state bytes to Send and Recv (the state parser):
// no panics, and every accepted state re-serializes stably.
func FuzzState(f *testing.F) {
	a, b, msgs := fuzzFixture(f)
	f.Add(a, msgs[0])
	f.Add(b, msgs[1])
	f.Add(b, msgs[len(msgs)-1])
	f.Add([]byte{}, []byte{1, 1, 1, 0})
	f.Fuzz(func(t *testing.T, state, msg []byte) {
		st, err := parseState(state)
		if err != nil {
			if _, _, _, err := Send(state, testRand(1)); err == nil {
				t.Fatal("Send accepted a state the parser refuses")
			}
			return
		}
		enc := st.marshal()
		st2, err := parseState(enc)
		if err != nil || !bytes.Equal(st2.marshal(), enc) {
			t.Fatal("state does not re-serialize stably")
		}
		Send(state, testRand(1))
		// Skip Recv on states whose own limits make it slow (a state can
		// ask for up to 2^32 chain steps); the parameters are the caller's.
		for _, p := range []*chainParams{paramsOf(st)} {
			if p != nil && (p.jump() > defaultMaxJump || p.ooo() > defaultMaxOOOKeys) {
				return
			}
		}
		Recv(state, msg)
	})
}

func paramsOf(st *state) *chainParams {
	if st.chain != nil {
		return &st.chain.params
	}
	if st.vn != nil {
		return st.vn.params
	}
	return nil
}
