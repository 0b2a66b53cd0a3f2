//! HTTP routing as Spin does it (exact routes and `/...` wildcards; exact
//! beats wildcard, the longest wildcard prefix wins) and the `spin-*`
//! headers Spin adds to every request it hands to a component.

use std::net::SocketAddr;

/// One route from `[[trigger.http]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// The route exactly as written in spin.toml (`spin-raw-component-route`).
    raw: String,
    /// Absolute, without one trailing slash (Spin's "based route", base `/`).
    based: String,
    /// `Some(prefix)` for `prefix/...` wildcards.
    wildcard_prefix: Option<String>,
    pub component: String,
}

impl Route {
    pub fn new(raw: &str, component: &str) -> Result<Route, String> {
        let absolute = if raw.starts_with('/') { raw.to_owned() } else { format!("/{raw}") };
        let based = absolute.strip_suffix('/').unwrap_or(&absolute).to_owned();
        let wildcard_prefix = based.strip_suffix("/...").map(str::to_owned);
        let fixed = wildcard_prefix.as_deref().unwrap_or(&based);
        if fixed.split('/').any(|seg| seg.starts_with(':') || seg == "..." || seg == "*") {
            return Err(format!("route {raw:?}: only exact routes and a trailing /... are supported"));
        }
        Ok(Route { raw: raw.to_owned(), based, wildcard_prefix, component: component.to_owned() })
    }
}

/// A route chosen for a request path.
#[derive(Debug)]
pub struct RouteMatch<'a> {
    pub route: &'a Route,
    /// The part of the path after a wildcard's prefix (`spin-path-info`).
    pub path_info: String,
}

#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new(routes: Vec<Route>) -> Router {
        Router { routes }
    }

    pub fn route(&self, path: &str) -> Option<RouteMatch<'_>> {
        let exact = self.routes.iter().find(|r| {
            r.wildcard_prefix.is_none() && (r.based == path || (r.based.is_empty() && path == "/"))
        });
        if let Some(route) = exact {
            return Some(RouteMatch { route, path_info: String::new() });
        }
        self.routes
            .iter()
            .filter_map(|r| {
                let prefix = r.wildcard_prefix.as_deref()?;
                let rest = path.strip_prefix(prefix)?;
                (rest.is_empty() || rest.starts_with('/')).then_some((prefix.len(), r, rest))
            })
            .max_by_key(|(len, _, _)| *len)
            .map(|(_, route, rest)| RouteMatch { route, path_info: rest.to_owned() })
    }
}

/// The headers Spin 3.x sets on the incoming request, with Spin's values
/// for the application base `/`.
pub fn spin_headers(
    m: &RouteMatch<'_>,
    host: &str,
    path_and_query: &str,
    client: SocketAddr,
) -> [(&'static str, String); 7] {
    let raw = &m.route.raw;
    [
        ("spin-full-url", format!("http://{host}{path_and_query}")),
        ("spin-path-info", m.path_info.clone()),
        ("spin-matched-route", m.route.based.clone()),
        ("spin-base-path", "/".to_owned()),
        ("spin-raw-component-route", raw.clone()),
        ("spin-component-route", raw.strip_suffix("/...").unwrap_or(raw).to_owned()),
        ("spin-client-addr", client.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new(vec![
            Route::new("/...", "all").unwrap(),
            Route::new("/api/...", "api").unwrap(),
            Route::new("/api/health", "health").unwrap(),
        ])
    }

    #[test]
    fn exact_beats_wildcard_and_longest_prefix_wins() {
        let r = router();
        assert_eq!(r.route("/api/health").unwrap().route.component, "health");
        assert_eq!(r.route("/api/x/y").unwrap().route.component, "api");
        assert_eq!(r.route("/api").unwrap().route.component, "api");
        assert_eq!(r.route("/apix").unwrap().route.component, "all");
        assert_eq!(r.route("/").unwrap().route.component, "all");
        assert!(Router::new(vec![Route::new("/only", "c").unwrap()]).route("/other").is_none());
        assert!(Route::new("/users/:id/...", "c").is_err());
    }

    #[test]
    fn headers_match_spins_for_wildcard_routes() {
        let r = router();
        let client: SocketAddr = "127.0.0.1:8777".parse().unwrap();
        let m = r.route("/api/items/").unwrap();
        let headers = spin_headers(&m, "example.test:3000", "/api/items/?a=1", client);
        let get = |name: &str| headers.iter().find(|(n, _)| *n == name).unwrap().1.clone();
        assert_eq!(get("spin-full-url"), "http://example.test:3000/api/items/?a=1");
        assert_eq!(get("spin-path-info"), "/items/");
        assert_eq!(get("spin-matched-route"), "/api/...");
        assert_eq!(get("spin-base-path"), "/");
        assert_eq!(get("spin-raw-component-route"), "/api/...");
        assert_eq!(get("spin-component-route"), "/api");
        assert_eq!(get("spin-client-addr"), "127.0.0.1:8777");

        let root = spin_headers(&r.route("/play/abc").unwrap(), "h", "/play/abc", client);
        assert_eq!(root[1].1, "/play/abc");
        assert_eq!(root[5].1, "", "component route of /... is empty, as in Spin");
        let exact = spin_headers(&r.route("/api/health").unwrap(), "h", "/api/health", client);
        assert_eq!(exact[1].1, "", "exact routes have empty path info");
    }
}
