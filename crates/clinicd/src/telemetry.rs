//! Logging: JSON lines through tracing, with no PHI or secret in any line by construction.
//!
//! 1. Nothing logs request or response bodies, headers, query strings or raw paths (the
//!    access log names the route template; see `clinicd_api::middleware::context`).
//! 2. SQL statement logging is off (`DatabaseSettings::connect_options`).
//! 3. As a last line, [`Redacting`] rewrites every line before it is written: the value of any
//!    field whose name looks sensitive (`password`, `token`, `ssn`, ...) becomes `[REDACTED]`,
//!    and a line that is not valid JSON is dropped rather than written unchecked.

use std::io::{self, Write};

use serde_json::Value;
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Registry};

/// Field-name fragments whose values never reach a log line.
const SENSITIVE: [&str; 22] = [
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "cookie",
    "ssn",
    "social_security",
    "dob",
    "birth",
    "otp",
    "mfa_code",
    "backup_code",
    "api_key",
    "apikey",
    "private_key",
    "signing_key",
    "master_key",
    "credential",
    "member_number",
    "insurance_number",
    "phone",
];
pub const REDACTED: &str = "[REDACTED]";

/// A JSON subscriber writing through [`Redacting`] to `writer`.
pub fn subscriber<W>(filter: &str, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let layer = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .with_writer(Redacting(writer));
    Registry::default().with(filter).with(layer)
}

/// Installs the process-wide subscriber writing to stdout, and the panic hook.
pub fn init(filter: &str) -> Result<(), tracing::subscriber::SetGlobalDefaultError> {
    tracing::subscriber::set_global_default(subscriber(filter, io::stdout))?;
    std::panic::set_hook(Box::new(log_panic));
    Ok(())
}

/// A panic goes to the log like any other error, through the redacting writer, with where it
/// happened but not its message (which can quote a value) and without a backtrace; the default
/// hook would print both to stderr, past the redaction.
pub fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let location = info
        .location()
        .map(|l| format!("{}:{}", l.file(), l.line()))
        .unwrap_or_default();
    tracing::error!(location = %location, "panic");
}

/// Wraps a writer so that each line is redacted before it is written.
#[derive(Debug)]
pub struct Redacting<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            inner: self.0.make_writer(),
            line: Vec::with_capacity(512),
        }
    }
}

/// Buffers one event (the fmt layer makes a writer per event) and writes it redacted on drop.
#[derive(Debug)]
pub struct RedactingWriter<W: Write> {
    inner: W,
    line: Vec<u8>,
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        for line in self.line.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let out = redact_line(line);
            // Nowhere to report a failed log write; dropping the line is the safe choice.
            let _ = self.inner.write_all(&out).and_then(|()| self.inner.flush());
        }
    }
}

fn redact_line(line: &[u8]) -> Vec<u8> {
    let mut out = match serde_json::from_slice::<Value>(line) {
        Ok(mut value) => {
            redact(&mut value);
            serde_json::to_vec(&value).unwrap_or_else(|_| dropped_line())
        }
        Err(_) => dropped_line(),
    };
    out.push(b'\n');
    out
}

fn dropped_line() -> Vec<u8> {
    br#"{"level":"ERROR","message":"a log line that was not valid JSON was dropped"}"#.to_vec()
}

fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                if is_sensitive(key) {
                    *field = Value::String(REDACTED.into());
                } else {
                    redact(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

fn is_sensitive(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SENSITIVE.iter().any(|fragment| key.contains(fragment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_sensitive_fields_at_any_depth() {
        let line = br#"{"message":"m","password":"hunter2","span":{"access_token":"abc","route":"/x"},"list":[{"patient_ssn":"123-45-6789"}]}"#;
        let out = String::from_utf8(redact_line(line)).expect("utf8");
        for secret in ["hunter2", "abc", "123-45-6789"] {
            assert!(!out.contains(secret), "{out}");
        }
        assert!(out.contains(r#""route":"/x""#), "{out}");
        assert_eq!(out.matches(REDACTED).count(), 3, "{out}");
    }

    #[test]
    fn drops_lines_that_are_not_json() {
        let out = String::from_utf8(redact_line(b"password=hunter2")).expect("utf8");
        assert!(!out.contains("hunter2"));
        assert!(out.contains("dropped"));
    }
}
