//! A component's `files` (spin.toml): resolved as Spin's loader resolves them and preopened
//! read-only in every instance, at the guest paths Spin gives them.
//!
//! Spin has two ways to make them visible, and this host does whichever Spin would:
//!
//! - **Direct** (`spin up --direct-mounts`): when every entry is a `{ source, destination }`
//!   whose source is a directory, each directory is preopened as it is at `destination`.
//! - **Copy** (`spin up`'s default, and what a registry app gets): every entry is copied into one
//!   directory per component at startup (a pattern's files at their path relative to the
//!   application directory, a placement's at its destination), preopened at `/`. The copy lives
//!   in the host's state directory (`files/{component}-{pid}`), is removed when the host stops,
//!   and a copy left by a host that was killed is removed by the next one to start there.
//!
//! Either way the guest sees the same paths, read-only (`FsPerms::ReadOnly`, as Spin without
//! `allow_transient_write`). A pattern is a file, a directory or a glob with `*`, `?` and `**`
//! (Spin's `glob` crate also takes `[...]` classes; they are refused here by name). Sources
//! must lie inside the application directory, as Spin requires.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::manifest::FilesMount;

/// Why a component's `files` cannot be made visible.
#[derive(Debug)]
pub struct FilesError(String);

impl fmt::Display for FilesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FilesError {}

fn error(message: String) -> FilesError {
    FilesError(message)
}

/// The preopens of one component, ready for every instance.
#[derive(Debug, Default)]
pub struct Mounts {
    /// (host directory, guest path), in the order they are preopened.
    preopens: Vec<(PathBuf, String)>,
    /// The copy this host made (Copy strategy), removed on drop.
    copy: Option<PathBuf>,
}

impl Drop for Mounts {
    fn drop(&mut self) {
        if let Some(dir) = self.copy.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Mounts {
    /// Resolves `files` of component `id` against the application directory `app_dir`; a copy
    /// goes under `copies` (the state directory's `files/`).
    pub fn prepare(app_dir: &Path, copies: &Path, id: &str, files: &[FilesMount]) -> Result<Mounts, FilesError> {
        if files.is_empty() {
            return Ok(Mounts::default());
        }
        let root = app_dir
            .canonicalize()
            .map_err(|e| error(format!("cannot read the application directory {}: {e}", app_dir.display())))?;
        let direct = files.iter().all(|f| matches!(f, FilesMount::Placement { source, .. } if root.join(source).is_dir()));
        if direct {
            let mut preopens = Vec::new();
            for file in files {
                let FilesMount::Placement { source, destination } = file else { unreachable!() };
                let host = inside(&root, &root.join(source), source)?;
                preopens.push((host, guest_dir(destination)?));
            }
            return Ok(Mounts { preopens, copy: None });
        }
        remove_stale_copies(copies, id);
        let copy = copies.join(format!("{id}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&copy);
        std::fs::create_dir_all(&copy).map_err(|e| error(format!("cannot create {}: {e}", copy.display())))?;
        let mounts = Mounts { preopens: vec![(copy.clone(), "/".to_owned())], copy: Some(copy.clone()) };
        for file in files {
            match file {
                FilesMount::Pattern(pattern) => copy_pattern(&root, pattern, &copy)?,
                FilesMount::Placement { source, destination } => {
                    let from = inside(&root, &root.join(source), source)?;
                    let to = copy.join(guest_dir(destination)?.trim_start_matches('/'));
                    if from.is_dir() {
                        copy_tree(&from, &to)?;
                    } else {
                        copy_file(&from, &to)?;
                    }
                }
            }
        }
        Ok(mounts)
    }

    /// Preopens every mount, read-only, in an instance's WASI context.
    pub fn preopen(&self, wasi: &mut WasiCtxBuilder) -> anyhow::Result<()> {
        for (host, guest) in &self.preopens {
            wasi.preopened_dir(host, guest, FsPerms::ReadOnly)?;
        }
        Ok(())
    }

    /// (host directory, guest path) pairs, for the startup log and tests.
    pub fn preopens(&self) -> &[(PathBuf, String)] {
        &self.preopens
    }
}

/// Removes the copies of component `id` that hosts no longer running left under `copies`
/// (`{id}-{pid}`, the process gone). Other hosts sharing the state directory keep theirs.
fn remove_stale_copies(copies: &Path, id: &str) {
    let Ok(entries) = std::fs::read_dir(copies) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(id)).and_then(|n| n.strip_prefix('-')) else { continue };
        let gone = pid.parse::<u32>().is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if gone && Path::new("/proc/self").exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A guest destination as Spin reads it: always absolute, with no `.` or `..` segments.
fn guest_dir(destination: &str) -> Result<String, FilesError> {
    let trimmed = destination.trim_start_matches('/');
    if trimmed.split('/').any(|s| s == "." || s == "..") || destination.contains('\\') {
        return Err(error(format!("files destination {destination:?} must be an absolute path without . or ..")));
    }
    Ok(format!("/{}", trimmed.trim_end_matches('/')))
}

/// `path` canonicalised, refused unless it lies inside the application directory `root`.
fn inside(root: &Path, path: &Path, named: &str) -> Result<PathBuf, FilesError> {
    let real = path.canonicalize().map_err(|e| error(format!("files entry {named:?}: {e}")))?;
    if !real.starts_with(root) {
        return Err(error(format!(
            "files entry {named:?} is outside the application directory; files must be within it"
        )));
    }
    Ok(real)
}

/// A pattern entry: an existing file or directory as it is, else a glob over the application
/// directory (files only), each match at its path relative to that directory.
fn copy_pattern(root: &Path, pattern: &str, copy: &Path) -> Result<(), FilesError> {
    let looks_like_glob = pattern.contains(['*', '?', '[', '{']);
    let path = root.join(pattern);
    if !looks_like_glob && path.exists() {
        let from = inside(root, &path, pattern)?;
        let relative = from.strip_prefix(root).expect("checked by inside").to_owned();
        return if from.is_dir() { copy_tree(&from, &copy.join(relative)) } else { copy_file(&from, &copy.join(relative)) };
    }
    if !looks_like_glob {
        return Err(error(format!("files entry {pattern:?} does not exist and is not a glob pattern")));
    }
    if pattern.contains(['[', ']', '{', '}']) {
        return Err(error(format!(
            "files pattern {pattern:?}: this host's globs take *, ? and ** only (no [..] or {{..}})"
        )));
    }
    let segments: Vec<&str> = Path::new(pattern)
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str().ok_or_else(|| error(format!("files pattern {pattern:?} is not UTF-8"))),
            _ => Err(error(format!("files pattern {pattern:?} must be relative, without . or ..")))
        })
        .collect::<Result<_, _>>()?;
    let mut found = Vec::new();
    walk(root, &segments, &mut found).map_err(|e| error(format!("files pattern {pattern:?}: {e}")))?;
    for file in found {
        let from = inside(root, &file, pattern)?;
        let relative = file.strip_prefix(root).expect("walked from root");
        copy_file(&from, &copy.join(relative))?;
    }
    Ok(())
}

/// Collects the files under `dir` that match the pattern `segments` (`**` = any directories).
fn walk(dir: &Path, segments: &[&str], found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let Some((first, rest)) = segments.split_first() else {
        return Ok(());
    };
    if *first == "**" {
        // Zero directories, or one more and still `**`.
        walk(dir, rest, found)?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, segments, found)?;
            }
        }
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !matches(first.as_bytes(), name.as_bytes()) {
            continue;
        }
        let path = entry.path();
        if rest.is_empty() {
            if path.is_file() && !found.contains(&path) {
                found.push(path);
            }
        } else if path.is_dir() {
            walk(&path, rest, found)?;
        }
    }
    Ok(())
}

/// One path segment against a pattern segment with `*` (any run) and `?` (one character).
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => matches(&pattern[1..], name) || (!name.is_empty() && matches(pattern, &name[1..])),
        (Some(b'?'), Some(_)) => matches(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => matches(&pattern[1..], &name[1..]),
        _ => false,
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), FilesError> {
    let entries = std::fs::read_dir(from).map_err(|e| error(format!("cannot read {}: {e}", from.display())))?;
    std::fs::create_dir_all(to).map_err(|e| error(format!("cannot create {}: {e}", to.display())))?;
    for entry in entries {
        let path = entry.map_err(|e| error(format!("cannot read {}: {e}", from.display())))?.path();
        let name = path.file_name().expect("a directory entry has a name");
        if path.is_dir() {
            copy_tree(&path, &to.join(name))?;
        } else if path.is_file() {
            copy_file(&path, &to.join(name))?;
        }
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> Result<(), FilesError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| error(format!("cannot create {}: {e}", parent.display())))?;
    }
    std::fs::copy(from, to).map(drop).map_err(|e| error(format!("cannot copy {} to {}: {e}", from.display(), to.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for file in ["site/index.html", "site/a/b.js", "site/a/c.css", "notes.txt", "other/x.txt"] {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, file).unwrap();
        }
        dir
    }

    fn files(mounts: &Mounts) -> Vec<String> {
        let (host, guest) = &mounts.preopens()[0];
        assert_eq!(guest, "/");
        let mut out = Vec::new();
        let mut stack = vec![host.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    out.push(path.strip_prefix(host).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn directory_placements_are_mounted_directly_at_their_destination() {
        let dir = tree();
        let m = Mounts::prepare(dir.path(), &dir.path().join("state"), "c", &[FilesMount::Placement { source: "site".into(), destination: "/web/".into() }]).unwrap();
        assert_eq!(m.preopens(), &[(dir.path().canonicalize().unwrap().join("site"), "/web".to_owned())]);
    }

    #[test]
    fn patterns_and_file_placements_are_copied_as_spin_copies_them() {
        let dir = tree();
        // A copy a killed host left is removed; this host's goes beside it.
        let stale = dir.path().join("state/c-999999999");
        std::fs::create_dir_all(&stale).unwrap();
        let m = Mounts::prepare(
            dir.path(),
            &dir.path().join("state"),
            "c",
            &[
                FilesMount::Pattern("site/**/*.js".into()),
                FilesMount::Pattern("notes.txt".into()),
                FilesMount::Pattern("o?her".into()),
                FilesMount::Placement { source: "site/index.html".into(), destination: "/pages/home.html".into() },
            ],
        )
        .unwrap();
        // `o?her` is a glob: it matches the directory, and a glob copies files only.
        assert_eq!(files(&m), ["notes.txt", "pages/home.html", "site/a/b.js"]);
        assert!(!stale.exists(), "a dead host's copy is left");
        assert_eq!(m.preopens()[0].0, dir.path().join("state").join(format!("c-{}", std::process::id())));
        let copy = m.preopens()[0].0.clone();
        drop(m);
        assert!(!copy.exists(), "the copy outlived the host");
    }

    #[test]
    fn entries_outside_the_application_or_unsupported_are_refused() {
        let dir = tree();
        for bad in [
            FilesMount::Pattern("../etc/passwd".into()),
            FilesMount::Pattern("missing.txt".into()),
            FilesMount::Pattern("site/[ab]/*".into()),
            FilesMount::Placement { source: "..".into(), destination: "/up".into() },
            FilesMount::Placement { source: "site".into(), destination: "/a/../b".into() },
        ] {
            assert!(Mounts::prepare(dir.path(), &dir.path().join("state"), "c", &[bad.clone()]).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn glob_segments_match_star_and_question_mark() {
        assert!(matches(b"*.js", b"app.js"));
        assert!(matches(b"a?c", b"abc"));
        assert!(matches(b"*", b""));
        assert!(!matches(b"*.js", b"app.css"));
        assert!(!matches(b"a?c", b"ac"));
    }
}
