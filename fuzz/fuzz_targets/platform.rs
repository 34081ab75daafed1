//! `--platform` values: parsing never panics, and a parsed platform prints back to one that
//! parses to the same platform.
#![no_main]

use docker_pull::platform::Platform;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(platform) = Platform::parse(s) else {
        return;
    };
    let shown = platform.to_string();
    let again = Platform::parse(&shown)
        .unwrap_or_else(|e| panic!("{s:?} parsed, but its display {shown:?} does not: {e}"));
    assert_eq!(again, platform, "{s:?} -> {shown:?} does not round-trip");
    let _ = platform.match_rank(&Platform::host());
    let _ = Platform::host().match_rank(&platform);
});
