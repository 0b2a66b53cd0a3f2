//! Spin variables: resolves each component's variable templates once at
//! startup (values from `SPIN_VARIABLE_<NAME>` or the manifest default) and
//! implements `fermyon:spin/variables@2.0.0` over the result.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::bindings::fermyon::spin::variables::{Error as WitError, Host};
use crate::manifest::App;
use crate::State;

/// Why the application's variables cannot be resolved. Messages name
/// variables, never their values.
#[derive(Debug, PartialEq)]
pub enum VariableError {
    InvalidName(String, &'static str),
    BadTemplate { component: String, name: String, reason: String },
    Missing(String),
}

impl fmt::Display for VariableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VariableError::InvalidName(name, why) => write!(f, "invalid variable name {name:?}: {why}"),
            VariableError::BadTemplate { component, name, reason } => {
                write!(f, "component {component:?} variable {name:?}: {reason}")
            }
            VariableError::Missing(name) => write!(
                f,
                "required variable {name:?} has no value: set SPIN_VARIABLE_{}",
                name.to_ascii_uppercase()
            ),
        }
    }
}

impl std::error::Error for VariableError {}

/// Component id -> variable name -> resolved value.
pub type Resolved = HashMap<String, HashMap<String, String>>;

/// Spin's rule for variable names: lowercase letters, digits and single
/// underscores, starting with a letter and not ending with an underscore.
fn check_name(name: &str) -> Result<(), VariableError> {
    let bad = |why| Err(VariableError::InvalidName(name.to_owned(), why));
    if name.is_empty() {
        return bad("must not be empty");
    }
    if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return bad("only lowercase letters, digits and underscores are allowed");
    }
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return bad("must start with a lowercase letter");
    }
    if name.ends_with('_') || name.contains("__") {
        return bad("underscores go one at a time between other characters");
    }
    Ok(())
}

/// Expands `{{ name }}` references in `template` with `lookup`; other text is literal.
fn expand(template: &str, mut lookup: impl FnMut(&str) -> Result<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or("unclosed \"{{\" in template")?;
        out.push_str(&lookup(after[..end].trim())?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Resolves every component variable. `env` answers the value of an
/// environment variable (`std::env::var` in the real host).
pub fn resolve(app: &App, env: impl Fn(&str) -> Option<String>) -> Result<Resolved, VariableError> {
    let mut values: BTreeMap<&str, String> = BTreeMap::new();
    for (name, var) in &app.variables {
        check_name(name)?;
        let from_env = env(&format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()));
        match from_env.or_else(|| var.default.clone()) {
            Some(value) => {
                values.insert(name, value);
            }
            // As in Spin, every required variable must resolve at startup.
            None => return Err(VariableError::Missing(name.clone())),
        }
    }
    let mut resolved = Resolved::new();
    for (id, component) in &app.components {
        let mut vars = HashMap::new();
        for (name, template) in &component.variables {
            check_name(name)?;
            let value = expand(template, |reference| {
                values.get(reference).cloned().ok_or_else(|| format!("unknown application variable {reference:?}"))
            })
            .map_err(|reason| VariableError::BadTemplate { component: id.clone(), name: name.clone(), reason })?;
            vars.insert(name.clone(), value);
        }
        resolved.insert(id.clone(), vars);
    }
    Ok(resolved)
}

impl Host for State {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, WitError>> {
        if let Err(e) = check_name(&name) {
            return Ok(Err(WitError::InvalidName(e.to_string())));
        }
        Ok(match self.variables.get(&name) {
            Some(value) => Ok(value.clone()),
            None => Err(WitError::Undefined(format!("no variable for {:?}.{name:?}", self.component_id))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
        spin_manifest_version = 2
        [application]
        name = "t"
        [variables]
        greeting = { default = "hello" }
        token = { required = true, secret = true }
        [[trigger.http]]
        route = "/..."
        component = "web"
        [component.web]
        source = "web.wasm"
        [component.web.variables]
        message = "{{ greeting }}, world"
        token = "{{token}}"
        plain = "just text"
    "#;

    #[test]
    fn env_overrides_default_and_templates_mix_literal_text() {
        let app = App::parse(MANIFEST).unwrap();
        let env = |key: &str| match key {
            "SPIN_VARIABLE_TOKEN" => Some("s3cret".to_owned()),
            "SPIN_VARIABLE_GREETING" => Some("hi".to_owned()),
            _ => None,
        };
        let vars = &resolve(&app, env).unwrap()["web"];
        assert_eq!(vars["message"], "hi, world");
        assert_eq!(vars["token"], "s3cret");
        assert_eq!(vars["plain"], "just text");
        let defaults = resolve(&app, |k| (k == "SPIN_VARIABLE_TOKEN").then(|| "x".to_owned())).unwrap();
        assert_eq!(defaults["web"]["message"], "hello, world");
    }

    #[test]
    fn unresolvable_variables_are_startup_errors() {
        let app = App::parse(MANIFEST).unwrap();
        let err = resolve(&app, |_| None).unwrap_err();
        assert_eq!(err, VariableError::Missing("token".into()));
        assert!(err.to_string().contains("SPIN_VARIABLE_TOKEN"), "{err}");

        let app = App::parse(&MANIFEST.replace("{{token}}", "{{ nope }}")).unwrap();
        let err = resolve(&app, |_| Some("s3cret-value".into())).unwrap_err();
        assert!(matches!(err, VariableError::BadTemplate { ref name, .. } if name == "token"), "{err}");
        assert!(!err.to_string().contains("s3cret-value"), "errors never show values: {err}");

        assert!(check_name("Bad-Name").is_err() && check_name("a__b").is_err() && check_name("max_bytes2").is_ok());
    }
}
