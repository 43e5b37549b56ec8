//! The load the RPC benches put on a stack: `callers` concurrent loops of one call, measured
//! after a warm-up, and the medians of several rounds.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Calls per second and latency percentiles of one run.
#[derive(Clone, Copy, Debug)]
pub struct Throughput {
    pub calls_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// Runs `callers` loops of `call` for `secs`, after a one-second warm-up.
pub async fn drive<F, Fut>(callers: usize, secs: u64, call: F) -> Throughput
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let warm = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (call, warm, stop) = (call.clone(), Arc::clone(&warm), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(1 << 12);
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    call().await;
                    if !warm.load(Ordering::Relaxed) {
                        samples.push(started.elapsed());
                    }
                }
                samples
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    warm.store(false, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let measured = started.elapsed();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() - 1) as f64 * p).round() as usize];
    Throughput {
        calls_per_sec: all.len() as f64 / measured.as_secs_f64(),
        p50: pct(0.5),
        p99: pct(0.99),
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The median of each figure over the rounds, each on its own.
pub fn median(rounds: &[Throughput]) -> Throughput {
    let mut p50: Vec<Duration> = rounds.iter().map(|r| r.p50).collect();
    let mut p99: Vec<Duration> = rounds.iter().map(|r| r.p99).collect();
    p50.sort();
    p99.sort();
    Throughput {
        calls_per_sec: median_of(rounds.iter().map(|r| r.calls_per_sec).collect()),
        p50: p50[p50.len() / 2],
        p99: p99[p99.len() / 2],
    }
}
