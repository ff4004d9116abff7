//! Unit tests of the counters, their pairs and their exposition.

use super::*;

fn sample() -> Metrics {
    let mut m = Metrics::default();
    m.request(Kind::KeyGet);
    m.request(Kind::KeyGet);
    m.request(Kind::Connect);
    m.request_error(libc::ENOENT);
    m.request_error(100_000);
    m.call(Call::MsgSnd, None, 1);
    m.call(Call::MsgSnd, None, 3);
    m.call(Call::SemOp, Some(libc::EAGAIN), 1000);
    m.call(Call::KillD, None, u64::MAX / 2);
    m.made.record(Call::MsgSnd, None, 20);
    m.made.record(Call::MsgRcv, Some(libc::EINTR), 70);
    m.sessions_opened = 4;
    m.bytes_in = 10;
    m.shm_faults = 7;
    m.uptime_s = 12;
    m
}

#[test]
fn buckets_are_log2_microseconds() {
    assert_eq!(Histogram::slot(0), 0);
    assert_eq!(Histogram::slot(1), 0);
    assert_eq!(Histogram::slot(2), 1);
    assert_eq!(Histogram::slot(3), 2);
    assert_eq!(Histogram::slot(4), 2);
    assert_eq!(Histogram::slot(5), 3);
    assert_eq!(Histogram::slot(1 << 23), 23);
    assert_eq!(Histogram::slot((1 << 23) + 1), BUCKETS);
    assert_eq!(Histogram::slot(u64::MAX), BUCKETS);
}

#[test]
fn pairs_round_trip_and_unknown_names_are_skipped() {
    let m = sample();
    let mut pairs = m.to_pairs();
    assert_eq!(Metrics::from_pairs(&pairs), m);
    pairs.push(("a_future_counter".into(), 5));
    pairs.push(("request.99999".into(), 5));
    pairs.push(("call.nonsense".into(), 5));
    assert_eq!(Metrics::from_pairs(&pairs), m);
}

#[test]
fn a_worker_report_adds_only_what_a_worker_counts() {
    let mut d = Metrics::default();
    let w = sample();
    d.add_worker(&w);
    assert_eq!(d.served, w.served);
    assert_eq!(d.made, Calls::default());
    assert_eq!(d.requests, [0; KINDS]);
    assert_eq!(d.sessions_opened, 0);
    assert_eq!(d.shm_faults, 0);
    d.add_manager(&w);
    assert_eq!(d.shm_faults, 7);
    assert_eq!(d.made, Calls::default());
}

#[test]
fn a_caller_report_adds_only_the_calls_it_made() {
    let mut d = Metrics::default();
    let p = sample();
    d.add_caller(&p);
    d.add_caller(&p);
    assert_eq!(d.made.total(), 4);
    assert_eq!(d.made.by_name(), vec![("msgsnd", 2), ("msgrcv", 2)]);
    assert_eq!(d.made.errors[libc::EINTR as usize], 2);
    assert_eq!(d.made.latency.sum_us, 180);
    assert_eq!(d.served, Calls::default());
    assert_eq!(d.requests, [0; KINDS]);
    assert_eq!((d.sessions_opened, d.bytes_in, d.shm_faults), (0, 0, 0));
}

/// The checks a scraper makes: every sample belongs to a family with
/// HELP and TYPE given before it, every line is `name{labels} value`,
/// and the histogram is cumulative up to `+Inf` = `_count`.
#[test]
fn the_exposition_is_well_formed() {
    let text = sample().prometheus();
    let mut typed = std::collections::HashMap::new();
    let mut buckets = Vec::new();
    let mut count = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(typed.insert(name.to_owned(), kind.to_owned()).is_none());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                for l in labels[1..labels.len() - 1].split(',') {
                    let (k, v) = l.split_once('=').unwrap();
                    assert!(!k.is_empty() && v.starts_with('"') && v.ends_with('"'));
                }
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains_key(*f)))
            .unwrap_or(name);
        let kind = typed
            .get(family)
            .unwrap_or_else(|| panic!("no TYPE before {line}"));
        if kind == "counter" {
            assert!(name.ends_with("_total"), "{line}");
        }
        if name == "dipc_call_latency_seconds_bucket" {
            buckets.push((series.to_owned(), value));
        }
        if name == "dipc_call_latency_seconds_count" {
            count = Some(value);
        }
    }
    assert_eq!(buckets.len(), BUCKETS + 1);
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    let last = buckets.last().unwrap();
    assert!(last.0.contains("le=\"+Inf\""));
    assert_eq!(Some(last.1), count);
    assert_eq!(count, Some(4.0));
    // The 1 µs and 3 µs sends are in the 4 µs bucket; the semop of
    // 1000 µs in 1024 µs; the slow kill_d only in +Inf.
    assert!(text.contains("dipc_call_latency_seconds_bucket{le=\"0.000004\"} 2\n"));
    assert!(text.contains("dipc_call_latency_seconds_bucket{le=\"0.001024\"} 3\n"));
    assert!(text.contains("dipc_call_latency_seconds_bucket{le=\"8.388608\"} 3\n"));
    assert!(text.contains("dipc_requests_total{kind=\"KeyGet\"} 2\n"));
    assert!(text.contains("dipc_call_errors_total{errno=\"EAGAIN\"} 1\n"));
    assert!(text.contains("dipc_request_errors_total{errno=\"other\"} 1\n"));
    assert!(text.contains("dipc_shm_faults_total 7\n"));
    assert!(text.contains("dipc_calls_made_total{call=\"msgrcv\"} 1\n"));
    assert!(text.contains("dipc_calls_made_errors_total{errno=\"EINTR\"} 1\n"));
    assert!(text.contains("dipc_calls_made_latency_seconds_bucket{le=\"0.000032\"} 1\n"));
    assert!(text.contains("dipc_calls_made_latency_seconds_count 2\n"));
}
