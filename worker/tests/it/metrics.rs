//! Both services' `/metrics` pass `promtool check metrics` (Prometheus's own linter) on a live
//! scrape after real traffic, and follow the conventions promtool does not check.

use std::process::Command;
use std::time::Duration;

use inlet_shared::test_util::{promtool, promtool_findings};

use crate::support::{Pipeline, TestDestination};

#[tokio::test]
async fn live_scrapes_of_ingest_and_worker_pass_promtool_and_label_no_ids() {
    let ok = TestDestination::answering(200).await;
    let failing = TestDestination::answering(400).await;
    let pipeline = Pipeline::start(&[("ok", ok.url(), ""), ("failing", failing.url(), "")]).await;
    for n in 0..5 {
        assert_eq!(pipeline.send(&format!("m-{n}"), "push", b"{}").await, 202);
    }
    assert_eq!(pipeline.send("m-0", "push", b"{}").await, 200);
    ok.wait_for(5, Duration::from_secs(20)).await;
    failing.wait_for(5, Duration::from_secs(20)).await;
    pipeline
        .store
        .wait_until(
            "every delivery settled",
            Duration::from_secs(20),
            "SELECT count(*) = 10 FROM deliveries WHERE status <> 'pending'",
        )
        .await;

    for (service, addr) in [("ingest", pipeline.ingest_admin), ("worker", pipeline.worker_admin)] {
        let response = pipeline.client.get(format!("http://{addr}/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        let text = response.text().await.unwrap();
        assert!(text.contains("inlet_ingest_requests_total"), "{service}");
        assert!(text.contains("inlet_worker_deliveries_total"), "{service}");
        // Refreshed by the stats loop from its first round (SQLite here).
        assert!(text.contains("inlet_worker_search_index_lag_events"), "{service}");
        // Registered at 0 before the first dead letter, so that `increase()` sees the first one.
        assert!(
            text.contains("inlet_worker_dead_lettered_total{destination=\"ok\",reason=\"retries_exhausted\"}"),
            "{service}: no dead-letter counter for a destination without dead letters"
        );
        let findings = promtool_findings(&text);
        assert!(findings.is_empty(), "promtool check metrics on {service}:\n{findings}");

        for line in text.lines().filter(|l| !l.starts_with('#')) {
            // Bounded labels: never an event or delivery id.
            for id_fragment in ["m-0", "m-1", "dlv_", "evt_"] {
                assert!(!line.contains(id_fragment), "{service}: id in a label: {line}");
            }
        }
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut parts = line.split_whitespace().skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(name.starts_with("inlet_"), "{service}: {name} lacks the inlet_ prefix");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{service}: counter {name}");
            }
            if kind == "histogram" {
                assert!(text.contains(&format!("{name}_bucket")), "{service}: {name} has no buckets");
                assert!(
                    text.lines().any(|l| l.starts_with(&format!("{name}_bucket")) && l.contains("le=\"+Inf\"")),
                    "{service}: {name} has no +Inf bucket"
                );
            }
        }
    }
}

/// `deploy/prometheus` passes `promtool check config` (which also checks the alert rules), and
/// every `inlet_*` metric the alert rules and the Grafana dashboard use is one the services
/// export, so a rename cannot silently blind an alert or a panel.
#[tokio::test]
async fn deploy_prometheus_config_alert_rules_and_dashboard_use_real_metrics() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let output = Command::new(promtool())
        .args(["check", "config"])
        .arg(deploy.join("prometheus/prometheus.yml"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}); install it with scripts/install-promtool.sh"));
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let ok = TestDestination::answering(200).await;
    let pipeline = Pipeline::start(&[("ok", ok.url(), "")]).await;
    assert_eq!(pipeline.send("d-1", "push", b"{}").await, 202);
    ok.wait_for(1, Duration::from_secs(20)).await;
    // The store-wide gauges appear with the stats loop's first round, which may come after the
    // delivery (on PostgreSQL it sometimes did): wait for its last store gauge.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let scrape = loop {
        let url = format!("http://{}/metrics", pipeline.worker_admin);
        let text = pipeline.client.get(url).send().await.unwrap().text().await.unwrap();
        if text.contains("# TYPE inlet_worker_ordered_deliveries_waiting ") || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Per destination, 0 while nothing of it waits for an earlier delivery of its key.
    assert!(scrape.contains("inlet_worker_ordered_deliveries_waiting{destination=\"ok\"} 0"), "{scrape}");
    assert!(scrape.contains("# TYPE inlet_worker_oldest_pending_age_seconds "), "set in the same round, before");
    let exported: std::collections::HashSet<String> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    // Gauges set by periodic tasks and fsync-mode histograms appear once they have a value;
    // the describe() lists still declare them, so compare against HELP lines too.
    for file in ["prometheus/alerts.yml", "grafana/dashboards/inlet.json"] {
        let text = std::fs::read_to_string(deploy.join(file)).unwrap();
        let mut used: Vec<String> = Vec::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("inlet_") {
            let tail = &rest[start..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            used.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
        assert!(!used.is_empty(), "{file} uses no inlet metric");
        for name in used {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name)
                .to_owned();
            assert!(
                exported.contains(&family) || known_but_lazy(&family),
                "{file} uses {name}, which neither service exports"
            );
        }
    }
}

/// Metrics that only appear after their first sample in a mode this test does not run.
fn known_but_lazy(family: &str) -> bool {
    [
        inlet_ingest::metric_names::BATCH_MESSAGES,
        inlet_ingest::metric_names::BATCH_COMMIT_DURATION,
        inlet_ingest::metric_names::BATCH_FALLBACKS,
        inlet_ingest::metric_names::NATS_CONNECTED,
        inlet_ingest::metric_names::PUBLISH_DURATION,
        inlet_ingest::metric_names::PUBLISH_FAILURES,
        inlet_worker::metric_names::BREAKER_STATE,
        inlet_worker::metric_names::END_TO_END,
        inlet_worker::metric_names::RESTARTED,
        // Only with [ingest.tls] / [worker.tls], which this test does not set.
        inlet_ingest::metric_names::TLS_RELOAD_FAILURES,
        inlet_ingest::metric_names::TLS_CERTIFICATE_EXPIRY,
        inlet_worker::metric_names::TLS_RELOAD_FAILURES,
        inlet_worker::metric_names::TLS_CERTIFICATE_EXPIRY,
    ]
    .contains(&family)
}
