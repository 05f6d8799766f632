//! What a verified token says about its bearer.

use serde::{Deserialize, Serialize};

/// The claims wsgate reads from a token. `sub` is the user id; `iss` and
/// `aud` are checked by the verifier; everything else is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id the bearer acts as.
    pub sub: String,
    /// Expiry, in seconds since the Unix epoch. Required: a token that never
    /// expires cannot be taken back.
    pub exp: u64,
    /// Not valid before, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// A display name the application vouches for; seeds the user's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The rooms the bearer may join, read and send to. Absent: every room.
    /// Each entry is a room id, or a prefix when it ends with `*`
    /// (`team-*`); an empty list allows none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
}

impl Claims {
    /// Whether the `rooms` claim lets the bearer into `room`.
    pub fn may_enter(&self, room: &str) -> bool {
        let Some(rooms) = &self.rooms else {
            return true;
        };
        rooms.iter().any(|allowed| match allowed.strip_suffix('*') {
            Some(prefix) => room.starts_with(prefix),
            None => allowed == room,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_rooms(rooms: Option<&[&str]>) -> Claims {
        Claims {
            sub: "alice".into(),
            exp: 0,
            nbf: None,
            iat: None,
            name: None,
            rooms: rooms.map(|r| r.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn no_rooms_claim_allows_every_room() {
        assert!(with_rooms(None).may_enter("anything"));
    }

    #[test]
    fn rooms_are_exact_ids_or_star_prefixes() {
        let claims = with_rooms(Some(&["general", "team-*"]));
        assert!(claims.may_enter("general"));
        assert!(!claims.may_enter("general2"));
        assert!(!claims.may_enter("genera"));
        assert!(claims.may_enter("team-"));
        assert!(claims.may_enter("team-red"));
        assert!(!claims.may_enter("team"));
        assert!(!claims.may_enter("other"));
    }

    #[test]
    fn an_empty_rooms_claim_allows_none() {
        assert!(!with_rooms(Some(&[])).may_enter("general"));
        assert!(with_rooms(Some(&["*"])).may_enter("general"));
    }
}
