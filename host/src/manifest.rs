//! Reads the parts of `spin.toml` (manifest version 2) this host acts on:
//! HTTP routes, component sources, key-value store labels, variables and `files`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why `spin.toml` could not be used.
#[derive(Debug)]
pub enum ManifestError {
    /// The file could not be read.
    Read(PathBuf, std::io::Error),
    /// The file is not valid TOML or does not have the expected shape.
    Parse(PathBuf, toml::de::Error),
    /// The file parses but asks for something invalid or unsupported here.
    Invalid(String),
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestError::Read(path, e) => write!(f, "cannot read {}: {e}", path.display()),
            ManifestError::Parse(path, e) => write!(f, "{} is not a valid Spin manifest: {e}", path.display()),
            ManifestError::Invalid(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for ManifestError {}

/// An application variable declared in `[variables]`. (`secret` and
/// `description` are accepted and ignored: this host never prints values.)
#[derive(Debug, Clone, Deserialize)]
pub struct Variable {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
}

/// One `[[trigger.http]]` entry: a route pattern served by a component.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpTrigger {
    pub route: String,
    pub component: String,
}

/// One `[component.<id>]` table.
#[derive(Debug, Clone, Deserialize)]
pub struct Component {
    /// Path of the `.wasm` file, resolved against the manifest's directory.
    pub source: PathBuf,
    #[serde(default)]
    pub key_value_stores: Vec<String>,
    /// Variable name -> template such as `"{{ name }}"` or literal text.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Files the component may read ([`crate::files`] makes them visible, read-only).
    #[serde(default)]
    pub files: Vec<FilesMount>,
    /// Spin's filter on `files`; not implemented here, so refused when not empty.
    #[serde(default)]
    pub exclude_files: Vec<String>,
}

/// One entry of a component's `files`, in the two shapes Spin's manifest accepts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, untagged)]
pub enum FilesMount {
    /// `"static/**/*"`: a file, a directory or a glob pattern relative to the application's
    /// directory, at the same path under the guest's `/`.
    Pattern(String),
    /// `{ source = "broadcast/dist", destination = "/broadcast" }`: a directory (or one file)
    /// at an absolute guest path.
    Placement { source: String, destination: String },
}

#[derive(Debug, Default, Deserialize)]
struct Triggers {
    #[serde(default)]
    http: Vec<HttpTrigger>,
}

#[derive(Debug, Deserialize)]
struct RawManifest {
    spin_manifest_version: u32,
    #[serde(default)]
    variables: BTreeMap<String, Variable>,
    #[serde(default)]
    trigger: Triggers,
    #[serde(default)]
    component: BTreeMap<String, Component>,
}

/// The application as this host runs it.
#[derive(Debug)]
pub struct App {
    /// The directory `spin.toml` is in: component `files` are relative to it.
    pub dir: PathBuf,
    pub variables: BTreeMap<String, Variable>,
    pub http_triggers: Vec<HttpTrigger>,
    pub components: BTreeMap<String, Component>,
}

impl App {
    /// Reads `spin.toml` at `path`; component sources become absolute paths.
    pub fn load(path: &Path) -> Result<App, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError::Read(path.to_owned(), e))?;
        let dir = app_dir(path);
        let mut app = App::parse(&text).map_err(|e| match e {
            ManifestError::Parse(_, e) => ManifestError::Parse(path.to_owned(), e),
            other => other,
        })?;
        for component in app.components.values_mut() {
            component.source = dir.join(&component.source);
        }
        app.dir = dir.to_owned();
        Ok(app)
    }

    /// Parses and checks manifest text; sources stay as written.
    pub fn parse(text: &str) -> Result<App, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Parse(PathBuf::from("spin.toml"), e))?;
        if raw.spin_manifest_version != 2 {
            return Err(ManifestError::Invalid(format!(
                "spin_manifest_version {} is not supported; this host reads version 2",
                raw.spin_manifest_version
            )));
        }
        for trigger in &raw.trigger.http {
            if !raw.component.contains_key(&trigger.component) {
                return Err(ManifestError::Invalid(format!(
                    "route {:?} names component {:?}, which is not defined",
                    trigger.route, trigger.component
                )));
            }
        }
        if raw.trigger.http.is_empty() {
            return Err(ManifestError::Invalid("spin.toml has no [[trigger.http]] routes".into()));
        }
        for (name, var) in &raw.variables {
            if var.required && var.default.is_some() {
                return Err(ManifestError::Invalid(format!(
                    "variable {name:?} may have `default` or `required = true`, not both"
                )));
            }
        }
        for (id, component) in &raw.component {
            if !component.exclude_files.is_empty() {
                return Err(ManifestError::Invalid(format!(
                    "component {id:?} has exclude_files, which this host does not implement; list the files to include instead"
                )));
            }
        }
        Ok(App { dir: PathBuf::from("."), variables: raw.variables, http_triggers: raw.trigger.http, components: raw.component })
    }
}

/// The directory of `spin_toml`, which its relative paths (`files`, component sources, stores)
/// are resolved against: `.` for a bare file name (`--spin-toml spin.toml`, as `scripts/up` runs
/// it), whose parent is the empty path.
pub fn app_dir(spin_toml: &Path) -> &Path {
    spin_toml
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn a_bare_manifest_name_resolves_against_the_working_directory() {
        // `scripts/up` passes `spin.toml`: the `files` mount could not start from the empty path.
        assert_eq!(super::app_dir(Path::new("spin.toml")), Path::new("."));
        assert_eq!(super::app_dir(Path::new("app/spin.toml")), Path::new("app"));
        assert_eq!(super::app_dir(Path::new("/srv/app/spin.toml")), Path::new("/srv/app"));
    }
}
