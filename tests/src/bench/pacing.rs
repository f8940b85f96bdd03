//! The open-loop send schedule: a total rate split evenly over connections,
//! each connection's sends staggered so the aggregate is evenly spaced.
//! Latency is measured from these intended times, so a stalled response
//! delays the clock of the requests behind it and is counted against the
//! contender (no coordinated omission).
//!
//! [`Pacer`] releases the sends from an OS thread sleeping with
//! `std::thread::sleep` (tens of microseconds of slack) rather than tokio's
//! timer (1 ms granularity, which would send a millisecond's requests in one
//! burst).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// When one connection intends to send its requests, relative to the start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Time between two sends on this connection, in nanoseconds.
    interval_ns: f64,
    /// This connection's first send, so connections interleave.
    offset_ns: f64,
}

impl Schedule {
    /// The schedule of connection `index` of `connections` sharing `rate`
    /// requests per second. `rate` and `connections` must be positive.
    pub fn for_connection(rate: f64, connections: usize, index: usize) -> Schedule {
        let connections = connections.max(1) as f64;
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        Schedule {
            interval_ns: connections * 1e9 / rate,
            offset_ns: index as f64 * 1e9 / rate,
        }
    }

    /// The intended send time of request `k` (0-based).
    pub fn send_time(&self, k: u64) -> Duration {
        Duration::from_nanos((self.offset_ns + k as f64 * self.interval_ns) as u64)
    }

    /// How many requests this connection sends in `[0, window)`.
    pub fn count_within(&self, window: Duration) -> u64 {
        let w = window.as_nanos() as f64;
        if w <= self.offset_ns {
            return 0;
        }
        ((w - self.offset_ns) / self.interval_ns).ceil() as u64
    }
}

/// Releases every connection's sends on time: connection `i` receives the
/// intended send times of [`Schedule::for_connection`]`(rate, n, i)`, each
/// when it falls due, from a dedicated thread.
pub struct Pacer;

impl Pacer {
    /// Starts pacing `connections` at `rate` in total from `begin` until
    /// `end`; the receivers close after the last send.
    pub fn spawn(
        rate: f64,
        connections: usize,
        begin: Instant,
        end: Instant,
    ) -> std::io::Result<Vec<mpsc::UnboundedReceiver<Instant>>> {
        let n = connections.max(1);
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..n).map(|_| mpsc::unbounded_channel()).unzip();
        let schedules: Vec<Schedule> = (0..n)
            .map(|i| Schedule::for_connection(rate, n, i))
            .collect();
        std::thread::Builder::new()
            .name("levee-bench-pacer".into())
            .spawn(move || {
                for k in 0u64.. {
                    // Global send k is connection k % n's send k / n.
                    let i = (k % n as u64) as usize;
                    let due = begin + schedules[i].send_time(k / n as u64);
                    if due >= end {
                        break;
                    }
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    // A connection that gave up (its task ended) just misses out.
                    let _ = senders[i].send(due);
                }
            })?;
        Ok(receivers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_releases_each_connections_schedule_on_time() {
        let begin = Instant::now() + Duration::from_millis(5);
        let end = begin + Duration::from_millis(100);
        let mut rx = Pacer::spawn(400.0, 4, begin, end).expect("pacer thread");
        for (i, r) in rx.iter_mut().enumerate() {
            let s = Schedule::for_connection(400.0, 4, i);
            let mut k = 0;
            while let Some(due) = r.blocking_recv() {
                assert_eq!(due, begin + s.send_time(k), "connection {i} send {k}");
                // Released no earlier than due.
                assert!(Instant::now() >= due);
                k += 1;
            }
            assert_eq!(
                k,
                s.count_within(Duration::from_millis(100)),
                "connection {i}"
            );
        }
    }

    #[test]
    fn connections_interleave_evenly() {
        // 1000 req/s over 4 connections: each sends every 4 ms, offset 1 ms apart.
        let s: Vec<Schedule> = (0..4)
            .map(|i| Schedule::for_connection(1000.0, 4, i))
            .collect();
        assert_eq!(s[0].send_time(0), Duration::ZERO);
        assert_eq!(s[0].send_time(1), Duration::from_millis(4));
        assert_eq!(s[3].send_time(0), Duration::from_millis(3));
        assert_eq!(s[3].send_time(2), Duration::from_millis(11));
        let mut all: Vec<Duration> = s
            .iter()
            .flat_map(|c| (0..5).map(|k| c.send_time(k)))
            .collect();
        all.sort();
        for (i, t) in all.iter().enumerate() {
            assert_eq!(*t, Duration::from_millis(i as u64));
        }
    }

    #[test]
    fn counts_add_up_to_rate_times_window() {
        for (rate, conns) in [(1000.0, 16), (5000.0, 16), (777.0, 3), (10.0, 100)] {
            let total: u64 = (0..conns)
                .map(|i| {
                    Schedule::for_connection(rate, conns, i).count_within(Duration::from_secs(2))
                })
                .sum();
            assert_eq!(total, (rate * 2.0) as u64, "rate {rate} over {conns}");
        }
        let s = Schedule::for_connection(1000.0, 4, 2);
        assert_eq!(s.count_within(Duration::from_millis(2)), 0);
        assert_eq!(s.count_within(Duration::from_micros(2001)), 1);
    }

    #[test]
    fn nonsense_rates_do_not_panic() {
        let s = Schedule::for_connection(0.0, 0, 0);
        assert_eq!(s.send_time(1), Duration::from_secs(1));
    }
}
