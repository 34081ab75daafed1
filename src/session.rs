//! The per-run pools a pull shares across its images: one set of HTTP
//! clients (and one per registry that Docker's `certs.d` configures), the
//! credential store with what it has found, one [`Registry`] client per
//! registry, scheme and identity, so tokens and connections are reused, and
//! the one [`RateLimit`] (`--limit-rate`) every client's bodies share.
//!
//! It decides which credentials a source gets (those given with `-u` only
//! for the registry they were given for, never a mirror; else stored ones),
//! and nothing about images, caches or archives.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::debug;

use crate::credentials::{CredentialStore, GivenCredentials, Locations};
use crate::error::PullError;
use crate::mirror::Source;
use crate::registry::{Credentials, RateLimit, Registry, TransportOptions, transport};

/// What makes two registry clients the same: where they go and as whom.
#[derive(PartialEq, Eq)]
struct RegistryKey {
    host: String,
    scheme: Option<&'static str>,
    credentials: Option<Credentials>,
}

pub struct Session {
    transport: TransportOptions,
    given: Option<GivenCredentials>,
    /// The clients for registries without `certs.d` settings.
    http: transport::Clients,
    /// Clients for registries with `certs.d` settings, by registry.
    tls_clients: HashMap<String, transport::Clients>,
    store: CredentialStore,
    /// Stored credentials found, by registry and repository.
    found: HashMap<(String, String), Option<Credentials>>,
    registries: Vec<(RegistryKey, Arc<Registry>)>,
    /// The cap on the run's total rate, shared by every client.
    rate: Option<Arc<RateLimit>>,
}

impl Session {
    pub fn new(
        transport: TransportOptions,
        given: Option<GivenCredentials>,
        locations: &Locations,
    ) -> Result<Session, PullError> {
        let http =
            transport::build_client(&transport).map_err(|e| PullError::Setup(e.to_string()))?;
        let rate = transport.limit_rate.map(|r| Arc::new(RateLimit::new(r)));
        Ok(Session {
            transport,
            given,
            http,
            tls_clients: HashMap::new(),
            store: CredentialStore::load(locations),
            found: HashMap::new(),
            registries: Vec::new(),
            rate,
        })
    }

    /// The client for a source, made on first use.
    pub fn registry(&mut self, source: &Source) -> Result<Arc<Registry>, PullError> {
        let key = RegistryKey {
            host: source.host.clone(),
            scheme: source.scheme,
            credentials: self.credentials_for(source),
        };
        if let Some((_, r)) = self.registries.iter().find(|(k, _)| *k == key) {
            return Ok(Arc::clone(r));
        }
        let http = self.client_for(source)?;
        let registry = Arc::new(
            Registry::new(
                &source.registry,
                &source.host,
                http,
                self.transport.clone(),
                key.credentials.clone(),
            )
            .with_scheme(source.scheme)
            .with_rate_limit(self.rate.clone()),
        );
        self.registries.push((key, Arc::clone(&registry)));
        Ok(registry)
    }

    /// The HTTP clients for a registry: its own when Docker's `certs.d` has
    /// a directory for it, else the shared ones.
    fn client_for(&mut self, source: &Source) -> Result<transport::Clients, PullError> {
        if let Some(c) = self.tls_clients.get(&source.registry) {
            return Ok(c.clone());
        }
        let setup = |e: transport::TransportError| {
            PullError::Setup(format!("registry {}: {e}", source.registry))
        };
        let roots = &self.transport.certs_d_roots;
        let mut tls = None;
        for name in [&source.registry, &source.host] {
            tls = transport::registry_tls(roots, name).map_err(setup)?;
            if tls.is_some() {
                break;
            }
        }
        let Some(tls) = tls else {
            return Ok(self.http.clone());
        };
        debug!(registry = %source.registry, ?tls, "certs.d settings");
        let client = transport::build_client_with(&self.transport, Some(tls)).map_err(setup)?;
        self.tls_clients
            .insert(source.registry.clone(), client.clone());
        Ok(client)
    }

    /// The credentials for a source: those given on the command line or in
    /// the environment when it is the registry they were given for (never a
    /// mirror), else stored ones.
    fn credentials_for(&mut self, source: &Source) -> Option<Credentials> {
        if !source.mirror
            && let Some(c) = (self.given.as_ref()).and_then(|g| g.for_registry(&source.registry))
        {
            return Some(c.clone());
        }
        let key = (source.registry.clone(), source.repository.clone());
        if let Some(found) = self.found.get(&key) {
            return found.clone();
        }
        // Credential helpers are programs: keep them off the async workers.
        let found =
            tokio::task::block_in_place(|| self.store.lookup(&source.registry, &source.repository));
        if let Some(c) = &found {
            debug!(registry = %source.registry, credentials = ?c, "stored credentials");
        }
        self.found.insert(key, found.clone());
        found
    }
}
