//! CPU time of processes from /proc (Linux): absolute throughput is noisy on a shared box,
//! CPU per call much less so.

use std::{collections::HashMap, fs};

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`; 100 on Linux).
pub fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// utime + stime of a /proc/<pid>/stat line, plus cutime + cstime: the time of children
/// that ended and were reaped (PostgreSQL backends whose connection closed are counted in
/// the postmaster's). The command name is in parentheses and may hold spaces, so fields
/// are counted from the closing one.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state(3) ... utime(14) stime(15) cutime(16) cstime(17), so
    // indexes 11 to 14 here.
    (11..=14).try_fold(0u64, |sum, i| {
        Some(sum + fields.get(i)?.parse::<u64>().ok()?)
    })
}

/// Processes whose command name is `name`, with their CPU ticks so far.
pub fn by_name(name: &str) -> HashMap<u32, u64> {
    processes(|_, stat| command(stat) == Some(name))
}

/// `root` and its children (a postmaster and its backends), with their CPU ticks so far:
/// the postmaster's count includes its reaped backends'.
pub fn tree(root: u32) -> HashMap<u32, u64> {
    processes(|pid, stat| pid == root || parent(stat) == Some(root))
}

/// Every process whose /proc/<pid>/stat line `keep` takes, with its CPU ticks so far.
fn processes(keep: impl Fn(u32, &str) -> bool) -> HashMap<u32, u64> {
    let mut found = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if keep(pid, &stat)
            && let Some(ticks) = cpu_ticks(&stat)
        {
            found.insert(pid, ticks);
        }
    }
    found
}

/// The command name in a /proc/<pid>/stat line (field 2, in parentheses; as /proc/<pid>/comm).
fn command(stat: &str) -> Option<&str> {
    stat.get(stat.find('(')? + 1..stat.rfind(')')?)
}

/// The parent's pid in a /proc/<pid>/stat line (field 4).
fn parent(stat: &str) -> Option<u32> {
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn ticks_of(pid: u32) -> Option<u64> {
    cpu_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Resident memory of `pid`, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Ticks used between two snapshots of a set of processes: processes that started in
/// between count from zero; processes that ended are lost (their last ticks unknown).
pub fn used(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> u64 {
    after
        .iter()
        .map(|(pid, ticks)| ticks.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_add_own_and_reaped_childrens_time_even_with_spaces_in_the_name() {
        let stat = "4242 (postgres: dispute idle) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    150 37 8 5 20 0 1 0 12345 123456789 2048 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(150 + 37 + 8 + 5));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn the_parent_is_the_field_after_the_state() {
        let stat = "4242 (postgres: a) b) S 17 4242 4242 0 -1 4194560";
        assert_eq!(parent(stat), Some(17));
        assert_eq!(command(stat), Some("postgres: a) b"));
        let me = std::process::id();
        assert!(tree(me).contains_key(&me));
    }

    #[test]
    fn used_ticks_count_new_processes_from_zero() {
        let before = HashMap::from([(1, 100), (2, 50)]);
        let after = HashMap::from([(1, 130), (2, 50), (3, 7)]);
        assert_eq!(used(&before, &after), 37);
    }

    #[test]
    fn this_process_is_visible_in_proc() {
        let me = std::process::id();
        assert!(ticks_of(me).is_some());
        assert!(rss_kib(me).unwrap() > 0);
    }
}
