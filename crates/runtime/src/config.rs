//! docker's rules for what a container runs: how the image's Entrypoint, Cmd, Env,
//! WorkingDir and User combine with `run`'s flags, and the process environment the daemon
//! adds (PATH, HOSTNAME, TERM; HOME from the user's passwd entry, as runc adds it).

use oci::ContainerConfig;

use crate::mounts::MountRequest;
use crate::{Result, RuntimeError};

/// docker's default PATH, given when the image sets none.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `strata run`'s flags, parsed.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The image as the user named it.
    pub image: String,
    pub name: Option<String>,
    /// The command after the image (replaces the image's Cmd).
    pub args: Vec<String>,
    /// `--entrypoint`: replaces the image's Entrypoint and drops its Cmd; "" resets it.
    pub entrypoint: Option<String>,
    /// `-e` and `--env-file`, in order, already `KEY=VALUE`.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub mounts: Vec<MountRequest>,
    pub read_only: bool,
    pub network: sandbox::Network,
    pub tty: bool,
    pub interactive: bool,
    pub auto_remove: bool,
    pub memory: Option<u64>,
    pub nano_cpus: Option<u64>,
    pub pids_limit: Option<i64>,
}

/// `-e NAME=value` as given; `-e NAME` takes the value from `lookup` (the caller's
/// environment) and is dropped when it is unset there, as docker does.
pub fn resolve_env_arg(arg: &str, lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    if arg.contains('=') {
        return Some(arg.to_string());
    }
    lookup(arg).map(|v| format!("{arg}={v}"))
}

/// The lines of an `--env-file`: blank lines and `#` comments skipped, leading whitespace
/// trimmed, `NAME` alone looked up like `-e NAME`.
pub fn parse_env_file(
    content: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (n, line) in content.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line.split('=').next().unwrap_or("");
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(RuntimeError::Invalid(format!(
                "invalid environment variable on line {}: {line}",
                n + 1
            )));
        }
        out.extend(resolve_env_arg(line, &lookup));
    }
    Ok(out)
}

fn env_key(kv: &str) -> &str {
    kv.split_once('=').map(|(k, _)| k).unwrap_or(kv)
}

/// docker's `ReplaceOrAppendEnvValues`: each override replaces the entry with its key, or is
/// appended.
pub(crate) fn replace_or_append(base: &mut Vec<String>, overrides: &[String]) {
    for kv in overrides {
        let key = env_key(kv);
        match base.iter_mut().find(|e| env_key(e) == key) {
            Some(e) => *e = kv.clone(),
            None => base.push(kv.clone()),
        }
    }
}

/// The container's configuration: the image's, with the flags applied.
pub(crate) fn merge(image: Option<&ContainerConfig>, opts: &RunOptions) -> Result<ContainerConfig> {
    let mut config = image.cloned().unwrap_or_default();
    replace_or_append(&mut config.env, &opts.env);
    match &opts.entrypoint {
        Some(e) => {
            config.entrypoint = if e.is_empty() {
                None
            } else {
                Some(vec![e.clone()])
            };
            // docker: a new entrypoint drops the image's default command.
            config.cmd = (!opts.args.is_empty()).then(|| opts.args.clone());
        }
        None if !opts.args.is_empty() => config.cmd = Some(opts.args.clone()),
        None => {}
    }
    if let Some(w) = &opts.workdir {
        if !w.starts_with('/') {
            return Err(RuntimeError::Invalid(format!(
                "the working directory '{w}' is invalid, it needs to be an absolute path"
            )));
        }
        config.working_dir = w.clone();
    }
    if let Some(u) = &opts.user {
        config.user = u.clone();
    }
    // The volumes of the image are mounted; the record keeps the configured ones.
    Ok(config)
}

/// The command line: Entrypoint then Cmd.
pub(crate) fn argv(config: &ContainerConfig) -> Result<Vec<String>> {
    let mut argv: Vec<String> = config.entrypoint.clone().unwrap_or_default();
    argv.extend(config.cmd.clone().unwrap_or_default());
    if argv.is_empty() {
        return Err(RuntimeError::Invalid("no command specified".into()));
    }
    Ok(argv)
}

/// The process environment, as docker and runc build it: PATH and HOSTNAME (and TERM with a
/// terminal) first, the container's Env over them, HOME last when still missing.
pub(crate) fn process_env(
    config: &ContainerConfig,
    hostname: &str,
    tty: bool,
    home: &str,
) -> Vec<String> {
    let mut env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={hostname}"),
    ];
    if tty {
        env.push("TERM=xterm".into());
    }
    replace_or_append(&mut env, &config.env);
    if !env.iter().any(|e| env_key(e) == "HOME") {
        env.push(format!("HOME={home}"));
    }
    env
}

/// docker's `RAMInBytes`: `512`, `64m`, `1.5g`, `2GiB`… in binary units.
pub fn parse_memory(s: &str) -> Result<u64> {
    let bad = || RuntimeError::Invalid(format!("invalid size: '{s}'"));
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return Err(bad()),
    };
    Ok((value * mult as f64) as u64)
}

/// `--cpus`: a decimal number of CPUs, at most the machine's.
pub fn parse_nano_cpus(s: &str) -> Result<u64> {
    let value: f64 = s
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| {
            RuntimeError::Invalid(format!("invalid argument \"{s}\" for \"--cpus\" flag"))
        })?;
    let nano = (value * 1e9).round() as u64;
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as u64;
    if nano != 0 && (nano < 10_000_000 || nano > ncpu * 1_000_000_000) {
        return Err(RuntimeError::Invalid(format!(
            "Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available"
        )));
    }
    Ok(nano)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> RunOptions {
        RunOptions::default()
    }

    fn image() -> ContainerConfig {
        ContainerConfig {
            entrypoint: Some(vec!["/ep".into()]),
            cmd: Some(vec!["default".into()]),
            env: vec!["A=image".into(), "PATH=/bin".into()],
            working_dir: "/srv".into(),
            user: "nobody".into(),
            ..Default::default()
        }
    }

    #[test]
    fn entrypoint_and_cmd_follow_docker() {
        let c = merge(Some(&image()), &opts()).unwrap();
        assert_eq!(argv(&c).unwrap(), ["/ep", "default"]);
        let c = merge(
            Some(&image()),
            &RunOptions {
                args: vec!["x".into()],
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(argv(&c).unwrap(), ["/ep", "x"]);
        let o = RunOptions {
            entrypoint: Some("/other".into()),
            ..opts()
        };
        assert_eq!(
            argv(&merge(Some(&image()), &o).unwrap()).unwrap(),
            ["/other"]
        );
        let o = RunOptions {
            entrypoint: Some(String::new()),
            args: vec!["sh".into()],
            ..opts()
        };
        assert_eq!(argv(&merge(Some(&image()), &o).unwrap()).unwrap(), ["sh"]);
        let o = RunOptions {
            entrypoint: Some(String::new()),
            ..opts()
        };
        assert!(argv(&merge(Some(&image()), &o).unwrap()).is_err());
    }

    #[test]
    fn env_workdir_user_override() {
        let o = RunOptions {
            env: vec!["A=flag".into(), "B=new".into()],
            workdir: Some("/w".into()),
            user: Some("0:0".into()),
            ..opts()
        };
        let c = merge(Some(&image()), &o).unwrap();
        assert_eq!(c.env, ["A=flag", "PATH=/bin", "B=new"]);
        assert_eq!((c.working_dir.as_str(), c.user.as_str()), ("/w", "0:0"));
        let env = process_env(&c, "abc", true, "/root");
        assert_eq!(
            env,
            [
                "PATH=/bin",
                "HOSTNAME=abc",
                "TERM=xterm",
                "A=flag",
                "B=new",
                "HOME=/root"
            ]
        );
        assert!(
            merge(
                None,
                &RunOptions {
                    workdir: Some("rel".into()),
                    ..opts()
                }
            )
            .is_err()
        );
    }

    #[test]
    fn env_args_and_files() {
        let lookup = |k: &str| (k == "SET").then(|| "v".to_string());
        assert_eq!(resolve_env_arg("SET", lookup).as_deref(), Some("SET=v"));
        assert_eq!(resolve_env_arg("UNSET", lookup), None);
        assert_eq!(resolve_env_arg("X=", lookup).as_deref(), Some("X="));
        let file = "# comment\n\n  A=1\nSET\nUNSET\nB=two words\n";
        assert_eq!(
            parse_env_file(file, lookup).unwrap(),
            ["A=1", "SET=v", "B=two words"]
        );
        assert!(parse_env_file("bad name=1\n", lookup).is_err());
    }

    #[test]
    fn sizes_are_binary() {
        assert_eq!(parse_memory("64m").unwrap(), 64 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_memory("4096").unwrap(), 4096);
        assert!(parse_memory("12x").is_err());
        assert_eq!(parse_nano_cpus("0.5").unwrap(), 500_000_000);
        assert!(parse_nano_cpus("1000").is_err());
    }
}
