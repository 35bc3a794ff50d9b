//! Container ids (64 random hex digits) and docker-style default names (`adjective_surname`).

const LEFT: [&str; 32] = [
    "admiring", "agitated", "amazing", "awesome", "bold", "brave", "busy", "clever", "cool",
    "dazzling", "eager", "elated", "epic", "fervent", "focused", "gallant", "gifted", "happy",
    "hopeful", "jolly", "keen", "kind", "lucid", "modest", "nifty", "quirky", "relaxed", "serene",
    "sharp", "stoic", "vibrant", "zealous",
];

const RIGHT: [&str; 32] = [
    "agnesi", "babbage", "bardeen", "bose", "curie", "darwin", "dijkstra", "einstein", "euler",
    "fermat", "feynman", "galois", "gauss", "hopper", "hypatia", "johnson", "kepler", "knuth",
    "lamarr", "lovelace", "meitner", "noether", "pascal", "ritchie", "shannon", "tesla",
    "thompson", "torvalds", "turing", "volta", "wozniak", "wright",
];

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty()).is_err() {
        // getrandom(2) does not fail once the pool is initialized; fall back to the clock.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ u128::from(std::process::id());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
        }
    }
    buf
}

pub(crate) fn new_id() -> String {
    random_bytes::<32>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A name not in `taken`, as docker's generator makes them (with a digit appended on a
/// collision).
pub(crate) fn new_name(taken: &[String]) -> String {
    for attempt in 0..64 {
        let [a, b, c] = random_bytes::<3>();
        let mut name = format!(
            "{}_{}",
            LEFT[a as usize % LEFT.len()],
            RIGHT[b as usize % RIGHT.len()]
        );
        if attempt > 8 {
            name.push_str(&(c % 10).to_string());
        }
        if !taken.contains(&name) {
            return name;
        }
    }
    format!("strata_{}", &new_id()[..12])
}
