// Package protocol is the Signal protocol as Signal's official libsignal
// speaks it today, owned by this project and importing nothing of the
// relay, so that mobile apps (through gomobile), bots and the parley CLI
// can all use it.
//
// It covers identity and prekeys (Curve25519 with XEdDSA signatures,
// Kyber1024 prekeys), session setup by PQXDH, the Double Ratchet with
// Signal's post-quantum ratchet (SPQR, package spqr) in the version-4 wire
// format, session records that keep earlier sessions for late messages,
// sender keys for groups, and sealed sender (certificates, version 1
// sealing, and unsealing of versions 1 and 2, with the server's parse of
// the multi-recipient form). The API follows libsignal's: stores are
// interfaces the caller implements over its own database, and every
// operation that fails leaves the stores as they were.
//
// Interoperability with official libsignal (the npm package
// @signalapp/libsignal-client) is proven by the tests in this package,
// which hold conversations with it in both directions.
package protocol
