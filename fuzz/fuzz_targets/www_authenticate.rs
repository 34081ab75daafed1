//! `WWW-Authenticate` headers from a registry: parsing never panics nor loops.
#![no_main]

use docker_pull::registry::auth::parse_challenges;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let header = String::from_utf8_lossy(data);
    for challenge in parse_challenges(&header) {
        assert!(
            !challenge.scheme.is_empty(),
            "{header:?}: a challenge without a scheme"
        );
        let _ = challenge.param("realm");
        let _ = challenge.param("service");
        let _ = challenge.param("scope");
    }
});
