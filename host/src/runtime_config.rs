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

/// Fuzz targets for the host's parsers of files and request paths ("trust under stress"), as
/// proptest runs on a time budget (no nightly for `cargo fuzz`): Spin's runtime config file
/// ([`RuntimeConfig::parse`]), `spin.toml` ([`crate::manifest::App::parse`]) with its variable
/// templates ([`crate::variables::resolve`]), and the router built from its triggers
/// ([`crate::routes`]) on request paths. Inputs: arbitrary text and TOML near the valid shape,
/// then mutated. Properties: no panic; a refusal is the parser's error; what is accepted holds
/// what the host relies on (a `default` store, absolute paths, routes naming defined
/// components, path info being the path's tail), and a runtime config written back as TOML
/// parses to the same config.
///
/// `CHALKSTREAM_FUZZ_SECS` seconds per target (default [`fuzz::harness::DEFAULT_SECS`]);
/// `scripts/bench --only fuzz` runs each for 600 s; `CHALKSTREAM_FUZZ_SEED` repeats a run.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::manifest::App;
    use crate::routes::{spin_headers, Route, Router};
    use proptest::prelude::*;
    use proptest::sample::{select, Index};

    /// The time-budgeted runner (the same in each crate's fuzz targets).
    pub(super) mod harness {
        use proptest::strategy::Strategy;
        use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
        use std::cell::Cell;
        use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

        /// Seconds per target when `CHALKSTREAM_FUZZ_SECS` is not set.
        pub const DEFAULT_SECS: f64 = 3.0;
        /// Cases per proptest run; runs repeat until the budget is spent.
        const BATCH: u32 = 256;
        /// A target stops early after this many distinct crashes.
        const MAX_CRASHES: usize = 5;

        thread_local! {
            static ACCEPTED: Cell<u64> = const { Cell::new(0) };
        }

        /// Counts a case whose input was accepted.
        pub fn accepted() {
            ACCEPTED.with(|a| a.set(a.get() + 1));
        }

        fn budget() -> Duration {
            std::env::var("CHALKSTREAM_FUZZ_SECS")
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map_or(Duration::from_secs_f64(DEFAULT_SECS), Duration::from_secs_f64)
        }

        fn seed(name: &str) -> u64 {
            if let Some(seed) = std::env::var("CHALKSTREAM_FUZZ_SEED").ok().and_then(|s| s.trim().parse().ok()) {
                return seed;
            }
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
            name.bytes().fold(nanos, |acc, b| acc.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        }

        /// Runs `test` on values of `strategy` until the time budget is spent (at least one
        /// batch), prints the summary line, and fails with every crash's minimal input.
        pub fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
            let budget = budget();
            let seed = seed(name);
            let mut seed_bytes = [0u8; 32];
            seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
            let config = Config {
                cases: BATCH,
                failure_persistence: None,
                max_shrink_iters: 4096,
                max_shrink_time: 60_000,
                ..Config::default()
            };
            // A runner counts its cases for good, so each batch gets a fresh one, seeded from this.
            let mut seeds =
                TestRunner::new_with_rng(config.clone(), TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
            let cases = Cell::new(0u64);
            let counted = |value: S::Value| {
                cases.set(cases.get() + 1);
                test(value)
            };
            ACCEPTED.with(|a| a.set(0));
            let start = Instant::now();
            let mut crashes: Vec<(String, String)> = Vec::new();
            loop {
                let mut runner = TestRunner::new_with_rng(config.clone(), seeds.new_rng());
                match runner.run(&strategy, &counted) {
                    Ok(()) => {}
                    Err(TestError::Fail(reason, minimal)) => {
                        let reason = reason.to_string();
                        if !crashes.iter().any(|(seen, _)| *seen == reason) {
                            crashes.push((reason, format!("{minimal:?}")));
                        }
                    }
                    Err(TestError::Abort(reason)) => crashes.push((format!("aborted: {reason}"), String::new())),
                }
                if start.elapsed() >= budget || crashes.len() >= MAX_CRASHES {
                    break;
                }
            }
            let secs = start.elapsed().as_secs_f64();
            let accepted = ACCEPTED.with(Cell::get);
            println!(
                "fuzz {name}: {} cases in {secs:.1} s, {} crashes ({accepted} accepted; seed {seed})",
                cases.get(),
                crashes.len()
            );
            let found: Vec<String> =
                crashes.iter().map(|(reason, input)| format!("{reason}\n    minimal input: {input}")).collect();
            assert!(crashes.is_empty(), "fuzz {name} (seed {seed}) found:\n  {}", found.join("\n  "));
        }
    }

    /// Characters that break TOML and paths.
    const NASTY: &[char] = &[
        '[',
        ']',
        '"',
        '\'',
        '=',
        '.',
        '#',
        '\n',
        '\r',
        '\t',
        ' ',
        '\\',
        '{',
        '}',
        ',',
        '/',
        ':',
        '0',
        '-',
        '_',
        '\0',
        'é',
        '\u{feff}',
        '\u{202e}',
        '\u{10ffff}',
    ];

    #[derive(Debug, Clone)]
    enum Edit {
        Insert(Index, char),
        InsertText(Index, &'static str),
        Delete(Index),
        Replace(Index, char),
        Truncate(Index),
    }

    fn edit() -> BoxedStrategy<Edit> {
        let c = prop_oneof![4 => select(NASTY), 1 => any::<char>()];
        prop_oneof![
            (any::<Index>(), c.clone()).prop_map(|(i, c)| Edit::Insert(i, c)),
            (
                any::<Index>(),
                select(&["[[", "]]", "\"\"\"", "'''", "= 1\n", "\n[a]\n", "//", "/../", "{{", "}}", "..."][..])
            )
                .prop_map(|(i, t)| Edit::InsertText(i, t)),
            any::<Index>().prop_map(Edit::Delete),
            (any::<Index>(), c).prop_map(|(i, c)| Edit::Replace(i, c)),
            any::<Index>().prop_map(Edit::Truncate),
        ]
        .boxed()
    }

    fn apply(text: &str, edits: &[Edit]) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        for edit in edits {
            let len = chars.len();
            match edit {
                Edit::Insert(i, c) => chars.insert(i.index(len + 1), *c),
                Edit::InsertText(i, t) => {
                    let at = i.index(len + 1);
                    chars.splice(at..at, t.chars());
                }
                Edit::Delete(i) if len > 0 => {
                    chars.remove(i.index(len));
                }
                Edit::Replace(i, c) if len > 0 => chars[i.index(len)] = *c,
                Edit::Truncate(i) => chars.truncate(i.index(len + 1)),
                _ => {}
            }
        }
        chars.into_iter().collect()
    }

    fn mutated(base: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
        (base, prop::collection::vec(edit(), 0..4)).prop_map(|(text, edits)| apply(&text, &edits)).boxed()
    }

    fn any_text() -> BoxedStrategy<String> {
        prop_oneof![
            any::<String>(),
            prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            "[ -~\n]{0,80}",
        ]
        .boxed()
    }

    /// A TOML string literal holding some (possibly odd) text.
    fn toml_string() -> BoxedStrategy<String> {
        let text = prop_oneof![
            4 => select(&["data/kv.db", "/var/kv.db", "", ".", "..", "../x", "a//b", "redis://127.0.0.1:6379", "redis+unix:///tmp/r.sock", "C:\\\\kv.db", "\u{e9}t\u{e9}/kv.db"][..]).prop_map(str::to_owned),
            1 => "[ -~]{0,20}",
            1 => any::<String>(),
        ];
        text.prop_map(|t| toml::Value::String(t).to_string()).boxed()
    }

    /// A TOML value of any type, mostly a string.
    fn toml_value() -> BoxedStrategy<String> {
        prop_oneof![
            6 => toml_string(),
            1 => select(&["1", "true", "1.5", "[]", "[\"a\"]", "{}", "{ path = \"x\" }", "1979-05-27"][..]).prop_map(str::to_owned),
        ]
        .boxed()
    }

    fn label() -> BoxedStrategy<String> {
        prop_oneof![
            6 => select(&["default", "other", "cache"][..]).prop_map(str::to_owned),
            1 => "[a-z_-]{1,8}",
            1 => any::<String>().prop_map(|s| toml::Value::String(s).to_string()),
        ]
        .boxed()
    }

    /// Runtime config text near the shape the host reads.
    fn runtime_config_text() -> BoxedStrategy<String> {
        let store = (
            label(),
            prop_oneof![
                6 => select(&["\"spin\"", "\"redis\""][..]).prop_map(str::to_owned),
                1 => select(&["\"azure_cosmos\"", "\"aws_dynamo\"", "\"Spin\"", "\"\"", "1"][..]).prop_map(str::to_owned),
            ],
            prop::option::of(toml_value()),
            prop::option::of(toml_value()),
            prop::option::of((select(&["extra", "type", "path"][..]), toml_value())),
            any::<bool>(),
        )
            .prop_map(|(label, kind, path, url, extra, omit_type)| {
                let mut text = format!("[key_value_store.{label}]\n");
                if !omit_type {
                    text += &format!("type = {kind}\n");
                }
                if let Some(path) = path {
                    text += &format!("path = {path}\n");
                }
                if let Some(url) = url {
                    text += &format!("url = {url}\n");
                }
                if let Some((key, value)) = extra {
                    text += &format!("{key} = {value}\n");
                }
                text
            });
        let state_dir =
            prop::option::of(toml_value()).prop_map(|v| v.map_or(String::new(), |v| format!("state_dir = {v}\n")));
        let other = prop_oneof![
            8 => Just(String::new()),
            1 => select(&["[sqlite_database.default]\ntype = \"spin\"\n", "[[trigger.http]]\n", "[variables_provider]\n", "x = 1\n"][..]).prop_map(str::to_owned),
        ];
        let built = (state_dir, prop::collection::vec(store, 0..4), other)
            .prop_map(|(state_dir, stores, other)| format!("{state_dir}{}{other}", stores.concat()));
        prop_oneof![5 => built.clone(), 3 => mutated(built), 1 => any_text()].boxed()
    }

    /// Writes a parsed runtime config back as TOML (absolute paths, so the directory is moot).
    fn render(config: &RuntimeConfig) -> String {
        let mut table = toml::Table::new();
        match &config.state_dir {
            StateDir::Default => {}
            StateDir::Unset => {
                table.insert("state_dir".into(), "".into());
            }
            StateDir::Provided(dir) => {
                table.insert("state_dir".into(), dir.to_str().unwrap().into());
            }
        }
        let mut stores = toml::Table::new();
        for (label, store) in &config.key_value_stores {
            let mut t = toml::Table::new();
            match store {
                StoreConfig::Sqlite(path) => {
                    t.insert("type".into(), "spin".into());
                    if let Some(path) = path {
                        t.insert("path".into(), path.to_str().unwrap().into());
                    }
                }
                StoreConfig::Redis(url) => {
                    t.insert("type".into(), "redis".into());
                    t.insert("url".into(), url.as_str().into());
                }
            }
            stores.insert(label.clone(), t.into());
        }
        if !stores.is_empty() {
            table.insert("key_value_store".into(), stores.into());
        }
        table.to_string()
    }

    #[test]
    fn fuzz_runtime_config() {
        let dirs = select(&["/etc/app", "/", "/a b/é", "/x/../y"][..]);
        harness::fuzz("runtime_config", (runtime_config_text(), dirs), |(text, dir)| {
            let dir = Path::new(dir);
            match RuntimeConfig::parse(&text, dir) {
                Ok(config) => {
                    harness::accepted();
                    for store in config.key_value_stores.values() {
                        if let StoreConfig::Sqlite(Some(path)) = store {
                            prop_assert!(path.is_absolute(), "{path:?} from {text:?}");
                        }
                    }
                    if let StateDir::Provided(dir) = &config.state_dir {
                        prop_assert!(dir.is_absolute());
                    }
                    // Written back, it reads the same.
                    let again = RuntimeConfig::parse(&render(&config), Path::new("/elsewhere"));
                    prop_assert!(again.is_ok(), "{:?} written back does not parse", config);
                    let again = again.ok().unwrap();
                    prop_assert_eq!(&again, &config);
                    // The app always gets a `default` store, whatever the file and flags say.
                    for cli in [None, Some(Path::new("/st"))] {
                        let stores = resolve_stores(Some(&config), cli, Path::new("/app"));
                        prop_assert!(stores.contains_key(DEFAULT_LABEL));
                        prop_assert!(config.key_value_stores.keys().all(|k| stores[k] == config.key_value_stores[k]));
                    }
                }
                Err(Parsed::Toml(e)) => prop_assert!(!e.to_string().is_empty()),
                Err(Parsed::Invalid(msg)) => prop_assert!(!msg.is_empty()),
            }
            Ok(())
        });
    }

    /// `spin.toml` text near the shape the host reads: variables, triggers, components.
    fn manifest_text() -> BoxedStrategy<String> {
        let name = prop_oneof![
            6 => select(&["greeting", "token", "max_bytes2", "a"][..]).prop_map(str::to_owned),
            1 => select(&["Bad", "a__b", "b_", "_a", "1a", "\"\"", "\"é\""][..]).prop_map(str::to_owned),
        ];
        // Names from a list without repeats (a repeated key is only a TOML error), or odd ones.
        let names = prop_oneof![
            6 => prop::sample::subsequence(&["greeting", "token", "max_bytes2", "a"][..], 0..=4)
                .prop_map(|n| n.into_iter().map(str::to_owned).collect::<Vec<_>>()),
            1 => prop::collection::vec(name.clone(), 0..3),
        ];
        let variable =
            (prop::option::of(toml_string()), prop::option::of(select(&["true", "false", "1"][..])), any::<bool>())
                .prop_map(|(default, required, secret)| {
                    let mut fields = Vec::new();
                    if let Some(d) = default {
                        fields.push(format!("default = {d}"));
                    }
                    if let Some(r) = required {
                        fields.push(format!("required = {r}"));
                    }
                    if secret {
                        fields.push("secret = true".to_owned());
                    }
                    format!("{{ {} }}", fields.join(", "))
                });
        let variables = (names.clone(), prop::collection::vec(variable, 4))
            .prop_map(|(names, vars)| names.iter().zip(vars).map(|(n, v)| format!("{n} = {v}\n")).collect::<String>());
        let template = prop_oneof![
            4 => name.clone().prop_map(|n| format!("\"{{{{ {n} }}}}\"")),
            2 => select(&["\"plain\"", "\"{{greeting}}, {{ token }}\"", "\"{{\"", "\"}}{{\"", "\"{{ }}\"", "\"{{{{a}}}}\"", "\"{{ nope }}\"", "\"\""][..]).prop_map(str::to_owned),
            1 => toml_string(),
        ];
        let component =
            (toml_string(), prop::collection::vec(label(), 0..3), names, prop::collection::vec(template, 4)).prop_map(
                |(source, stores, names, templates)| {
                    let vars: Vec<(String, String)> = names.into_iter().zip(templates).collect();
                    (source, stores, vars)
                },
            );
        let components = (
            prop_oneof![
                5 => prop::sample::subsequence(&["api", "\"spaced name\""][..], 0..=2).prop_map(|mut ids| {
                    ids.insert(0, "web");
                    ids
                }),
                1 => prop::sample::subsequence(&["web", "api", "\"spaced name\""][..], 0..=3),
            ],
            prop::collection::vec(component, 3),
        )
            .prop_map(|(ids, components)| {
                ids.iter()
                    .zip(components)
                    .map(|(id, (source, stores, vars))| {
                        let stores: Vec<String> =
                            stores.iter().map(|s| toml::Value::String(s.clone()).to_string()).collect();
                        let mut text = format!(
                            "[component.{id}]\nsource = {source}\nkey_value_stores = [{}]\n",
                            stores.join(", ")
                        );
                        if !vars.is_empty() {
                            text += &format!("[component.{id}.variables]\n");
                            for (n, t) in vars {
                                text += &format!("{n} = {t}\n");
                            }
                        }
                        text
                    })
                    .collect::<String>()
            });
        let route = prop_oneof![
            4 => select(&["/...", "/api/...", "/api/health", "/", "", "api", "/a/", "/a/.../...", "/users/:id", "/*", "/a//b/..."][..]).prop_map(str::to_owned),
            1 => any::<String>(),
        ];
        let trigger = (route, select(&["web", "web", "api", "api", "missing", "spaced name"][..])).prop_map(
            |(route, component)| {
                format!(
                    "[[trigger.http]]\nroute = {}\ncomponent = {}\n",
                    toml::Value::String(route),
                    toml::Value::String(component.into())
                )
            },
        );
        let built = (
            prop_oneof![8 => Just(2u32), 1 => 0u32..4],
            variables,
            prop_oneof![6 => prop::collection::vec(trigger.clone(), 1..3), 1 => prop::collection::vec(trigger, 0..3)],
            components,
        )
            .prop_map(|(version, vars, triggers, components)| {
                let vars = if vars.is_empty() { String::new() } else { format!("[variables]\n{vars}") };
                format!(
                    "spin_manifest_version = {version}\n[application]\nname = \"t\"\n{vars}{}{}",
                    triggers.concat(),
                    components
                )
            });
        prop_oneof![5 => built.clone(), 3 => mutated(built), 1 => any_text()].boxed()
    }

    /// A request path as hyper hands it over (and worse).
    fn request_path() -> BoxedStrategy<String> {
        let built = prop_oneof![
            select(
                &[
                    "/",
                    "/api",
                    "/api/",
                    "/api/health",
                    "/api/health/",
                    "/apix",
                    "/play/abc",
                    "//",
                    "/api//x",
                    "/.well-known/spin/health",
                    "/..."
                ][..]
            )
            .prop_map(str::to_owned),
            "(/[a-z.]{0,4}){0,4}",
        ];
        prop_oneof![4 => built.clone(), 2 => mutated(built), 1 => any_text()].boxed()
    }

    #[test]
    fn fuzz_spin_manifest() {
        let env = prop::collection::vec((select(&["GREETING", "TOKEN", "MAX_BYTES2", "A"][..]), any::<String>()), 0..3);
        harness::fuzz(
            "spin_manifest",
            (manifest_text(), env, prop::collection::vec(request_path(), 1..4)),
            |(text, env, paths)| {
                let app = match App::parse(&text) {
                    Ok(app) => app,
                    Err(e) => {
                        prop_assert!(!e.to_string().is_empty());
                        return Ok(());
                    }
                };
                harness::accepted();
                prop_assert!(!app.http_triggers.is_empty());
                for trigger in &app.http_triggers {
                    prop_assert!(app.components.contains_key(&trigger.component));
                }
                for var in app.variables.values() {
                    prop_assert!(!(var.required && var.default.is_some()));
                }
                // Variables: resolved, or refused by name; never a value in an error.
                let lookup =
                    |key: &str| env.iter().find(|(k, _)| key == format!("SPIN_VARIABLE_{k}")).map(|(_, v)| v.clone());
                match crate::variables::resolve(&app, lookup) {
                    Ok(resolved) => {
                        for (id, component) in &app.components {
                            prop_assert_eq!(resolved[id].len(), component.variables.len());
                        }
                    }
                    Err(e) => {
                        let message = e.to_string();
                        for (_, value) in &env {
                            if value.len() >= 8 {
                                prop_assert!(!message.contains(value.as_str()), "{message:?} shows a value");
                            }
                        }
                    }
                }
                // Routes as the server builds them, then request paths through the router.
                let routes: Result<Vec<Route>, String> =
                    app.http_triggers.iter().map(|t| Route::new(&t.route, &t.component)).collect();
                let Ok(routes) = routes else {
                    return Ok(());
                };
                let router = Router::new(routes);
                let client = "127.0.0.1:1".parse().unwrap();
                for path in &paths {
                    if let Some(m) = router.route(path) {
                        prop_assert!(app.components.contains_key(&m.route.component));
                        prop_assert!(path.ends_with(&m.path_info), "{:?} -> {:?}", path, m.path_info);
                        let headers = spin_headers(&m, "h:1", path, client);
                        prop_assert_eq!(&headers[1].1, &m.path_info);
                    }
                }
                Ok(())
            },
        );
    }

    /// The host's router alone: route patterns as `spin.toml` may write them (and worse), and
    /// request paths through the routes that were accepted.
    #[test]
    fn fuzz_host_router() {
        const PATTERNS: &[&str] = &[
            "/...",
            "/api/...",
            "/api/health",
            "/",
            "",
            "api",
            "/a/",
            "/a/...",
            "/a/.../...",
            "/users/:id",
            "/*",
            "/a//b/...",
            "...",
        ];
        let pattern = prop_oneof![
            4 => select(PATTERNS).prop_map(str::to_owned),
            2 => mutated(select(PATTERNS).prop_map(str::to_owned)),
            1 => any_text(),
        ];
        harness::fuzz(
            "host_router",
            (prop::collection::vec(pattern, 1..5), prop::collection::vec(request_path(), 1..6)),
            |(patterns, paths)| {
                let routes: Vec<Route> =
                    patterns.iter().enumerate().filter_map(|(i, p)| Route::new(p, &format!("c{i}")).ok()).collect();
                if routes.is_empty() {
                    return Ok(());
                }
                let router = Router::new(routes);
                let client = "[::1]:8080".parse().unwrap();
                let mut matched = false;
                for path in &paths {
                    if let Some(m) = router.route(path) {
                        matched = true;
                        prop_assert!(path.ends_with(&m.path_info), "{:?} -> {:?}", path, m.path_info);
                        prop_assert!(
                            m.path_info.is_empty() || m.path_info.starts_with('/'),
                            "{:?} -> {:?}",
                            path,
                            m.path_info
                        );
                        prop_assert!(m.route.component.starts_with('c'));
                        let _ = spin_headers(&m, "h", path, client);
                    }
                }
                if matched {
                    harness::accepted();
                }
                Ok(())
            },
        );
    }
}
