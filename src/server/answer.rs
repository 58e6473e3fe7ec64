//! What every embedding answer carries besides its body: TEI's timing headers and the retry
//! report, as codes, classes and counts (never an error's free text).

use axum::http::HeaderValue;
use axum::response::Response;
use serde_json::json;

use crate::engine::{EmbedResponse, RetryRecord, RetryReport};

/// The most bytes of the `x-hipinfer-retry-report` header (proxies refuse large headers: nginx
/// buffers 4 KB by default).
const REPORT_HEADER_BYTES: usize = 2048;

/// TEI's timing headers (milliseconds) and the retry counts of the answer.
pub fn with_headers(mut response: Response, answer: &EmbedResponse) -> Response {
    let t = answer.timings;
    let headers = response.headers_mut();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    let ms = |d: std::time::Duration| format!("{}", d.as_millis());
    put("x-total-time", ms(t.total));
    put("x-tokenization-time", ms(t.tokenization));
    put("x-queue-time", ms(t.queue));
    put("x-inference-time", ms(t.inference));
    let retry = &answer.retry;
    put("x-hipinfer-retries", retry.retries.to_string());
    put("x-hipinfer-failed-steps", retry.failed_steps.to_string());
    if answer.degraded {
        put("x-hipinfer-degraded", "true".into());
    }
    if !retry.is_empty() {
        put("x-hipinfer-retry-report", retry_report_header(retry));
    }
    response
}

/// One history record as an API client sees it: codes, classes and counts — never the free
/// text of an error, which may name files, programs or a worker's output.
pub fn public_record(record: &RetryRecord) -> serde_json::Value {
    json!({
        "scope": record.scope,
        "attempt": record.attempt,
        "timestamp": record
            .timestamp
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        "op": record.op,
        "class": record.class,
        "reason": record.reason,
        "code": record.code,
        "error": record.error,
    })
}

/// A retry report as API clients see it (counts and public records).
pub fn public_report(retry: &RetryReport) -> serde_json::Value {
    json!({
        "retries": retry.retries,
        "failed_steps": retry.failed_steps,
        "worker_restarts": retry.worker_restarts,
        "history": retry.history.iter().map(public_record).collect::<Vec<_>>(),
    })
}

/// The retry report as header text: the counts and the newest history records that fit in
/// [`REPORT_HEADER_BYTES`].
fn retry_report_header(retry: &RetryReport) -> String {
    let records: Vec<serde_json::Value> = retry.history.iter().map(public_record).collect();
    let report = |kept: usize| {
        json!({
            "retries": retry.retries,
            "failed_steps": retry.failed_steps,
            "worker_restarts": retry.worker_restarts,
            "history": &records[records.len() - kept..],
            "history_omitted": records.len() - kept,
        })
        .to_string()
    };
    // Each record's size once, newest first; then one report of what fits (fewer, in the rare
    // case the counts' own digits tip it over).
    let room = REPORT_HEADER_BYTES.saturating_sub(report(0).len());
    let mut used = 0usize;
    let mut kept = records
        .iter()
        .rev()
        .take_while(|record| {
            let size = record.to_string().len() + 1;
            used = used.saturating_add(size);
            used <= room
        })
        .count();
    let mut text = report(kept);
    while text.len() > REPORT_HEADER_BYTES && kept > 0 {
        kept -= 1;
        text = report(kept);
    }
    text
}
