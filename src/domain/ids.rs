//! Identifiers, parsed once at the edge.

use std::fmt;
use uuid::Uuid;

/// An order, buyer or seller id: 1-64 characters of `[A-Za-z0-9._:-]`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct PartyId(String);

impl PartyId {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("is required".into());
        }
        if s.len() > Self::MAX_CHARS {
            return Err(format!("must be at most {} characters", Self::MAX_CHARS));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
        if !s.chars().all(allowed) {
            return Err("may contain only A-Z, a-z, 0-9 and . _ : -".into());
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PartyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A dispute id: a UUID (v7, so ids sort by creation time).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct DisputeId(pub Uuid);

impl DisputeId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("is required".into());
        }
        Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| "must be a UUID".into())
    }
}

impl Default for DisputeId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for DisputeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An idempotency key: 1-255 characters chosen by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    pub const MAX_CHARS: usize = 255;

    pub fn parse(s: &str) -> Result<Self, String> {
        match s.chars().count() {
            0 => Err("is required".into()),
            n if n > Self::MAX_CHARS => {
                Err(format!("must be at most {} characters", Self::MAX_CHARS))
            }
            _ => {
                super::check_text(s, super::TextKind::Line)?;
                Ok(Self(s.to_owned()))
            }
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn party_ids_accept_the_documented_alphabet_only() {
        assert!(PartyId::parse("order-1.A_b:9").is_ok());
        assert!(PartyId::parse(&"x".repeat(64)).is_ok());
        assert!(PartyId::parse(&"x".repeat(65)).is_err());
        assert!(PartyId::parse("").is_err());
        assert!(PartyId::parse("a b").is_err());
        assert!(PartyId::parse("é").is_err());
    }

    #[test]
    fn request_ids_are_one_to_255_characters() {
        assert!(RequestId::parse("").is_err());
        assert!(RequestId::parse(&"r".repeat(255)).is_ok());
        assert!(RequestId::parse(&"r".repeat(256)).is_err());
    }

    #[test]
    fn dispute_ids_must_be_uuids() {
        assert!(DisputeId::parse("not-a-uuid").is_err());
        let id = DisputeId::new();
        assert_eq!(DisputeId::parse(&id.to_string()), Ok(id));
    }
}
