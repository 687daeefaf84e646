// Package messages is jetflow's wire contract: every message and stored record, the subjects and
// stream names they travel on, and the protocol version.
//
// Every value is msgpack-encoded with explicit, never-reused short field tags, and starts with a
// version ("v") and a kind ("k"). [Decode] reads the header first and switches on the kind, so a
// record of an unknown kind, a newer protocol version, or malformed bytes is an error — never a
// panic. Golden encodings under testdata/ are decoded by the tests forever, so a change that
// breaks a stored record fails CI.
//
// The subjects and buckets are listed in docs/PROTOCOL.md for clients in other languages.
package messages
