//! Spin's runtime configuration file (`spin up --runtime-config-file FILE`),
//! the part of it this host implements: where each key-value store lives.
//!
//! ```toml
//! [key_value_store.default]
//! type = "redis"                  # Spin's key-value-redis: keys and values as they are
//! url = "redis://127.0.0.1:6379"
//!
//! [key_value_store.default]
//! type = "spin"                   # Spin's key-value-spin: SQLite, table spin_key_value
//! path = "data/kv.db"             # relative to this file's directory; absent: in memory
//! ```
//!
//! and the top-level `state_dir` (relative to the working directory; `""`
//! means none, so the default store is in memory). Resolution follows Spin's
//! `spin-runtime-config` crate: a label the file does not name, if it is
//! `default`, is SQLite at `<state-dir>/sqlite_key_value.db`, where the
//! state directory is `--state-dir`, else the file's `state_dir`, else `.spin`
//! beside `spin.toml`. Every other part of Spin's file (SQLite databases,
//! variable providers, LLMs, outbound networking, …) and the store types this
//! host lacks (`azure_cosmos`, `aws_dynamo`) are refused by name, so a file
//! never means one thing here and another in Spin.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The label every Spin app may use without any runtime config.
pub const DEFAULT_LABEL: &str = "default";
/// The default store's file name inside the state directory (Spin's name).
pub const DEFAULT_SQLITE_FILE: &str = "sqlite_key_value.db";

/// Where one key-value store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// SQLite in Spin's table layout; `None` keeps it in memory (as Spin does
    /// for `type = "spin"` without `path`).
    Sqlite(Option<PathBuf>),
    /// A Redis server, by URL as Spin takes it (`redis://`, `redis+unix://`, …).
    Redis(String),
}

/// Why a runtime config file could not be used.
#[derive(Debug)]
pub enum RuntimeConfigError {
    Read(PathBuf, std::io::Error),
    Parse(PathBuf, toml::de::Error),
    /// Valid TOML that asks for something wrong or not implemented here.
    Invalid(PathBuf, String),
}

impl fmt::Display for RuntimeConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeConfigError::Read(path, e) => write!(f, "cannot read runtime config {}: {e}", path.display()),
            RuntimeConfigError::Parse(path, e) => write!(f, "runtime config {} is not valid TOML: {e}", path.display()),
            RuntimeConfigError::Invalid(path, msg) => write!(f, "runtime config {}: {msg}", path.display()),
        }
    }
}

impl std::error::Error for RuntimeConfigError {}

/// The state directory as the runtime config file leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateDir {
    /// Not named: `.spin` beside `spin.toml`.
    Default,
    /// `state_dir = ""`: none, so the default store is in memory.
    Unset,
    /// `state_dir = "…"`, made absolute against the working directory.
    Provided(PathBuf),
}

/// What a runtime config file says, paths already resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub state_dir: StateDir,
    pub key_value_stores: BTreeMap<String, StoreConfig>,
}

#[derive(Deserialize)]
struct StoreTable {
    #[serde(rename = "type")]
    kind: String,
    #[serde(flatten)]
    rest: toml::Table,
}

#[derive(Deserialize)]
struct SpinStore {
    path: Option<PathBuf>,
}

#[derive(Deserialize)]
struct RedisStore {
    url: String,
}

impl RuntimeConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<RuntimeConfig, RuntimeConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| RuntimeConfigError::Read(path.to_owned(), e))?;
        // Spin resolves relative store paths against the file's directory
        // (`runtime_config_path.parent()`), as given, not canonicalised.
        let dir = path.parent().unwrap_or(Path::new(""));
        RuntimeConfig::parse(&text, dir).map_err(|e| match e {
            Parsed::Toml(e) => RuntimeConfigError::Parse(path.to_owned(), e),
            Parsed::Invalid(msg) => RuntimeConfigError::Invalid(path.to_owned(), msg),
        })
    }

    fn parse(text: &str, dir: &Path) -> Result<RuntimeConfig, Parsed> {
        let table: toml::Table = toml::from_str(text).map_err(Parsed::Toml)?;
        let mut config = RuntimeConfig { state_dir: StateDir::Default, key_value_stores: BTreeMap::new() };
        for (key, value) in table {
            match key.as_str() {
                "state_dir" => {
                    let dir = value.as_str().ok_or_else(|| Parsed::Invalid("`state_dir` must be a string".into()))?;
                    config.state_dir = if dir.is_empty() {
                        StateDir::Unset
                    } else {
                        let absolute = std::path::absolute(dir)
                            .map_err(|e| Parsed::Invalid(format!("`state_dir` {dir:?}: {e}")))?;
                        StateDir::Provided(absolute)
                    };
                }
                "key_value_store" => {
                    let stores: BTreeMap<String, StoreTable> = value
                        .try_into()
                        .map_err(|e| Parsed::Invalid(format!("[key_value_store.*] tables need a `type`: {e}")))?;
                    for (label, store) in stores {
                        let parsed = store_config(&label, store, dir)?;
                        config.key_value_stores.insert(label, parsed);
                    }
                }
                other => {
                    return Err(Parsed::Invalid(format!(
                        "`{other}` is not implemented by chalkstream-host, which reads only \
                         [key_value_store.*] and state_dir (use spin up for the rest)"
                    )))
                }
            }
        }
        Ok(config)
    }
}

enum Parsed {
    Toml(toml::de::Error),
    Invalid(String),
}

fn store_config(label: &str, store: StoreTable, dir: &Path) -> Result<StoreConfig, Parsed> {
    let bad = |e: toml::de::Error| Parsed::Invalid(format!("[key_value_store.{label}]: {e}"));
    match store.kind.as_str() {
        "spin" => {
            let SpinStore { path } = toml::Value::Table(store.rest).try_into().map_err(bad)?;
            Ok(StoreConfig::Sqlite(path.map(|p| if p.is_absolute() { p } else { dir.join(p) })))
        }
        "redis" => {
            let RedisStore { url } = toml::Value::Table(store.rest).try_into().map_err(bad)?;
            Ok(StoreConfig::Redis(url))
        }
        other => Err(Parsed::Invalid(format!(
            "[key_value_store.{label}] has type {other:?}; this host implements \"spin\" (SQLite) \
             and \"redis\""
        ))),
    }
}

/// The stores the app gets: the file's, plus `default` on SQLite in the
/// state directory when the file does not name it. `cli_state_dir` is
/// `--state-dir`, which wins over the file's `state_dir`; `app_dir` holds
/// `spin.toml`.
pub fn resolve_stores(
    config: Option<&RuntimeConfig>,
    cli_state_dir: Option<&Path>,
    app_dir: &Path,
) -> BTreeMap<String, StoreConfig> {
    let mut stores = config.map(|c| c.key_value_stores.clone()).unwrap_or_default();
    if !stores.contains_key(DEFAULT_LABEL) {
        let state_dir = match (cli_state_dir, config.map_or(&StateDir::Default, |c| &c.state_dir)) {
            (Some(dir), _) => Some(dir.to_owned()),
            (None, StateDir::Provided(dir)) => Some(dir.clone()),
            (None, StateDir::Unset) => None,
            (None, StateDir::Default) => Some(app_dir.join(".spin")),
        };
        stores.insert(DEFAULT_LABEL.to_owned(), StoreConfig::Sqlite(state_dir.map(|d| d.join(DEFAULT_SQLITE_FILE))));
    }
    stores
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RuntimeConfig, String> {
        RuntimeConfig::parse(text, Path::new("/etc/app")).map_err(|e| match e {
            Parsed::Toml(e) => e.to_string(),
            Parsed::Invalid(msg) => msg,
        })
    }

    #[test]
    fn redis_store_keeps_its_url_as_written() {
        let config = parse("[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://h:6379/2\"\n").unwrap();
        assert_eq!(config.key_value_stores["default"], StoreConfig::Redis("redis://h:6379/2".into()));
    }

    #[test]
    fn spin_store_path_is_relative_to_the_config_files_directory() {
        let config = parse("[key_value_store.default]\ntype = \"spin\"\npath = \"data/kv.db\"\n").unwrap();
        assert_eq!(config.key_value_stores["default"], StoreConfig::Sqlite(Some("/etc/app/data/kv.db".into())));
        let config = parse("[key_value_store.default]\ntype = \"spin\"\npath = \"/var/kv.db\"\n").unwrap();
        assert_eq!(config.key_value_stores["default"], StoreConfig::Sqlite(Some("/var/kv.db".into())));
    }

    #[test]
    fn spin_store_without_path_is_in_memory() {
        let config = parse("[key_value_store.other]\ntype = \"spin\"\n").unwrap();
        assert_eq!(config.key_value_stores["other"], StoreConfig::Sqlite(None));
    }

    #[test]
    fn what_the_host_lacks_is_refused_by_name() {
        let err = parse("[sqlite_database.default]\ntype = \"spin\"\n").unwrap_err();
        assert!(err.contains("sqlite_database"), "{err}");
        let err = parse("[key_value_store.default]\ntype = \"azure_cosmos\"\n").unwrap_err();
        assert!(err.contains("azure_cosmos"), "{err}");
        let err = parse("[key_value_store.default]\ntype = \"redis\"\n").unwrap_err();
        assert!(err.contains("url"), "{err}");
        let err = parse("[key_value_store.default]\nurl = \"redis://h\"\n").unwrap_err();
        assert!(err.contains("type"), "{err}");
    }

    #[test]
    fn default_store_is_sqlite_in_the_state_dir_unless_the_file_names_it() {
        let app = Path::new("/app");
        let none = resolve_stores(None, None, app);
        assert_eq!(none["default"], StoreConfig::Sqlite(Some("/app/.spin/sqlite_key_value.db".into())));
        let cli = resolve_stores(None, Some(Path::new("/st")), app);
        assert_eq!(cli["default"], StoreConfig::Sqlite(Some("/st/sqlite_key_value.db".into())));

        let unset = parse("state_dir = \"\"\n").unwrap();
        assert_eq!(resolve_stores(Some(&unset), None, app)["default"], StoreConfig::Sqlite(None));
        assert_eq!(
            resolve_stores(Some(&unset), Some(Path::new("/st")), app)["default"],
            StoreConfig::Sqlite(Some("/st/sqlite_key_value.db".into())),
            "--state-dir wins over the file's state_dir"
        );

        let redis = parse("[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://h\"\n").unwrap();
        assert_eq!(resolve_stores(Some(&redis), Some(Path::new("/st")), app)["default"], StoreConfig::Redis("redis://h".into()));
    }
}
