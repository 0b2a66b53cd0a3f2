//! The typed router: a request path becomes a [`Route`] (or none), and each route knows the
//! methods it answers. Values in the path stay raw here; handlers validate them, so an ingest
//! path with a malformed secret gets a `400` that says why, and a malformed stream id a `404`.

/// The HTTP methods the component tells apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Put,
    Post,
    Options,
    Other(String),
}

impl Method {
    pub fn parse(name: &str) -> Method {
        match name {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "PUT" => Method::Put,
            "POST" => Method::Post,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        }
    }
}

/// Every resource the component serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/`: the landing page.
    Landing,
    /// `/play/{stream}`: the viewer page.
    Play { stream: String },
    /// `/assets/{name}`: a player asset.
    Asset { name: String },
    /// `/broadcast`: the broadcast page (from the `files` mount).
    Broadcast,
    /// `/broadcast/{path}`: a file of the broadcast page's build (the `files` mount).
    BroadcastFile { path: String },
    /// `/playlist/{stream}.m3u8`.
    Playlist { stream: String },
    /// `/chunks/{stream}/{seq}.ts`.
    Chunk { stream: String, seq: String },
    /// `/chunks/{stream}/{seq}.{part}.ts` (v2).
    Part { stream: String, seq: String, part: String },
    /// `/api/streams/{stream}`.
    Status { stream: String },
    /// `GET /download/{stream}.ts`: everything still stored, as one MPEG-TS file.
    Download { stream: String },
    /// `/ingest/{session}/{seq}.ts`.
    IngestSegment { session: String, seq: String },
    /// `/ingest/{session}/end`.
    IngestEnd { session: String },
    /// `/ingest/{session}/{seq}/{part}.ts` (v2).
    IngestPart { session: String, seq: String, part: String },
    /// `/ingest/{session}/{seq}/commit` (v2).
    IngestCommit { session: String, seq: String },
    /// `/ingest/{session}/{seq}/gap` (issue 11): give segment `seq` up.
    IngestGap { session: String, seq: String },
    /// `/admin/sweep`: the sweep's bounded work, for a cron job (issue 10).
    AdminSweep,
}

/// Which family a route belongs to, for CORS and error shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Page,
    Playback,
    Ingest,
    /// Operator endpoints: no CORS.
    Admin,
}

impl Route {
    /// Parses a path (without the query). `None` for paths that name nothing.
    pub fn parse(path: &str) -> Option<Route> {
        let rest = path.strip_prefix('/')?;
        if rest.is_empty() {
            return Some(Route::Landing);
        }
        let segments: Vec<&str> = rest.split('/').collect();
        let route = match segments.as_slice() {
            ["play", stream] => Route::Play { stream: (*stream).to_owned() },
            ["assets", name] => Route::Asset { name: (*name).to_owned() },
            ["broadcast"] => Route::Broadcast,
            ["broadcast", rest @ ..] => Route::BroadcastFile { path: rest.join("/") },
            ["playlist", file] => Route::Playlist { stream: file.strip_suffix(".m3u8")?.to_owned() },
            ["chunks", stream, file] => {
                let stem = file.strip_suffix(".ts")?;
                match stem.split_once('.') {
                    Some((seq, part)) => Route::Part {
                        stream: (*stream).to_owned(),
                        seq: seq.to_owned(),
                        part: part.to_owned(),
                    },
                    None => Route::Chunk { stream: (*stream).to_owned(), seq: stem.to_owned() },
                }
            }
            ["api", "streams", stream] => Route::Status { stream: (*stream).to_owned() },
            ["download", file] => Route::Download { stream: file.strip_suffix(".ts")?.to_owned() },
            ["admin", "sweep"] => Route::AdminSweep,
            ["ingest", session, "end"] => Route::IngestEnd { session: (*session).to_owned() },
            ["ingest", session, file] => Route::IngestSegment {
                session: (*session).to_owned(),
                seq: file.strip_suffix(".ts")?.to_owned(),
            },
            ["ingest", session, seq, "commit"] => Route::IngestCommit {
                session: (*session).to_owned(),
                seq: (*seq).to_owned(),
            },
            ["ingest", session, seq, "gap"] => Route::IngestGap {
                session: (*session).to_owned(),
                seq: (*seq).to_owned(),
            },
            ["ingest", session, seq, file] => Route::IngestPart {
                session: (*session).to_owned(),
                seq: (*seq).to_owned(),
                part: file.strip_suffix(".ts")?.to_owned(),
            },
            _ => return None,
        };
        Some(route)
    }

    /// The methods this route answers (besides `OPTIONS` for CORS preflight).
    pub fn methods(&self) -> &'static [Method] {
        match self {
            Route::IngestSegment { .. } | Route::IngestPart { .. } => &[Method::Put],
            Route::IngestEnd { .. } | Route::IngestCommit { .. } | Route::IngestGap { .. } | Route::AdminSweep => &[Method::Post],
            _ => &[Method::Get, Method::Head],
        }
    }

    /// The `Allow` header value.
    pub fn allow(&self) -> &'static str {
        match self {
            Route::IngestSegment { .. } | Route::IngestPart { .. } => "PUT, OPTIONS",
            Route::IngestEnd { .. } | Route::IngestCommit { .. } | Route::IngestGap { .. } | Route::AdminSweep => "POST, OPTIONS",
            _ => "GET, HEAD, OPTIONS",
        }
    }

    /// The routes viewers use, which an instance that leaves viewers to another
    /// (`playback_url`) redirects there: the viewer page and everything it plays. Status stays
    /// (the broadcaster's panel reads it, and it never waits), as do pages and assets.
    pub fn is_viewers(&self) -> bool {
        matches!(
            self,
            Route::Play { .. } | Route::Playlist { .. } | Route::Chunk { .. } | Route::Part { .. } | Route::Download { .. }
        )
    }

    pub fn family(&self) -> Family {
        match self {
            Route::Landing | Route::Play { .. } | Route::Asset { .. } | Route::Broadcast | Route::BroadcastFile { .. } => {
                Family::Page
            }
            Route::Playlist { .. } | Route::Chunk { .. } | Route::Part { .. } | Route::Status { .. } | Route::Download { .. } => {
                Family::Playback
            }
            Route::IngestSegment { .. }
            | Route::IngestEnd { .. }
            | Route::IngestPart { .. }
            | Route::IngestCommit { .. }
            | Route::IngestGap { .. } => {
                Family::Ingest
            }
            Route::AdminSweep => Family::Admin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_into_routes() {
        let id = "c436f0485bf34625ff7764ead634bccd875b514d";
        assert_eq!(Route::parse("/"), Some(Route::Landing));
        assert_eq!(Route::parse(&format!("/play/{id}")), Some(Route::Play { stream: id.into() }));
        assert_eq!(Route::parse("/assets/player.js"), Some(Route::Asset { name: "player.js".into() }));
        assert_eq!(Route::parse(&format!("/playlist/{id}.m3u8")), Some(Route::Playlist { stream: id.into() }));
        assert_eq!(
            Route::parse(&format!("/chunks/{id}/12.ts")),
            Some(Route::Chunk { stream: id.into(), seq: "12".into() })
        );
        assert_eq!(Route::parse(&format!("/api/streams/{id}")), Some(Route::Status { stream: id.into() }));
        assert_eq!(Route::parse(&format!("/download/{id}.ts")), Some(Route::Download { stream: id.into() }));
        assert_eq!(Route::parse(&format!("/download/{id}.mp4")), None);
        assert_eq!(Route::parse("/broadcast"), Some(Route::Broadcast));
        assert_eq!(
            Route::parse("/broadcast/vendor/core/ffmpeg-core.js"),
            Some(Route::BroadcastFile { path: "vendor/core/ffmpeg-core.js".into() })
        );
        assert_eq!(Route::parse("/broadcast/../x"), Some(Route::BroadcastFile { path: "../x".into() }));
        assert_eq!(
            Route::parse("/ingest/SECRET/0.ts"),
            Some(Route::IngestSegment { session: "SECRET".into(), seq: "0".into() })
        );
        assert_eq!(Route::parse("/ingest/SECRET/end"), Some(Route::IngestEnd { session: "SECRET".into() }));
        assert_eq!(
            Route::parse("/ingest/SECRET/4/2.ts"),
            Some(Route::IngestPart { session: "SECRET".into(), seq: "4".into(), part: "2".into() })
        );
        assert_eq!(
            Route::parse("/ingest/SECRET/4/commit"),
            Some(Route::IngestCommit { session: "SECRET".into(), seq: "4".into() })
        );
        assert_eq!(
            Route::parse(&format!("/chunks/{id}/12.3.ts")),
            Some(Route::Part { stream: id.into(), seq: "12".into(), part: "3".into() })
        );
        assert_eq!(Route::parse("/ingest/SECRET/4/2.mp4"), None);
        assert_eq!(
            Route::parse("/ingest/SECRET/4/gap"),
            Some(Route::IngestGap { session: "SECRET".into(), seq: "4".into() })
        );
        assert_eq!(Route::parse("/ingest/SECRET/4/gap").unwrap().allow(), "POST, OPTIONS");
    }

    #[test]
    fn unknown_paths_name_nothing() {
        for path in ["", "/nope", "/playlist/x.m3u", "/chunks/x/1.mp4", "/play/a/b", "/ingest/s", "/api/streams", "/play/"] {
            let route = Route::parse(path);
            assert!(route.is_none() || matches!(route, Some(Route::Play { ref stream }) if stream.is_empty()), "{path}");
        }
    }

    #[test]
    fn each_route_lists_its_methods() {
        assert_eq!(Route::parse("/ingest/s/1.ts").unwrap().methods(), &[Method::Put]);
        assert_eq!(Route::parse("/ingest/s/end").unwrap().allow(), "POST, OPTIONS");
        assert_eq!(Route::parse("/ingest/s/1/0.ts").unwrap().methods(), &[Method::Put]);
        assert_eq!(Route::parse("/ingest/s/1/commit").unwrap().allow(), "POST, OPTIONS");
        assert_eq!(Route::Landing.methods(), &[Method::Get, Method::Head]);
        assert_eq!(Route::parse("/admin/sweep"), Some(Route::AdminSweep));
        assert_eq!(Route::AdminSweep.allow(), "POST, OPTIONS");
    }
}
