//! The only code that speaks HTTP: a client for one registry's distribution API
//! (`/v2/`), with its transport (TLS, proxies, plain-HTTP fallback), its
//! authentication (challenges, tokens, credentials, pull and push scopes), its
//! one retry policy, its one resumable, verifying blob body, uploads (blobs
//! resumed where the registry says it stands, manifests) and the run's cap on
//! the total transfer rate.
//!
//! It knows nothing of caches, platforms or archives; callers above it see
//! bytes and typed errors, never a status code or a header.

pub mod auth;
pub mod body;
pub mod client;
pub mod error;
mod feed;
pub mod rate;
pub mod retry;
mod tags;
mod token;
pub mod transport;
pub mod upload;

pub use auth::{Access, Credentials, Scope};
pub use body::{BlobBody, Piece, Span};
pub use client::{Manifest, Registry, Trust};
pub use error::{RegistryError, SourceProblem};
pub use rate::RateLimit;
pub use transport::{EnvProxies, TransportOptions};
pub use upload::{BlobPushed, UploadBody};
