//! The component's `files` mount (spin.toml) through the bundled host: the broadcast page's
//! build served under `/broadcast/...` from the real mount, streamed whole with its content
//! type and validator, `304` when unchanged, `404` when missing, and nothing outside the mount
//! reachable however the path is spelled. The host resolves `files` as Spin does (a directory
//! placement mounted directly, patterns copied and mounted at `/`), so both are run here.

mod common;

use common::{component_wasm, new_agent, repo_root, try_request, Host};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A `spin.toml` like the repository's, for a component reading `files` from `app_dir`.
fn spin_toml_in(app_dir: &Path, files: &str) -> std::path::PathBuf {
    let manifest = format!(
        r#"spin_manifest_version = 2
[application]
name = "files-test"
[[trigger.http]]
route = "/..."
component = "c"
[component.c]
source = "{}"
key_value_stores = ["default"]
files = {files}
"#,
        component_wasm().display()
    );
    let path = app_dir.join("spin.toml");
    std::fs::write(&path, manifest).unwrap();
    path
}

#[test]
fn broadcast_files_are_served_from_the_mount_whole_typed_and_revalidated() {
    let host = Host::start();
    let dist = repo_root().join("broadcast/dist");
    let core = std::fs::read(dist.join("vendor/core/ffmpeg-core.wasm")).expect("sh broadcast/build.sh first");

    let resp = host.get("/broadcast/vendor/core/ffmpeg-core.wasm");
    resp.assert_status(200);
    assert_eq!(resp.header("content-type"), Some("application/wasm"));
    assert_eq!(resp.header("content-length"), Some(core.len().to_string().as_str()));
    assert!(resp.body == core, "the 31 MB core came back different ({} bytes)", resp.body.len());
    assert_eq!(resp.header("cache-control"), Some("no-cache"));
    let etag = resp.header("etag").expect("an ETag").to_owned();

    let again = host.request("GET", "/broadcast/vendor/core/ffmpeg-core.wasm", &[("If-None-Match", &etag)], None);
    again.assert_status(304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));

    let head = host.request("HEAD", "/broadcast/vendor/ffmpeg/index.js", &[], None);
    head.assert_status(200);
    assert_eq!(head.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert!(head.body.is_empty());

    let page = host.get("/broadcast");
    page.assert_status(200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(page.text() == std::fs::read_to_string(dist.join("index.html")).unwrap());

    host.get("/broadcast/nope.js").assert_status(404);
    host.get("/broadcast/vendor").assert_status(404);
    host.request("PUT", "/broadcast/index.html", &[], Some(b"x")).assert_status(405);
}

#[test]
fn nothing_outside_the_mount_is_reachable() {
    let host = Host::start();
    for path in [
        "/broadcast/../spin.toml",
        "/broadcast/%2e%2e/spin.toml",
        "/broadcast/..%2fspin.toml",
        "/broadcast/vendor/../../Cargo.toml",
        "/broadcast/.%2e/.%2e/Cargo.toml",
        "/broadcast//etc/passwd",
        "/broadcast/vendor%5c..%5c..%5cspin.toml",
    ] {
        let resp = host.get(path);
        assert!(matches!(resp.status, 400 | 404), "{path}: {resp}");
        assert!(!resp.text().contains("spin_manifest_version") && !resp.text().contains("root:"), "{path}: {resp}");
    }
}

#[test]
fn a_symlink_in_the_mount_cannot_lead_out_of_it() {
    let app = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "outside the mount").unwrap();
    std::fs::create_dir_all(app.path().join("site")).unwrap();
    std::fs::write(app.path().join("site/index.html"), "inside").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), app.path().join("site/secret.txt")).unwrap();
    let toml = spin_toml_in(app.path(), r#"[{ source = "site", destination = "/broadcast" }]"#);

    let host = Host::with_args(&[], &["--spin-toml", toml.to_str().unwrap()]);
    host.get("/broadcast/index.html").assert_status(200);
    let resp = host.get("/broadcast/secret.txt");
    assert_eq!(resp.status, 404, "{resp}");
    assert!(!resp.text().contains("outside the mount"));
}

#[test]
fn glob_patterns_are_copied_to_their_path_as_spin_copies_them() {
    let app = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(app.path().join("broadcast/sub")).unwrap();
    for file in ["broadcast/index.html", "broadcast/app.js", "broadcast/sub/deep.js", "broadcast/notes.md"] {
        std::fs::write(app.path().join(file), file).unwrap();
    }
    let toml = spin_toml_in(app.path(), r#"["broadcast/*.html", "broadcast/**/*.js"]"#);

    let host = Host::with_args(&[], &["--spin-toml", toml.to_str().unwrap()]);
    assert_eq!(host.get("/broadcast").text(), "broadcast/index.html");
    assert_eq!(host.get("/broadcast/app.js").text(), "broadcast/app.js");
    assert_eq!(host.get("/broadcast/sub/deep.js").text(), "broadcast/sub/deep.js");
    host.get("/broadcast/notes.md").assert_status(404);
}

#[test]
fn a_missing_mount_source_stops_the_host_as_it_stops_spin() {
    let app = tempfile::tempdir().unwrap();
    let toml = spin_toml_in(app.path(), r#"[{ source = "missing", destination = "/broadcast" }]"#);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chalkstream-host"))
        .args(["--listen", "127.0.0.1:0", "--spin-toml", toml.to_str().unwrap(), "--state-dir"])
        .arg(app.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing"), "{stderr}");
}

/// Kills the host it holds when dropped, so a failed assertion leaves no process behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_bare_spin_toml_name_is_found_in_the_working_directory_as_scripts_up_passes_it() {
    // `scripts/up` runs `chalkstream-host --spin-toml spin.toml` from the repository: the
    // manifest's directory is then the empty path, and the mount must resolve against the
    // working directory (it once refused to start: "cannot read the application directory").
    let app = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(app.path().join("site")).unwrap();
    std::fs::write(app.path().join("site/index.html"), "served from a relative manifest").unwrap();
    spin_toml_in(app.path(), r#"[{ source = "site", destination = "/broadcast" }]"#);
    let mut child = Command::new(env!("CARGO_BIN_EXE_chalkstream-host"))
        .current_dir(app.path())
        .args(["--listen", "127.0.0.1:0", "--spin-toml", "spin.toml", "--state-dir", "state"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let host = KillOnDrop(child);
    let mut addr = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(at) = line.find("listening on http://") {
            addr = Some(line[at + "listening on http://".len()..].trim().trim_end_matches('/').to_owned());
            break;
        }
    }
    let Some(addr) = addr else {
        drop(host);
        let err: Vec<String> = BufReader::new(stderr).lines().map_while(Result::ok).collect();
        panic!("the host did not start from a bare `--spin-toml spin.toml`:\n{}", err.join("\n"));
    };
    let resp = try_request(&new_agent(), &format!("http://{addr}"), "GET", "/broadcast", &[], None).unwrap();
    resp.assert_status(200);
    assert_eq!(resp.text(), "served from a relative manifest");
}
