//! What the load generator reads about the server process from `/proc`
//! (CPU time, current and peak resident memory), and the process-wide
//! settings it makes for itself: its CPU pinning and open-file limit.

use std::io;

/// CPU seconds (user + system, every thread) the process has used so far.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no ')' in stat"))?;
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = after_name.split_ascii_whitespace().collect();
    let ticks = |index: usize| -> io::Result<f64> {
        fields
            .get(index - 3)
            .and_then(|field| field.parse::<f64>().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short stat"))
    };
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks(14)? + ticks(15)?) / per_second)
}

/// Seconds the process's threads were ready to run but waited for a CPU
/// (second field of each thread's `schedstat`): time taken by other
/// processes on the server's core, which makes a run noisy.
pub fn run_delay_seconds(pid: u32) -> io::Result<f64> {
    let mut total_ns = 0u64;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = entry?.path().join("schedstat");
        // A thread may end between the listing and the read.
        if let Ok(schedstat) = std::fs::read_to_string(path) {
            total_ns += schedstat
                .split_ascii_whitespace()
                .nth(1)
                .and_then(|field| field.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total_ns as f64 / 1e9)
}

/// A `kB` line of `/proc/PID/status` (`VmRSS`, `VmHWM`), in bytes.
fn status_bytes(pid: u32, key: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
        })
        .map(|kib| kib * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no {key} in status")))
}

/// Resident memory now.
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    status_bytes(pid, "VmRSS")
}

/// The highest resident memory so far.
pub fn peak_rss_bytes(pid: u32) -> io::Result<u64> {
    status_bytes(pid, "VmHWM")
}

/// Pins the calling process (every thread it starts after this) to `core`.
pub fn pin_to_core(core: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raises the open-file limit to the hard limit (servers started later
/// inherit it); returns the new soft limit.
pub fn raise_open_files() -> io::Result<u64> {
    // SAFETY: getrlimit and setrlimit read and write the struct we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(limit.rlim_cur as u64)
    }
}

/// The 1-minute load average, to tell whether the machine is busy.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}
