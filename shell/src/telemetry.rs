//! Tracing, set up once per process.

use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::EnvFilter;

/// The filter used when `RUST_LOG` is unset: `info`, with lapin's and amq-protocol's own
/// chatter (connection-level detail replog already reports in its own words) at `warn`.
pub const DEFAULT_FILTER: &str = "info,lapin=warn,amq_protocol=warn";

/// Logs to stderr, filtered by `RUST_LOG` (default [`DEFAULT_FILTER`]).
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colours only on a terminal: logs written to files stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .fmt_fields(OneLineFields)
        .try_init();
}

/// Formats an event's fields as tracing-subscriber does by default (strings quoted and
/// escaped), then escapes any line break that is left, e.g. in an error's `Display` that
/// quotes its input: whatever a client or a broker message puts in a value, one event stays one
/// line, and no value can start a line that looks like another event (the checker reads these
/// logs as evidence).
#[derive(Debug, Default, Clone, Copy)]
pub struct OneLineFields;

impl<'writer> FormatFields<'writer> for OneLineFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut line = String::new();
        DefaultFields::new().format_fields(Writer::new(&mut line), fields)?;
        writer.write_str(&escape_line_breaks(&line))
    }
}

/// `\n` and `\r` for line breaks (and the other line separators a viewer may break on).
fn escape_line_breaks(text: &str) -> std::borrow::Cow<'_, str> {
    let breaks = |c: char| {
        matches!(
            c,
            '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{85}' | '\u{2028}' | '\u{2029}'
        )
    };
    if !text.contains(breaks) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if breaks(c) => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_are_escaped_and_nothing_else_changes() {
        assert_eq!(escape_line_breaks("a=1 b=\"x\""), "a=1 b=\"x\"");
        assert_eq!(
            escape_line_breaks("error=bad id a\n2030 DEBUG event=\"acknowledged\"\r\n"),
            "error=bad id a\\n2030 DEBUG event=\"acknowledged\"\\r\\n"
        );
        assert_eq!(escape_line_breaks("x\u{2028}y"), "x\\u{2028}y");
    }

    #[test]
    fn an_event_with_a_line_break_in_a_display_value_stays_one_line() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .fmt_fields(OneLineFields)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let raw = "id\nFORGED event=\"acknowledged\"";
            tracing::info!(error = %raw, quoted = raw, "message with\na break");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(r#"error=id\nFORGED"#), "{text}");
    }
}
