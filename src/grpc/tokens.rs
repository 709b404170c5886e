//! Page tokens and stream cursors: opaque strings to clients, positions to the service.

use crate::domain::{DomainError, Position};

/// Default and largest page sizes of lists.
pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 500;
const PAGE_TOKEN_PREFIX: &str = "v1:";

/// An opaque page token for the last item of a page.
pub fn page_token(last: &impl std::fmt::Display) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{PAGE_TOKEN_PREFIX}{last}"))
}

/// The last item of the previous page, from a token [`page_token`] made.
pub(super) fn parse_page_token<T>(
    token: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T, String> {
    use base64::Engine;
    let invalid = || "is not a token this service issued".to_string();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix(PAGE_TOKEN_PREFIX)
        .and_then(parse)
        .ok_or_else(invalid)
}

pub(super) fn page_size(raw: i32) -> Result<usize, String> {
    match raw {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err("must not be negative".to_string()),
        n => Ok((n as usize).min(MAX_PAGE_SIZE)),
    }
}

const CURSOR_PREFIX: &str = "c1:";

/// The stream cursor of a position: opaque to consumers.
pub fn cursor(position: Position) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{CURSOR_PREFIX}{}:{}", position.tx_id, position.id))
}

/// `None` for an empty cursor (start from the oldest event kept).
pub fn parse_cursor(raw: &str) -> Result<Option<Position>, DomainError> {
    use base64::Engine;
    if raw.is_empty() {
        return Ok(None);
    }
    let invalid = || DomainError::invalid("after_cursor", "is not a cursor this service issued");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (tx_id, id) = text
        .strip_prefix(CURSOR_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(invalid)?;
    match (tx_id.parse(), id.parse()) {
        (Ok(tx_id), Ok(id)) => Ok(Some(Position { tx_id, id })),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_token_gives_back_what_it_was_made_of_and_nothing_else_parses() {
        let token = page_token(&"01a218a2-80c4-7226-9eb1-3ae75d3633c8");
        assert_eq!(
            parse_page_token(&token, |s| Some(s.to_owned())).unwrap(),
            "01a218a2-80c4-7226-9eb1-3ae75d3633c8"
        );
        for bad in ["", "not base64!", "djE6", "eDox"] {
            assert!(
                parse_page_token(bad, |s| s.parse::<u8>().ok()).is_err(),
                "{bad}"
            );
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
        let position = Position { tx_id: 812, id: 9 };
        assert_eq!(parse_cursor(&cursor(position)), Ok(Some(position)));
        assert_eq!(parse_cursor(""), Ok(None));
        for bad in ["garbage", "YzE6MQ", "YzI6MToy"] {
            assert!(parse_cursor(bad).is_err(), "{bad}");
        }
    }
}
