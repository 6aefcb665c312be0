//! Telemetry settings: the `--otel-*` flags, each falling back to the
//! standard OpenTelemetry environment variable, validated once at start.
//! Tracing is off unless an endpoint is set.

use std::time::Duration;

use crate::sample::Sampling;

/// The `--otel-*` flags shared by both planes. Each one left out falls
/// back to its `OTEL_*` environment variable, then to the spec's default.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TelemetryArgs {
    /// OTLP endpoint for traces; tracing is off without one. For
    /// http/protobuf a base URL gets `/v1/traces` appended, like
    /// OTEL_EXPORTER_OTLP_ENDPOINT. [env: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    /// OTEL_EXPORTER_OTLP_ENDPOINT]
    #[arg(long = "otel-endpoint", value_name = "URL")]
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf` (the default). [env:
    /// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL]
    #[arg(long = "otel-protocol", value_name = "PROTOCOL")]
    pub protocol: Option<String>,
    /// Share of new traces to sample, 0 to 1 (parent-based: a client's
    /// sampled context is always followed). [env: OTEL_TRACES_SAMPLER,
    /// OTEL_TRACES_SAMPLER_ARG; default parentbased_traceidratio 1.0]
    #[arg(long = "otel-sampling-ratio", value_name = "RATIO")]
    pub sampling_ratio: Option<f64>,
    /// Spans queued for export at most; more are dropped and counted.
    /// [env: OTEL_BSP_MAX_QUEUE_SIZE; default 2048]
    #[arg(long = "otel-queue-size", value_name = "SPANS")]
    pub queue_size: Option<usize>,
    /// Spans per export call at most. [env: OTEL_BSP_MAX_EXPORT_BATCH_SIZE;
    /// default 512]
    #[arg(long = "otel-batch-size", value_name = "SPANS")]
    pub batch_size: Option<usize>,
    /// Longest a span waits for its batch to fill. [env:
    /// OTEL_BSP_SCHEDULE_DELAY; default 5000]
    #[arg(long = "otel-schedule-delay-ms", value_name = "MS")]
    pub schedule_delay_ms: Option<u64>,
    /// Longest one export call may take before its spans are given up.
    /// [env: OTEL_BSP_EXPORT_TIMEOUT; default 30000]
    #[arg(long = "otel-export-timeout-ms", value_name = "MS")]
    pub export_timeout_ms: Option<u64>,
    /// Attach prompt and completion content to request spans (as logged:
    /// capped, credentials never included). [env:
    /// OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true]
    #[arg(long = "otel-capture-content")]
    pub capture_content: bool,
}

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    HttpProtobuf,
}

/// Validated telemetry settings; `None` from [`Settings::resolve`] means
/// tracing is off.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The URL spans are posted to (for HTTP, with `/v1/traces`).
    pub endpoint: String,
    pub transport: Transport,
    pub sampling: Sampling,
    pub queue_size: usize,
    pub batch_size: usize,
    pub schedule_delay: Duration,
    pub export_timeout: Duration,
    pub capture_content: bool,
    /// Headers sent with every export (a vendor's API key, say).
    pub headers: Headers,
}

/// The collector's headers, from `OTEL_EXPORTER_OTLP_HEADERS` and
/// `OTEL_EXPORTER_OTLP_TRACES_HEADERS` (the latter wins per name). Their
/// values are credentials as often as not: `Debug` shows names only.
#[derive(Clone, Default, PartialEq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Reads `list` ("name=value,name2=value2", values percent-encoded,
    /// as the spec says) over what is already set; `var` names it in an
    /// error, which never shows a value.
    pub(crate) fn read(&mut self, var: &str, list: &str) -> Result<(), String> {
        for item in list.split(',').filter(|i| !i.trim().is_empty()) {
            let Some((k, v)) = item.split_once('=') else {
                return Err(format!(
                    "{var}: an entry has no '=' (expected name=value,...)"
                ));
            };
            let k = k.trim().to_ascii_lowercase();
            if k.is_empty()
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(format!("{var}: '{k}' is not a header name"));
            }
            let v = percent_decode(v.trim()).ok_or_else(|| {
                format!("{var}: the value of '{k}' is not valid percent-encoded UTF-8")
            })?;
            if v.bytes().any(|b| b.is_ascii_control()) {
                return Err(format!(
                    "{var}: the value of '{k}' holds a control character"
                ));
            }
            self.0.retain(|(name, _)| *name != k);
            self.0.push((k, v));
        }
        Ok(())
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| format!("{k}: <redacted>")))
            .finish()
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

const DEFAULT_QUEUE: usize = 2048;
/// A queue this long holds minutes of a busy data plane's spans.
const MAX_QUEUE: usize = 1 << 20;
const DEFAULT_BATCH: usize = 512;
const DEFAULT_DELAY_MS: u64 = 5000;
const DEFAULT_EXPORT_TIMEOUT_MS: u64 = 30_000;

impl Settings {
    /// The settings from the process environment.
    pub fn from_env(args: &TelemetryArgs) -> Result<Option<Settings>, String> {
        Self::resolve(args, |name| {
            std::env::var(name).ok().filter(|v| !v.trim().is_empty())
        })
    }

    /// Flags first, then the variables `env` reads; an error names the
    /// flag or variable that is wrong.
    pub fn resolve(
        args: &TelemetryArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Settings>, String> {
        // The spec's switches that turn an SDK's tracing off, whatever
        // else is set.
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"))
        {
            return Ok(None);
        }
        let protocol = args
            .protocol
            .clone()
            .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"));
        let transport = match protocol.as_deref().map(str::trim) {
            None | Some("http/protobuf") => Transport::HttpProtobuf,
            Some("grpc") => Transport::Grpc,
            Some(other) => {
                return Err(format!(
                    "OTLP protocol '{other}' is not supported: use grpc or http/protobuf"
                ))
            }
        };
        // A signal's own endpoint is used as it is; a base endpoint gets
        // the signal's path over HTTP (the OTLP exporter spec).
        let endpoint = match (
            args.endpoint.clone(),
            env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        ) {
            (Some(e), _) => Some((e, true)),
            (None, Some(e)) => Some((e, false)),
            (None, None) => env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|e| (e, true)),
        };
        let Some((endpoint, base)) = endpoint else {
            return Ok(None);
        };
        let endpoint = endpoint.trim().to_string();
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|e| format!("OTLP endpoint '{endpoint}' is not a URL: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!(
                "OTLP endpoint '{endpoint}' must be an http:// or https:// URL with a host"
            ));
        }
        let endpoint = if transport == Transport::HttpProtobuf && base {
            with_traces_path(&endpoint)
        } else {
            endpoint
        };
        let sampling = match args.sampling_ratio {
            Some(r) => Sampling::parent_based_ratio(r)
                .map_err(|e| format!("--otel-sampling-ratio: {e}"))?,
            None => Sampling::from_env(
                env("OTEL_TRACES_SAMPLER").as_deref(),
                env("OTEL_TRACES_SAMPLER_ARG").as_deref(),
            )?,
        };
        let number = |flag: Option<u64>, var: &str, default: u64| -> Result<u64, String> {
            match flag {
                Some(n) => Ok(n),
                None => match env(var) {
                    Some(v) => v
                        .trim()
                        .parse::<u64>()
                        .map_err(|_| format!("{var}='{v}' is not a whole number")),
                    None => Ok(default),
                },
            }
        };
        let queue_size = number(
            args.queue_size.map(|n| n as u64),
            "OTEL_BSP_MAX_QUEUE_SIZE",
            DEFAULT_QUEUE as u64,
        )?;
        let batch_size = number(
            args.batch_size.map(|n| n as u64),
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            DEFAULT_BATCH as u64,
        )?;
        if queue_size == 0 || batch_size == 0 {
            return Err("the span queue and batch sizes must be at least 1".into());
        }
        if queue_size > MAX_QUEUE as u64 {
            return Err(format!(
                "the span queue holds at most {MAX_QUEUE} spans (OTEL_BSP_MAX_QUEUE_SIZE, --otel-queue-size)"
            ));
        }
        let delay = number(
            args.schedule_delay_ms,
            "OTEL_BSP_SCHEDULE_DELAY",
            DEFAULT_DELAY_MS,
        )?;
        let timeout = number(
            args.export_timeout_ms,
            "OTEL_BSP_EXPORT_TIMEOUT",
            DEFAULT_EXPORT_TIMEOUT_MS,
        )?;
        if timeout == 0 {
            return Err("the export timeout must be above 0 ms".into());
        }
        let capture_content = args.capture_content
            || env("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let queue_size = usize::try_from(queue_size).unwrap_or(usize::MAX);
        let mut headers = Headers::default();
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some(list) = env(var) {
                headers.read(var, &list)?;
            }
        }
        Ok(Some(Settings {
            endpoint,
            transport,
            sampling,
            queue_size,
            // A batch never outgrows the queue (the spec's rule).
            batch_size: usize::try_from(batch_size)
                .unwrap_or(usize::MAX)
                .min(queue_size),
            schedule_delay: Duration::from_millis(delay),
            export_timeout: Duration::from_millis(timeout),
            capture_content,
            headers,
        }))
    }
}

/// A base endpoint with the traces path added (once).
fn with_traces_path(base: &str) -> String {
    if base.ends_with("/v1/traces") {
        return base.to_string();
    }
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(args: &TelemetryArgs, vars: &[(&str, &str)]) -> Result<Option<Settings>, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::resolve(args, |k| vars.get(k).cloned())
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(resolve(&TelemetryArgs::default(), &[]), Ok(None));
        assert_eq!(
            resolve(
                &TelemetryArgs::default(),
                &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]
            ),
            Ok(None)
        );
    }

    #[test]
    fn http_base_endpoints_get_the_traces_path_and_signal_endpoints_do_not() {
        let s = resolve(
            &TelemetryArgs::default(),
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "http://c:4318/v1/traces");
        assert_eq!(s.transport, Transport::HttpProtobuf);
        let s = resolve(
            &TelemetryArgs::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "http://c:4318/custom");
        let s = resolve(
            &TelemetryArgs::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "http://c:4317");
        assert_eq!(s.transport, Transport::Grpc);
    }

    #[test]
    fn flags_win_over_the_environment() {
        let args = TelemetryArgs {
            endpoint: Some("http://flag:4317".into()),
            protocol: Some("grpc".into()),
            sampling_ratio: Some(0.25),
            queue_size: Some(16),
            batch_size: Some(64),
            ..Default::default()
        };
        let s = resolve(
            &args,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "9999"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "http://flag:4317");
        assert_eq!(s.transport, Transport::Grpc);
        assert_eq!(s.queue_size, 16);
        assert_eq!(s.batch_size, 16, "a batch never outgrows the queue");
        assert_eq!(s.sampling, Sampling::parent_based_ratio(0.25).unwrap());
    }

    #[test]
    fn bad_values_name_what_is_wrong() {
        let base = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")];
        let err = |extra: (&str, &str)| {
            let mut v = base.to_vec();
            v.push(extra);
            resolve(&TelemetryArgs::default(), &v).unwrap_err()
        };
        assert!(err(("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")).contains("http/json"));
        assert!(err(("OTEL_BSP_MAX_QUEUE_SIZE", "lots")).contains("OTEL_BSP_MAX_QUEUE_SIZE"));
        assert!(err(("OTEL_BSP_MAX_QUEUE_SIZE", "0")).contains("at least 1"));
        assert!(err(("OTEL_TRACES_SAMPLER", "jaeger_remote")).contains("jaeger_remote"));
        assert!(err(("OTEL_TRACES_SAMPLER_ARG", "1.5")).contains("1.5"));
        let bad_url = resolve(
            &TelemetryArgs::default(),
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")],
        )
        .unwrap_err();
        assert!(bad_url.contains("collector:4317"), "{bad_url}");
    }

    #[test]
    fn the_standard_off_switches_win_over_an_endpoint() {
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            let args = TelemetryArgs {
                endpoint: Some("http://c:4318".into()),
                ..Default::default()
            };
            assert_eq!(resolve(&args, &[off]), Ok(None), "{off:?}");
        }
        let s = resolve(
            &TelemetryArgs::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_SDK_DISABLED", "false"),
                ("OTEL_TRACES_EXPORTER", "otlp"),
            ],
        );
        assert!(matches!(s, Ok(Some(_))));
        let huge = resolve(
            &TelemetryArgs::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "99999999999"),
            ],
        );
        assert!(huge.unwrap_err().contains("at most"));
    }

    #[test]
    fn content_capture_follows_the_genai_variable() {
        let s = resolve(
            &TelemetryArgs::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "TRUE"),
            ],
        )
        .unwrap()
        .unwrap();
        assert!(s.capture_content);
        let s = resolve(
            &TelemetryArgs::default(),
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")],
        )
        .unwrap()
        .unwrap();
        assert!(!s.capture_content);
    }

    #[test]
    fn headers_are_read_decoded_and_never_shown() {
        let s = resolve(
            &TelemetryArgs::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "x-team=a%20b, Authorization=Bearer%20s3cret",
                ),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-team=traces"),
            ],
        )
        .unwrap()
        .unwrap();
        let got: Vec<_> = s.headers.iter().collect();
        assert_eq!(
            got,
            vec![("authorization", "Bearer s3cret"), ("x-team", "traces")]
        );
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("authorization: <redacted>"), "{shown}");
        for bad in ["novalue", "x=%zz", "bad name=1", "x=%0a"] {
            let e = resolve(
                &TelemetryArgs::default(),
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_EXPORTER_OTLP_HEADERS", bad),
                ],
            )
            .unwrap_err();
            assert!(e.starts_with("OTEL_EXPORTER_OTLP_HEADERS"), "{bad}: {e}");
        }
    }
}
