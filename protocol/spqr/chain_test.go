package spqr

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

// The crate's chain.rs unit tests.

var defParams = chainParams{}

func TestChainDirectionsMatch(t *testing.T) {
	a2b := newChain([]byte("1"), A2B, defParams)
	b2a := newChain([]byte("1"), B2A, defParams)
	i, k, err := a2b.sendKey(0)
	if err != nil || i != 1 {
		t.Fatal(i, err)
	}
	if got, err := b2a.recvKey(0, 1); err != nil || !bytes.Equal(got, k) {
		t.Fatal("epoch 0 keys differ")
	}
	a2b.addEpoch(1, []byte{2})
	b2a.addEpoch(1, []byte{2})
	i, k, _ = a2b.sendKey(1)
	if i != 1 {
		t.Fatal(i)
	}
	if got, _ := b2a.recvKey(1, 1); !bytes.Equal(got, k) {
		t.Fatal("epoch 1 keys differ")
	}
	for j := 2; j < 10; j++ {
		a2b.sendKey(1)
	}
	i, k, _ = a2b.sendKey(1)
	if i != 10 {
		t.Fatal(i)
	}
	if got, _ := b2a.recvKey(1, 10); !bytes.Equal(got, k) {
		t.Fatal("skipped keys differ")
	}
}

func TestChainPreviouslyReturnedKey(t *testing.T) {
	c := newChain([]byte("1"), A2B, defParams)
	if _, err := c.recvKey(0, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := c.recvKey(0, 2); !errors.Is(err, ErrKeyAlreadyRequested) {
		t.Fatal(err)
	}
	if _, err := c.recvKey(0, 0); !errors.Is(err, ErrKeyAlreadyRequested) {
		t.Fatal(err)
	}
}

func TestChainVeryOldKeysTrimmed(t *testing.T) {
	c := newChain([]byte("1"), A2B, chainParams{maxJump: 10, maxOOOKeys: 10})
	if _, err := c.recvKey(0, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := c.recvKey(0, 12); err != nil {
		t.Fatal(err)
	}
	if _, err := c.recvKey(0, 1); !errors.Is(err, ErrKeyTrimmed) {
		t.Fatal(err)
	}
	if _, err := c.recvKey(0, 23); !errors.Is(err, ErrKeyJump) {
		t.Fatal(err)
	}
}

func TestChainOutOfOrderKeys(t *testing.T) {
	a2b := newChain([]byte("1"), A2B, defParams)
	b2a := newChain([]byte("1"), B2A, defParams)
	type ik struct {
		i uint32
		k []byte
	}
	keys := make([]ik, defaultMaxOOOKeys)
	for n := range keys {
		i, k, _ := a2b.sendKey(0)
		keys[n] = ik{i, k}
	}
	rand.New(testRand(30)).Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	for _, x := range keys {
		got, err := b2a.recvKey(0, x.i)
		if err != nil || !bytes.Equal(got, x.k) {
			t.Fatalf("key %d: %v", x.i, err)
		}
	}
}

func TestChainClearOldSendKeys(t *testing.T) {
	c := newChain([]byte("1"), A2B, defParams)
	c.sendKey(0)
	c.sendKey(0)
	c.addEpoch(1, []byte{2})
	c.sendKey(1)
	if _, _, err := c.sendKey(0); !errors.Is(err, ErrSendKeyEpochDecreased) {
		t.Fatal(err)
	}
}

// TestChainKeyHistoryBounded: the skipped-key history stays bounded by the
// trim size however keys are skipped.
func TestChainKeyHistoryBounded(t *testing.T) {
	p := chainParams{maxJump: 50, maxOOOKeys: 20}
	c := newChain([]byte("1"), A2B, p)
	r := rand.New(testRand(31))
	at := uint32(0)
	for i := 0; i < 2000; i++ {
		at += 1 + uint32(r.IntN(40))
		if _, err := c.recvKey(0, at); err != nil {
			t.Fatal(err)
		}
		if n := len(c.links[0].recv.prev) / keyHistEntry; n > p.trimSize()+int(p.maxJump) {
			t.Fatalf("history has %d keys", n)
		}
	}
}
