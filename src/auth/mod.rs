//! Identity: JSON Web Tokens, verified the same way by the gateway (at the
//! edge) and by the chat server (which must not trust the network).
//!
//! # Layout
//! - `claims`: what a verified token says (user, name, rooms it may enter).
//! - `verify`: the [`Verifier`]: keys pinned to one algorithm each, times,
//!   issuer, audience; why a token is refused ([`AuthError`]).
//! - `sign`: minting tokens, for `wsgate token` and tests.

mod claims;
mod sign;
mod verify;

pub use claims::Claims;
pub use sign::{SignError, SignKey, TokenRequest, mint};
pub use verify::{
    AuthError, DEFAULT_LEEWAY, KeyError, MAX_SUB_BYTES, MIN_SECRET_BYTES, Verifier, VerifierConfig,
    VerifyKey,
};

/// The gRPC metadata key carrying the caller's token (`Bearer <jwt>`).
pub const AUTHORIZATION: &str = "authorization";

/// The token in an `authorization` value, if it is a bearer token.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
