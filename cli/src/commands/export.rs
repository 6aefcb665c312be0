//! `llmgw logs export` (#18): the records a filter matches, oldest first,
//! streamed from the control plane (`ExportLogs`, a page at a time) into a
//! file as JSON lines, CSV or Parquet. Each page is written as it arrives,
//! so memory stays bounded by a page (and, for Parquet, by one row group)
//! whatever the export's size. A file is written beside its path and
//! renamed into place when the export is complete, so a failed export
//! never leaves a file that looks whole.

use std::borrow::Cow;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
    UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use llmgw_proto::v1::{ExportLogsRequest, Outcome, RequestLog};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::args::{ExportArgs, ExportFormat, GlobalOpts};
use crate::client::Client;

/// Rows per Parquet row group: what the writer holds before it flushes.
const ROW_GROUP: usize = 65_536;

/// How a column's value is read from a record.
#[derive(Clone, Copy)]
enum Value {
    Text(fn(&RequestLog) -> Cow<'_, str>),
    U64(fn(&RequestLog) -> u64),
    F64(fn(&RequestLog) -> f64),
    Bool(fn(&RequestLog) -> bool),
    /// Unix milliseconds, a UTC timestamp in Parquet.
    Time(fn(&RequestLog) -> i64),
    I64(fn(&RequestLog) -> i64),
}

/// The columns of CSV and Parquet exports, in order: every summary field
/// of a record. The attempts are counted here; JSON lines carry them whole.
const COLUMNS: &[(&str, Value)] = &[
    ("id", Value::Text(|r| Cow::Borrowed(&r.id))),
    ("time", Value::Time(|r| r.time_ms)),
    ("time_ms", Value::I64(|r| r.time_ms)),
    ("node_id", Value::Text(|r| Cow::Borrowed(&r.node_id))),
    ("key", Value::Text(|r| Cow::Borrowed(&r.key))),
    ("user", Value::Text(|r| Cow::Borrowed(&r.user))),
    ("client_ip", Value::Text(|r| Cow::Borrowed(&r.client_ip))),
    ("user_agent", Value::Text(|r| Cow::Borrowed(&r.user_agent))),
    ("protocol", Value::Text(|r| Cow::Borrowed(&r.protocol))),
    (
        "upstream_protocol",
        Value::Text(|r| Cow::Borrowed(&r.upstream_protocol)),
    ),
    ("translated", Value::Bool(|r| r.translated)),
    ("path", Value::Text(|r| Cow::Borrowed(&r.path))),
    ("model", Value::Text(|r| Cow::Borrowed(&r.model))),
    ("provider", Value::Text(|r| Cow::Borrowed(&r.provider))),
    (
        "upstream_model",
        Value::Text(|r| Cow::Borrowed(&r.upstream_model)),
    ),
    ("status", Value::U64(|r| u64::from(r.status))),
    (
        "outcome",
        Value::Text(|r| Cow::Borrowed(Outcome::try_from(r.outcome).map_or("", Outcome::name))),
    ),
    ("stream", Value::Bool(|r| r.stream)),
    ("cancelled", Value::Bool(|r| r.cancelled)),
    ("latency_ms", Value::U64(|r| r.latency_ms)),
    ("ttfb_ms", Value::U64(|r| r.ttfb_ms)),
    ("attempts", Value::U64(|r| r.attempts.len() as u64)),
    ("retries", Value::U64(|r| u64::from(r.retries))),
    ("input_tokens", Value::U64(|r| r.input_tokens)),
    ("output_tokens", Value::U64(|r| r.output_tokens)),
    ("cache_read_tokens", Value::U64(|r| r.cache_read_tokens)),
    (
        "cache_creation_tokens",
        Value::U64(|r| r.cache_creation_tokens),
    ),
    ("reasoning_tokens", Value::U64(|r| r.reasoning_tokens)),
    // Audio and image requests (#16); 0 or empty elsewhere.
    ("audio_milliseconds", Value::U64(|r| r.audio_milliseconds)),
    (
        "audio_source",
        Value::Text(|r| Cow::Borrowed(&r.audio_source)),
    ),
    ("characters", Value::U64(|r| r.characters)),
    ("images", Value::U64(|r| u64::from(r.images))),
    ("image_size", Value::Text(|r| Cow::Borrowed(&r.image_size))),
    (
        "image_quality",
        Value::Text(|r| Cow::Borrowed(&r.image_quality)),
    ),
    (
        "usage_source",
        Value::Text(|r| Cow::Borrowed(&r.usage_source)),
    ),
    (
        "count_source",
        Value::Text(|r| Cow::Borrowed(&r.count_source)),
    ),
    ("cost", Value::F64(|r| r.cost)),
    ("cost_nanos", Value::I64(|r| r.cost_nanos)),
    ("error", Value::Text(|r| Cow::Borrowed(&r.error))),
    (
        "stop_reason",
        Value::Text(|r| Cow::Borrowed(&r.stop_reason)),
    ),
    ("limited_by", Value::Text(|r| Cow::Borrowed(&r.limited_by))),
    (
        "dropped_fields",
        Value::Text(|r| Cow::Owned(r.dropped_fields.join(","))),
    ),
    ("trace_id", Value::Text(|r| Cow::Borrowed(&r.trace_id))),
    ("origin", Value::Text(|r| Cow::Borrowed(&r.origin))),
    ("replay_of", Value::Text(|r| Cow::Borrowed(&r.replay_of))),
    ("snapshot_version", Value::U64(|r| r.snapshot_version)),
];

pub async fn run(a: Box<ExportArgs>, g: &GlobalOpts) -> Result<()> {
    let a = *a;
    let format = a
        .format
        .or_else(|| a.file.as_deref().and_then(format_of))
        .unwrap_or(ExportFormat::Ndjson);
    let file = a.file.filter(|p| p.as_os_str() != "-");
    let c = Client::connect(g).await?;
    let mut stream = c
        .api()
        .export_logs(ExportLogsRequest {
            filter: Some(super::logs::filter(&a.filter)),
        })
        .await
        .map_err(|s| c.fail(s))?
        .into_inner();
    let target = Target::new(file.as_deref());
    let mut sink = Sink::new(format, BufWriter::with_capacity(1 << 16, target.writer()?))?;
    let mut n: u64 = 0;
    while let Some(page) = stream.message().await.map_err(|s| c.fail(s))? {
        sink.page(&page.records)?;
        n += page.records.len() as u64;
    }
    sink.finish()?;
    target.commit()?;
    let to = file.map_or_else(|| "stdout".to_string(), |p| p.display().to_string());
    let _ = writeln!(std::io::stderr().lock(), "exported {n} records to {to}");
    Ok(())
}

/// A format named by a file's extension.
fn format_of(path: &Path) -> Option<ExportFormat> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "ndjson" | "jsonl" | "json" => Some(ExportFormat::Ndjson),
        "csv" => Some(ExportFormat::Csv),
        "parquet" | "pq" => Some(ExportFormat::Parquet),
        _ => None,
    }
}

/// Where an export goes: stdout, or a file written beside its path and
/// renamed into place by [`Target::commit`].
struct Target {
    /// The final path and the one being written.
    file: Option<(PathBuf, PathBuf)>,
}

impl Target {
    fn new(path: Option<&Path>) -> Target {
        let file = path.map(|p| {
            let mut partial = p.as_os_str().to_owned();
            partial.push(".partial");
            (p.to_path_buf(), PathBuf::from(partial))
        });
        Target { file }
    }

    fn writer(&self) -> Result<Box<dyn Write + Send>> {
        Ok(match &self.file {
            Some((_, partial)) => Box::new(
                std::fs::File::create(partial)
                    .with_context(|| format!("cannot create {}", partial.display()))?,
            ),
            None => Box::new(std::io::stdout()),
        })
    }

    fn commit(self) -> Result<()> {
        if let Some((path, partial)) = &self.file {
            std::fs::rename(partial, path)
                .with_context(|| format!("cannot move the export to {}", path.display()))?;
        }
        Ok(())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // Not committed (an error on the way): no half-written file stays.
        if let Some((_, partial)) = &self.file {
            let _ = std::fs::remove_file(partial);
        }
    }
}

type Out = BufWriter<Box<dyn Write + Send>>;

/// A format's writer, fed a page of records at a time.
enum Sink {
    Ndjson(Out),
    Csv(Box<csv::Writer<Out>>),
    Parquet(Box<ArrowWriter<Out>>, Arc<Schema>),
}

impl Sink {
    fn new(format: ExportFormat, out: Out) -> Result<Sink> {
        Ok(match format {
            ExportFormat::Ndjson => Sink::Ndjson(out),
            ExportFormat::Csv => {
                let mut w = csv::Writer::from_writer(out);
                w.write_record(COLUMNS.iter().map(|(name, _)| *name))?;
                Sink::Csv(Box::new(w))
            }
            ExportFormat::Parquet => {
                let schema = Arc::new(schema());
                let props = WriterProperties::builder()
                    .set_max_row_group_row_count(Some(ROW_GROUP))
                    .set_compression(Compression::SNAPPY)
                    .build();
                let w = ArrowWriter::try_new(out, Arc::clone(&schema), Some(props))?;
                Sink::Parquet(Box::new(w), schema)
            }
        })
    }

    fn page(&mut self, records: &[RequestLog]) -> Result<()> {
        match self {
            Sink::Ndjson(w) => {
                for r in records {
                    serde_json::to_writer(&mut *w, r)?;
                    w.write_all(b"\n")?;
                }
            }
            Sink::Csv(w) => {
                for r in records {
                    for (_, v) in COLUMNS {
                        w.write_field(text(*v, r).as_bytes())?;
                    }
                    w.write_record(std::iter::empty::<&[u8]>())?;
                }
            }
            Sink::Parquet(w, schema) => {
                let columns = COLUMNS.iter().map(|(_, v)| column(*v, records)).collect();
                w.write(&RecordBatch::try_new(Arc::clone(schema), columns)?)?;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        let mut out = match self {
            Sink::Ndjson(w) => w,
            Sink::Csv(w) => w
                .into_inner()
                .map_err(|e| anyhow!("cannot write the export: {}", e.error()))?,
            Sink::Parquet(w, _) => w.into_inner()?,
        };
        out.flush()?;
        Ok(())
    }
}

/// The Arrow schema of [`COLUMNS`].
fn schema() -> Schema {
    Schema::new(
        COLUMNS
            .iter()
            .map(|(name, v)| {
                let t = match v {
                    Value::Text(_) => DataType::Utf8,
                    Value::U64(_) => DataType::UInt64,
                    Value::F64(_) => DataType::Float64,
                    Value::Bool(_) => DataType::Boolean,
                    Value::Time(_) => {
                        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
                    }
                    Value::I64(_) => DataType::Int64,
                };
                Field::new(*name, t, false)
            })
            .collect::<Vec<_>>(),
    )
}

/// One column of a page, as an Arrow array.
fn column(v: Value, records: &[RequestLog]) -> ArrayRef {
    let n = records.len();
    // Each kind: its builder, a value per record, the array.
    macro_rules! build {
        ($builder:expr, $f:expr) => {{
            let mut b = $builder;
            records.iter().for_each(|r| b.append_value($f(r)));
            Arc::new(b.finish())
        }};
    }
    match v {
        Value::Text(f) => build!(StringBuilder::with_capacity(n, n * 16), f),
        Value::U64(f) => build!(UInt64Builder::with_capacity(n), f),
        Value::F64(f) => build!(Float64Builder::with_capacity(n), f),
        Value::Bool(f) => build!(BooleanBuilder::with_capacity(n), f),
        Value::Time(f) => build!(
            TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC"),
            f
        ),
        Value::I64(f) => build!(Int64Builder::with_capacity(n), f),
    }
}

/// A column's value as CSV text (a time as RFC 3339, UTC).
fn text(v: Value, r: &RequestLog) -> Cow<'_, str> {
    match v {
        Value::Text(f) => f(r),
        Value::U64(f) => Cow::Owned(f(r).to_string()),
        Value::F64(f) => Cow::Owned(f(r).to_string()),
        Value::Bool(f) => Cow::Borrowed(if f(r) { "true" } else { "false" }),
        Value::Time(_) => Cow::Borrowed(&r.time),
        Value::I64(f) => Cow::Owned(f(r).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, UInt64Type};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn record(i: u64) -> RequestLog {
        RequestLog {
            id: format!("id-{i}"),
            time_ms: 1_714_564_800_000 + i as i64,
            time: format!("2024-05-01T12:00:00.{:03}Z", i % 1000),
            key: "team, \"a\"".into(),
            model: "gpt".into(),
            status: 200,
            outcome: Outcome::Ok as i32,
            input_tokens: i,
            cost: 0.25 * i as f64,
            dropped_fields: vec!["a".into(), "b".into()],
            ..Default::default()
        }
    }

    /// A sink writing into a shared buffer, read back after `finish`.
    fn export(format: ExportFormat, pages: &[Vec<RequestLog>]) -> Vec<u8> {
        #[derive(Clone, Default)]
        struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Shared::default();
        let mut sink = Sink::new(format, BufWriter::new(Box::new(buf.clone()))).unwrap();
        for p in pages {
            sink.page(p).unwrap();
        }
        sink.finish().unwrap();
        let out = buf.0.lock().unwrap().clone();
        out
    }

    fn pages() -> Vec<Vec<RequestLog>> {
        vec![(0..3).map(record).collect(), (3..5).map(record).collect()]
    }

    #[test]
    fn formats_are_chosen_by_extension() {
        assert_eq!(
            format_of(Path::new("a.parquet")),
            Some(ExportFormat::Parquet)
        );
        assert_eq!(format_of(Path::new("a.CSV")), Some(ExportFormat::Csv));
        assert_eq!(format_of(Path::new("a.jsonl")), Some(ExportFormat::Ndjson));
        assert_eq!(format_of(Path::new("a.txt")), None);
        assert_eq!(format_of(Path::new("a")), None);
    }

    #[test]
    fn json_lines_hold_every_record_in_order() {
        let out = String::from_utf8(export(ExportFormat::Ndjson, &pages())).unwrap();
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[4]["id"], "id-4");
        assert_eq!(lines[4]["outcome"], "ok");
        assert_eq!(lines[2]["input_tokens"], 2);
    }

    #[test]
    fn csv_has_a_header_and_quotes_what_needs_it() {
        let out = export(ExportFormat::Csv, &pages());
        let mut r = csv::Reader::from_reader(out.as_slice());
        let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
        assert_eq!(header.len(), COLUMNS.len());
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 5);
        let col = |name: &str| header.iter().position(|h| h == name).unwrap();
        assert_eq!(&rows[1][col("key")], "team, \"a\"");
        assert_eq!(&rows[1][col("time")], "2024-05-01T12:00:00.001Z");
        assert_eq!(&rows[3][col("cost")], "0.75");
        assert_eq!(&rows[3][col("dropped_fields")], "a,b");
        assert_eq!(&rows[3][col("outcome")], "ok");
    }

    #[test]
    fn parquet_reads_back_with_the_same_rows_and_values() {
        let out = export(ExportFormat::Parquet, &pages());
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(out))
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 5);
        let b = &batches[0];
        assert_eq!(b.schema().fields().len(), COLUMNS.len());
        let tokens = b
            .column_by_name("input_tokens")
            .unwrap()
            .as_primitive::<UInt64Type>();
        assert_eq!(tokens.value(2), 2);
        let cost = b
            .column_by_name("cost")
            .unwrap()
            .as_primitive::<Float64Type>();
        assert_eq!(cost.value(2), 0.5);
        let ids = b.column_by_name("id").unwrap().as_string::<i32>();
        assert_eq!(ids.value(0), "id-0");
    }

    #[test]
    fn an_unfinished_file_export_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        {
            let t = Target::new(Some(&path));
            t.writer().unwrap().write_all(b"partial").unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let t = Target::new(Some(&path));
        t.writer().unwrap().write_all(b"whole").unwrap();
        t.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
    }
}
