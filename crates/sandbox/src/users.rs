//! User and group resolution against an image's `/etc/passwd` and `/etc/group`, with the
//! rules docker's runtime applies to `USER` (moby/sys/user `GetExecUser`).

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
}

/// Who a process runs as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if line.trim_start().starts_with('#') || f.len() < 4 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

fn group_entries(group: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    group.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if line.trim_start().starts_with('#') || f.len() < 3 {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f
                .get(3)
                .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
        })
    })
}

/// Resolves `user[:group]` as docker's runtime does: a numeric user needs no passwd entry (its
/// gid is then 0); a name must exist. Supplementary groups come from `/etc/group` membership
/// only when no group is given explicitly.
pub fn resolve_exec_user(spec: &str, passwd: &str, group: &str) -> Result<ExecUser, UserError> {
    let (user_arg, group_arg) = spec.split_once(':').unwrap_or((spec, ""));
    let uid_num: Option<u32> = user_arg.parse().ok();
    let mut out = ExecUser {
        home: "/".into(),
        ..Default::default()
    };
    let matched = passwd_entries(passwd).find(|u| match uid_num {
        _ if user_arg.is_empty() => u.uid == 0,
        Some(n) => u.uid == n,
        None => u.name == user_arg,
    });
    let mut matched_name = None;
    match matched {
        Some(u) => {
            out.uid = u.uid;
            out.gid = u.gid;
            out.home = u.home.to_string();
            matched_name = Some(u.name.to_string());
        }
        None if user_arg.is_empty() => {}
        None => out.uid = uid_num.ok_or_else(|| UserError::NoUser(user_arg.to_string()))?,
    }
    if !group_arg.is_empty() {
        let gid_num: Option<u32> = group_arg.parse().ok();
        let found = group_entries(group).find(|g| match gid_num {
            Some(n) => g.gid == n,
            None => g.name == group_arg,
        });
        out.gid = match found {
            Some(g) => g.gid,
            None => gid_num.ok_or_else(|| UserError::NoGroup(group_arg.to_string()))?,
        };
    } else if let Some(name) = matched_name {
        out.additional_gids = group_entries(group)
            .filter(|g| g.members.contains(&name.as_str()))
            .map(|g| g.gid)
            .collect();
    }
    Ok(out)
}

/// Resolves a `COPY --chown` / `ADD --chown` spec: a numeric user without a group gets the
/// same number as its group; a named user without a group gets its primary group.
pub fn resolve_chown(spec: &str, passwd: &str, group: &str) -> Result<(u32, u32), UserError> {
    let (user_arg, group_arg) = spec.split_once(':').unwrap_or((spec, ""));
    let (uid, primary_gid) = match user_arg.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => {
            let u = passwd_entries(passwd)
                .find(|u| u.name == user_arg)
                .ok_or_else(|| UserError::NoUser(user_arg.to_string()))?;
            (u.uid, u.gid)
        }
    };
    if group_arg.is_empty() {
        return Ok((uid, primary_gid));
    }
    let gid = match group_arg.parse::<u32>() {
        Ok(n) => n,
        Err(_) => {
            group_entries(group)
                .find(|g| g.name == group_arg)
                .ok_or_else(|| UserError::NoGroup(group_arg.to_string()))?
                .gid
        }
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nappgrp:x:1001:\nwheel:x:10:app,other\naudio:x:29:app\n";

    #[test]
    fn exec_user_follows_runc_rules() {
        let app = resolve_exec_user("app", PASSWD, GROUP).unwrap();
        assert_eq!(
            (app.uid, app.gid, app.additional_gids.clone()),
            (1000, 1001, vec![10, 29])
        );
        assert_eq!(app.home, "/home/app");
        let explicit = resolve_exec_user("app:wheel", PASSWD, GROUP).unwrap();
        assert_eq!((explicit.uid, explicit.gid), (1000, 10));
        assert!(explicit.additional_gids.is_empty());
        let numeric = resolve_exec_user("4242", PASSWD, GROUP).unwrap();
        assert_eq!((numeric.uid, numeric.gid), (4242, 0));
        let by_uid = resolve_exec_user("1000:5", PASSWD, GROUP).unwrap();
        assert_eq!((by_uid.uid, by_uid.gid), (1000, 5));
        assert_eq!(
            resolve_exec_user("nobody", PASSWD, GROUP),
            Err(UserError::NoUser("nobody".into()))
        );
        assert_eq!(
            resolve_exec_user("app:nogroup", PASSWD, GROUP),
            Err(UserError::NoGroup("nogroup".into()))
        );
        assert_eq!(resolve_exec_user("", "", "").unwrap().uid, 0);
    }

    #[test]
    fn chown_follows_copy_rules() {
        assert_eq!(resolve_chown("app", PASSWD, GROUP).unwrap(), (1000, 1001));
        assert_eq!(resolve_chown("42", PASSWD, GROUP).unwrap(), (42, 42));
        assert_eq!(
            resolve_chown("app:wheel", PASSWD, GROUP).unwrap(),
            (1000, 10)
        );
        assert_eq!(resolve_chown("7:8", "", "").unwrap(), (7, 8));
        assert!(resolve_chown("ghost", PASSWD, GROUP).is_err());
    }
}
