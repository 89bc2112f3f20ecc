//! CloudWatch Embedded Metric Format: metrics as one JSON log line (printed to stdout, which
//! Lambda ships to CloudWatch Logs, where EMF lines become metrics).

use serde_json::{Map, Value, json};

/// The default namespace; `O365_METRICS_NAMESPACE` (set per stage by the template) replaces it
/// so two stages in one account do not mix their metrics.
pub const NAMESPACE: &str = "o365-sync";

pub fn namespace() -> String {
    std::env::var("O365_METRICS_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| NAMESPACE.to_owned())
}

/// One EMF document: `dimensions` (name, value) and `metrics` (name, unit, value).
pub fn emf_line(dimensions: &[(&str, &str)], metrics: &[(&str, &str, f64)]) -> String {
    let mut root = Map::new();
    let timestamp = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let dims: Vec<&str> = dimensions.iter().map(|(k, _)| *k).collect();
    let defs: Vec<Value> = metrics
        .iter()
        .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
        .collect();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{"Namespace": namespace(), "Dimensions": [dims], "Metrics": defs}]
        }),
    );
    for (k, v) in dimensions {
        root.insert((*k).into(), Value::String((*v).into()));
    }
    for (name, _, v) in metrics {
        root.insert((*name).into(), json!(v));
    }
    Value::Object(root).to_string()
}

/// The worker's metrics for one invocation: totals, then one line per error code.
pub fn worker_lines(
    function: &str,
    report: &crate::BatchReport,
    graph_requests: u64,
    throttles: u64,
    duration_ms: u64,
) -> Vec<String> {
    let c = report.totals.counters;
    let errors: u64 = report.errors_by_code.values().sum();
    let mut lines = vec![emf_line(
        &[("Function", function)],
        &[
            ("Mailboxes", "Count", report.mailboxes as f64),
            ("MessagesNew", "Count", c.captured as f64),
            ("MessagesUpdated", "Count", c.updated as f64),
            ("MessagesDeleted", "Count", c.deleted as f64),
            ("MessagesSkipped", "Count", c.skipped as f64),
            ("GraphRequests", "Count", graph_requests as f64),
            ("GraphThrottles", "Count", throttles as f64),
            ("JobsDelayed", "Count", report.throttled as f64),
            ("JobsHeldByAnotherRun", "Count", report.busy as f64),
            ("JobsContinued", "Count", report.continued as f64),
            ("JobsFailed", "Count", report.failed.len() as f64),
            ("Errors", "Count", errors as f64),
            ("Duration", "Milliseconds", duration_ms as f64),
        ],
    )];
    for (code, n) in &report.errors_by_code {
        lines.push(emf_line(
            &[("Function", function), ("ErrorCode", code)],
            &[("Errors", "Count", *n as f64)],
        ));
    }
    lines
}

/// The fan-out's metrics, including how many orgs are in alarm (>= 20 % of users in error).
pub fn fanout_line(function: &str, report: &crate::FanOutReport, duration_ms: u64) -> String {
    emf_line(
        &[("Function", function)],
        &[
            ("Orgs", "Count", report.orgs as f64),
            ("OrgWalksQueued", "Count", report.orgs_queued as f64),
            ("OrgsInAlarm", "Count", report.orgs_in_alarm as f64),
            ("JobsEnqueued", "Count", report.enqueued as f64),
            (
                "MailboxesSkippedLeased",
                "Count",
                report.skipped_leased as f64,
            ),
            ("EnqueueFailures", "Count", report.send_failures as f64),
            ("Duration", "Milliseconds", duration_ms as f64),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_lines_declare_every_metric() {
        let line = emf_line(&[("Function", "w")], &[("Mailboxes", "Count", 3.0)]);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["Mailboxes"], 3.0);
        assert_eq!(v["Function"], "w");
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0][0],
            "Function"
        );
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            "Mailboxes"
        );
    }
}
