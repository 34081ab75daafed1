//! A repository's tags: `GET /v2/<repository>/tags/list`, following the
//! registry's pagination (`Link: <...>; rel="next"`) to the end.
//!
//! A hostile registry is held to bounds: each page at most
//! [`MAX_TAGS_PAGE_BYTES`], at most [`MAX_TAG_PAGES`] pages and [`MAX_TAGS`]
//! tags, every tag a valid tag name, every next page on the registry's own
//! origin and its own tags list (so credentials never follow a link
//! elsewhere), and no page asked for twice (a loop is an error, not a hang).

use std::collections::HashSet;

use reqwest::header::{HeaderMap, LINK};
use serde::Deserialize;
use url::Url;

use super::client::{Registry, is_own_origin};
use super::error::RegistryError;
use crate::reference::valid_tag;
use crate::text::escape_untrusted;

/// A page of tags larger than this is refused.
pub const MAX_TAGS_PAGE_BYTES: usize = 16 << 20;
/// At most this many pages are followed.
pub const MAX_TAG_PAGES: usize = 10_000;
/// At most this many tags are listed.
pub const MAX_TAGS: usize = 500_000;
/// A `Link` header longer than this is refused.
const MAX_LINK: usize = 8 * 1024;

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

impl Registry {
    /// Every tag of `repository`, in the registry's order, each once.
    /// `page_size` asks for pages of that many tags (`?n=`); without it the
    /// registry chooses.
    pub async fn list_tags(
        &self,
        repository: &str,
        page_size: Option<u32>,
    ) -> Result<Vec<String>, RegistryError> {
        let mut url = self.url_in(repository, "tags/list").await?;
        if let Some(n) = page_size {
            url.query_pairs_mut().append_pair("n", &n.to_string());
        }
        let what = format!("the tags of repository {repository}");
        let mut tags = Vec::new();
        let mut seen_tags = HashSet::new();
        let mut asked = HashSet::new();
        loop {
            if asked.len() == MAX_TAG_PAGES {
                return Err(self.protocol(format!("{what} run to more than {MAX_TAG_PAGES} pages")));
            }
            asked.insert(url.to_string());
            let got = self
                .get_small(
                    &url,
                    repository,
                    HeaderMap::new(),
                    &what,
                    MAX_TAGS_PAGE_BYTES,
                )
                .await?;
            let page: Page = serde_json::from_slice(&got.bytes).map_err(|e| {
                self.protocol(format!(
                    "{what}: not a tags list ({})",
                    escape_untrusted(&e.to_string())
                ))
            })?;
            for tag in page.tags.unwrap_or_default() {
                if !valid_tag(&tag) {
                    return Err(self.protocol(format!(
                        "{what}: {:?} is not a tag name",
                        escape_untrusted(&tag)
                    )));
                }
                if seen_tags.insert(tag.clone()) {
                    if tags.len() == MAX_TAGS {
                        return Err(self.protocol(format!("{what}: more than {MAX_TAGS} tags")));
                    }
                    tags.push(tag);
                }
            }
            let Some(next) = self.next_page(&got.headers, &got.url, &url, &what)? else {
                return Ok(tags);
            };
            if asked.contains(next.as_str()) {
                return Err(self.protocol(format!(
                    "{what}: the next page is one already read ({}), so the list would never end",
                    super::client::strip_query(&next)
                )));
            }
            url = next;
        }
    }

    /// The next page a tags answer links to, checked: on the registry's own
    /// origin, and its tags list for the same repository.
    fn next_page(
        &self,
        headers: &HeaderMap,
        answered: &Url,
        asked: &Url,
        what: &str,
    ) -> Result<Option<Url>, RegistryError> {
        let mut next = None;
        for value in headers.get_all(LINK) {
            if value.len() > MAX_LINK {
                return Err(self.protocol(format!(
                    "{what}: a Link header of {} bytes (more than {MAX_LINK})",
                    value.len()
                )));
            }
            let text = value
                .to_str()
                .map_err(|_| self.protocol(format!("{what}: a Link header that is not text")))?;
            if let Some(target) = next_link(text) {
                next = Some(target.to_string());
            }
        }
        let Some(target) = next else {
            return Ok(None);
        };
        let shown = || escape_untrusted(&target);
        let url = answered.join(&target).map_err(|e| {
            self.protocol(format!("{what}: next page {:?} is not a URL: {e}", shown()))
        })?;
        let base = self.base_url()?;
        if !is_own_origin(&url, base) || url.path() != asked.path() {
            return Err(self.protocol(format!(
                "{what}: the next page {:?} is not this registry's tags list of the repository; it is not followed",
                shown()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(self.protocol(format!(
                "{what}: the next page {:?} carries user information",
                shown()
            )));
        }
        Ok(Some(url))
    }
}

/// The target of the `rel="next"` link in one `Link` header value
/// (`<url>; rel="next"`, possibly among other links, comma-separated).
fn next_link(value: &str) -> Option<&str> {
    let mut rest = value.trim_start();
    while let Some(after) = rest.strip_prefix('<') {
        let end = after.find('>')?;
        let target = &after[..end];
        let tail = &after[end + 1..];
        let params_end = tail.find(",").unwrap_or(tail.len());
        let is_next = tail[..params_end].split(';').any(|p| {
            let Some((name, v)) = p.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && v.trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.trim());
        }
        rest = tail[params_end..].trim_start_matches(',').trim_start();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links() {
        assert_eq!(
            next_link(r#"</v2/library/nginx/tags/list?last=1.2&n=100>; rel="next""#),
            Some("/v2/library/nginx/tags/list?last=1.2&n=100")
        );
        assert_eq!(
            next_link(r#"<https://r.io/a>; rel="prev", <https://r.io/b>; rel=next"#),
            Some("https://r.io/b")
        );
        assert_eq!(next_link(r#"<https://r.io/a>; rel="prev""#), None);
        assert_eq!(
            next_link(r#"<https://r.io/a>; rel="first next""#),
            Some("https://r.io/a")
        );
        assert_eq!(next_link("garbage"), None);
        assert_eq!(next_link("<unterminated; rel=next"), None);
        assert_eq!(next_link(""), None);
    }
}
