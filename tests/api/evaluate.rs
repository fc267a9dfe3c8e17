//! `event-ingest evaluate` end to end: twenty real sessions of OTTO's public data set
//! (`tests/data/otto-sample.jsonl`, CC-BY 4.0) converted to the CSV the tool reads, and a
//! shop's own `interaction_logs`.

use std::io::Write as _;
use std::process::Command;

use serde_json::Value;

use crate::helpers::{ITEMS, TestApp};

fn evaluate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_event-ingest"));
    command.arg("evaluate");
    command
}

/// OTTO's sessions as our CSV: the session is the actor, `aid` the item, no category, its
/// types through `--type-map`, its times in ms written as RFC 3339.
fn otto_csv() -> tempfile::NamedTempFile {
    let sessions = include_str!("../data/otto-sample.jsonl");
    let mut csv = tempfile::NamedTempFile::new().unwrap();
    writeln!(csv, "actor,asin,category,event_type,ts").unwrap();
    for line in sessions.lines() {
        let session: Value = serde_json::from_str(line).unwrap();
        for event in session["events"].as_array().unwrap() {
            let ts = chrono::DateTime::from_timestamp_millis(event["ts"].as_i64().unwrap())
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            writeln!(
                csv,
                "{},{},,{},{ts}",
                session["session"],
                event["aid"],
                event["type"].as_str().unwrap()
            )
            .unwrap();
        }
    }
    csv.flush().unwrap();
    csv
}

fn json_of(output: std::process::Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn otto_s_real_sessions_are_evaluated_end_to_end_with_a_table_json_and_a_plot() {
    let csv = otto_csv();
    let plot = tempfile::Builder::new().suffix(".png").tempfile().unwrap();
    let output = evaluate()
        .arg(csv.path())
        .args([
            "--type-map",
            "clicks=click,carts=add_to_cart,orders=purchase",
            "--json",
        ])
        .arg("--plot")
        .arg(plot.path())
        .output()
        .unwrap();
    let outcome = json_of(output);
    assert_eq!(outcome["events"], 862);
    assert!(outcome["points"].as_u64().unwrap() > 50, "{outcome}");
    let variants = outcome["variants"].as_array().unwrap();
    let names: Vec<&str> = variants
        .iter()
        .filter(|v| v["group"] != "sweep")
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "input ranking",
            "intent_boost 0.3 alone",
            "recent_penalty 0.5 alone",
            "purchased 1 alone",
            "configured (intent_boost 0.3, recent_penalty 0.5, purchased 1)"
        ]
    );
    for variant in variants {
        for metric in ["recall", "mrr", "ndcg"] {
            let value = variant["all"][metric].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&value), "{variant}");
        }
    }
    // Without categories the intent boost moves nothing.
    assert_eq!(variants[1]["all"], variants[0]["all"]);
    let png = std::fs::read(plot.path()).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "a PNG"
    );

    // The table, for people.
    let table = evaluate()
        .arg(csv.path())
        .args([
            "--type-map",
            "clicks=click,carts=add_to_cart,orders=purchase",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("| input ranking |"), "{text}");
}

#[test]
fn bad_input_is_refused_with_its_line() {
    let mut csv = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        csv,
        "actor,asin,category,event_type,ts\n1,B1,,view,1700000000\n1,B1,,clicks,1700000001"
    )
    .unwrap();
    let output = evaluate().arg(csv.path()).output().unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("line 3") && error.contains("--type-map"),
        "{error}"
    );
    let output = evaluate().args(["/no/such/file.csv"]).output().unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("/no/such/file.csv"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_evaluates_its_own_interaction_logs() {
    let app = TestApp::spawn().await;
    // Two visits of one user, a few minutes apart in event time: views of two items of one
    // category, then of a third.
    let now = chrono::Utc::now();
    let mut sent = 0;
    for (minutes, item) in [(20, 0), (19, 1), (18, 0), (10, 1), (9, 2), (8, 0)] {
        let at = (now - chrono::TimeDelta::minutes(minutes)).to_rfc3339();
        let body = serde_json::json!({"user_id": 5, "asin": ITEMS[item].0, "event_type": "view",
                                      "timestamp": at, "sent_at": now.to_rfc3339()});
        assert_eq!(app.post("/api/event", &body).await.0, 200);
        sent += 1;
    }
    app.wait_for_rows(sent).await;
    let since = (now - chrono::TimeDelta::hours(1)).to_rfc3339();
    let output = evaluate()
        .args(["--from-database", "--since", &since, "--json"])
        .env("DATABASE_URL", app.settings.database.database_url.expose())
        .output()
        .unwrap();
    let outcome = json_of(output);
    assert_eq!(outcome["events"], 6);
    assert_eq!(
        outcome["points"], 3,
        "the second visit's three, each with a context: {outcome}"
    );
}
