//! RUN: an exec whose root mount (`/`, output 0) is the stage's filesystem, with the stage's
//! variables as environment, its working directory and user, and the `--mount`s.
//!
//! Heredocs: `RUN <<EOF` alone runs the body with the stage's shell, or, when the body starts
//! with `#!`, runs it as an executable file mounted read-only under `/dev/pipes`; any other
//! command with heredocs (`RUN cat <<EOF > file`, `RUN python3 <<EOF`) is passed to the shell
//! with the bodies appended, so the shell reads them as its own heredocs.

use std::collections::BTreeMap;

use dagr_solver::{CacheSharing, CopyOp, ExecOp, MkFileOp, Mount, MountSource, Op};

use super::{Fs, Inputs, StageState, Translator, expand_with, shell, vertex};
use crate::error::{BuildError, BuildErrorKind};
use crate::instructions::{CommandLine, Network, Run};
use crate::mounts::{MountSpec, MountType, parse_mount};
use crate::parser::parse_heredoc;
use crate::paths;

/// Where a heredoc script with a shebang is mounted.
const PIPES: &str = "/dev/pipes";

/// The mounts and inputs of an exec being built.
#[derive(Default)]
struct ExecParts {
    inputs: Inputs,
    mounts: Vec<Mount>,
    secret_env: BTreeMap<String, String>,
}

impl Translator<'_> {
    pub(super) fn run(
        &mut self,
        st: &mut StageState,
        line: usize,
        run: &Run,
    ) -> Result<(), BuildError> {
        let at = |kind| BuildError::at(line, kind);
        check_run_flags(run).map_err(at)?;
        let mut parts = ExecParts::default();
        let root = parts.inputs.add(&st.fs);
        parts.mounts.push(Mount {
            dest: "/".to_owned(),
            source: MountSource::Input {
                input: root,
                path: String::new(),
            },
            readonly: false,
        });
        let args = self.run_args(st, &run.command, &mut parts).map_err(at)?;
        for spec in &run.mounts {
            let (lex, env) = (&self.lex, &st.env);
            let expand = |v: &str| expand_with(lex, env, line, v).map_err(|e| e.kind);
            let mount = parse_mount(spec, &expand).map_err(at)?;
            self.add_mount(st, line, mount, &mut parts)?;
        }
        let op = ExecOp {
            args,
            env: st
                .env
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            workdir: match st.config.working_dir.as_str() {
                "" => "/".to_owned(),
                wd => wd.to_owned(),
            },
            user: Some(st.config.user.clone()).filter(|u| !u.is_empty()),
            mounts: parts.mounts,
            secret_env: parts.secret_env,
            network_disabled: run.network == Network::None,
            ..ExecOp::default()
        };
        st.fs = vertex(Op::Exec(op), parts.inputs).map_err(at)?;
        Ok(())
    }

    /// The exec's argv, heredocs applied.
    fn run_args(
        &mut self,
        st: &StageState,
        cmd: &CommandLine,
        parts: &mut ExecParts,
    ) -> Result<Vec<String>, BuildErrorKind> {
        let mut args = cmd.args.clone();
        if let Some(first) = cmd.heredocs.first() {
            let [command] = args.as_slice() else {
                return Err(BuildErrorKind::Invalid(
                    "parsing produced an invalid run command".to_owned(),
                ));
            };
            if matches!(parse_heredoc(command), Ok(Some(_))) {
                let data = first.chomped_content();
                if st.platform.os != "windows" && data.starts_with("#!") {
                    let script = self.script(&first.name, data)?;
                    let input = parts.inputs.add(&script);
                    parts.mounts.push(Mount {
                        dest: PIPES.to_owned(),
                        source: MountSource::Input {
                            input,
                            path: String::new(),
                        },
                        readonly: true,
                    });
                    args = vec![paths::join(&[PIPES, &first.name])];
                } else {
                    args = vec![data];
                }
            } else {
                let mut script = command.clone();
                for doc in &cmd.heredocs {
                    script.push('\n');
                    script.push_str(&doc.content);
                    script.push_str(&doc.name);
                }
                args = vec![script];
            }
        }
        if cmd.exec_form {
            return Ok(args);
        }
        let mut argv = shell(st);
        argv.push(args.join(" "));
        Ok(argv)
    }

    /// A filesystem holding the executable file `/<name>`.
    fn script(&mut self, name: &str, data: String) -> Result<Fs, BuildErrorKind> {
        let empty = self.empty()?;
        let mut inputs = Inputs::default();
        let base = inputs.add(&empty);
        let op = Op::MkFile(MkFileOp {
            base,
            path: paths::join(&["/", name]),
            contents: data.into_bytes(),
            mode: 0o755,
            owner: None,
        });
        vertex(op, inputs)
    }

    fn add_mount(
        &mut self,
        st: &StageState,
        line: usize,
        m: MountSpec,
        parts: &mut ExecParts,
    ) -> Result<(), BuildError> {
        let at = |kind| BuildError::at(line, kind);
        let source = match m.ty {
            MountType::Ssh => {
                return Err(at(BuildErrorKind::Unsupported(
                    "RUN --mount=type=ssh".to_owned(),
                )));
            }
            MountType::Secret => return self.secret_mount(st, line, m, parts),
            MountType::Tmpfs => MountSource::Tmpfs { size: m.size },
            MountType::Bind => {
                let fs = match &m.from {
                    Some(from) => self.mount_from(st, line, from)?,
                    None => self.context().map_err(at)?,
                };
                MountSource::Input {
                    input: parts.inputs.add(&fs),
                    path: subpath(&m.source),
                }
            }
            MountType::Cache => {
                let base = match &m.from {
                    Some(from) => {
                        let fs = self.mount_from(st, line, from)?;
                        let fs = match subpath(&m.source).as_str() {
                            "" => fs,
                            sub => self.subdir(fs, sub).map_err(at)?,
                        };
                        Some(parts.inputs.add(&fs))
                    }
                    None => None,
                };
                let id = match m.id.as_str() {
                    "" => paths::clean(&m.target),
                    id => id.to_owned(),
                };
                MountSource::Cache {
                    id,
                    sharing: m.sharing.unwrap_or(CacheSharing::Shared),
                    base,
                }
            }
        };
        parts.mounts.push(Mount {
            dest: mount_target(&st.config.working_dir, &m.target).map_err(at)?,
            source,
            readonly: m.readonly,
        });
        Ok(())
    }

    fn mount_from(&mut self, st: &StageState, line: usize, from: &str) -> Result<Fs, BuildError> {
        let source = self.plan.named_source(from, line)?;
        self.source_fs(st.index, source, line)
    }

    /// The contents of `sub` of `fs`, as the root of a new filesystem.
    fn subdir(&mut self, fs: Fs, sub: &str) -> Result<Fs, BuildErrorKind> {
        let empty = self.empty()?;
        let mut inputs = Inputs::default();
        let base = inputs.add(&empty);
        let from = inputs.add(&fs);
        let op = Op::Copy(CopyOp {
            base,
            from,
            src: sub.to_owned(),
            dest: "/".to_owned(),
            include: Vec::new(),
            exclude: Vec::new(),
            owner: None,
            mode: None,
            copy_dir_contents: true,
            create_dest_path: true,
            allow_wildcard: false,
            follow_symlinks: true,
            unpack_archive: false,
        });
        vertex(op, inputs)
    }

    /// A secret as a file (default `/run/secrets/<id>`, mode 0400) and/or an environment
    /// variable (`env=`); a missing secret is skipped unless `required`.
    fn secret_mount(
        &self,
        st: &StageState,
        line: usize,
        m: MountSpec,
        parts: &mut ExecParts,
    ) -> Result<(), BuildError> {
        let at = |kind| BuildError::at(line, kind);
        let id = [&m.source, &m.id]
            .into_iter()
            .find(|s| !s.is_empty())
            .cloned()
            .or_else(|| (!m.target.is_empty()).then(|| paths::base(&m.target)))
            .ok_or_else(|| {
                at(BuildErrorKind::Mount(
                    "one of source, target required".to_owned(),
                ))
            })?;
        let Some(digest) = self.opts.secrets.get(&id) else {
            if m.required {
                return Err(at(BuildErrorKind::MissingSecret(id)));
            }
            return Ok(());
        };
        if let Some(name) = &m.env {
            parts.secret_env.insert(name.clone(), digest.clone());
        }
        let target = match (&m.env, m.target.is_empty()) {
            (_, false) => Some(mount_target(&st.config.working_dir, &m.target).map_err(at)?),
            (None, true) => Some(format!("/run/secrets/{}", paths::base(&id))),
            (Some(_), true) => None,
        };
        if let Some(dest) = target {
            parts.mounts.push(Mount {
                dest,
                source: MountSource::Secret {
                    secret_id: digest.clone(),
                    uid: m.uid.unwrap_or(0),
                    gid: m.gid.unwrap_or(0),
                    mode: m.mode.unwrap_or(0o400),
                },
                readonly: true,
            });
        }
        Ok(())
    }
}

/// RUN flags dagr cannot honor.
fn check_run_flags(run: &Run) -> Result<(), BuildErrorKind> {
    if run.network == Network::Host {
        return Err(BuildErrorKind::Unsupported(
            "RUN --network=host (it needs the network.host entitlement, which dagr does not grant)"
                .to_owned(),
        ));
    }
    if run.insecure {
        return Err(BuildErrorKind::Unsupported(
            "RUN --security=insecure (it needs the security.insecure entitlement, which dagr does not grant)"
                .to_owned(),
        ));
    }
    if !run.devices.is_empty() {
        return Err(BuildErrorKind::Unsupported("RUN --device".to_owned()));
    }
    Ok(())
}

/// A mount's subpath of its source: "" for the whole filesystem.
fn subpath(source: &str) -> String {
    match paths::join(&["/", source]).as_str() {
        "/" => String::new(),
        p => p.to_owned(),
    }
}

/// A mount target, relative ones under the working directory; `/` is not allowed.
fn mount_target(workdir: &str, target: &str) -> Result<String, BuildErrorKind> {
    let dest = if paths::clean(target).starts_with('/') {
        target.to_owned()
    } else {
        paths::join(&["/", workdir, target])
    };
    if dest == "/" {
        return Err(BuildErrorKind::Mount(format!(
            "invalid mount target {dest:?}"
        )));
    }
    Ok(dest)
}
