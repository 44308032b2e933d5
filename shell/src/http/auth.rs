//! The API token (`--api-token`): when a node has one, every request but the probes
//! (`GET /health`, `GET /ready`) must carry `Authorization: Bearer <token>`.
//!
//! The check is a layer over the whole router with a short list of open paths, so a route added
//! later is protected unless someone opens it on purpose. A missing or wrong token is a `401`
//! with `WWW-Authenticate: Bearer` and the usual `{"error": ...}` body; the comparison takes the
//! same time wherever the tokens differ. The token is a secret: its `Debug` and `Display` are
//! redacted, and it is never logged.

use super::error::error_response;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

/// Paths anyone may ask: the probes, which reveal no more than whether the node is up.
pub const OPEN_PATHS: [&str; 2] = ["/health", "/ready"];

/// The shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// The longest token accepted: it travels in a header.
pub const MAX_TOKEN_LEN: usize = 1024;

/// A shared secret that HTTP clients present as `Authorization: Bearer <token>`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// Validates a token: [`MIN_TOKEN_LEN`] to [`MAX_TOKEN_LEN`] visible ASCII characters (what
    /// fits a header unchanged), e.g. `openssl rand -hex 32`.
    pub fn parse(raw: &str) -> Result<ApiToken, String> {
        let visible = raw.bytes().all(|b| b.is_ascii_graphic());
        if visible && (MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&raw.len()) {
            Ok(ApiToken(raw.to_owned()))
        } else {
            Err(format!(
                "a token is {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} visible ASCII characters (no spaces), e.g. the output of `openssl rand -hex 32`"
            ))
        }
    }

    /// The secret itself, for the `Authorization` header of a request this node makes.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether an `Authorization` header value presents this token, compared in constant time.
    pub fn admits(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(presented) = authorization
            .map(HeaderValue::as_bytes)
            .and_then(|value| value.strip_prefix(b"Bearer "))
        else {
            return false;
        };
        constant_time_eq::constant_time_eq(presented, self.0.as_bytes())
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl std::fmt::Display for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Layers the token check over `router` when `token` is set; without one the node trusts
/// whoever reaches its port, as before.
pub fn require_token(router: axum::Router, token: Option<ApiToken>) -> axum::Router {
    match token {
        None => router,
        Some(token) => router.layer(axum::middleware::from_fn_with_state(token, check_token)),
    }
}

/// Lets a request through when its path is open or it carries the token; answers `401`
/// otherwise.
async fn check_token(State(token): State<ApiToken>, request: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&request.uri().path())
        || token.admits(request.headers().get(header::AUTHORIZATION))
    {
        return next.run(request).await;
    }
    let mut response = error_response(
        StatusCode::UNAUTHORIZED,
        "missing or wrong API token: send `Authorization: Bearer <token>` (GET /health and GET /ready need none)",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;

    const SECRET: &str = "0123456789abcdef-secret";

    fn app() -> axum::Router {
        let router = axum::Router::new()
            .route("/messages", get(|| async { "log" }))
            .route("/health", get(|| async { "up" }))
            .route("/ready", get(|| async { "ready" }));
        require_token(router, Some(ApiToken::parse(SECRET).unwrap()))
    }

    async fn status(path: &str, authorization: Option<&str>) -> (StatusCode, Option<String>) {
        use tower::ServiceExt as _;
        let mut request = Request::builder().uri(path);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = app()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|value| value.to_str().unwrap().to_owned());
        (response.status(), challenge)
    }

    #[tokio::test]
    async fn only_the_probes_are_open() {
        let bearer = format!("Bearer {SECRET}");
        assert_eq!(status("/health", None).await.0, StatusCode::OK);
        assert_eq!(status("/ready", None).await.0, StatusCode::OK);
        assert_eq!(status("/messages", Some(&bearer)).await.0, StatusCode::OK);
        for wrong in [
            None,
            Some("Bearer 0123456789abcdef-secreT"),
            Some("Bearer "),
            Some("bearer 0123456789abcdef-secret"),
            Some("Basic 0123456789abcdef-secret"),
            Some("Bearer 0123456789abcdef-secret "),
        ] {
            assert_eq!(
                status("/messages", wrong).await,
                (StatusCode::UNAUTHORIZED, Some("Bearer".into())),
                "{wrong:?}"
            );
        }
        assert_eq!(
            status("/metrics", None).await.0,
            StatusCode::UNAUTHORIZED,
            "a route that is not open is protected, even an unknown one"
        );
    }

    #[test]
    fn tokens_are_validated_and_never_shown() {
        let token = ApiToken::parse(SECRET).unwrap();
        assert_eq!(format!("{token:?}"), "ApiToken(<redacted>)");
        assert_eq!(token.to_string(), "<redacted>");
        assert_eq!(token.expose(), SECRET);
        for bad in ["", "short", "has a space in it ok", &"x".repeat(1025)] {
            assert!(ApiToken::parse(bad).is_err(), "{bad:?}");
        }
    }
}
