//! Server configuration: command-line flags with environment-variable fallbacks.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Explicit limits on what a client may send or ask for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Most entries in a transaction or batch Bundle (413 above it).
    pub max_bundle_entries: usize,
    /// Default page size of search and history Bundles (when the request has no `_count`).
    pub default_page_size: usize,
    /// Largest page size a client may ask for with `_count`.
    pub max_page_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 32 * 1024 * 1024,
            max_bundle_entries: 10_000,
            default_page_size: 50,
            max_page_size: 1_000,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Options of `vbc-server serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "VBC_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory of the embedded store (created if missing).
    #[arg(long, env = "VBC_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Public base URL used in Location headers and fullUrls (default: http://<Host header>); the
    /// audience of client assertions and the issuer of access tokens (default: http://<listen>).
    /// Required when authentication is on and the listen address is not loopback.
    #[arg(long, env = "VBC_BASE_URL")]
    pub base_url: Option<String>,
    /// Largest request body in bytes.
    #[arg(long, env = "VBC_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Most entries in a transaction or batch Bundle.
    #[arg(long, env = "VBC_MAX_BUNDLE_ENTRIES", default_value_t = Limits::default().max_bundle_entries)]
    pub max_bundle_entries: usize,
    /// Default page size of search results and history Bundles (when the request has no
    /// `_count`).
    #[arg(long, env = "VBC_DEFAULT_PAGE_SIZE", default_value_t = Limits::default().default_page_size)]
    pub default_page_size: usize,
    /// Largest `_count` honoured.
    #[arg(long, env = "VBC_MAX_PAGE_SIZE", default_value_t = Limits::default().max_page_size)]
    pub max_page_size: usize,
    /// Block cache of the embedded store, in MiB.
    #[arg(long, env = "VBC_CACHE_MB", default_value_t = 512)]
    pub cache_mb: u64,
    /// Log format.
    #[arg(long, env = "VBC_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Directory of contract definitions (`*.toml`) loaded at start, relative to the working
    /// directory (the checkout's `contracts/` catalog by default); a warning names the path when
    /// it does not exist; empty for none.
    #[arg(long, env = "VBC_CONTRACTS_DIR", default_value = "contracts")]
    pub contracts_dir: String,
    /// Identifier systems whose shared values link Patient records of one person (comma
    /// separated), besides `Patient.link`.
    #[arg(
        long,
        env = "VBC_LINK_IDENTIFIER_SYSTEMS",
        value_delimiter = ',',
        default_value = DEFAULT_LINK_SYSTEM
    )]
    pub link_identifier_systems: Vec<String>,
    /// Seconds between checks of the contracts' report schedules (0: never publish on schedule).
    #[arg(long, env = "VBC_REPORT_SCHEDULE_SECS", default_value_t = 3600)]
    pub report_schedule_secs: u64,
    /// Origins browsers may call the API from (CORS), comma separated; `*` for any (bearer
    /// tokens, not cookies, carry the credentials, so any origin is safe by default); empty
    /// for none.
    #[arg(
        long,
        env = "VBC_CORS_ORIGINS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub cors_origins: Vec<String>,
    /// Small-cell suppression: in every aggregate a manufacturer receives, population counts of
    /// 1 to this many patients are masked, with whatever would recover them, their scores and
    /// their money (0: off; see README, "Privacy").
    #[arg(long, env = "VBC_SMALL_CELL_THRESHOLD", default_value_t = DEFAULT_SMALL_CELL_THRESHOLD)]
    pub small_cell_threshold: u64,
    /// Registered SMART backend-services clients (JSON file `{"clients": [...]}`); enables the
    /// token endpoint and bearer-token checks. The registration API writes changes back to it.
    #[arg(long, env = "VBC_AUTH_CLIENTS")]
    pub auth_clients: Option<std::path::PathBuf>,
    /// Also accept access tokens of this external authorization server (`iss`); its subject or
    /// `client_id` must be a registered client.
    #[arg(long, env = "VBC_AUTH_ISSUER", requires = "auth_jwks_url")]
    pub auth_issuer: Option<String>,
    /// The JWKS URL of the external authorization server.
    #[arg(long, env = "VBC_AUTH_JWKS_URL", requires = "auth_issuer")]
    pub auth_jwks_url: Option<String>,
    /// The `aud` external tokens must carry (default: this server's base URL).
    #[arg(long, env = "VBC_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// Run WITHOUT authentication: every request acts with full rights. Only on a loopback
    /// address; logs a warning at start and a reminder at most once a minute. For local trials
    /// and tests.
    #[arg(long, env = "VBC_NO_AUTH")]
    pub no_auth: bool,
}

/// Small-cell suppression threshold by default: counts of 1 to 10 patients are masked (the CMS
/// cell-size rule).
pub const DEFAULT_SMALL_CELL_THRESHOLD: u64 = 10;

/// The payer member-id system that links Patient records by default.
pub const DEFAULT_LINK_SYSTEM: &str = "https://vbc-server.dev/fhir/sid/member-id";

impl ServeConfig {
    /// Check the auth settings: auth is required unless `--no-auth` is given, and `--no-auth`
    /// only listens on loopback.
    pub fn check_auth(&self) -> Result<(), String> {
        let configured = self.auth_clients.is_some() || self.auth_issuer.is_some();
        if self.no_auth && configured {
            return Err("--no-auth cannot be combined with --auth-clients or --auth-issuer".into());
        }
        if self.no_auth && !self.listen.ip().is_loopback() {
            return Err(format!(
                "--no-auth is only allowed on a loopback address, not {}",
                self.listen
            ));
        }
        if !self.no_auth && self.auth_clients.is_none() {
            return Err("authentication is required: pass --auth-clients FILE (see README, \"Auth\"), or --no-auth for a local trial on a loopback address".into());
        }
        // client assertions name the token URL as their audience: the server must know its own
        // address, never take it from a request's Host header
        if !self.no_auth && self.base_url.is_none() && !self.listen.ip().is_loopback() {
            return Err(format!(
                "with authentication on a non-loopback address ({}), pass --base-url (the public URL clients use, e.g. https://fhir.example.org): client assertions are checked against <base-url>/auth/token",
                self.listen
            ));
        }
        Ok(())
    }

    /// This server's base URL (configured, or from the listen address).
    pub fn own_base(&self) -> String {
        self.base_url
            .clone()
            .map(|b| b.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }

    /// The limits configured.
    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            max_bundle_entries: self.max_bundle_entries,
            default_page_size: self.default_page_size.max(1),
            max_page_size: self.max_page_size.max(1),
        }
    }
}
