//! Process CPU time for the benches, read from `/proc/<pid>/stat` (user +
//! system, in clock ticks of 10 ms), so a bench can report a server's CPU
//! per allocation beside its latencies. Linux only; elsewhere `None`.

use std::time::Duration;

/// Clock ticks per second of `/proc/*/stat` on Linux (USER_HZ).
const TICKS_PER_SECOND: u64 = 100;

/// User plus system CPU time `pid` has used so far.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// This process's CPU time so far.
pub fn own_cpu() -> Option<Duration> {
    process_cpu(std::process::id())
}

/// Fields 14 (utime) and 15 (stime), counted after the command name, which
/// is in parentheses and may itself hold spaces.
fn parse_stat(stat: &str) -> Option<Duration> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis(
        (user + system) * 1000 / TICKS_PER_SECOND,
    ))
}

/// CPU used by a set of processes across a measured stretch.
pub struct CpuMeter {
    pids: Vec<u32>,
    start: Duration,
}

impl CpuMeter {
    pub fn start(pids: &[u32]) -> Self {
        Self {
            pids: pids.to_vec(),
            start: total(pids),
        }
    }

    /// CPU used since `start`, divided by `operations`.
    pub fn per_operation(&self, operations: usize) -> Duration {
        let used = total(&self.pids).saturating_sub(self.start);
        used / u32::try_from(operations.max(1)).unwrap_or(u32::MAX)
    }
}

fn total(pids: &[u32]) -> Duration {
    pids.iter().filter_map(|pid| process_cpu(*pid)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_system_ticks_after_a_name_with_spaces() {
        let stat = "42 (tokio rt) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0";
        assert_eq!(parse_stat(stat), Some(Duration::from_millis(3000)));
    }

    #[test]
    fn own_cpu_is_readable_on_linux() {
        assert!(own_cpu().is_some());
    }
}
