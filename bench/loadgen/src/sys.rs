//! The few operating-system facts the tool needs: the open-file limit and a
//! process's resident memory.

/// Raises the soft limit on open files to the hard limit; returns the limits
/// now in force `(soft, hard)`.
// rlim_t is u64 on Linux but not everywhere.
#[allow(clippy::unnecessary_cast)]
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
}

/// The soft limit on open files.
#[allow(clippy::unnecessary_cast)]
pub fn nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    lim.rlim_cur as u64
}

/// Resident memory of a process in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss(&status).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no VmRSS in /proc/{pid}/status"),
        )
    })
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time (user + system) a process has used so far, in seconds, from
/// `/proc/PID/stat`.
pub fn cpu_secs(pid: u32) -> std::io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rfind(')').map(|i| &stat[i + 1..]).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after ')'.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let (Some(utime), Some(stime)) = (ticks(11), ticks(12)) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "unexpected /proc/PID/stat",
        ));
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((utime + stime) as f64 / hz)
}

/// Lets a socket bound to an address with port 0 pick its port at connect
/// time, so the port need only be unique per destination (Linux
/// `IP_BIND_ADDRESS_NO_PORT`); best effort.
#[cfg(target_os = "linux")]
pub fn bind_address_no_port(fd: std::os::fd::RawFd) {
    const IP_BIND_ADDRESS_NO_PORT: libc::c_int = 24;
    let one: libc::c_int = 1;
    // SAFETY: a valid fd and a pointer to an int of the size we pass.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(not(target_os = "linux"))]
pub fn bind_address_no_port(_fd: i32) {}

#[cfg(test)]
mod tests {
    #[test]
    fn own_rss_and_cpu_are_readable() {
        let pid = std::process::id();
        assert!(super::rss_kib(pid).expect("rss") > 0);
        assert!(super::cpu_secs(pid).expect("cpu") >= 0.0);
    }

    #[test]
    fn vm_rss_line() {
        assert_eq!(
            super::parse_vm_rss("Name:\tx\nVmRSS:\t   1234 kB\nVmSwap: 0 kB\n"),
            Some(1234)
        );
        assert_eq!(super::parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn nofile_limit_is_raised_to_hard() {
        let (soft, hard) = super::raise_nofile_limit().expect("rlimit");
        assert_eq!(soft, hard);
        assert_eq!(super::nofile_limit(), soft);
    }
}
