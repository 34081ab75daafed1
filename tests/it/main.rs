#[path = "../support/mod.rs"]
mod support;

// Integration tests: the `docker-pull` binary against the in-process fake registry.
// One file per capability; `common` holds the runner and the archive checks.

mod auth;
mod boundary;
mod bundle;
mod cache;
mod chunked;
mod commands;
mod common;
mod concurrency;
mod copy;
mod credentials;
mod fake_registry;
mod faults;
mod formats;
mod hostile;
mod interrupt;
mod json;
mod layout;
mod manifest;
mod mirrors;
mod neighbour;
mod packing;
mod placed;
mod platform;
mod proxy;
mod pull;
mod push;
mod query;
mod ratelimit;
mod refs;
mod resume;
mod settings;
mod split;
mod streaming;
mod thin;
mod tokens;
mod upload;
mod verify;
