//! The node's `/metrics` as an operator's Prometheus sees it: after real traffic through a
//! two-node mesh (PUT, GET, HEAD, a miss, a lookup), the page passes Debian's `promtool
//! check metrics` (HELP and TYPE on every family, conventional names), latencies are
//! histograms, and every family the runbook and `node::telemetry::FAMILIES` promise for
//! that traffic is there, as is every metric the Grafana dashboard
//! (`deploy/grafana/macronode.json`) queries. promtool comes from Debian's `prometheus`
//! package (`scripts/install-test-deps.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use node::telemetry::{FAMILIES, Kind};
use testing::{NodeProcess, NodeSpec};

const BOUND: Duration = Duration::from_secs(10);

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn metrics_pass_promtool_and_carry_the_golden_signals() {
    let open = |name: &str| {
        let mut spec = NodeSpec::new(name);
        spec.args = vec!["--open-writes".into()];
        spec
    };
    let mut a = NodeProcess::start(open("metrics-a")).unwrap();
    a.wait_healthy(BOUND).unwrap();
    let mut b = NodeProcess::start(open("metrics-b").bootstrap(a.quic().to_string())).unwrap();
    b.wait_healthy(BOUND).unwrap();

    // Traffic: a write, reads of it (whole, HEAD, a range), a miss that runs a lookup.
    let base = format!("http://{}", b.http());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("object");
    std::fs::write(&file, vec![7u8; 50_000]).unwrap();
    let put = curl(&[
        "-X",
        "PUT",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("{base}/o"),
    ]);
    let id = put
        .split('"')
        .find(|s| s.starts_with("b3:"))
        .unwrap_or_else(|| panic!("PUT answered {put}"))
        .to_string();
    curl(&[&format!("{base}/o/{id}"), "-o", "/dev/null"]);
    curl(&["-I", &format!("{base}/o/{id}")]);
    curl(&["-r", "0-99", &format!("{base}/o/{id}"), "-o", "/dev/null"]);
    // A body in an encoding the gateway does not take: refused (415), counted by reason.
    let encoded = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "PUT",
        "-H",
        "Content-Encoding: gzip",
        "--data-binary",
        "x",
        &format!("{base}/o"),
    ]);
    assert_eq!(encoded, "415");
    let missing = format!("{base}/o/b3:{}", "00".repeat(32));
    let code = curl(&["-o", "/dev/null", "-w", "%{http_code}", &missing]);
    assert_eq!(code, "404", "an unknown id");

    // Mail: b sends to a (open writes: no token), a receives it through its admin plane.
    let a_id = a.node_id().unwrap().to_string();
    let sent = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "--data-binary",
        "hello",
        &format!("{base}/mb/{a_id}"),
    ]);
    assert_eq!(sent, "201", "a mailbox send");
    let got = curl(&[&format!("http://{}/mb?wait=5s", a.admin().unwrap())]);
    assert!(got.contains("aGVsbG8="), "a's mail: {got}");
    curl(&[&format!("http://{}/metrics", a.http()), "-o", "/dev/null"]);

    let page = curl(&[&format!("{base}/metrics")]);
    let mut promtool = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(p) => p,
        Err(e) => panic!("promtool not found ({e}): run scripts/install-test-deps.sh"),
    };
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n--- the page:\n{page}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // What this traffic must have produced, with its kind.
    let expected = [
        "http_requests_total",
        "http_request_duration_seconds",
        "http_requests_in_flight",
        "dht_lookup_seconds",
        "oap_exchange_duration_seconds",
        "object_locate_duration_seconds",
        "dht_routing_table_peers",
        "oap_frames_total",
        "oap_connections_total",
        "transport_connections",
        "store_bytes",
        "store_objects",
        "rf_target",
        "mailbox_queue_depth",
        "mailbox_inflight",
        "mailbox_dlq_total",
        "mailbox_enqueue_duration_seconds",
    ];
    for name in expected {
        let (_, kind, _) = FAMILIES
            .iter()
            .find(|(n, _, _)| *n == name)
            .unwrap_or_else(|| panic!("{name} is not in node::telemetry::FAMILIES"));
        let ty = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        assert!(
            page.contains(&format!("# TYPE {name} {ty}")),
            "{name} is missing or not a {ty}:\n{page}"
        );
    }
    for line in [
        r#"http_requests_total{route="/o",method="PUT",status="201"} 1"#,
        r#"http_requests_total{route="/o/{id}",method="GET",status="200"} 1"#,
        r#"http_requests_total{route="/o/{id}",method="GET",status="206"} 1"#,
        r#"http_requests_total{route="/o/{id}",method="HEAD",status="200"} 1"#,
        r#"http_requests_total{route="/o/{id}",method="GET",status="404"} 1"#,
    ] {
        assert!(page.contains(line), "no `{line}`:\n{page}");
    }
    assert!(
        page.contains(
            "http_request_duration_seconds_bucket{route=\"/o\",method=\"PUT\",le=\"0.005\"}"
        ),
        "latency is not a histogram with the node's buckets:\n{page}"
    );

    // The receiving side's mailbox figures: its delivery latency and its held copy in flight.
    let a_page = curl(&[&format!("http://{}/metrics", a.http())]);
    for line in [
        "# TYPE mailbox_delivery_seconds histogram",
        "# TYPE mailbox_inflight gauge",
        "mailbox_dlq_total{reason=\"expired\"} 0",
    ] {
        assert!(a_page.contains(line), "no `{line}` on a:\n{a_page}");
    }

    // Every metric the shipped dashboard queries exists on this live node.
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../deploy/grafana/macronode.json")).unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            queried.extend(metric_names(expr));
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    for name in &queried {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            FAMILIES.iter().any(|(n, _, _)| *n == family),
            "the dashboard queries {name}, which the node does not define"
        );
        assert!(
            page.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {name}, absent from a live node's /metrics:\n{page}"
        );
    }
}

/// The metric names in a PromQL expression: each identifier right before a `{` selector.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in expr.match_indices('{') {
        let name: String = expr[..i]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}
