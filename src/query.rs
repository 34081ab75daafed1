//! Questions asked of a registry without pulling anything: `inspect IMAGE`
//! and `tags REPOSITORY`. Each goes to the image's sources in order
//! (mirrors, then the origin, as a pull would), with the run's session
//! (credentials, `certs.d`, proxies); a mirror that fails hands over to the
//! next, and the first answer counts.

use std::future::Future;
use std::sync::Arc;

use crate::cache::Cache;
use crate::cli::Settings;
use crate::error::PullError;
use crate::events::Silent;
use crate::fetch::Fetcher;
use crate::inspect::{self, Choice, Inspection};
use crate::mirror::{self, Source};
use crate::reference::Reference;
use crate::registry::Registry;
use crate::session::Session;

/// `inspect`: the first image of the settings, described for their
/// platform (`--platform all`: every one). Configs go through `cache`.
pub async fn inspect(settings: &Settings, cache: Arc<Cache>) -> Result<Inspection, PullError> {
    let (_, reference) = settings
        .images
        .first()
        .ok_or_else(|| PullError::Setup("no image given".into()))?;
    let choice = match (settings.platform_all, settings.platform_list.is_empty()) {
        (true, _) => Choice::All,
        (false, false) => Choice::Several(settings.platform_list.clone()),
        (false, true) => Choice::One(settings.platform.clone()),
    };
    let connections = Arc::new(tokio::sync::Semaphore::new(settings.jobs.max(1)));
    first_answer(settings, reference, |registry, source| {
        let remote = Reference {
            repository: source.repository.clone(),
            ..reference.clone()
        };
        let fetcher = Fetcher {
            registry,
            cache: Arc::clone(&cache),
            observer: Arc::new(Silent),
            concurrency: settings.jobs,
            image: reference.to_string(),
            repository: source.repository,
            chunking: settings.chunking,
            connections: Arc::clone(&connections),
            placement: None,
        };
        let choice = choice.clone();
        async move { inspect::inspect(&fetcher, &remote, &choice).await }
    })
    .await
}

/// `tags`: every tag of the first image's repository; `page_size` asks the
/// registry for pages of that many.
pub async fn tags(settings: &Settings, page_size: Option<u32>) -> Result<Vec<String>, PullError> {
    let (_, reference) = settings
        .images
        .first()
        .ok_or_else(|| PullError::Setup("no repository given".into()))?;
    let shown = format!("{}/{}", reference.registry, reference.repository);
    first_answer(settings, reference, |registry, source| {
        let shown = shown.clone();
        async move {
            registry
                .list_tags(&source.repository, page_size)
                .await
                .map_err(|source| PullError::Registry {
                    image: shown,
                    source,
                })
        }
    })
    .await
}

/// Asks the sources of `reference` in turn (see [`Session::in_turn`]).
async fn first_answer<T, Fut>(
    settings: &Settings,
    reference: &Reference,
    ask: impl FnMut(Arc<Registry>, Source) -> Fut,
) -> Result<T, PullError>
where
    Fut: Future<Output = Result<T, PullError>>,
{
    let (session, config) = crate::pull::open_session(settings)?;
    let sources = mirror::sources(reference, &settings.mirrors, &config)?;
    let session = tokio::sync::Mutex::new(session);
    Session::in_turn(&session, &reference.to_string(), &sources, ask).await
}
