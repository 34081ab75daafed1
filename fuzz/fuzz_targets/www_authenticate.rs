//! `WWW-Authenticate` headers from a registry: parsing never panics nor loops, and the path a
//! client takes next never panics either: choosing the challenge (Bearer first, else Basic),
//! reading its realm, service and scope, and turning the scope into the scopes to ask for.
#![no_main]

use docker_pull::registry::auth::{AuthState, Scope, parse_challenges, pull_scope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let header = String::from_utf8_lossy(data);
    let challenges = parse_challenges(&header);
    for challenge in &challenges {
        assert!(
            !challenge.scheme.is_empty(),
            "{header:?}: a challenge without a scheme"
        );
        assert_eq!(
            challenge.scheme,
            challenge.scheme.to_ascii_lowercase(),
            "{header:?}: schemes are lowercased"
        );
        let _ = challenge.param("realm");
        let _ = challenge.param("service");
        let _ = challenge.param("scope");
    }
    let chosen = challenges
        .iter()
        .find(|c| c.scheme == "bearer")
        .or_else(|| challenges.iter().find(|c| c.scheme == "basic"));
    let Some(chosen) = chosen else {
        return;
    };
    let _realm = chosen.param("realm").map(str::len);
    let _service = chosen.param("service").map(str::len);
    let asked: Vec<String> = chosen
        .param("scope")
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let repository = "library/nginx";
    let mut state = AuthState {
        challenge: Some(chosen.clone()),
        ..AuthState::default()
    };
    let scope = Scope::pull(repository);
    state.extra_scopes.insert(scope.key(), asked);
    let scopes = state.scopes(&scope);
    assert_eq!(scopes.first(), Some(&pull_scope(repository)));
    let mut unique = scopes.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        scopes.len(),
        "{header:?}: a scope asked twice"
    );
});
