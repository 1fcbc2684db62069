//! Public keys fetched from URLs (a client's `jwks_uri`, an external issuer's JWKS), cached as
//! long as the answer's `Cache-Control: max-age` allows (five minutes when it says nothing,
//! never with `no-store`/`no-cache`), and fetched again early when a key id is missing.
//!
//! Whoever knows a client id can send assertions naming it, so fetching is bounded whatever
//! the answers say: one URL is fetched at most once per [`MIN_REFETCH`] (on every path: expired
//! keys, `no-store`, the early fetch for an unknown key id), and until then the last answer is
//! used again; a failed fetch is remembered for [`FAILURE_TTL`]; concurrent requests for one URL
//! wait on one fetch (single flight).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;

/// How long keys are kept when the answer does not say.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// The shortest time between two fetches of one URL after a successful fetch (the last keys are
/// used again until then, also when they were `no-store` or lack a key id asked for).
pub const MIN_REFETCH: Duration = Duration::from_secs(10);

/// How long a failed fetch (no answer, an HTTP error, not a key set) is answered from memory.
pub const FAILURE_TTL: Duration = Duration::from_secs(5);

/// Most bytes of a JWKS answer.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// The last fetch of one URL.
#[derive(Clone)]
struct Entry {
    /// The keys, or why they could not be had.
    outcome: Result<JwkSet, String>,
    /// Until when the keys may be used without asking (`max-age`).
    expires: Instant,
    /// When the URL may be fetched again.
    next_fetch: Instant,
}

impl Entry {
    /// The answer without fetching, if the entry gives one at `now`: fresh keys (unless a
    /// `refresh` is asked for), or the last outcome while no fetch is allowed yet.
    fn answer(&self, now: Instant, refresh: bool) -> Option<Result<JwkSet, String>> {
        let fresh = self.outcome.is_ok() && now < self.expires && !refresh;
        (fresh || now < self.next_fetch).then(|| self.outcome.clone())
    }
}

/// The cache.
pub struct KeyCache {
    http: reqwest::Client,
    entries: Mutex<HashMap<String, Entry>>,
    /// One lock per URL: the request holding it fetches, the others wait and read its answer.
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            entries: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
        }
    }
}

/// The lifetime `Cache-Control` gives a response.
pub fn ttl_of(cache_control: Option<&str>) -> Duration {
    let Some(cc) = cache_control else {
        return DEFAULT_TTL;
    };
    let mut ttl = DEFAULT_TTL;
    for d in cc.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if d == "no-store" || d == "no-cache" {
            return Duration::ZERO;
        }
        if let Some(v) = d.strip_prefix("max-age=") {
            if let Ok(secs) = v.trim_matches('"').parse::<u64>() {
                ttl = Duration::from_secs(secs);
            }
        }
    }
    ttl
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl KeyCache {
    fn cached(&self, url: &str, refresh: bool) -> Option<Result<JwkSet, String>> {
        lock(&self.entries)
            .get(url)
            .and_then(|e| e.answer(Instant::now(), refresh))
    }

    /// The keys at `url`: cached while fresh; `refresh` asks again early (a key id is missing),
    /// within the limits of the module documentation.
    pub async fn get(&self, url: &str, refresh: bool) -> Result<JwkSet, String> {
        if let Some(answer) = self.cached(url, refresh) {
            return answer;
        }
        let flight = lock(&self.flights)
            .entry(url.to_string())
            .or_default()
            .clone();
        let _fetching = flight.lock().await;
        // another request may have fetched while this one waited
        if let Some(answer) = self.cached(url, refresh) {
            return answer;
        }
        let (outcome, ttl) = match self.fetch(url).await {
            Ok((keys, ttl)) => (Ok(keys), ttl),
            Err(e) => (Err(e), Duration::ZERO),
        };
        let now = Instant::now();
        let next_fetch = now
            + if outcome.is_ok() {
                MIN_REFETCH
            } else {
                FAILURE_TTL
            };
        if let Err(e) = &outcome {
            tracing::warn!(%url, error = %e, "key fetch failed; not asking again for {FAILURE_TTL:?}");
        }
        lock(&self.entries).insert(
            url.to_string(),
            Entry {
                outcome: outcome.clone(),
                expires: now + ttl,
                next_fetch,
            },
        );
        outcome
    }

    /// One fetch: the key set and how long it may be kept.
    async fn fetch(&self, url: &str) -> Result<(JwkSet, Duration), String> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("cannot fetch keys from {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("keys at {url}: HTTP {}", resp.status()));
        }
        let ttl = ttl_of(
            resp.headers()
                .get(reqwest::header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
        );
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(format!("keys at {url}: the answer is too large"));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("keys at {url}: {e}"))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("keys at {url}: the answer is too large"));
        }
        let keys: JwkSet =
            serde_json::from_slice(&body).map_err(|e| format!("keys at {url}: {e}"))?;
        Ok((keys, ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_lifetime_follows_cache_control() {
        assert_eq!(ttl_of(None), DEFAULT_TTL);
        assert_eq!(ttl_of(Some("public, max-age=60")), Duration::from_secs(60));
        assert_eq!(ttl_of(Some("no-store")), Duration::ZERO);
        assert_eq!(ttl_of(Some("max-age=600, no-cache")), Duration::ZERO);
        assert_eq!(ttl_of(Some("private")), DEFAULT_TTL);
    }

    #[test]
    fn the_last_answer_is_used_again_until_a_fetch_is_allowed() {
        let now = Instant::now();
        let later = |d: u64| now + Duration::from_secs(d);
        let keys = JwkSet { keys: Vec::new() };
        // no-store keys: used again until the next fetch is allowed, also for a refresh
        let no_store = Entry {
            outcome: Ok(keys.clone()),
            expires: now,
            next_fetch: later(10),
        };
        assert!(no_store.answer(later(1), false).is_some());
        assert!(no_store.answer(later(1), true).is_some());
        assert!(no_store.answer(later(10), false).is_none());
        // fresh keys: used without asking; a refresh asks once the window has passed
        let fresh = Entry {
            outcome: Ok(keys),
            expires: later(300),
            next_fetch: later(10),
        };
        assert!(fresh.answer(later(20), false).is_some());
        assert!(fresh.answer(later(20), true).is_none());
        // a failure is remembered briefly
        let failed = Entry {
            outcome: Err("HTTP 500".into()),
            expires: now,
            next_fetch: later(5),
        };
        assert!(matches!(failed.answer(later(1), false), Some(Err(e)) if e == "HTTP 500"));
        assert!(failed.answer(later(5), false).is_none());
    }
}
