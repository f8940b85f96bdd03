//! The counting collector counts what a real OTLP client sends; the tracing
//! table pairs each traced row with the untraced one of the same case.

use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, trace_service_client::TraceServiceClient},
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};

use super::*;
use crate::bench::histogram::Summary;

fn resource_spans(spans_per_scope: &[usize]) -> ResourceSpans {
    ResourceSpans {
        scope_spans: spans_per_scope
            .iter()
            .map(|&n| ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        name: format!("span {i}"),
                        ..Span::default()
                    })
                    .collect(),
                ..ScopeSpans::default()
            })
            .collect(),
        ..ResourceSpans::default()
    }
}

#[tokio::test]
async fn the_collector_counts_spans_and_export_calls() {
    let collector = CountingCollector::start().await.expect("collector");
    let mut client = TraceServiceClient::connect(collector.endpoint())
        .await
        .expect("connect");
    client
        .export(ExportTraceServiceRequest {
            resource_spans: vec![resource_spans(&[3, 2]), resource_spans(&[4])],
        })
        .await
        .expect("export");
    client
        .export(ExportTraceServiceRequest {
            resource_spans: vec![resource_spans(&[1])],
        })
        .await
        .expect("export");
    // The counts are updated before each call is answered.
    assert_eq!(collector.spans(), 10);
    assert_eq!(collector.exports(), 2);
}

fn row(contender: &str, rate: f64, p50: f64, cpu: Option<f64>) -> LatencyRow {
    LatencyRow {
        contender: contender.to_owned(),
        protocol: Protocol::Http1,
        rate,
        connections: 16,
        reps: 3,
        latency: Summary {
            count: 1000,
            p50_us: p50,
            p90_us: p50,
            p99_us: p50 * 2.0,
            p999_us: p50 * 3.0,
            max_us: p50 * 4.0,
        },
        achieved_rps: rate,
        errors: 0,
        cpu_us_per_req: cpu,
        rss_mib: None,
        added_p50_us: None,
        added_p99_us: None,
        added_p999_us: None,
    }
}

#[test]
fn rows_follow_the_cases_and_compare_cpu_with_tracing_off() {
    let mut latency = vec![
        row("direct", 1000.0, 50.0, None),
        row("levee-1hop", 1000.0, 150.0, Some(100.0)),
        row("levee-trace-100%", 1000.0, 170.0, Some(130.0)),
        row("levee-trace-1%", 1000.0, 152.0, Some(101.0)),
        row("haproxy", 1000.0, 140.0, Some(90.0)),
        row("direct", 5000.0, 40.0, None),
        row("levee-trace-1%", 5000.0, 160.0, Some(90.0)),
    ];
    crate::bench::report::add_deltas(&mut latency);
    let cases = [
        LatencyCase::new(Protocol::Http1, 5000.0, 16),
        LatencyCase::new(Protocol::Http1, 1000.0, 16),
    ];
    let rows = rows(&latency, &cases);
    let summary: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.contender.as_str(),
                r.rate,
                r.ratio,
                r.added_p50_us,
                r.cpu_vs_off_us,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            // No untraced row at 5000 req/s: nothing to compare the CPU with.
            ("levee-trace-1%", 5000.0, Some(0.01), Some(120.0), None),
            ("levee-1hop", 1000.0, None, Some(100.0), Some(0.0)),
            ("levee-trace-1%", 1000.0, Some(0.01), Some(102.0), Some(1.0)),
            (
                "levee-trace-100%",
                1000.0,
                Some(1.0),
                Some(120.0),
                Some(30.0)
            ),
        ]
    );
    assert_eq!(rows[3].added_p99_us, Some(240.0));
    assert_eq!(rows[3].added_p999_us, Some(360.0));
    let text = render(&rows, &[], &[]);
    assert!(text.contains("levee-trace-100%"), "{text}");
    assert!(text.contains(" off "), "{text}");
    assert!(!text.contains("haproxy"), "{text}");
}

#[test]
fn names_are_recognised() {
    assert!(is_traced("levee-trace-1%") && is_traced("levee-trace-100%"));
    assert!(!is_traced(OFF) && !is_traced("direct"));
}

#[test]
fn closed_loop_rows_compare_with_tracing_off() {
    let row = |contender: &str, rps: f64, cpu: Option<f64>| ThroughputRow {
        contender: contender.to_owned(),
        connections: 64,
        reps: 3,
        achieved_rps: rps,
        errors: 0,
        cpu_us_per_req: cpu,
        p99_us: 900.0,
    };
    let throughput = [
        row("direct", 60000.0, None),
        row("levee-trace-100%", 30000.0, Some(33.0)),
        row("levee-1hop", 40000.0, Some(25.0)),
        row("levee-trace-1%", 39000.0, Some(25.5)),
    ];
    let rows = closed_loop_rows(&throughput);
    let summary: Vec<_> = rows
        .iter()
        .map(|r| (r.contender.as_str(), r.ratio, r.cpu_vs_off_us))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("levee-1hop", None, Some(0.0)),
            ("levee-trace-1%", Some(0.01), Some(0.5)),
            ("levee-trace-100%", Some(1.0), Some(8.0)),
        ]
    );
    let text = render(&[], &rows, &[]);
    // 33 µs x 30,000 req/s: 99 % of a core.
    assert!(text.contains("   99 "), "{text}");
    assert!(closed_loop_rows(&throughput[..1]).is_empty());
}
