//! The API explorer: GraphiQL at `GET /graphql` for signed-in console users.
//!
//! GraphiQL 3.8.3 with React 18.3.1 (their UMD builds, MIT; `console/graphiql/LICENSES.txt`) is
//! embedded gzipped (`scripts/vendor-graphiql.sh` makes the files) and served from this origin
//! only: the page's Content-Security-Policy allows no other origin, no inline script and no
//! inline style element. The explorer is handed the schema (the introspection answer, made once
//! from the schema without the request limits) rather than asking for it: the standard
//! introspection query nests deeper than `MAX_DEPTH`. Its queries go through `POST /graphql`
//! like the console's, with the session cookie and the CSRF header, so every limit applies.
//!
//! `GET /graphql` still answers machines `405`: the page is served only to a request that
//! accepts `text/html`, and only with a session (otherwise it goes to the console's sign-in).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::{Api, method_not_allowed};
use crate::auth::Via;

const PAGE: &str = include_str!("../console/explorer.html");
const SCRIPT: &str = include_str!("../console/explorer.js");
const STYLE: &str = include_str!("../console/explorer.css");

/// The vendored files, gzipped: (name, content type, bytes).
const ASSETS: [(&str, &str, &[u8]); 4] = [
    ("graphiql.min.js", "text/javascript; charset=utf-8", include_bytes!("../console/graphiql/graphiql.min.js.gz")),
    ("graphiql.min.css", "text/css; charset=utf-8", include_bytes!("../console/graphiql/graphiql.min.css.gz")),
    (
        "react.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/graphiql/react.production.min.js.gz"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/graphiql/react-dom.production.min.js.gz"),
    ),
];

/// GraphiQL's stylesheet carries its fonts as `data:` URLs; nothing else is loosened.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; font-src data:; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Where the explorer's own files are served.
pub const ASSETS_PATH: &str = "/graphql/explorer";

/// The standard introspection query (graphql-js `getIntrospectionQuery()`), as GraphiQL asks it.
const INTROSPECTION: &str = r"query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name } } } } } } } }
}";

/// The schema's introspection answer (`data`), as JSON: what the explorer is given.
pub async fn introspection() -> String {
    let response = super::schema::unlimited().execute(INTROSPECTION).await;
    serde_json::to_string(&response.data).unwrap_or_else(|_| "null".into())
}

fn accepts(headers: &HeaderMap, header_name: header::HeaderName, wanted: &str) -> bool {
    headers.get_all(header_name).iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains(wanted))
}

/// Whether the request comes with a console session (a bearer token cannot drive a page).
async fn signed_in(api: &Api, headers: &HeaderMap) -> bool {
    matches!(api.auth.principal(headers).await, Ok(Some(principal)) if matches!(principal.via, Via::Session { .. }))
}

fn secured(response: Response, content_type: &'static str) -> Response {
    crate::console::secured(response, content_type, CSP)
}

/// `GET /graphql`: the explorer for a browser with a session, the sign-in for one without, and
/// `405` for anything else.
pub async fn page(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    if !accepts(&headers, header::ACCEPT, "text/html") {
        return method_not_allowed().await;
    }
    if !signed_in(&api, &headers).await {
        return Redirect::to("/console").into_response();
    }
    let mut response = secured(PAGE.into_response(), "text/html; charset=utf-8");
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /graphql/explorer/{file}`: the explorer's script, the vendored files, and the schema
/// (signed-in users only).
pub async fn asset(State(api): State<Arc<Api>>, Path(file): Path<String>, headers: HeaderMap) -> Response {
    if file == "explorer.js" {
        return secured(SCRIPT.into_response(), "text/javascript; charset=utf-8");
    }
    if file == "explorer.css" {
        return secured(STYLE.into_response(), "text/css; charset=utf-8");
    }
    if file == "schema.json" {
        if !signed_in(&api, &headers).await {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let schema = api.introspection.get_or_init(introspection).await.clone();
        let mut response = secured(schema.into_response(), "application/json");
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return response;
    }
    let Some((_, content_type, gzipped)) = ASSETS.iter().find(|(name, _, _)| *name == file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Kept gzipped (1.1 MB instead of 4): every browser takes gzip; a client that does not is
    // told so rather than sent bytes it cannot read.
    if !accepts(&headers, header::ACCEPT_ENCODING, "gzip") {
        return (StatusCode::NOT_ACCEPTABLE, "this file is served gzip-encoded only").into_response();
    }
    let mut response = secured(gzipped.into_response(), content_type);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400"));
    response
}
