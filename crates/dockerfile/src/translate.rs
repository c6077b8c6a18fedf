//! The second phase of a build: [`translate`] turns the stages the target needs into solver
//! vertices (images resolved by the caller, see [`crate::images_needed`]) and computes the
//! target's image config, following BuildKit's `dockerfile2llb`.
//!
//! Each stage carries a build state: its filesystem (a vertex output), its image config and its
//! environment (the config's `Env`, then ENV and ARG values in the order they are set: the
//! variables of expansions and of RUN). Stages are translated on demand, so a stage nothing
//! needs yields no vertex.

mod copy;
mod run;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use dagr_solver::{InputRef, Op, Owner, Platform, Vertex};
use serde_json::Value;

use crate::config::{Healthcheck, ImageConfig, is_valid_signal, parse_ports};
use crate::error::{BuildError, BuildErrorKind};
use crate::instructions::{ArgDecl, Command, CommandLine, Dockerfile, Instruction, KeyValue};
use crate::paths;
use crate::plan::{Base, ImageRequest, Plan, Source, stage_triggers, trigger_command};
use crate::shell::{EnvList, Lex};

/// A filesystem: output `.1` of vertex `.0`.
pub type Fs = (Arc<Vertex>, u32);

/// What a build is given besides the Dockerfile.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// The stage to build; `None` is the last one.
    pub target: Option<String>,
    pub target_platform: Platform,
    pub build_platform: Platform,
    /// Secret id (`RUN --mount=type=secret,id=NAME`) -> the session's secret digest.
    pub secrets: BTreeMap<String, String>,
    /// The build context.
    pub context: Fs,
    /// Exclude patterns applied to the context (see [`crate::parse_dockerignore`]); empty when
    /// the caller already left those files out of `context`.
    pub dockerignore: Vec<String>,
}

/// A resolved image: its pinned reference (`name@sha256:...`) and its OCI config's `config`
/// section.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseImage {
    pub pinned: String,
    pub config: Value,
}

/// The translated target stage.
#[derive(Debug, Clone)]
pub struct Build {
    /// The root filesystem.
    pub rootfs: Fs,
    /// The image config's `config` section, as BuildKit writes it.
    pub config: Value,
    /// The image's `author` (MAINTAINER), which lives outside the `config` section.
    pub author: Option<String>,
    /// The pinned reference of the image the target is based on (following stages); `None`
    /// for scratch.
    pub base_image: Option<String>,
}

/// Translates the target stage (and the stages it needs) into vertices. `images` answers the
/// requests [`crate::images_needed`] listed.
pub fn translate(
    df: &Dockerfile,
    opts: &BuildOptions,
    images: &dyn Fn(&ImageRequest) -> Option<BaseImage>,
) -> Result<Build, BuildError> {
    let plan = Plan::new(df, opts)?;
    let target = plan.target;
    let mut t = Translator {
        df,
        opts,
        lex: Lex::new(df.escape),
        plan,
        images,
        stages: vec![None; df.stages.len()],
        empty: None,
        context: None,
        image_fs: HashMap::new(),
    };
    let st = t.stage(target)?;
    Ok(Build {
        rootfs: st.fs,
        config: st.config.to_json(),
        author: st.author,
        base_image: st.base_image,
    })
}

/// The build state of a stage.
#[derive(Debug, Clone)]
struct StageState {
    fs: Fs,
    config: ImageConfig,
    /// The variables of expansions and RUN: config env, ENV and ARG values.
    env: EnvList,
    platform: Platform,
    base_image: Option<String>,
    author: Option<String>,
    /// The ONBUILD expressions of this stage (triggers of stages built on it).
    onbuild: Vec<String>,
    /// Whether CMD was set in this stage (ENTRYPOINT then keeps it).
    cmd_set: bool,
    index: usize,
}

struct Translator<'a> {
    df: &'a Dockerfile,
    opts: &'a BuildOptions,
    plan: Plan,
    lex: Lex,
    images: &'a dyn Fn(&ImageRequest) -> Option<BaseImage>,
    stages: Vec<Option<StageState>>,
    empty: Option<Arc<Vertex>>,
    context: Option<Fs>,
    image_fs: HashMap<ImageRequest, (Fs, BaseImage)>,
}

/// Collects the distinct input vertices of a new vertex and hands out references to them.
#[derive(Default)]
struct Inputs {
    vertices: Vec<Arc<Vertex>>,
}

impl Inputs {
    fn add(&mut self, fs: &Fs) -> InputRef {
        let index = match self
            .vertices
            .iter()
            .position(|v| Arc::ptr_eq(v, &fs.0) || v.structural_key() == fs.0.structural_key())
        {
            Some(i) => i,
            None => {
                self.vertices.push(fs.0.clone());
                self.vertices.len() - 1
            }
        };
        InputRef {
            input: u32::try_from(index).unwrap_or(u32::MAX),
            output: fs.1,
        }
    }
}

/// A vertex of `op` over `inputs`, as its main output.
fn vertex(op: Op, inputs: Inputs) -> Result<Fs, BuildErrorKind> {
    Ok((Vertex::new(op, inputs.vertices)?, 0))
}

impl<'a> Translator<'a> {
    /// The state at the end of stage `i`, translated on first use.
    fn stage(&mut self, i: usize) -> Result<StageState, BuildError> {
        if let Some(st) = &self.stages[i] {
            return Ok(st.clone());
        }
        let st = self.build_stage(i)?;
        self.stages[i] = Some(st.clone());
        Ok(st)
    }

    fn build_stage(&mut self, i: usize) -> Result<StageState, BuildError> {
        let df = self.df;
        let stage = &df.stages[i];
        let (mut st, triggers) = self.base_state(i)?;
        for command in triggers {
            self.dispatch(&mut st, &command)?;
        }
        for command in &stage.commands {
            self.dispatch(&mut st, command)?;
        }
        Ok(st)
    }

    /// The state a stage starts with, and the ONBUILD triggers its base brings.
    fn base_state(&mut self, i: usize) -> Result<(StageState, Vec<Command>), BuildError> {
        let line = self.df.stages[i].line;
        let platform = self.plan.platforms[i].clone();
        let (st, triggers) = match self.plan.bases[i].clone() {
            Base::Scratch => {
                let fs = self.empty().map_err(|k| BuildError::at(line, k))?;
                (
                    new_state(i, fs, ImageConfig::scratch(&platform.os), None, platform),
                    Vec::new(),
                )
            }
            Base::Stage(j) => {
                let mut st = self.stage(j)?;
                st.index = i;
                st.cmd_set = false;
                st.config.on_build.clear();
                st.onbuild.clear();
                (st, stage_triggers(self.df, j, line)?)
            }
            Base::Image(req) => {
                let (fs, image) = self.image(&req, line)?;
                let mut config = ImageConfig::from_json(&image.config);
                let triggers = std::mem::take(&mut config.on_build)
                    .iter()
                    .map(|expr| trigger_command(expr, line))
                    .collect::<Result<Vec<_>, _>>()?;
                (
                    new_state(i, fs, config, Some(image.pinned), platform),
                    triggers,
                )
            }
        };
        Ok((st, triggers))
    }

    /// The empty filesystem (one vertex, shared).
    fn empty(&mut self) -> Result<Fs, BuildErrorKind> {
        if let Some(v) = &self.empty {
            return Ok((v.clone(), 0));
        }
        let (v, _) = vertex(Op::Empty, Inputs::default())?;
        self.empty = Some(v.clone());
        Ok((v, 0))
    }

    /// An image's root filesystem and its resolution.
    fn image(&mut self, req: &ImageRequest, line: usize) -> Result<(Fs, BaseImage), BuildError> {
        if let Some(found) = self.image_fs.get(req) {
            return Ok(found.clone());
        }
        let image = (self.images)(req).ok_or_else(|| {
            BuildError::at(
                line,
                BuildErrorKind::ImageNotResolved(req.reference.clone()),
            )
        })?;
        let op = Op::Image {
            reference: image.pinned.clone(),
            platform: req.platform.clone(),
        };
        let fs = vertex(op, Inputs::default()).map_err(|k| BuildError::at(line, k))?;
        self.image_fs
            .insert(req.clone(), (fs.clone(), image.clone()));
        Ok((fs, image))
    }

    /// The filesystem of a `--from` source, which must be a stage defined before the current
    /// one or an image.
    fn source_fs(&mut self, current: usize, source: Source, line: usize) -> Result<Fs, BuildError> {
        match source {
            Source::Stage(j) if j >= current => Err(BuildError::at(
                line,
                BuildErrorKind::StageNotDefinedYet {
                    stage: self.df.stages[j]
                        .name
                        .clone()
                        .unwrap_or_else(|| j.to_string()),
                },
            )),
            Source::Stage(j) => Ok(self.stage(j)?.fs),
            Source::Image(req) => Ok(self.image(&req, line)?.0),
        }
    }

    /// The build context, with the `.dockerignore` patterns applied (one copy, shared).
    fn context(&mut self) -> Result<Fs, BuildErrorKind> {
        if let Some(fs) = &self.context {
            return Ok(fs.clone());
        }
        let fs = if self.opts.dockerignore.is_empty() {
            self.opts.context.clone()
        } else {
            let empty = self.empty()?;
            let mut inputs = Inputs::default();
            let base = inputs.add(&empty);
            let from = inputs.add(&self.opts.context);
            let op = Op::Copy(dagr_solver::CopyOp {
                base,
                from,
                src: "/".to_owned(),
                dest: "/".to_owned(),
                include: Vec::new(),
                exclude: self.opts.dockerignore.clone(),
                owner: None,
                mode: None,
                copy_dir_contents: true,
                create_dest_path: true,
                allow_wildcard: false,
                follow_symlinks: false,
                unpack_archive: false,
            });
            vertex(op, inputs)?
        };
        self.context = Some(fs.clone());
        Ok(fs)
    }

    /// `word` expanded with the stage's variables.
    fn expand(&self, st: &StageState, line: usize, word: &str) -> Result<String, BuildError> {
        expand_with(&self.lex, &st.env, line, word)
    }

    fn dispatch(&mut self, st: &mut StageState, command: &Command) -> Result<(), BuildError> {
        let line = command.line;
        match &command.instruction {
            Instruction::Arg(decls) => self.arg(st, line, decls),
            Instruction::Env(pairs) => {
                for (k, v) in self.expand_pairs(st, line, pairs)? {
                    st.env.set(&k, &v);
                    st.config.set_env(&k, &v);
                }
                Ok(())
            }
            Instruction::Label(pairs) => {
                let pairs = self.expand_pairs(st, line, pairs)?;
                st.config.labels.extend(pairs);
                Ok(())
            }
            Instruction::Maintainer(name) => {
                st.author = Some(name.clone());
                Ok(())
            }
            Instruction::Workdir(path) => self.workdir(st, line, path),
            Instruction::User(user) => {
                st.config.user = self.expand(st, line, user)?;
                Ok(())
            }
            Instruction::Expose(ports) => self.expose(st, line, ports),
            Instruction::Volume(volumes) => self.volume(st, line, volumes),
            Instruction::StopSignal(signal) => {
                let signal = self.expand(st, line, signal)?;
                if !is_valid_signal(&signal) {
                    return Err(BuildError::at(
                        line,
                        BuildErrorKind::Invalid(format!("invalid signal: {signal}")),
                    ));
                }
                st.config.stop_signal = signal;
                Ok(())
            }
            Instruction::Shell(shell) => {
                st.config.shell = shell.clone();
                Ok(())
            }
            Instruction::Cmd(cmd) => {
                st.config.cmd = with_shell(st, cmd);
                st.config.args_escaped = true;
                st.cmd_set = true;
                Ok(())
            }
            Instruction::Entrypoint(cmd) => {
                st.config.entrypoint = with_shell(st, cmd);
                if !st.cmd_set {
                    st.config.cmd.clear();
                }
                Ok(())
            }
            Instruction::Healthcheck(h) => {
                st.config.healthcheck = Some(Healthcheck {
                    test: h.test.clone(),
                    interval: h.interval,
                    timeout: h.timeout,
                    start_period: h.start_period,
                    start_interval: h.start_interval,
                    retries: h.retries,
                });
                Ok(())
            }
            Instruction::OnBuild(expr) => {
                st.config.on_build.push(expr.clone());
                st.onbuild.push(expr.clone());
                Ok(())
            }
            Instruction::Run(run) => self.run(st, line, run),
            Instruction::Copy(c) => self.copy(st, line, c),
            Instruction::Add(a) => self.add(st, line, a),
        }
    }

    /// ARG: a build arg, else the default (expanded), else the global value; set values are
    /// variables of the rest of the stage (and of its RUNs' environment, not the config).
    fn arg(&self, st: &mut StageState, line: usize, decls: &[ArgDecl]) -> Result<(), BuildError> {
        for decl in decls {
            let value = match (self.opts.build_args.get(&decl.name), &decl.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(default)) => Some(self.expand(st, line, default)?),
                (None, None) => self.plan.global.get(&decl.name).map(str::to_owned),
            };
            if let Some(v) = value {
                st.env.set(&decl.name, &v);
            }
        }
        Ok(())
    }

    /// Keys and values expanded with the variables from before the instruction.
    fn expand_pairs(
        &self,
        st: &StageState,
        line: usize,
        pairs: &[KeyValue],
    ) -> Result<Vec<(String, String)>, BuildError> {
        pairs
            .iter()
            .map(|kv| {
                Ok((
                    self.expand(st, line, &kv.key)?,
                    self.expand(st, line, &kv.value)?,
                ))
            })
            .collect()
    }

    /// WORKDIR: the new directory (relative to the previous one) is created, owned by the
    /// user when it is numeric or root.
    fn workdir(&mut self, st: &mut StageState, line: usize, path: &str) -> Result<(), BuildError> {
        let path = self.expand(st, line, path)?;
        let wd = paths::normalize(&st.config.working_dir, &path, false);
        st.config.working_dir = wd.clone();
        if wd == "/" {
            return Ok(());
        }
        let mut inputs = Inputs::default();
        let base = inputs.add(&st.fs);
        let op = Op::MkDir(dagr_solver::MkDirOp {
            base,
            path: wd,
            mode: 0o755,
            make_parents: true,
            owner: owner_of_user(&st.config.user),
        });
        st.fs = vertex(op, inputs).map_err(|k| BuildError::at(line, k))?;
        Ok(())
    }

    fn expose(&self, st: &mut StageState, line: usize, ports: &[String]) -> Result<(), BuildError> {
        for port in ports {
            let words = self.lex.process_words(port, &st.env).map_err(|source| {
                BuildError::at(
                    line,
                    BuildErrorKind::Expansion {
                        word: port.clone(),
                        source,
                    },
                )
            })?;
            for word in words {
                let specs = parse_ports(&word)
                    .map_err(|e| BuildError::at(line, BuildErrorKind::Invalid(e)))?;
                st.config.exposed_ports.extend(specs);
            }
        }
        Ok(())
    }

    fn volume(
        &self,
        st: &mut StageState,
        line: usize,
        volumes: &[String],
    ) -> Result<(), BuildError> {
        for volume in volumes {
            let v = self.expand(st, line, volume)?;
            if v.is_empty() {
                return Err(BuildError::at(
                    line,
                    BuildErrorKind::Invalid("VOLUME specified can not be an empty string".into()),
                ));
            }
            st.config.volumes.insert(v);
        }
        Ok(())
    }
}

/// The state of a stage starting from `fs` with `config` (the default `PATH` added).
fn new_state(
    index: usize,
    fs: Fs,
    mut config: ImageConfig,
    base_image: Option<String>,
    platform: Platform,
) -> StageState {
    config.ensure_path(&platform.os);
    StageState {
        fs,
        env: EnvList::from_strings(config.env.iter().map(String::as_str)),
        config,
        platform,
        base_image,
        author: None,
        onbuild: Vec::new(),
        cmd_set: false,
        index,
    }
}

pub(crate) fn expand_with(
    lex: &Lex,
    env: &EnvList,
    line: usize,
    word: &str,
) -> Result<String, BuildError> {
    lex.process_word(word, env).map_err(|source| {
        BuildError::at(
            line,
            BuildErrorKind::Expansion {
                word: word.to_owned(),
                source,
            },
        )
    })
}

/// The stage's shell: SHELL, else `/bin/sh -c` (`cmd /S /C` on Windows).
fn shell(st: &StageState) -> Vec<String> {
    if !st.config.shell.is_empty() {
        return st.config.shell.clone();
    }
    let default: &[&str] = if st.platform.os == "windows" {
        &["cmd", "/S", "/C"]
    } else {
        &["/bin/sh", "-c"]
    };
    default.iter().map(|s| (*s).to_owned()).collect()
}

/// A command line as argv: the exec form as given, the shell form through the stage's shell.
fn with_shell(st: &StageState, cmd: &CommandLine) -> Vec<String> {
    if cmd.exec_form {
        return cmd.args.clone();
    }
    let mut args = shell(st);
    args.push(cmd.args.join(" "));
    args
}

/// The owner of files a numeric (or root) user creates; names other than root need the
/// image's passwd file, which a pure translation cannot read.
fn owner_of_user(user: &str) -> Option<Owner> {
    let mapped = map_root(user);
    Owner::parse(&mapped).ok().flatten()
}

/// `root` as `0`, in `user[:group]`.
fn map_root(spec: &str) -> String {
    let map = |part: &str| {
        if part == "root" {
            "0".to_owned()
        } else {
            part.to_owned()
        }
    };
    match spec.split_once(':') {
        Some((u, g)) => format!("{}:{}", map(u), map(g)),
        None => map(spec),
    }
}

#[cfg(test)]
mod tests;
