//! A validated write: the body of `POST /messages`, checked field by field so that every
//! mistake gets a message that says what is wrong and what is allowed.
//!
//! The shape a client sends is [`WriteBody`](replog_common::wire::http::WriteBody). The master
//! does not deserialise into it: serde would reject `"w": 2.5` or `"w": "2"` with its own
//! wording, where the client deserves one naming the field and its range. So the raw JSON is
//! read here, and a test below keeps the two in step.

use replog_common::MessageId;
use serde_json::{Map, Value};
use std::time::Duration;

/// A client's write, valid by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRequest {
    /// The payload.
    pub content: String,
    /// Nodes that must hold the entry before the write returns.
    pub w: usize,
    /// The client's id for safe retries, if it chose one.
    pub message_id: Option<MessageId>,
    /// How long to wait for `w`, if the client set a limit.
    pub timeout: Option<Duration>,
}

/// Limits a write is checked against.
#[derive(Debug, Clone, Copy)]
pub struct WriteLimits {
    /// The largest `w`: the master plus every configured secondary.
    pub max_w: usize,
    /// The `w` of a write that sets none.
    pub default_w: usize,
    /// The timeout of a write that sets none.
    pub default_timeout: Option<Duration>,
}

/// What is wrong with a write, phrased for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidWrite(pub String);

impl WriteRequest {
    /// Parses and validates a request body. Unknown fields are ignored.
    pub fn parse(body: &[u8], limits: WriteLimits) -> Result<WriteRequest, InvalidWrite> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| InvalidWrite(format!("the body must be a JSON object: {e}")))?;
        let Value::Object(fields) = value else {
            return Err(InvalidWrite(
                r#"the body must be a JSON object like {"content": "hello", "w": 2}"#.into(),
            ));
        };
        Ok(WriteRequest {
            content: content(&fields)?,
            w: w(&fields, limits)?,
            message_id: message_id(&fields)?,
            timeout: timeout(&fields)?.or(limits.default_timeout),
        })
    }
}

/// A field that is absent or `null` counts as not given.
fn given<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    fields.get(name).filter(|value| !value.is_null())
}

fn content(fields: &Map<String, Value>) -> Result<String, InvalidWrite> {
    match given(fields, "content") {
        Some(Value::String(content)) => Ok(content.clone()),
        Some(_) => Err(InvalidWrite("`content` must be a string".into())),
        None => Err(InvalidWrite("`content` is required (a string)".into())),
    }
}

fn w(fields: &Map<String, Value>, limits: WriteLimits) -> Result<usize, InvalidWrite> {
    let Some(value) = given(fields, "w") else {
        return Ok(limits.default_w);
    };
    value
        .as_u64()
        .and_then(|w| usize::try_from(w).ok())
        .filter(|w| (1..=limits.max_w).contains(w))
        .ok_or_else(|| {
            InvalidWrite(format!(
                "`w` must be an integer from 1 to {} (1 = master only, {} = every node), got {value}",
                limits.max_w, limits.max_w
            ))
        })
}

fn message_id(fields: &Map<String, Value>) -> Result<Option<MessageId>, InvalidWrite> {
    let Some(value) = given(fields, "message_id") else {
        return Ok(None);
    };
    value
        .as_str()
        .and_then(MessageId::parse)
        .map(Some)
        .ok_or_else(|| {
            InvalidWrite(format!(
                "`message_id` must be a non-empty string of at most {} bytes",
                MessageId::MAX_LEN
            ))
        })
}

fn timeout(fields: &Map<String, Value>) -> Result<Option<Duration>, InvalidWrite> {
    let Some(value) = given(fields, "timeout_ms") else {
        return Ok(None);
    };
    value
        .as_u64()
        .map(|ms| Some(Duration::from_millis(ms)))
        .ok_or_else(|| {
            InvalidWrite(format!(
                "`timeout_ms` must be a non-negative integer (milliseconds), got {value}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: WriteLimits = WriteLimits {
        max_w: 3,
        default_w: 3,
        default_timeout: None,
    };

    fn parse(body: &str) -> Result<WriteRequest, InvalidWrite> {
        WriteRequest::parse(body.as_bytes(), LIMITS)
    }

    fn error(body: &str) -> String {
        parse(body).unwrap_err().0
    }

    #[test]
    fn a_minimal_write_takes_the_defaults() {
        let write = parse(r#"{"content":"hello"}"#).unwrap();
        assert_eq!(write.content, "hello");
        assert_eq!(write.w, 3);
        assert_eq!(write.message_id, None);
        assert_eq!(write.timeout, None);
    }

    #[test]
    fn every_field_is_read() {
        let write =
            parse(r#"{"content":"x","w":2,"message_id":"abc","timeout_ms":1500,"extra":true}"#)
                .unwrap();
        assert_eq!(write.w, 2);
        assert_eq!(write.message_id.unwrap().as_str(), "abc");
        assert_eq!(write.timeout, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn the_server_timeout_applies_when_the_client_sets_none() {
        let limits = WriteLimits {
            default_timeout: Some(Duration::from_secs(2)),
            ..LIMITS
        };
        let write = WriteRequest::parse(br#"{"content":"x"}"#, limits).unwrap();
        assert_eq!(write.timeout, Some(Duration::from_secs(2)));
        let write = WriteRequest::parse(br#"{"content":"x","timeout_ms":5}"#, limits).unwrap();
        assert_eq!(write.timeout, Some(Duration::from_millis(5)));
    }

    #[test]
    fn the_body_a_client_sends_is_the_write_the_master_reads() {
        use replog_common::wire::http::WriteBody;
        let body = WriteBody {
            content: "x".into(),
            w: Some(2),
            message_id: Some("abc".into()),
            timeout_ms: Some(1500),
        };
        let write = WriteRequest::parse(&serde_json::to_vec(&body).unwrap(), LIMITS).unwrap();
        assert_eq!(
            write,
            WriteRequest {
                content: "x".into(),
                w: 2,
                message_id: MessageId::parse("abc"),
                timeout: Some(Duration::from_millis(1500)),
            }
        );
        let bare = WriteBody {
            content: "y".into(),
            w: None,
            message_id: None,
            timeout_ms: None,
        };
        let write = WriteRequest::parse(&serde_json::to_vec(&bare).unwrap(), LIMITS).unwrap();
        assert_eq!((write.w, write.message_id, write.timeout), (3, None, None));
    }

    #[test]
    fn malformed_bodies_are_rejected() {
        assert!(error("{").contains("JSON object"));
        assert!(error("").contains("JSON object"));
        assert!(error(r#"["content"]"#).contains("JSON object"));
        assert!(error("content=hello").contains("JSON object"));
    }

    #[test]
    fn content_must_be_a_string() {
        assert!(error(r#"{"w":1}"#).contains("`content` is required"));
        assert!(error(r#"{"content":null}"#).contains("`content` is required"));
        assert!(error(r#"{"content":5}"#).contains("`content` must be a string"));
        assert!(error(r#"{"content":["a"]}"#).contains("`content` must be a string"));
        assert_eq!(parse(r#"{"content":""}"#).unwrap().content, "");
    }

    #[test]
    fn w_must_be_an_integer_in_range() {
        for bad in [
            "0",
            "4",
            "-1",
            "2.5",
            "2.0",
            "\"2\"",
            "true",
            "99999999999999999999",
        ] {
            let message = error(&format!(r#"{{"content":"x","w":{bad}}}"#));
            assert!(
                message.contains("`w` must be an integer from 1 to 3"),
                "{bad}: {message}"
            );
        }
        for good in 1..=3 {
            assert_eq!(
                parse(&format!(r#"{{"content":"x","w":{good}}}"#))
                    .unwrap()
                    .w,
                good
            );
        }
    }

    #[test]
    fn message_id_and_timeout_are_checked() {
        assert!(error(r#"{"content":"x","message_id":""}"#).contains("`message_id`"));
        assert!(error(r#"{"content":"x","message_id":7}"#).contains("`message_id`"));
        let long = "m".repeat(257);
        assert!(
            error(&format!(r#"{{"content":"x","message_id":"{long}"}}"#)).contains("`message_id`")
        );
        assert!(error(r#"{"content":"x","timeout_ms":-1}"#).contains("`timeout_ms`"));
        assert!(error(r#"{"content":"x","timeout_ms":"5"}"#).contains("`timeout_ms`"));
        assert!(error(r#"{"content":"x","timeout_ms":1.5}"#).contains("`timeout_ms`"));
    }
}
