//! Many probes in one run, politely: a bounded number at a time, started no
//! faster than a rate, and never two at once to the same IP (the kernel
//! caches one cookie per server IP, so two probes of one IP would see each
//! other's cookies). Results are handed over as each probe ends.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How fast and how wide.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Probes under way at once.
    pub concurrency: usize,
    /// Probes started per second, at most.
    pub per_second: f64,
}

/// Hands out start times at most `per_second` apart.
struct Pacer {
    next: Mutex<Instant>,
    gap: Duration,
}

impl Pacer {
    fn new(per_second: f64) -> Pacer {
        Pacer { next: Mutex::new(Instant::now()), gap: Duration::from_secs_f64(1.0 / per_second) }
    }

    /// Waits for this caller's turn.
    fn wait(&self) {
        let start = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let start = (*next).max(Instant::now());
            *next = start + self.gap;
            start
        };
        std::thread::sleep(start.saturating_duration_since(Instant::now()));
    }
}

/// Groups `jobs` by the IP of `addr_of` (each group probed by one worker, in
/// order), keeping the first appearance order of the IPs.
fn by_ip<J>(jobs: Vec<J>, addr_of: impl Fn(&J) -> Option<SocketAddr>) -> Vec<Vec<J>> {
    let mut order: Vec<Option<IpAddr>> = Vec::new();
    let mut groups: BTreeMap<usize, Vec<J>> = BTreeMap::new();
    for job in jobs {
        let ip = addr_of(&job).map(|a| a.ip());
        // Jobs without an address (unresolved) need no care: each is alone.
        let slot = match ip.and_then(|ip| order.iter().position(|o| *o == Some(ip))) {
            Some(slot) => slot,
            None => {
                order.push(ip);
                order.len() - 1
            }
        };
        groups.entry(slot).or_default().push(job);
    }
    groups.into_values().collect()
}

/// Runs `probe` on every job with `pace` (each start waits its turn), calling `done` with each result as
/// it comes (from the worker threads, one at a time). Stops starting new
/// probes once `stop()` says so.
pub fn run_all<J: Sync, R>(
    jobs: Vec<J>,
    addr_of: impl Fn(&J) -> Option<SocketAddr>,
    pace: Pace,
    stop: impl Fn() -> bool + Sync,
    probe: impl Fn(&J) -> R + Sync,
    done: impl FnMut(R) + Send,
) {
    let groups = by_ip(jobs, addr_of);
    let next_group = AtomicUsize::new(0);
    let pacer = Pacer::new(pace.per_second);
    let done = Mutex::new(done);
    let workers = pace.concurrency.clamp(1, groups.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let Some(group) = groups.get(next_group.fetch_add(1, Ordering::Relaxed)) else { return };
                for job in group {
                    if stop() {
                        return;
                    }
                    pacer.wait();
                    let result = probe(job);
                    (done.lock().unwrap_or_else(|e| e.into_inner()))(result);
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn one_ip_is_one_group_in_first_seen_order() {
        let jobs = vec![addr("10.0.0.1:80"), addr("10.0.0.2:80"), addr("10.0.0.1:443"), None, None];
        let groups = by_ip(jobs, |j| *j);
        assert_eq!(groups.len(), 4, "{groups:?}");
        assert_eq!(groups[0], [addr("10.0.0.1:80"), addr("10.0.0.1:443")]);
        assert_eq!(groups[1], [addr("10.0.0.2:80")]);
    }

    #[test]
    fn never_two_at_once_on_one_ip_and_never_more_than_the_bound() {
        let jobs: Vec<Option<SocketAddr>> = (0..40).map(|i| addr(&format!("10.0.0.{}:{}", i % 5, 1000 + i))).collect();
        let busy: Mutex<Vec<IpAddr>> = Mutex::new(Vec::new());
        let (most, clash) = (AtomicUsize::new(0), AtomicBool::new(false));
        let mut results = Vec::new();
        run_all(
            jobs,
            |j| *j,
            Pace { concurrency: 3, per_second: 10_000.0 },
            || false,
            |job| {
                let ip = job.unwrap().ip();
                {
                    let mut b = busy.lock().unwrap();
                    clash.fetch_or(b.contains(&ip), Ordering::SeqCst);
                    b.push(ip);
                    most.fetch_max(b.len(), Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(2));
                busy.lock().unwrap().retain(|b| *b != ip);
                job.unwrap().port()
            },
            |port| results.push(port),
        );
        results.sort();
        assert_eq!(results, (1000..1040).collect::<Vec<u16>>(), "every job ran once");
        assert!(!clash.load(Ordering::SeqCst), "two probes of one IP overlapped");
        assert!(most.load(Ordering::SeqCst) <= 3);
    }

    #[test]
    fn the_pacer_spaces_starts() {
        let pacer = Pacer::new(100.0);
        let start = Instant::now();
        for _ in 0..5 {
            pacer.wait();
        }
        // Four gaps of 10 ms at least: a lower bound, which a slow machine cannot break.
        assert!(start.elapsed() >= Duration::from_millis(40), "{:?}", start.elapsed());
    }

    #[test]
    fn stop_ends_the_run() {
        let jobs: Vec<Option<SocketAddr>> = (0..10).map(|i| addr(&format!("10.0.1.{i}:80"))).collect();
        let ran = AtomicUsize::new(0);
        run_all(
            jobs,
            |j| *j,
            Pace { concurrency: 1, per_second: 1000.0 },
            || ran.load(Ordering::SeqCst) >= 3,
            |_| ran.fetch_add(1, Ordering::SeqCst),
            |_| {},
        );
        assert_eq!(ran.load(Ordering::SeqCst), 3);
    }
}
