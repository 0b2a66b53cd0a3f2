//! Static files from the component's `files` mount (spin.toml): the broadcast page's build,
//! too big to embed (ffmpeg.wasm's core is ~30 MB). Names are checked here, the file is found
//! with `std::fs` (WASI preopens, as Spin gives them, read-only), and the edge streams it.
//!
//! Only plain names are served: each path segment is letters, digits, `.`, `-` or `_`, never
//! starting with `.`, so no `..`, no hidden file, no percent-escape and no backslash ever
//! reaches the filesystem; the mount itself is the only directory the component can see.
//! Answers revalidate (`no-cache` with an `ETag` from the file's size and modification time), so
//! a rebuilt page is seen at once and an unchanged 30 MB core costs a `304`.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::reply::ApiError;

/// Where spin.toml's `files` places `broadcast/dist` in the guest.
pub const BROADCAST_DIR: &str = "/broadcast";

/// `Cache-Control` for every mounted file: always revalidate (see [`StaticFile::etag`]).
pub const FILE_CACHE_CONTROL: &str = "no-cache";

/// Segments and characters a served name may have.
const MAX_SEGMENTS: usize = 8;
const MAX_SEGMENT_LEN: usize = 128;

/// A file found in the mount, ready to stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticFile {
    pub path: PathBuf,
    pub len: u64,
    pub content_type: &'static str,
    /// A strong validator: the length and the modification time in nanoseconds, in hex.
    pub etag: String,
}

/// The file `name` (the path after the mount's URL prefix, e.g. `vendor/core/ffmpeg-core.js`)
/// under `root`: `400` for a name that cannot be a served file, `404` when there is none.
pub fn find(root: &Path, name: &str) -> Result<StaticFile, ApiError> {
    check_name(name)?;
    let path = root.join(name);
    let missing = || ApiError::not_found(format!("no such file: {name}"));
    let meta = std::fs::metadata(&path).map_err(|_| missing())?;
    if !meta.is_file() {
        return Err(missing());
    }
    let modified = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    Ok(StaticFile { content_type: content_type(name), len: meta.len(), etag: format!("\"{:x}-{modified:x}\"", meta.len()), path })
}

/// Whether an `If-None-Match` header names this file's current version.
pub fn not_modified(if_none_match: Option<&str>, etag: &str) -> bool {
    if_none_match.is_some_and(|value| value.split(',').any(|tag| {
        let tag = tag.trim();
        tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag
    }))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "a file name here is segments of letters, digits, '.', '-' and '_', none starting with '.'",
        )
    };
    let segments: Vec<&str> = name.split('/').collect();
    if segments.len() > MAX_SEGMENTS {
        return Err(bad());
    }
    for segment in segments {
        let plain = segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if segment.is_empty() || segment.len() > MAX_SEGMENT_LEN || segment.starts_with('.') || !plain {
            return Err(bad());
        }
    }
    Ok(())
}

/// The content type by extension; anything unknown is plain bytes.
fn content_type(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map_or("", |(_, e)| e);
    match extension.to_ascii_lowercase().as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chalkstream-files-{}-{:?}", std::process::id(), std::thread::current().id()));
        std::fs::create_dir_all(dir.join("vendor/core")).unwrap();
        std::fs::write(dir.join("index.html"), "<!doctype html>").unwrap();
        std::fs::write(dir.join("vendor/core/ffmpeg-core.wasm"), [0, 97, 115, 109]).unwrap();
        std::fs::write(dir.join(".secret"), "x").unwrap();
        dir
    }

    #[test]
    fn files_are_found_with_their_type_length_and_validator() {
        let root = root();
        let page = find(&root, "index.html").unwrap();
        assert_eq!((page.content_type, page.len), ("text/html; charset=utf-8", 15));
        let core = find(&root, "vendor/core/ffmpeg-core.wasm").unwrap();
        assert_eq!((core.content_type, core.len), ("application/wasm", 4));
        assert!(core.etag.starts_with("\"4-") && core.etag.ends_with('"'));
        assert!(not_modified(Some(&core.etag), &core.etag));
        assert!(not_modified(Some(&format!("\"x\", W/{}", core.etag)), &core.etag));
        assert!(!not_modified(Some("\"x\""), &core.etag) && !not_modified(None, &core.etag));
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn traversal_hidden_and_odd_names_are_refused_and_missing_files_not_found() {
        let root = root();
        for bad in ["../Cargo.toml", "vendor/../index.html", ".secret", "vendor//core", "", "a\\b", "%2e%2e/x", "vendor/core/", "a b"] {
            assert_eq!(find(&root, bad).unwrap_err().status, 400, "{bad:?}");
        }
        for missing in ["nope.js", "vendor", "vendor/core/nope.wasm"] {
            assert_eq!(find(&root, missing).unwrap_err().status, 404, "{missing:?}");
        }
        let _ = std::fs::remove_dir_all(root);
    }
}
