//! Page tokens and stream cursors (README, "Page tokens and cursors"): opaque to clients
//! and tamper-evident. Each is a version byte, a 16-byte HMAC-SHA256 tag and the position
//! it stands for, base64url. The tag covers the position and the token's scope: for a page
//! token, the caller and the whole filter of the request that made it, so a token edited,
//! forged, or sent with another filter (or by another caller) is refused; for a cursor,
//! the event stream. A cursor's position is the stream's in each of its partitions
//! (`p:` then one number per partition); a cursor of the stream before it was
//! partitioned (a transaction id and a row id) is refused with its own reason,
//! `CURSOR_RETIRED` (README, "Consuming the event stream"). The key is the server's (`DISPUTE_PAGE_TOKEN_KEY`, or one made by a
//! migration and shared by every replica through the database).

use std::sync::Arc;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use tokio::sync::OnceCell;

use crate::{
    commands::{Commands, Error},
    domain::{Cursor, DomainError},
};

/// Default and largest page sizes of lists.
pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 500;
/// The token format; a new one gets a new byte.
const VERSION: u8 = 2;
const TAG_BYTES: usize = 16;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
/// The scope of every cursor: the one event stream.
const STREAM_SCOPE: &str = "events";
/// What a cursor's position starts with: positions per partition follow.
const CURSOR_PARTITIONED: &str = "p:";

/// Why a cursor is refused.
#[derive(Debug, Clone, PartialEq)]
pub enum BadCursor {
    /// Not a cursor this service issued (edited, forged, another token).
    Invalid(DomainError),
    /// One this service issued before the stream was partitioned: its position cannot be
    /// told in partitions.
    Retired,
}

impl From<BadCursor> for tonic::Status {
    fn from(bad: BadCursor) -> Self {
        match bad {
            BadCursor::Invalid(error) => error.into(),
            BadCursor::Retired => super::error::status(
                tonic::Code::OutOfRange,
                "CURSOR_RETIRED",
                "this cursor is from the event stream before it was partitioned; resume from an empty cursor and de-duplicate on event_id",
            ),
        }
    }
}

/// Where the key comes from: configured, or read from the database once, on first use
/// (so the server starts, NOT_SERVING, while the database is down).
#[derive(Clone)]
pub struct TokenKey {
    configured: Option<Tokens>,
    commands: Commands,
    loaded: Arc<OnceCell<Tokens>>,
}

impl TokenKey {
    pub fn new(configured: Option<&[u8]>, commands: Commands) -> Self {
        Self {
            configured: configured.map(Tokens::new),
            commands,
            loaded: Arc::default(),
        }
    }

    /// The tokens of this server's key.
    pub async fn tokens(&self) -> Result<Tokens, Error> {
        if let Some(tokens) = &self.configured {
            return Ok(tokens.clone());
        }
        self.loaded
            .get_or_try_init(|| async { Ok(Tokens::new(&self.commands.page_token_key().await?)) })
            .await
            .cloned()
    }
}

/// Seals positions into tokens and opens them again, with the server's key.
#[derive(Clone)]
pub struct Tokens {
    key: Arc<[u8]>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(..)")
    }
}

impl Tokens {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.into() }
    }

    fn mac(&self, scope: &str, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(&[VERSION]);
        mac.update(&(scope.len() as u64).to_be_bytes());
        mac.update(scope.as_bytes());
        mac.update(payload);
        mac
    }

    /// A token for `payload` within `scope`.
    pub fn seal(&self, scope: &str, payload: &str) -> String {
        let tag = self.mac(scope, payload.as_bytes()).finalize().into_bytes();
        let mut bytes = Vec::with_capacity(1 + TAG_BYTES + payload.len());
        bytes.push(VERSION);
        bytes.extend_from_slice(&tag[..TAG_BYTES]);
        bytes.extend_from_slice(payload.as_bytes());
        B64.encode(bytes)
    }

    /// The payload of a token this server sealed within `scope`; `None` for anything else.
    pub fn open(&self, scope: &str, token: &str) -> Option<String> {
        let bytes = B64.decode(token).ok()?;
        let (&version, rest) = bytes.split_first()?;
        if version != VERSION || rest.len() < TAG_BYTES {
            return None;
        }
        let (tag, payload) = rest.split_at(TAG_BYTES);
        self.mac(scope, payload).verify_truncated_left(tag).ok()?;
        String::from_utf8(payload.to_vec()).ok()
    }

    /// The stream cursor of a position.
    pub fn cursor(&self, position: &Cursor) -> String {
        let positions: Vec<String> = position.0.iter().map(i64::to_string).collect();
        self.seal(
            STREAM_SCOPE,
            &format!("{CURSOR_PARTITIONED}{}", positions.join(",")),
        )
    }

    /// `None` for an empty cursor (start from the oldest event kept).
    pub fn parse_cursor(&self, raw: &str) -> Result<Option<Cursor>, BadCursor> {
        if raw.is_empty() {
            return Ok(None);
        }
        let invalid = || {
            BadCursor::Invalid(DomainError::invalid(
                "after_cursor",
                "is not a cursor this service issued",
            ))
        };
        let text = self.open(STREAM_SCOPE, raw).ok_or_else(invalid)?;
        let Some(positions) = text.strip_prefix(CURSOR_PARTITIONED) else {
            // Sealed by this key in the stream's scope, so issued here: a position of the
            // stream before partitions ("transaction id:row id").
            return Err(BadCursor::Retired);
        };
        let mut cursor = Cursor::START;
        let mut parts = positions.split(',');
        for slot in cursor.0.iter_mut() {
            *slot = parts
                .next()
                .and_then(|n| n.parse().ok())
                .filter(|n: &i64| *n >= 0)
                .ok_or_else(invalid)?;
        }
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(Some(cursor))
    }
}

pub(super) fn page_size(raw: i32) -> Result<usize, String> {
    match raw {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err("must not be negative".to_string()),
        n => Ok((n as usize).min(MAX_PAGE_SIZE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::STREAM_PARTITIONS;

    fn tokens() -> Tokens {
        Tokens::new(b"a test key of thirty-two bytes!!")
    }

    #[test]
    fn a_token_opens_to_its_payload_in_its_scope_only() {
        let t = tokens();
        let token = t.seal("buyer-1|ACTIVE", "01a218a2-80c4-7226-9eb1-3ae75d3633c8");
        assert_eq!(
            t.open("buyer-1|ACTIVE", &token).as_deref(),
            Some("01a218a2-80c4-7226-9eb1-3ae75d3633c8")
        );
        assert_eq!(t.open("buyer-1|RESOLVED", &token), None, "another filter");
        assert_eq!(
            Tokens::new(b"another key, also 32 bytes long!").open("buyer-1|ACTIVE", &token),
            None
        );
    }

    #[test]
    fn an_edited_or_forged_token_is_refused() {
        let t = tokens();
        let token = t.seal("s", "12");
        let mut bytes = B64.decode(&token).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1; // the position
        assert_eq!(t.open("s", &B64.encode(&bytes)), None);
        bytes[last] ^= 1;
        bytes[1] ^= 1; // the tag
        assert_eq!(t.open("s", &B64.encode(&bytes)), None);
        // The old readable format, and plain garbage.
        for forged in ["djE6MTI", "", "not base64!", "AgAAAA"] {
            assert_eq!(t.open("s", forged), None, "{forged}");
        }
    }

    #[test]
    fn page_sizes_default_cap_and_refuse_negatives() {
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(7), Ok(7));
        assert_eq!(page_size(100_000), Ok(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn a_cursor_round_trips_and_a_forged_one_is_refused() {
        let t = tokens();
        let mut position = Cursor::START;
        position.0[0] = 812;
        position.0[STREAM_PARTITIONS - 1] = 9;
        assert_eq!(t.parse_cursor(&t.cursor(&position)), Ok(Some(position)));
        assert_eq!(t.parse_cursor(""), Ok(None));
        // A readable cursor of the old format, a page token used as a cursor, a cursor
        // with a partition too few or too many, a negative position.
        let short = vec!["1"; STREAM_PARTITIONS - 1].join(",");
        let long = vec!["1"; STREAM_PARTITIONS + 1].join(",");
        let negative = format!("-1{}", ",0".repeat(STREAM_PARTITIONS - 1));
        for bad in [
            "garbage".to_owned(),
            "YzE6ODEyOjk".to_owned(),
            t.seal("disputes", "812:9"),
            t.seal(STREAM_SCOPE, &format!("p:{short}")),
            t.seal(STREAM_SCOPE, &format!("p:{long}")),
            t.seal(STREAM_SCOPE, &format!("p:{negative}")),
        ] {
            assert!(
                matches!(t.parse_cursor(&bad), Err(BadCursor::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_cursor_of_the_stream_before_partitions_is_retired() {
        let t = tokens();
        // What the service sealed for a (transaction id, row id) position.
        let old = t.seal(STREAM_SCOPE, "812:9");
        assert_eq!(t.parse_cursor(&old), Err(BadCursor::Retired));
        let status = tonic::Status::from(BadCursor::Retired);
        assert_eq!(status.code(), tonic::Code::OutOfRange);
    }
}
