/// Linux signal numbers by name (without the `SIG` prefix), as moby's `signal.ParseSignal`
/// knows them: image configs store `StopSignal` as written (`SIGTERM`, `TERM` or `15`).
const SIGNALS: [(&str, i32); 33] = [
    ("ABRT", 6),
    ("ALRM", 14),
    ("BUS", 7),
    ("CHLD", 17),
    ("CLD", 17),
    ("CONT", 18),
    ("FPE", 8),
    ("HUP", 1),
    ("ILL", 4),
    ("INT", 2),
    ("IO", 29),
    ("IOT", 6),
    ("KILL", 9),
    ("PIPE", 13),
    ("POLL", 29),
    ("PROF", 27),
    ("PWR", 30),
    ("QUIT", 3),
    ("SEGV", 11),
    ("STKFLT", 16),
    ("STOP", 19),
    ("SYS", 31),
    ("TERM", 15),
    ("TRAP", 5),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("USR1", 10),
    ("USR2", 12),
    ("VTALRM", 26),
    ("WINCH", 28),
    ("XCPU", 24),
];
const RTMIN: i32 = 34;
const RTMAX: i32 = 64;

/// The number of a signal given as `SIGTERM`, `TERM`, `term`, `15` or `RTMIN+3`.
pub fn signal_number(spec: &str) -> Option<i32> {
    if let Ok(n) = spec.parse::<i32>() {
        return (1..=RTMAX).contains(&n).then_some(n);
    }
    let upper = spec.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(offset) = name.strip_prefix("RTMIN+") {
        return offset
            .parse::<i32>()
            .ok()
            .map(|o| RTMIN + o)
            .filter(|n| *n <= RTMAX);
    }
    if let Some(offset) = name.strip_prefix("RTMAX-") {
        return offset
            .parse::<i32>()
            .ok()
            .map(|o| RTMAX - o)
            .filter(|n| *n >= RTMIN);
    }
    match name {
        "RTMIN" => Some(RTMIN),
        "RTMAX" => Some(RTMAX),
        _ => SIGNALS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_realtime() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("kill"), Some(9));
        assert_eq!(signal_number("10"), Some(10));
        assert_eq!(signal_number("RTMIN+2"), Some(36));
        assert_eq!(signal_number("SIGNOPE"), None);
        assert_eq!(signal_number("0"), None);
    }
}
