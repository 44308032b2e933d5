//! Command-line flags both binaries share, each with a `REPLOG_*` environment fallback.

use crate::amqp::BrokerUrls;
use crate::http::ApiToken;
use crate::startup::ServeLimits;
use crate::topology::{QueueType, Topology};
use clap::Args;
use std::time::Duration;

/// Where the broker is and how this cluster's names and queues look on it.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// AMQP URL of the RabbitMQ broker, or a comma-separated list of the URLs of one RabbitMQ
    /// cluster's nodes (`amqp://` or `amqps://`). With a list, each connection starts at a
    /// node picked from its name (so nodes spread) and moves on to the next node whenever it
    /// is lost. A `heartbeat` of 10 s is added to a URL that sets none. Passwords are never
    /// logged.
    #[arg(
        long,
        env = "REPLOG_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    #[arg(value_parser = parse_broker_urls)]
    pub amqp_url: BrokerUrls,

    /// Prefix of every exchange and queue name, so several clusters can share one broker.
    #[arg(long, env = "REPLOG_NAMESPACE", default_value = "replog", value_parser = parse_namespace)]
    pub namespace: String,

    /// Kind of queue that holds each secondary's entries. Master and secondaries must agree.
    #[arg(long, env = "REPLOG_QUEUE_TYPE", value_enum, default_value_t = QueueType::Classic)]
    pub queue_type: QueueType,
}

impl BrokerArgs {
    /// The broker names these flags describe.
    pub fn topology(&self) -> Topology {
        Topology::new(self.namespace.clone()).with_queue_type(self.queue_type)
    }
}

/// Refuses a malformed URL list at start, saying what is allowed. The parsed value's `Debug`
/// hides passwords, so printing the flags cannot leak one.
fn parse_broker_urls(raw: &str) -> Result<BrokerUrls, String> {
    BrokerUrls::parse(raw)
        .map_err(|error| format!("{error} (expected amqp[s]://user:password@host:port/vhost, or several separated by commas)"))
}

/// Who may use the HTTP API and how long a client may hold it: the token and the bounds of
/// every connection.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Require `Authorization: Bearer <token>` on every request but `GET /health` and
    /// `GET /ready` [default: none, anyone who reaches the port may read and write]. 16 to 1024
    /// visible ASCII characters, e.g. `openssl rand -hex 32`. Never logged.
    #[arg(long, env = "REPLOG_API_TOKEN", hide_env_values = true, value_parser = ApiToken::parse)]
    pub api_token: Option<ApiToken>,

    /// How long a client may take to send a request's headers, and how long an idle keep-alive
    /// connection stays open waiting for the next request (one timer in the HTTP server),
    /// 100 to 300000 ms.
    #[arg(long, env = "REPLOG_HTTP_HEADER_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=300_000))]
    pub http_header_timeout_ms: u64,

    /// How long a request body may stall between two pieces before the request fails,
    /// 100 to 300000 ms.
    #[arg(long, env = "REPLOG_HTTP_BODY_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=300_000))]
    pub http_body_timeout_ms: u64,

    /// Most HTTP connections served at once, 1 to 65536; more wait in the listen backlog.
    #[arg(long, env = "REPLOG_HTTP_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub http_max_connections: u32,

    /// At a stop, how long requests in flight may take to finish (a write waiting for its
    /// write concern, a client reading a long page slowly) before their connections are
    /// closed, 100 to 60000 ms.
    #[arg(long, env = "REPLOG_SHUTDOWN_GRACE_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub shutdown_grace_ms: u64,
}

impl HttpArgs {
    /// The bounds the server loop applies to every connection.
    pub fn limits(&self) -> ServeLimits {
        ServeLimits {
            header_timeout: Duration::from_millis(self.http_header_timeout_ms),
            body_timeout: Duration::from_millis(self.http_body_timeout_ms),
            max_connections: self.http_max_connections as usize,
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
        }
    }
}

/// A namespace becomes part of every queue name, which AMQP caps at 255 bytes: keep it short
/// and readable.
fn parse_namespace(raw: &str) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.len() <= 100
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err("a namespace is 1 to 100 characters of letters, digits, '-', '_' or '.'".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        broker: BrokerArgs,
    }

    #[test]
    fn amqp_url_takes_a_list_and_never_prints_a_password() {
        let flags = Flags::try_parse_from([
            "node",
            "--amqp-url",
            "amqp://u:s3cret@r1:5672/%2f,amqp://u:s3cret@r2:5673/%2f",
            "--queue-type",
            "quorum",
        ])
        .unwrap();
        assert_eq!(flags.broker.amqp_url.len(), 2);
        assert!(!format!("{flags:?}").contains("s3cret"));
        assert_eq!(flags.broker.topology().acks_queue_type(), QueueType::Quorum);
        let error = Flags::try_parse_from(["node", "--amqp-url", "amqp://r1,"]).unwrap_err();
        assert!(error.to_string().contains("comma"), "{error}");
    }

    #[test]
    fn namespaces_fit_queue_names() {
        assert!(parse_namespace("replog").is_ok());
        assert!(parse_namespace("test-5f1c.a_b").is_ok());
        assert!(parse_namespace("").is_err());
        assert!(parse_namespace("a b").is_err());
        assert!(parse_namespace(&"n".repeat(101)).is_err());
    }

    #[derive(Debug, clap::Parser)]
    struct Http {
        #[command(flatten)]
        http: HttpArgs,
    }

    fn http(args: &[&str]) -> Result<HttpArgs, String> {
        use clap::Parser as _;
        Http::try_parse_from(std::iter::once("node").chain(args.iter().copied()))
            .map(|parsed| parsed.http)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn http_bounds_have_defaults_and_refuse_zero_and_absurd_values() {
        let defaults = http(&[]).unwrap();
        assert!(defaults.api_token.is_none());
        assert_eq!(defaults.limits().shutdown_grace, Duration::from_secs(5));
        for flag in [
            "--http-header-timeout-ms",
            "--http-body-timeout-ms",
            "--http-max-connections",
            "--shutdown-grace-ms",
        ] {
            for bad in ["0", "86400001", "soon"] {
                let error = http(&[flag, bad]).unwrap_err();
                assert!(error.contains(flag), "{flag} {bad}: {error}");
            }
        }
        let error = http(&["--http-header-timeout-ms", "0"]).unwrap_err();
        assert!(error.contains("100..=300000"), "{error}");
        assert!(http(&["--api-token", "short"]).is_err());
        let token = http(&["--api-token", "0123456789abcdef"])
            .unwrap()
            .api_token;
        assert_eq!(format!("{token:?}"), "Some(ApiToken(<redacted>))");
    }
}
