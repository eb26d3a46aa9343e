// Package secrets declares and resolves the secrets microagent delivers to
// a workspace. microagent is a conduit, not a store: a secret is declared
// as NAME=<scheme>:<ref>, where the reference names where the value lives
// (an environment variable, a file, a key of a dotenv file, a Vault KV
// field, a helper program's answer), never the value. Manifests store
// references only; the host resolves them at every start (or, for
// on-demand secrets, at every fetch) and holds values in memory only, as
// []byte in a Value that is zeroed after use and that prints and encodes as
// "[redacted N bytes]".
//
// Resolution fails closed: an unknown or missing scheme, a bad name, a
// duplicate, an empty value, a missing variable, file or key, a denial or
// an unreachable backend is an error naming the secret and the reason,
// never a silently empty secret. Errors wrap one of the Err* kinds and
// never contain a value.
//
// Built-in schemes:
//
//	env:VAR                           the CLI's environment (plaintext)
//	file:PATH                         a file's exact bytes (plaintext)
//	dotenv:PATH#KEY                   one key of a dotenv file (plaintext)
//	vault:<mount>/data/<path>#<field> Vault / OpenBao KV v2
//	helper:<ref>                      $MICROAGENT_SECRET_HELPER <ref>
//
// A library user adds a scheme by implementing Resolver and calling
// Register.
package secrets
