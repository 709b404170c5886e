//! Logs and traces. See the README, "Observability".
//!
//! Logs go to stderr (so `token` output stays clean), filtered by `RUST_LOG` (default
//! `info`), as JSON lines or human-readable text; every line written inside a span carries
//! that span's `trace_id` and `span_id`.
//!
//! Traces are OpenTelemetry spans built from `tracing` spans and exported over OTLP/gRPC
//! in batches from a bounded queue on a thread of their own, so a collector that is slow
//! or down never slows a request: spans that do not fit are dropped and counted. They are
//! configured only by the standard `OTEL_*` variables. A tracer provider is installed even
//! when nothing is exported, so every request still has a real trace id for its logs and
//! for the history and events it writes (the database's spans are then not made at all:
//! see [`trace_filter`]). Trace spans have their own filter: `RUST_LOG`
//! changes what is logged, never what is traced.

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use opentelemetry::{
    propagation::{Extractor, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    propagation::TraceContextPropagator,
    trace::{SdkTracerProvider, SpanData, SpanExporter},
};
use tracing::span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    filter::{LevelFilter, Targets},
    fmt::{
        FmtContext, FormatEvent, FormatFields, FormattedFields,
        format::{Format, Full, Json, Writer},
    },
    layer::{Context, SubscriberExt},
    registry::LookupSpan,
    util::SubscriberInitExt,
};

use crate::{domain::TraceId, store};

/// How log lines are written (`DISPUTE_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// The name traces carry when `OTEL_SERVICE_NAME` does not give one.
const DEFAULT_SERVICE_NAME: &str = "dispute-service";
/// How long a command other than `serve` waits for its last spans to be exported.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Spans handed to the exporter, and spans lost because an export failed. Process-wide,
/// like the tracer provider; `/metrics` reads them.
static SPANS_EXPORTED: AtomicU64 = AtomicU64::new(0);
static SPANS_EXPORT_FAILED: AtomicU64 = AtomicU64::new(0);
/// Spans the service finished (exported, queued, or dropped because the queue was full).
static SPANS_ENDED: AtomicU64 = AtomicU64::new(0);

/// Span counters for `/metrics`: (ended, exported, lost in a failed export).
pub fn span_counters() -> (u64, u64, u64) {
    (
        SPANS_ENDED.load(Ordering::Relaxed),
        SPANS_EXPORTED.load(Ordering::Relaxed),
        SPANS_EXPORT_FAILED.load(Ordering::Relaxed),
    )
}

/// Where traces go, read from the standard `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceExport {
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`; `None`
    /// exports nothing.
    pub endpoint: Option<String>,
}

impl TraceExport {
    /// Reads the environment. Only OTLP over gRPC is built in: another protocol is a
    /// configuration error, not a silent fallback.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(protocol) = var(name) {
                anyhow::ensure!(
                    protocol == "grpc",
                    "{name}={protocol:?}: only \"grpc\" (OTLP over gRPC) is supported"
                );
                break;
            }
        }
        let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .filter(|_| !disabled);
        Ok(Self { endpoint })
    }
}

/// Keeps the tracer provider; [`Telemetry::shutdown`] exports what is still queued.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Installs the process's subscriber: logs in `format`, traces to `export`. Must run
    /// inside the tokio runtime (the OTLP exporter's channel lives there).
    pub fn init(format: LogFormat, export: &TraceExport) -> anyhow::Result<Self> {
        let provider = tracer_provider(export)?;
        let tracer = provider.tracer(DEFAULT_SERVICE_NAME);
        let logs = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        // A directive scoped to a span (`target[span{field=value}]=level`, written with its
        // `[` as the filter parsed it) needs the filter to follow which span is entered;
        // without one nothing in the log layer reads entries, and it is not told of them
        // ([`Unentered`]).
        let scoped = logs.to_string().contains('[');
        let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let fmt = match format {
            LogFormat::Json => fmt
                .event_format(WithTraceIds(Format::default().json().with_span_list(false)))
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .with_filter(logs)
                .boxed(),
            LogFormat::Pretty => fmt
                .event_format(WithTraceIds(Format::default()))
                .with_filter(logs)
                .boxed(),
        };
        let fmt = if scoped { fmt } else { Unentered(fmt).boxed() };
        // Nothing here reads OpenTelemetry's current context (a span's trace id is read
        // from the span), so entering a span does not make it current; nor are its busy and
        // idle times kept. Both cost a lock, and the first a context on a thread-local
        // stack, at every poll of every traced future. Nor is the layer told of entries and
        // exits at all ([`Unentered`]).
        let traces = Unentered(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_context_activation(false)
                .with_tracked_inactivity(false)
                .with_filter(trace_filter()),
        );
        // A second init (tests) keeps the first subscriber, and what it makes.
        if Registry::default()
            .with(fmt)
            .with(traces)
            .try_init()
            .is_ok()
        {
            store::make_database_spans(export.endpoint.is_some());
        }
        Ok(Self { provider })
    }

    /// Exports the spans still queued (SIGTERM); gives up after a few seconds.
    pub async fn shutdown(self, within: Duration) {
        let provider = self.provider;
        let flush = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(within));
        // The exporter's own timeout is a hint to it; the budget is kept here.
        let _ = tokio::time::timeout(within, flush).await;
    }
}

/// A layer that is not told when a span is entered or left, and is told everything else.
///
/// A future's span is entered and left at every poll of the future: a dozen times and more
/// per call (every reply from PostgreSQL wakes the call's task). The OpenTelemetry layer,
/// told of each exit, looked the span up, locked it twice and read the clock to note the
/// span's end, and each layer's per-layer filter looked the span up again at every entry
/// and exit: an entry and an exit cost about 1,400 instructions, of which this saves about
/// 1,150 (BENCHMARKS.md, "Against the database floor"). Untold, a span ends when it
/// closes, which for an instrumented future is when the future is dropped, right after its
/// last poll. Nothing else either layer does reads the entries: no span is made
/// OpenTelemetry's current context, and no busy or idle time is kept
/// ([`Telemetry::init`]); a `RUST_LOG` directive scoped to a span does, and then the log
/// layer is told.
struct Unentered<L>(L);

impl<S: tracing::Subscriber, L: Layer<S>> Layer<S> for Unentered<L> {
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.0.on_register_dispatch(subscriber);
    }
    fn on_layer(&mut self, subscriber: &mut S) {
        self.0.on_layer(subscriber);
    }
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        self.0.register_callsite(metadata)
    }
    fn enabled(&self, metadata: &tracing::Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.0.enabled(metadata, ctx)
    }
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.0.on_new_span(attrs, id, ctx);
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.0.max_level_hint()
    }
    fn on_record(&self, span: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.0.on_record(span, values, ctx);
    }
    fn on_follows_from(&self, span: &span::Id, follows: &span::Id, ctx: Context<'_, S>) {
        self.0.on_follows_from(span, follows, ctx);
    }
    fn event_enabled(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) -> bool {
        self.0.event_enabled(event, ctx)
    }
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        self.0.on_event(event, ctx);
    }
    fn on_enter(&self, _: &span::Id, _: Context<'_, S>) {}
    fn on_exit(&self, _: &span::Id, _: Context<'_, S>) {}
    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        self.0.on_close(id, ctx);
    }
    fn on_id_change(&self, old: &span::Id, new: &span::Id, ctx: Context<'_, S>) {
        self.0.on_id_change(old, new, ctx);
    }
    /// The layer within answers for itself: the registry finds its per-layer filter
    /// through this, and `OpenTelemetrySpanExt` its tracer (a remote parent, a span's
    /// trace id).
    #[allow(unsafe_code)]
    unsafe fn downcast_raw(&self, id: std::any::TypeId) -> Option<*const ()> {
        if id == std::any::TypeId::of::<Self>() {
            Some(std::ptr::from_ref(self).cast())
        } else {
            // SAFETY: the pointer the layer within returns for `id`, unchanged: that layer
            // upholds the method's contract for it.
            unsafe { self.0.downcast_raw(id) }
        }
    }
}

/// The service's own spans at `info` and above, whatever `RUST_LOG` says; nothing from
/// libraries (their spans would carry SQL text and tokens we do not control). The
/// database's spans (a transaction's and each statement's, `store`) are made only when
/// they are exported ([`store::make_database_spans`]): a dozen per write, they are not
/// made for the logs alone. The spans that give a request its trace id (the RPC's, the
/// worker's and the relay's) are always made.
fn trace_filter() -> Targets {
    Targets::new()
        .with_target(env!("CARGO_CRATE_NAME"), LevelFilter::INFO)
        .with_default(LevelFilter::OFF)
}

fn tracer_provider(export: &TraceExport) -> anyhow::Result<SdkTracerProvider> {
    let mut resource = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    if !named {
        resource = resource.with_service_name(DEFAULT_SERVICE_NAME);
    }
    // The sampler (OTEL_TRACES_SAMPLER/_ARG) and the batch settings (OTEL_BSP_*) are read
    // from the environment by the SDK itself.
    let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
    if let Some(endpoint) = &export.endpoint {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()?;
        builder = builder.with_batch_exporter(CountingExporter(exporter));
    }
    Ok(builder.with_span_processor(CountEnded).build())
}

/// Counts what the exporter was given and what it failed to deliver.
#[derive(Debug)]
struct CountingExporter<E>(E);

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.0.export(batch).await;
        match &result {
            Ok(()) => SPANS_EXPORTED.fetch_add(n, Ordering::Relaxed),
            Err(_) => SPANS_EXPORT_FAILED.fetch_add(n, Ordering::Relaxed),
        };
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

/// Counts every span that ends, exported or not.
#[derive(Debug)]
struct CountEnded;

impl opentelemetry_sdk::trace::SpanProcessor for CountEnded {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}

    fn on_end(&self, _: SpanData) {
        SPANS_ENDED.fetch_add(1, Ordering::Relaxed);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Makes `span` a child of the caller's span named by the W3C `traceparent` and
/// `tracestate` headers (if any), and returns the span's trace id: the one written to the
/// history and events. Without a tracing layer (some tests) the caller's trace id, or a
/// new one, is used.
pub fn adopt_remote_parent(span: &tracing::Span, headers: &http::HeaderMap) -> TraceId {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let remote = parent.span().span_context().clone();
    if remote.is_valid() {
        let _ = span.set_parent(parent);
    }
    trace_id_of(span)
        .or_else(|| {
            remote
                .is_valid()
                .then(|| TraceId::parse(&remote.trace_id().to_string()))
                .flatten()
        })
        .unwrap_or_default()
}

/// The trace id of `span`, or a new one when spans are not traced.
pub fn trace_id(span: &tracing::Span) -> TraceId {
    trace_id_of(span).unwrap_or_default()
}

fn trace_id_of(span: &tracing::Span) -> Option<TraceId> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| TraceId::parse(&span_context.trace_id().to_string()))
        .flatten()
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// A log line formatter that adds the trace and span id of the span it is written in.
struct WithTraceIds<F>(F);

/// Trace and span id (hex) of the innermost traced span in scope.
fn ids_in_scope<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<(String, String)>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let spans: Vec<_> = ctx.event_scope()?.map(|span| span.id()).collect();
    tracing::dispatcher::get_default(|dispatch| {
        spans.iter().find_map(|id| {
            let context = tracing_opentelemetry::get_otel_context(id, dispatch)?;
            let span_context = context.span().span_context().clone();
            span_context.is_valid().then(|| {
                (
                    span_context.trace_id().to_string(),
                    span_context.span_id().to_string(),
                )
            })
        })
    })
}

impl<S, N> FormatEvent<S, N> for WithTraceIds<Format<Full>>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        if let Some((trace_id, span_id)) = ids_in_scope(ctx) {
            write!(writer, "trace_id={trace_id} span_id={span_id} ")?;
        }
        self.0.format_event(ctx, writer, event)
    }
}

impl<S, N> FormatEvent<S, N> for WithTraceIds<Format<Json>>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    for<'a> FormattedFields<N>: 'a,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let Some((trace_id, span_id)) = ids_in_scope(ctx) else {
            return writer.write_str(&line);
        };
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&line) {
            Ok(mut object) => {
                object.insert("trace_id".into(), trace_id.into());
                object.insert("span_id".into(), span_id.into());
                writeln!(writer, "{}", serde_json::Value::Object(object))
            }
            Err(_) => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint_or_when_disabled() {
        assert_eq!(TraceExport::from_vars(vars(&[])).unwrap().endpoint, None);
        let disabled = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ];
        assert_eq!(
            TraceExport::from_vars(vars(&disabled)).unwrap().endpoint,
            None
        );
        let none = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ];
        assert_eq!(TraceExport::from_vars(vars(&none)).unwrap().endpoint, None);
    }

    #[test]
    fn the_traces_endpoint_wins_over_the_general_one() {
        let both = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
        ];
        assert_eq!(
            TraceExport::from_vars(vars(&both))
                .unwrap()
                .endpoint
                .as_deref(),
            Some("http://traces:4317")
        );
    }

    #[test]
    fn only_the_grpc_protocol_is_accepted() {
        let grpc = [("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")];
        assert!(TraceExport::from_vars(vars(&grpc)).is_ok());
        let http = [("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")];
        let error = TraceExport::from_vars(vars(&http)).unwrap_err().to_string();
        assert!(error.contains("only \"grpc\""), "{error}");
        // The signal-specific variable is the one that counts.
        let specific = [
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ];
        assert!(TraceExport::from_vars(vars(&specific)).is_ok());
    }
}
