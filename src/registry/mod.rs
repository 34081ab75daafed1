//! The only code that speaks HTTP: a client for one registry's distribution API
//! (`/v2/`), with its transport (TLS, proxies, plain-HTTP fallback), its
//! authentication (challenges, tokens, credentials) and its retry policy.
//!
//! It knows nothing of caches, platforms or archives.

pub mod auth;
pub mod client;
pub mod error;
pub mod retry;
pub mod transport;

pub use auth::Credentials;
pub use client::{Manifest, Registry};
pub use error::RegistryError;
pub use transport::{EnvProxies, TransportOptions};
