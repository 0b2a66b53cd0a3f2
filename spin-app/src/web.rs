//! The pages and static assets a browser gets: the landing page, the viewer
//! page and the player's assets, embedded at build time from `player/dist`
//! (run `sh player/build.sh` first; it vendors hls.js from `node_modules`).
//!
//! The pages are templates whose `{{name}}` placeholders are filled with
//! HTML-escaped values here, so nothing from the request (the `Host` behind
//! `base_url`) can inject markup. Asset URLs carry `?v=` + a digest of all
//! assets, which is what makes [`ASSET_CACHE_CONTROL`] safe.

const PLAY_HTML: &str = include_str!("../../player/dist/play.html");
const LANDING_HTML: &str = include_str!("../../player/dist/landing.html");
const VERSION: &str = include_str!("../../player/dist/VERSION");

/// `Cache-Control` for every `/assets/{name}` answer: pages link assets with a
/// content digest in the query, so a changed asset always has a new URL.
pub const ASSET_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// `Cache-Control` for the two pages: always revalidate, so new asset digests are seen.
pub const PAGE_CACHE_CONTROL: &str = "no-cache";

/// Every asset by name: content type and bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("player.js", "text/javascript; charset=utf-8", include_bytes!("../../player/dist/player.js")),
    ("player.css", "text/css; charset=utf-8", include_bytes!("../../player/dist/player.css")),
    ("landing.js", "text/javascript; charset=utf-8", include_bytes!("../../player/dist/landing.js")),
    ("hls.min.js", "text/javascript; charset=utf-8", include_bytes!("../../player/dist/hls.min.js")),
    ("hls.js.LICENSE.txt", "text/plain; charset=utf-8", include_bytes!("../../player/dist/hls.js.LICENSE.txt")),
    ("icon.svg", "image/svg+xml", include_bytes!("../../player/dist/icon.svg")),
    ("og.png", "image/png", include_bytes!("../../player/dist/og.png")),
];

/// The landing page (`GET /`). `base_url` is this server's origin, e.g. `http://127.0.0.1:3000`.
pub fn landing_page(base_url: &str) -> String {
    let base_url = base_url.trim_end_matches('/');
    fill(LANDING_HTML, &[("base_url", base_url), ("version", VERSION.trim())])
}

/// The viewer page (`GET /play/{stream}`); `stream` is an already validated stream id.
/// `embed` is true for `?embed=1` (no page chrome).
pub fn play_page(stream: &str, base_url: &str, embed: bool) -> String {
    let base_url = base_url.trim_end_matches('/');
    let page_url = format!("{base_url}/play/{stream}");
    let embed_code = format!(
        "<iframe src=\"{page_url}?embed=1\" width=\"640\" height=\"360\" \
         style=\"border:0;max-width:100%;aspect-ratio:16/9;height:auto\" \
         allow=\"autoplay; fullscreen; picture-in-picture\" allowfullscreen \
         title=\"Chalkstream stream\"></iframe>"
    );
    fill(
        PLAY_HTML,
        &[
            ("stream", stream),
            ("short", stream.get(..8).unwrap_or(stream)),
            ("base_url", base_url),
            ("page_url", &page_url),
            ("playlist_url", &format!("{base_url}/playlist/{stream}.m3u8")),
            ("embed", if embed { "1" } else { "0" }),
            ("embed_class", if embed { " embed" } else { "" }),
            ("embed_code", &embed_code),
            ("version", VERSION.trim()),
        ],
    )
}

/// A static asset under `/assets/{name}`: its content type and bytes.
/// Serve it with [`ASSET_CACHE_CONTROL`].
pub fn asset(name: &str) -> Option<(&'static str, &'static [u8])> {
    ASSETS
        .iter()
        .find(|(asset_name, _, _)| *asset_name == name)
        .map(|&(_, content_type, bytes)| (content_type, bytes))
}

/// Replace each `{{key}}` in `template` with its value, HTML-escaped; an
/// unknown `{{…}}` stays as it is.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 512);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let known = after.find("}}").and_then(|end| {
            let key = &after[..end];
            values.iter().find(|(k, _)| *k == key).map(|(_, v)| (end, *v))
        });
        match known {
            Some((end, value)) => {
                escape_html_into(&mut out, value);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escape text for HTML element content and quoted attribute values.
fn escape_html_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn play_page_fills_every_placeholder() {
        let page = play_page(ID, "http://127.0.0.1:3000", false);
        for page in [&page, &landing_page("http://127.0.0.1:3000")] {
            if let Some(at) = page.find("{{") {
                panic!("unfilled placeholder: {}", &page[at..(at + 40).min(page.len())]);
            }
        }
        assert!(page.contains("data-stream=\"0123456789abcdef0123456789abcdef01234567\""));
        assert!(page.contains("<meta property=\"og:url\" content=\"http://127.0.0.1:3000/play/0123456789abcdef0123456789abcdef01234567\">"));
        assert!(page.contains("<title>Stream 01234567 · Chalkstream</title>"));
        assert!(page.contains("class=\"page-play\""));
    }

    #[test]
    fn embed_view_is_marked_and_snippet_is_escaped() {
        let page = play_page(ID, "http://127.0.0.1:3000/", true);
        assert!(page.contains("class=\"page-play embed\""));
        assert!(page.contains("data-embed=\"1\""));
        assert!(page.contains("&lt;iframe src=&quot;http://127.0.0.1:3000/play/0123456789abcdef0123456789abcdef01234567?embed=1&quot;"));
    }

    #[test]
    fn hostile_base_url_cannot_inject_markup() {
        let evil = "http://x\"><script>alert(1)</script>";
        for page in [play_page(ID, evil, false), landing_page(evil)] {
            assert!(!page.contains("<script>alert"), "unescaped base URL");
            assert!(page.contains("&quot;&gt;&lt;script&gt;"));
        }
    }

    #[test]
    fn assets_are_embedded_and_pages_link_them_with_the_version() {
        for name in ["player.js", "player.css", "hls.min.js", "landing.js", "icon.svg", "og.png"] {
            let (content_type, bytes) = asset(name).unwrap_or_else(|| panic!("{name} missing"));
            assert!(!bytes.is_empty() && !content_type.is_empty());
        }
        assert!(asset("play.html").is_none() && asset("../Cargo.toml").is_none());
        let version = VERSION.trim();
        assert_eq!(version.len(), 12);
        assert!(play_page(ID, "http://h", false).contains(&format!("/assets/player.js?v={version}")));
        assert!(landing_page("http://h").contains(&format!("/assets/player.css?v={version}")));
    }
}
