//! CPU time and memory of a process from `/proc` (Linux only; elsewhere
//! every sample is `None`).

use std::time::Instant;

/// Clock ticks per second of `utime`/`stime` in `/proc/PID/stat`. Linux
/// reports them in USER_HZ, which is 100 on every mainstream architecture.
pub const CLK_TCK: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size, KiB (`VmRSS`).
    pub rss_kb: u64,
    /// Peak resident set size, KiB (`VmHWM`).
    pub hwm_kb: u64,
    /// When it was taken.
    pub at: Instant,
}

/// Reads `/proc/{pid}/stat` and `/proc/{pid}/status`; `pid` "self" reads
/// this process.
pub fn sample(pid: &str) -> Option<ProcSample> {
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after its closing
    // parenthesis start with field 3 (state). utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].split_whitespace().next()?.parse().ok()
    };
    Some(ProcSample {
        cpu_ticks: utime + stime,
        rss_kb: kb("VmRSS:")?,
        hwm_kb: kb("VmHWM:").unwrap_or(0),
        at,
    })
}

/// CPU use between two samples, in percent of one core.
pub fn cpu_percent(before: &ProcSample, after: &ProcSample) -> f64 {
    let secs = after.at.duration_since(before.at).as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / CLK_TCK / secs * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_itself() {
        if cfg!(target_os = "linux") {
            let s = sample("self").expect("/proc/self");
            assert!(s.rss_kb > 0);
            assert!(s.hwm_kb >= s.rss_kb);
        }
    }
}
