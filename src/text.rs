//! Text that came from a registry (error envelopes, platform strings, anything
//! a manifest or a server states), made safe to show on a terminal: control
//! characters and bidirectional overrides become visible escapes, so that a
//! server cannot erase the error line, move the cursor or print a fake
//! "Pulled …" of its own.
//!
//! Registry text is escaped where it enters an error value; `main` escapes
//! once more what it prints, as a last line of defence.

use std::fmt::Write as _;

/// `s` with every control character (Unicode category Cc: C0, DEL, C1) and
/// every bidirectional embedding, override and isolate (U+202A–U+202E,
/// U+2066–U+2069) replaced by an escape: `\r`, `\n`, `\t`, `\x1b`,
/// `\u{85}`, `\u{202e}`. Everything else, backslashes included, stays as it
/// is, so ordinary messages read the same.
pub fn escape_untrusted(s: &str) -> String {
    escape(s, false)
}

/// Like [`escape_untrusted`], but keeps line feeds: for a whole message that
/// may span lines, on its way to stderr.
pub fn escape_for_terminal(s: &str) -> String {
    escape(s, true)
}

/// Whether `c` would be shown escaped.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape(s: &str, keep_newlines: bool) -> String {
    if !s
        .chars()
        .any(|c| is_unsafe(c) && !(keep_newlines && c == '\n'))
    {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' if keep_newlines => out.push('\n'),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_escapes() {
        assert_eq!(
            escape_untrusted("x\r\u{1b}[2KPulled evil"),
            "x\\r\\x1b[2KPulled evil"
        );
        assert_eq!(escape_untrusted("a\nb\tc\0d\u{7f}"), "a\\nb\\tc\\x00d\\x7f");
        assert_eq!(escape_untrusted("c1 \u{85}\u{9b}"), "c1 \\u{85}\\u{9b}");
        assert_eq!(
            escape_untrusted("gpj.\u{202e}exe \u{2066}x\u{2069}"),
            "gpj.\\u{202e}exe \\u{2066}x\\u{2069}"
        );
    }

    #[test]
    fn ordinary_text_is_unchanged() {
        for s in [
            "",
            "manifest unknown",
            "C:\\path\\to",
            "镜像 ünïcödé — “quotes” 🙂",
            "\u{200f}\u{3000}",
        ] {
            assert_eq!(escape_untrusted(s), s);
        }
    }

    #[test]
    fn messages_keep_their_own_line_feeds() {
        assert_eq!(
            escape_for_terminal("error: one\r\u{1b}[1A\nerror: two\n"),
            "error: one\\r\\x1b[1A\nerror: two\n"
        );
        let all: String = (0..=0x9f_u32).filter_map(char::from_u32).collect();
        let shown = escape_for_terminal(&all);
        assert!(
            !shown.chars().any(|c| is_unsafe(c) && c != '\n'),
            "{shown:?}"
        );
    }
}
