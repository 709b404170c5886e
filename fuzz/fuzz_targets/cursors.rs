//! Page tokens and stream cursors: any string a client sends where the service expects
//! one it issued. Nothing may panic; nothing but a token sealed with the key opens; a
//! cursor that opens prints back to the same position.
#![no_main]

use std::sync::LazyLock;

use dispute_service::grpc::tokens::Tokens;
use libfuzzer_sys::fuzz_target;

static TOKENS: LazyLock<Tokens> = LazyLock::new(|| Tokens::new(b"fuzz key of at least thirty-two bytes"));

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    if let Ok(Some(position)) = TOKENS.parse_cursor(&text) {
        assert_eq!(TOKENS.parse_cursor(&TOKENS.cursor(&position)), Ok(Some(position)));
    }
    // Whatever opens must have been sealed in that scope: sealing its payload again
    // gives a token that opens to the same payload.
    if let Some(payload) = TOKENS.open("disputes|scope", &text) {
        let again = TOKENS.seal("disputes|scope", &payload);
        assert_eq!(TOKENS.open("disputes|scope", &again), Some(payload));
    }
});
