//! The per-run pools a pull shares across its images: one set of HTTP
//! clients (and one per registry that Docker's `certs.d` configures), the
//! credential store with what it has found, one [`Registry`] client per
//! registry, scheme and identity, so tokens and connections are reused, and
//! the one [`RateLimit`] (`--limit-rate`) every client's bodies share.
//!
//! It decides which credentials a source gets (those given with `-u` only
//! for the registry they were given for, never a mirror; else stored ones),
//! which sources are insecure (daemon.json's `insecure-registries`, by name
//! or address range, besides what registries.conf says), and remembers the
//! sources that could not be reached, so a run does not wait for them twice;
//! `in_turn` is the one policy for handing over from a source to the next.
//! Nothing about images, caches or archives.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tracing::{debug, warn};

use crate::credentials::{CredentialStore, GivenCredentials, Locations};
use crate::error::PullError;
use crate::mirror::Source;
use crate::mirror::daemon::Insecure;
use crate::registry::{Credentials, RateLimit, Registry, TransportOptions, Trust, transport};

/// What makes two registry clients the same: where they go and as whom.
#[derive(PartialEq, Eq)]
struct RegistryKey {
    host: String,
    scheme: Option<&'static str>,
    trust: Trust,
    credentials: Option<Credentials>,
}

pub struct Session {
    transport: TransportOptions,
    given: Option<GivenCredentials>,
    /// The clients for registries without `certs.d` settings.
    http: transport::Clients,
    /// Clients for registries with `certs.d` settings, by registry.
    tls_clients: HashMap<String, transport::Clients>,
    /// Clients that verify no certificate, for insecure registries.
    insecure_clients: Option<transport::Clients>,
    /// daemon.json's `insecure-registries`.
    insecure: Insecure,
    /// Sources (`scheme://host`) that failed to connect in this run.
    unreachable: HashSet<String>,
    /// Per source, the lock images take to reach it first.
    probes: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
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
        insecure: Insecure,
    ) -> Result<Session, PullError> {
        let http =
            transport::build_client(&transport).map_err(|e| PullError::Setup(e.to_string()))?;
        let rate = transport.limit_rate.map(|r| Arc::new(RateLimit::new(r)));
        Ok(Session {
            transport,
            given,
            http,
            tls_clients: HashMap::new(),
            insecure_clients: None,
            insecure,
            unreachable: HashSet::new(),
            probes: HashMap::new(),
            store: CredentialStore::load(locations),
            found: HashMap::new(),
            registries: Vec::new(),
            rate,
        })
    }

    /// The client for a source, made on first use.
    pub async fn registry(&mut self, source: &Source) -> Result<Arc<Registry>, PullError> {
        let trust = self.trust_for(source).await;
        let key = RegistryKey {
            host: source.host.clone(),
            scheme: source.scheme,
            trust,
            credentials: self.credentials_for(source),
        };
        if let Some((_, r)) = self.registries.iter().find(|(k, _)| *k == key) {
            return Ok(Arc::clone(r));
        }
        let http = match trust {
            Trust::Insecure => self.insecure_client()?,
            Trust::Verified => self.client_for(source)?,
        };
        let registry = Arc::new(
            Registry::new(
                &source.registry,
                &source.host,
                http,
                self.transport.clone(),
                key.credentials.clone(),
            )
            .with_scheme(source.scheme)
            .with_trust(trust)
            .with_rate_limit(self.rate.clone()),
        );
        self.registries.push((key, Arc::clone(&registry)));
        Ok(registry)
    }

    /// Whether a source is insecure: as its configuration says, or because
    /// daemon.json lists its name or a range holding its address.
    async fn trust_for(&self, source: &Source) -> Trust {
        if source.trust == Trust::Insecure || self.insecure.covers_name(&source.host) {
            return Trust::Insecure;
        }
        if !self.insecure.needs_lookup(&source.host) {
            return Trust::Verified;
        }
        let with_port = if source.host.contains(':') {
            source.host.clone()
        } else {
            format!("{}:443", source.host)
        };
        let Ok(mut addrs) = tokio::net::lookup_host(with_port).await else {
            return Trust::Verified;
        };
        if addrs.any(|a| self.insecure.covers_address(a.ip())) {
            debug!(host = %source.host, "insecure: its address is in an insecure-registries range");
            return Trust::Insecure;
        }
        Trust::Verified
    }

    fn insecure_client(&mut self) -> Result<transport::Clients, PullError> {
        if let Some(c) = &self.insecure_clients {
            return Ok(c.clone());
        }
        let opts = TransportOptions {
            insecure: true,
            ..self.transport.clone()
        };
        let c = transport::build_client(&opts).map_err(|e| PullError::Setup(e.to_string()))?;
        self.insecure_clients = Some(c.clone());
        Ok(c)
    }

    /// Asks `sources` in order (mirrors, then the origin) until one answers:
    /// a mirror that fails for any reason but a local one (disk,
    /// interruption, setup) hands over to the next, and one that cannot be
    /// reached at all is not asked again in this run. When every source
    /// failed, the error names each. The one place this policy lives, for
    /// pulls and for questions (`inspect`, `tags`) alike. The session is
    /// locked only to find a client or note a source unreachable, so the
    /// images of a run may go through it at once.
    pub async fn in_turn<T, Fut>(
        session: &tokio::sync::Mutex<Session>,
        image: &str,
        sources: &[Source],
        mut ask: impl FnMut(Arc<Registry>, Source) -> Fut,
    ) -> Result<T, PullError>
    where
        Fut: std::future::Future<Output = Result<T, PullError>>,
    {
        let mut failed: Vec<(String, String)> = Vec::new();
        for (i, source) in sources.iter().enumerate() {
            debug!(source = %source.label, repository = %source.repository, from = %source.from, trust = ?source.trust, "source");
            // A mirror with another source after it may hand over.
            let next = sources.get(i + 1).filter(|_| source.mirror);
            let registry = match next {
                Some(next) => match Self::reach_mirror(session, image, source, next).await? {
                    Ok(registry) => registry,
                    Err(why) => {
                        failed.push(why);
                        continue;
                    }
                },
                None => Self::client(session, image, source).await?,
            };
            match (ask(registry, source.clone()).await, next) {
                (Err(e), Some(next)) if !is_local_failure(&e) => {
                    if is_connection_failure(&e) {
                        session.lock().await.mark_unreachable(source);
                    }
                    failed.push(handed_over(image, source, next, &e));
                }
                (Err(e), _) if !failed.is_empty() && !is_local_failure(&e) => {
                    return Err(PullError::EverySource {
                        last: Box::new(e),
                        mirrors: failed,
                    });
                }
                (answer, _) => return answer,
            }
        }
        Err(PullError::Setup(format!("{image}: no source to try")))
    }

    /// The client for a source; the session is held only while it is found,
    /// so images go on side by side.
    async fn client(
        session: &tokio::sync::Mutex<Session>,
        image: &str,
        source: &Source,
    ) -> Result<Arc<Registry>, PullError> {
        let registry = session.lock().await.registry(source).await;
        registry.map_err(|e| match e {
            PullError::Setup(detail) => PullError::Setup(format!("{image}: {detail}")),
            other => other,
        })
    }

    /// A mirror's client once the mirror answered, or why it is passed over
    /// (it cannot be reached, or could not earlier in this run). Images
    /// reach a mirror one at a time, so one that is down is waited for and
    /// named once in a run, however many images go at once.
    async fn reach_mirror(
        session: &tokio::sync::Mutex<Session>,
        image: &str,
        source: &Source,
        next: &Source,
    ) -> Result<Result<Arc<Registry>, (String, String)>, PullError> {
        let probe = session.lock().await.probe(source);
        let _one_at_a_time = probe.lock().await;
        if session.lock().await.is_unreachable(source) {
            let why = "not tried: it could not be reached earlier in this run";
            return Ok(Err((source.label.clone(), why.to_string())));
        }
        let registry = Self::client(session, image, source).await?;
        match registry.reach().await {
            Ok(()) => Ok(Ok(registry)),
            Err(e) => {
                let e = PullError::Registry {
                    image: image.to_string(),
                    source: e,
                };
                if is_connection_failure(&e) {
                    session.lock().await.mark_unreachable(source);
                }
                Ok(Err(handed_over(image, source, next, &e)))
            }
        }
    }

    /// The lock images take to reach `source` for the first time.
    fn probe(&mut self, source: &Source) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(self.probes.entry(reach_key(source)).or_default())
    }

    /// Whether a mirror failed to connect earlier in this run.
    pub fn is_unreachable(&self, source: &Source) -> bool {
        self.unreachable.contains(&reach_key(source))
    }

    /// Notes that a source failed to connect: it is not tried again.
    pub fn mark_unreachable(&mut self, source: &Source) {
        self.unreachable.insert(reach_key(source));
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

/// Says that `image` goes on from the mirror `source` to `next`, and why;
/// returns the mirror and the reason, for the final error.
fn handed_over(image: &str, source: &Source, next: &Source, e: &PullError) -> (String, String) {
    let why = e.to_string();
    let why = why.strip_prefix(&format!("{image}: ")).unwrap_or(&why);
    warn!(
        "mirror {} failed for {image}: {why}; trying {}",
        source.label, next.label
    );
    (source.label.clone(), why.to_string())
}

fn reach_key(source: &Source) -> String {
    format!("{}://{}", source.scheme.unwrap_or("any"), source.host)
}

/// Failures that say the source cannot be reached at all.
fn is_connection_failure(e: &PullError) -> bool {
    use crate::registry::RegistryError as R;
    matches!(
        e,
        PullError::Registry {
            source: R::Connect { .. } | R::Tls { .. } | R::Timeout { .. },
            ..
        }
    )
}

/// Failures no other registry would avoid.
fn is_local_failure(e: &PullError) -> bool {
    matches!(
        e,
        PullError::Io { .. } | PullError::Interrupted | PullError::Setup(_)
    )
}
