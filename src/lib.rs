//! docker-pull: download container images from Docker/OCI registries without a
//! Docker daemon and write archives that `docker load` accepts.
//!
//! The pull is one pipeline: [`reference`] → [`resolve`] → [`fetch`] → [`cache`]
//! → [`archive`], with [`registry`] as the only code that speaks HTTP.

pub mod archive;
pub mod cache;
pub mod cli;
pub mod credentials;
pub mod digest;
pub mod error;
pub mod events;
pub mod fetch;
pub mod inspect;
pub mod media_type;
pub mod mirror;
pub mod pipeline;
pub mod place;
pub mod platform;
pub mod progress;
pub mod pull;
pub mod push;
pub mod query;
pub mod reference;
pub mod registry;
pub mod report;
pub mod resolve;
pub mod session;
pub mod text;
pub mod thin;
pub mod units;
pub mod verify;
