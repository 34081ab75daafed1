//! RFC 3339 timestamps (`issued_at` in token responses): parsing never panics, white space
//! around the timestamp (ASCII or not, such as U+3000) changes nothing, and what parses is not
//! before 1970.
#![no_main]

use std::time::SystemTime;

use docker_pull::registry::auth::parse_rfc3339;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = parse_rfc3339(&text);
    if let Some(t) = parsed {
        assert!(t >= SystemTime::UNIX_EPOCH, "{text:?} is before 1970");
    }
    for padded in [
        format!("\u{3000}{text}\u{3000}"),
        format!(" \t\u{2003}{text}\n"),
    ] {
        assert_eq!(
            parse_rfc3339(&padded),
            parsed,
            "{padded:?} and {text:?} differ by white space only"
        );
    }
});
