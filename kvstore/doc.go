// Package kvstore is jetflow's record store on JetStream KV: typed get, create-if-absent and
// compare-and-set, prefix listing, and values of any size.
//
// Create fails with ErrConflict when the key exists, and Update when the revision moved on: the
// first writer of an operation's outcome wins and every other adopts it (DESIGN.md invariant 2).
//
// A value larger than InlineLimit is written to the JetStream object store and the KV entry holds
// a reference to it, so a large input, result or checkpoint is stored whole — never truncated or
// refused. Every stored value starts with one framing byte (inline or reference) so readers can
// tell them apart.
package kvstore
