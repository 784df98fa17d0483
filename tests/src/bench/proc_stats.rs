//! What the kernel says about a process: CPU seconds (utime + stime from `/proc/PID/stat`,
//! dead threads included) and memory (VmRSS, VmHWM from `/proc/PID/status`).

use std::io;

/// One reading of a process's CPU time and memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// User plus system CPU seconds since the process started.
    pub cpu_secs: f64,
    /// Resident set size now, KiB.
    pub rss_kib: u64,
    /// Peak resident set size, KiB.
    pub hwm_kib: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`.
pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let cpu_secs = cpu_secs_from_stat(&stat, clock_ticks())?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(ProcSample {
        cpu_secs,
        rss_kib: status_kib(&status, "VmRSS:")?,
        hwm_kib: status_kib(&status, "VmHWM:")?,
    })
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("unexpected /proc format: {what}"))
}

/// utime + stime (fields 14 and 15) of a `stat` line, in seconds.
fn cpu_secs_from_stat(stat: &str, ticks_per_sec: f64) -> io::Result<f64> {
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or_else(|| bad("stat without ')'"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> io::Result<f64> {
        fields.get(i).and_then(|f| f.parse::<u64>().ok()).map(|v| v as f64).ok_or_else(|| bad("stat times"))
    };
    // `rest` starts at field 3 (state): utime is field 14 → index 11.
    Ok((field(11)? + field(12)?) / ticks_per_sec)
}

/// A `Key:   123 kB` line of `/proc/PID/status`, in KiB.
fn status_kib(status: &str, key: &str) -> io::Result<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| bad(key))
}

/// Clock ticks per second of the `stat` times.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a constant of the C library.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Raises this process's soft open-file limit to its hard limit (children inherit it);
/// returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_after_a_name_with_parentheses() {
        let stat = "42 (a) b) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(cpu_secs_from_stat(stat, 100.0).unwrap(), 3.0);
    }

    #[test]
    fn status_values_in_kib() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(status_kib(status, "VmRSS:").unwrap(), 1024);
        assert_eq!(status_kib(status, "VmHWM:").unwrap(), 2048);
        assert!(status_kib(status, "VmSwap:").is_err());
    }

    #[test]
    fn own_process_is_readable() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
    }
}
