//! Public keys fetched from URLs (a client's `jwks_uri`, an external issuer's JWKS), cached as
//! long as the answer's `Cache-Control: max-age` allows (five minutes when it says nothing,
//! never with `no-store`/`no-cache`), and fetched again early when a key id is missing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;

/// How long keys are kept when the answer does not say.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// The shortest time between two fetches of one URL (so unknown key ids cannot hammer it).
pub const MIN_REFETCH: Duration = Duration::from_secs(10);

/// Most bytes of a JWKS answer.
const MAX_JWKS_BYTES: usize = 256 * 1024;

struct Entry {
    keys: JwkSet,
    fetched: Instant,
    expires: Instant,
}

/// The cache.
pub struct KeyCache {
    http: reqwest::Client,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            entries: Mutex::new(HashMap::new()),
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

impl KeyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The keys at `url`: cached while fresh; `refresh` asks again unless the last fetch was
    /// under [`MIN_REFETCH`] ago.
    pub async fn get(&self, url: &str, refresh: bool) -> Result<JwkSet, String> {
        let now = Instant::now();
        if let Some(e) = self.lock().get(url) {
            let fresh = now < e.expires && !refresh;
            let too_soon = refresh && now.duration_since(e.fetched) < MIN_REFETCH;
            if fresh || too_soon {
                return Ok(e.keys.clone());
            }
        }
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
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("keys at {url}: {e}"))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("keys at {url}: the answer is too large"));
        }
        let keys: JwkSet =
            serde_json::from_slice(&body).map_err(|e| format!("keys at {url}: {e}"))?;
        self.lock().insert(
            url.to_string(),
            Entry {
                keys: keys.clone(),
                fetched: now,
                expires: now + ttl,
            },
        );
        Ok(keys)
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
}
