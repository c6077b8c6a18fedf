//! Resolution of an exec's `user` string (`"uid[:gid]"`, `"name[:group]"`) against the rootfs'
//! `/etc/passwd` and `/etc/group`, the way Docker and BuildKit do it.

use std::path::{Path, PathBuf};

/// The identity a container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids (from `/etc/group` membership), without the primary group.
    pub additional_gids: Vec<u32>,
}

/// Errors of user resolution.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// A user name is not in the rootfs' `/etc/passwd`.
    #[error("unable to find user {name}: no matching entries in passwd file")]
    UnknownUser {
        /// The name asked for.
        name: String,
    },
    /// A group name is not in the rootfs' `/etc/group`.
    #[error("unable to find group {name}: no matching entries in group file")]
    UnknownGroup {
        /// The name asked for.
        name: String,
    },
    /// The passwd or group file could not be read.
    #[error("read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

#[derive(Debug)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: fields.first()?.to_string(),
                uid: fields.get(2)?.parse().ok()?,
                gid: fields.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            Some(GroupEntry {
                name: fields.first()?.to_string(),
                gid: fields.get(2)?.parse().ok()?,
                members: fields
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolves `user` given the contents of the passwd and group files (empty when absent).
///
/// An empty `user` means root. A numeric user that is not in passwd runs with gid 0 unless a
/// group is given; supplementary groups come from group membership of the user's name.
pub fn resolve_user_from(user: &str, passwd: &str, group: &str) -> Result<ResolvedUser, UserError> {
    let user = user.trim();
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = parse_passwd(passwd);
    let groups = parse_group(group);

    let (uid, mut gid, name) =
        if user_part.is_empty() {
            let entry = passwd.iter().find(|e| e.uid == 0);
            (0, entry.map_or(0, |e| e.gid), entry.map(|e| e.name.clone()))
        } else if let Ok(uid) = user_part.parse::<u32>() {
            let entry = passwd.iter().find(|e| e.uid == uid);
            (
                uid,
                entry.map_or(0, |e| e.gid),
                entry.map(|e| e.name.clone()),
            )
        } else {
            let entry = passwd.iter().find(|e| e.name == user_part).ok_or_else(|| {
                UserError::UnknownUser {
                    name: user_part.to_string(),
                }
            })?;
            (entry.uid, entry.gid, Some(entry.name.clone()))
        };

    if let Some(group_part) = group_part.filter(|g| !g.is_empty()) {
        gid = match group_part.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                groups
                    .iter()
                    .find(|g| g.name == group_part)
                    .ok_or_else(|| UserError::UnknownGroup {
                        name: group_part.to_string(),
                    })?
                    .gid
            }
        };
    }

    let mut additional_gids = Vec::new();
    if let Some(name) = name {
        for g in &groups {
            if g.gid != gid && g.members.contains(&name) && !additional_gids.contains(&g.gid) {
                additional_gids.push(g.gid);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

/// Reads a file of the rootfs; a missing file (or one that is a symlink, which could point out of
/// the rootfs) reads as empty.
fn read_rootfs_file(rootfs: &Path, relative: &str) -> Result<String, UserError> {
    let path = rootfs.join(relative);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_file() => {}
        Ok(_) => return Ok(String::new()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(source) => return Err(UserError::Read { path, source }),
    }
    let bytes = std::fs::read(&path).map_err(|source| UserError::Read {
        path: path.clone(),
        source,
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Resolves `user` against `rootfs/etc/passwd` and `rootfs/etc/group`.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<ResolvedUser, UserError> {
    let passwd = read_rootfs_file(rootfs, "etc/passwd")?;
    let group = read_rootfs_file(rootfs, "etc/group")?;
    resolve_user_from(user, &passwd, &group)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        # comment\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n\
        broken:line\n";
    const GROUP: &str = "root:x:0:\n\
        daemon:x:1:\n\
        wheel:x:10:root,app\n\
        docker:x:999:app\n\
        app:x:1000:\n\
        staff:x:50:\n";

    fn resolve(user: &str) -> Result<ResolvedUser, UserError> {
        resolve_user_from(user, PASSWD, GROUP)
    }

    #[test]
    fn empty_user_is_root_with_its_groups() {
        let user = resolve("").unwrap();
        assert_eq!((user.uid, user.gid), (0, 0));
        assert_eq!(user.additional_gids, vec![10]);
    }

    #[test]
    fn name_resolves_uid_gid_and_supplementary_groups() {
        let user = resolve("app").unwrap();
        assert_eq!((user.uid, user.gid), (1000, 1000));
        assert_eq!(user.additional_gids, vec![10, 999]);
    }

    #[test]
    fn numeric_uid_known_in_passwd_takes_its_gid() {
        let user = resolve("1").unwrap();
        assert_eq!((user.uid, user.gid), (1, 1));
        assert!(user.additional_gids.is_empty());
    }

    #[test]
    fn numeric_uid_unknown_runs_with_gid_zero() {
        let user = resolve("4242").unwrap();
        assert_eq!(
            (user.uid, user.gid, user.additional_gids),
            (4242, 0, vec![])
        );
    }

    #[test]
    fn explicit_group_by_name_or_number() {
        let by_name = resolve("app:staff").unwrap();
        assert_eq!((by_name.uid, by_name.gid), (1000, 50));
        assert_eq!(by_name.additional_gids, vec![10, 999]);
        let by_number = resolve("4242:77").unwrap();
        assert_eq!((by_number.uid, by_number.gid), (4242, 77));
    }

    #[test]
    fn primary_group_is_not_repeated_as_supplementary() {
        let user = resolve("app:docker").unwrap();
        assert_eq!(user.gid, 999);
        assert_eq!(user.additional_gids, vec![10]);
    }

    #[test]
    fn unknown_names_are_errors_naming_them() {
        let err = resolve("nobody-here").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find user nobody-here: no matching entries in passwd file"
        );
        let err = resolve("app:nogroup").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find group nogroup: no matching entries in group file"
        );
    }

    #[test]
    fn files_are_read_from_the_rootfs_and_may_be_missing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve_user(dir.path(), "").unwrap().uid, 0);
        assert!(resolve_user(dir.path(), "app").is_err());
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(dir.path().join("etc/group"), GROUP).unwrap();
        let user = resolve_user(dir.path(), "app").unwrap();
        assert_eq!((user.uid, user.gid), (1000, 1000));
    }

    #[test]
    fn symlinked_passwd_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("passwd"), PASSWD).unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("passwd"), dir.path().join("etc/passwd"))
            .unwrap();
        assert!(resolve_user(dir.path(), "app").is_err());
    }
}
