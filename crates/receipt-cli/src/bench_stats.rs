//! Measurements for `bench`: CPU time and peak RSS from /proc (Linux), latency percentiles.

use std::time::Duration;

/// Clock ticks per second of /proc/*/stat times (USER_HZ; 100 on every Linux we target).
const TICKS: f64 = 100.0;

/// utime + stime (seconds) from the contents of a /proc/.../stat file.
fn stat_cpu(stat: &str) -> Option<f64> {
    let f = stat_fields(stat)?;
    // After ')': state(0) ppid(1) ... utime(11) stime(12).
    let u: f64 = f.get(11)?.parse().ok()?;
    let s: f64 = f.get(12)?.parse().ok()?;
    Some((u + s) / TICKS)
}

/// Fields after the command name of a /proc/.../stat file (the name may contain spaces and
/// parentheses: they start after the last ')').
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat[stat.rfind(')')? + 2..].split_whitespace().collect())
}

/// CPU seconds of process `pid` and all its descendants, live or reaped: its own time, the
/// time of the children it waited for (cutime + cstime), and each live child's own and
/// reaped time, recursively (PostgreSQL: the postmaster and its backends). Children that
/// started and ended between two readings are counted once they are reaped.
pub fn process_tree_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f = stat_fields(&stat)?;
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let mut total = (t(11) + t(12) + t(13) + t(14)) / TICKS;
    for child in children(pid) {
        total += process_tree_cpu(child).unwrap_or(0.0);
    }
    Some(total)
}

/// The pids whose parent is `pid` (a scan of /proc).
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| stat_fields(&s)?.get(1)?.parse::<u32>().ok())
                .is_some_and(|ppid| ppid == pid)
        })
        .collect()
}

/// CPU seconds of a whole process (`self` or a pid).
pub fn process_cpu(pid: &str) -> Option<f64> {
    stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Bytes process `pid` ("self" for this one) caused to be written to storage so far
/// (`write_bytes` of `/proc/<pid>/io`); `None` where the kernel does not account it.
pub fn disk_written(pid: &str) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines().find_map(|l| l.strip_prefix("write_bytes:")).and_then(|v| v.trim().parse().ok())
}

/// CPU seconds of this process's threads whose name starts with one of `prefixes`.
pub fn threads_cpu(prefixes: &[&str]) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let mut total = 0.0;
    for t in dir.flatten() {
        let p = t.path();
        let name = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        let name = name.trim_end();
        if prefixes.iter().any(|x| name.starts_with(x)) {
            total += std::fs::read_to_string(p.join("stat")).ok().and_then(|s| stat_cpu(&s)).unwrap_or(0.0);
        }
    }
    total
}

/// CPU seconds of this process's threads, summed per thread name.
pub fn cpu_by_thread_name() -> std::collections::BTreeMap<String, f64> {
    cpu_by_thread_name_of("self")
}

/// CPU seconds of the threads of process `pid` (`self` or a pid), summed per thread name.
pub fn cpu_by_thread_name_of(pid: &str) -> std::collections::BTreeMap<String, f64> {
    let mut m = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return m };
    for t in dir.flatten() {
        let p = t.path();
        let name = std::fs::read_to_string(p.join("comm")).unwrap_or_default().trim_end().to_string();
        let cpu = std::fs::read_to_string(p.join("stat")).ok().and_then(|s| stat_cpu(&s)).unwrap_or(0.0);
        *m.entry(name).or_insert(0.0) += cpu;
    }
    m
}

/// The 1-minute load average.
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Peak resident set size (VmHWM) in KiB of `self` or a pid.
pub fn peak_rss_kib(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Latency samples in microseconds.
#[derive(Default)]
pub struct Samples(pub Vec<u64>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_micros() as u64);
    }
    pub fn extend(&mut self, o: Samples) {
        self.0.extend(o.0);
    }
    /// (p50, p99, max) in milliseconds; zeros when empty.
    pub fn summary(&mut self) -> (f64, f64, f64) {
        if self.0.is_empty() {
            return (0.0, 0.0, 0.0);
        }
        self.0.sort_unstable();
        let at = |q: f64| {
            let i = ((self.0.len() as f64 * q).ceil() as usize).clamp(1, self.0.len()) - 1;
            self.0[i] as f64 / 1000.0
        };
        (at(0.50), at(0.99), *self.0.last().unwrap() as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let s = "42 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0";
        assert_eq!(stat_cpu(s), Some(3.0));
        assert!(process_cpu("self").is_some());
        assert!(peak_rss_kib("self").unwrap() > 0);
    }

    #[test]
    fn a_process_tree_counts_a_reaped_childs_cpu() {
        let me = std::process::id();
        let before = process_tree_cpu(me).unwrap();
        // A child that burns CPU for a while, then is reaped: its time moves to our cutime.
        let st = std::process::Command::new("sh").args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"]).status();
        assert!(st.unwrap().success());
        let after = process_tree_cpu(me).unwrap();
        assert!(after - before >= 0.05, "the reaped child's CPU is counted: {before} -> {after}");
        assert!(!children(1).is_empty() || me == 1, "pid 1 has children");
    }

    #[test]
    fn percentiles() {
        let mut s = Samples((1..=100).map(|i| i * 1000).collect());
        assert_eq!(s.summary(), (50.0, 99.0, 100.0));
    }
}
