//! Token server answers: reading one never panics, whatever the body and whatever the two
//! clocks say (a monotonic clock that started long ago or just now, a wall clock anywhere from
//! 1970 on), and a grant never outlives the one-day clamp. The `issued_at` path (RFC 3339 after
//! any white space) is reached through the body.
#![no_main]

use std::time::{Duration, Instant, SystemTime};

use docker_pull::registry::auth::{MAX_TOKEN_LIFETIME, parse_token_response};
use libfuzzer_sys::fuzz_target;

/// The first 17 bytes set the clocks; the rest is the body.
fn clocks(data: &[u8]) -> (Instant, SystemTime, &[u8]) {
    let base = Instant::now();
    let Some((head, body)) = data.split_first_chunk::<17>() else {
        return (base, SystemTime::now(), data);
    };
    let shift = Duration::from_secs(u64::from_le_bytes(
        head[1..9].try_into().unwrap_or_default(),
    ));
    let now = if head[0] & 1 == 0 {
        base.checked_add(shift)
    } else {
        base.checked_sub(shift)
    }
    .unwrap_or(base);
    let wall = Duration::from_secs(u64::from_le_bytes(
        head[9..17].try_into().unwrap_or_default(),
    ));
    let wall = SystemTime::UNIX_EPOCH
        .checked_add(wall)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    (now, wall, body)
}

fuzz_target!(|data: &[u8]| {
    let (now, wall, body) = clocks(data);
    for body in [body, data] {
        let Ok(grant) = parse_token_response(body, now, wall) else {
            continue;
        };
        assert!(!grant.token.value.is_empty(), "an empty token was accepted");
        if let Some(latest) = now.checked_add(MAX_TOKEN_LIFETIME) {
            assert!(
                grant.token.expires <= latest,
                "a token lives longer than {MAX_TOKEN_LIFETIME:?}"
            );
        }
    }
});
