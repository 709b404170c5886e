//! What text the service keeps may contain (README, "Limits"). Text goes to PostgreSQL,
//! to the parties' apps and to the support console: NUL cannot be stored in a `text`
//! column at all, other control characters corrupt logs and terminals, and the Unicode
//! bidirectional overrides and isolates make text display as something other than what it
//! says (a tracking number or a URL that reads backwards). All are refused, never
//! silently removed: the caller learns which field held one.

/// Free text (a description, a note, a message) may hold line breaks and tabs; an
/// identifier or a reference may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    Free,
    Line,
}

/// `Ok` when `text` holds no character the service refuses.
pub fn check_text(text: &str, kind: TextKind) -> Result<(), String> {
    for c in text.chars() {
        let allowed_space = kind == TextKind::Free && matches!(c, '\n' | '\r' | '\t');
        if c == '\0' {
            return Err("must not contain NUL characters".into());
        }
        if c.is_control() && !allowed_space {
            return Err(format!(
                "must not contain control characters (found U+{:04X})",
                c as u32
            ));
        }
        if is_bidi_control(c) {
            return Err(format!(
                "must not contain bidirectional override or isolate characters (found U+{:04X})",
                c as u32
            ));
        }
    }
    Ok(())
}

/// U+202A–U+202E (embeddings and overrides) and U+2066–U+2069 (isolates).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_text_in_any_script_passes() {
        for text in [
            "",
            "the colour is wrong",
            "Цвет не тот",
            "颜色不对",
            "ﺍﻟﻠﻮﻥ ﺧﻄﺄ",
            "👍 é",
        ] {
            assert_eq!(check_text(text, TextKind::Line), Ok(()), "{text}");
        }
        assert_eq!(
            check_text("line one\nline two\ttab\r\n", TextKind::Free),
            Ok(())
        );
    }

    #[test]
    fn nul_control_and_bidi_characters_are_refused() {
        for (text, kind) in [
            ("a\0b", TextKind::Free),
            ("a\0b", TextKind::Line),
            ("bell\u{7}", TextKind::Free),
            ("escape\u{1b}[31m", TextKind::Free),
            ("c1\u{85}", TextKind::Free),
            ("del\u{7f}", TextKind::Free),
            ("two\nlines", TextKind::Line),
            ("tab\there", TextKind::Line),
            ("abc\u{202E}gpj.exe", TextKind::Free),
            ("\u{2066}isolate\u{2069}", TextKind::Line),
        ] {
            assert!(check_text(text, kind).is_err(), "{text:?} as {kind:?}");
        }
    }
}
