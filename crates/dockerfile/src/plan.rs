//! The first phase of a build: the global variables (predefined platform args and the ARGs
//! before the first FROM, with build-arg overrides), what every stage is based on (`FROM`
//! expanded with the global variables: scratch, an earlier stage or an image), the target, the
//! stages it needs and the images those need ([`images_needed`]).

use dagr_solver::Platform;

use crate::error::{BuildError, BuildErrorKind};
use crate::instructions::{Command, Dockerfile, Instruction, parse_trigger};
use crate::mounts::mount_from;
use crate::reference::is_valid_reference;
use crate::shell::{EnvList, Lex, NoVars};
use crate::translate::BuildOptions;

/// An image a build needs: the caller resolves it (to a pinned reference and its config)
/// between [`images_needed`] and [`crate::translate`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRequest {
    /// The reference as written (variables expanded), not normalized.
    pub reference: String,
    pub platform: Platform,
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Base {
    Scratch,
    Stage(usize),
    Image(ImageRequest),
}

/// Where files or a mount come from (`--from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Stage(usize),
    Image(ImageRequest),
}

/// The resolved stage structure of a Dockerfile for some options.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Predefined args and the ARGs before the first FROM: the variables of FROM lines and the
    /// values `ARG name` (without default) takes in a stage.
    pub global: EnvList,
    pub bases: Vec<Base>,
    /// Each stage's platform (`--platform` or the target platform).
    pub platforms: Vec<Platform>,
    pub target: usize,
    target_platform: Platform,
    names: Vec<Option<String>>,
    lex: Lex,
}

impl Plan {
    pub(crate) fn new(df: &Dockerfile, opts: &BuildOptions) -> Result<Plan, BuildError> {
        let names: Vec<Option<String>> = df.stages.iter().map(|s| s.name.clone()).collect();
        let target = match &opts.target {
            None => df.stages.len().saturating_sub(1),
            Some(t) => find_last(&names, &t.to_ascii_lowercase(), names.len())
                .ok_or_else(|| BuildError::global(BuildErrorKind::UnknownTarget(t.clone())))?,
        };
        let target_name = opts
            .target
            .clone()
            .or_else(|| names.get(target).cloned().flatten())
            .unwrap_or_else(|| "default".to_owned());
        let lex = Lex::new(df.escape);
        let global = global_args(df, opts, &target_name, &lex)?;
        let mut plan = Plan {
            global,
            bases: Vec::new(),
            platforms: Vec::new(),
            target,
            target_platform: opts.target_platform.clone(),
            names,
            lex,
        };
        for (i, stage) in df.stages.iter().enumerate() {
            let at = |kind| BuildError::at(stage.line, kind);
            let base = plan.expand(&stage.base, stage.line)?;
            if base.is_empty() {
                return Err(at(BuildErrorKind::BlankBaseName(stage.base.clone())));
            }
            let platform = match &stage.platform {
                None => opts.target_platform.clone(),
                Some(p) => {
                    let p = plan.expand(p, stage.line)?;
                    p.parse::<Platform>()
                        .map_err(|_| at(BuildErrorKind::InvalidPlatform(p)))?
                }
            };
            let base = if base == "scratch" {
                Base::Scratch
            } else if let Some(j) = find_last(&plan.names, &base, i) {
                Base::Stage(j)
            } else if is_valid_reference(&base) {
                Base::Image(ImageRequest {
                    reference: base,
                    platform: platform.clone(),
                })
            } else {
                return Err(at(BuildErrorKind::InvalidReference(base)));
            };
            plan.bases.push(base);
            plan.platforms.push(platform);
        }
        Ok(plan)
    }

    fn expand(&self, word: &str, line: usize) -> Result<String, BuildError> {
        self.lex.process_word(word, &self.global).map_err(|source| {
            BuildError::at(
                line,
                BuildErrorKind::Expansion {
                    word: word.to_owned(),
                    source,
                },
            )
        })
    }

    /// What `COPY --from=<from>` names: a stage by index or name, else an image.
    pub(crate) fn copy_source(&self, from: &str, line: usize) -> Result<Source, BuildError> {
        if self.lex.process_word(from, &NoVars).as_deref() != Ok(from) {
            return Err(BuildError::at(
                line,
                BuildErrorKind::FromExpansion(from.to_owned()),
            ));
        }
        if let Ok(index) = from.parse::<i64>() {
            return match usize::try_from(index) {
                Ok(i) if i < self.names.len() => Ok(Source::Stage(i)),
                _ => Err(BuildError::at(
                    line,
                    BuildErrorKind::InvalidStageIndex(index),
                )),
            };
        }
        self.named_source(from, line)
    }

    /// What `RUN --mount=from=<from>` names: a stage by name, else an image.
    pub(crate) fn named_source(&self, from: &str, line: usize) -> Result<Source, BuildError> {
        let lower = from.to_ascii_lowercase();
        if let Some(j) = find_last(&self.names, &lower, self.names.len()) {
            return Ok(Source::Stage(j));
        }
        if !is_valid_reference(from) {
            return Err(BuildError::at(
                line,
                BuildErrorKind::InvalidReference(from.to_owned()),
            ));
        }
        Ok(Source::Image(ImageRequest {
            reference: from.to_owned(),
            platform: self.target_platform.clone(),
        }))
    }

    /// The sources a command takes files or mounts from.
    fn command_sources(&self, command: &Command) -> Result<Vec<Source>, BuildError> {
        match &command.instruction {
            Instruction::Copy(c) => match &c.from {
                Some(from) => Ok(vec![self.copy_source(from, command.line)?]),
                None => Ok(Vec::new()),
            },
            Instruction::Run(run) => run
                .mounts
                .iter()
                .filter_map(|spec| mount_from(spec))
                // A variable is reported when the mount is parsed.
                .filter(|from| !from.contains('$'))
                .map(|from| self.named_source(&from, command.line))
                .collect(),
            _ => Ok(Vec::new()),
        }
    }

    /// Stages and images stage `i` uses: its base, its commands' sources and those of the
    /// ONBUILD triggers of a base stage (an image's triggers are only known once resolved).
    fn stage_sources(&self, df: &Dockerfile, i: usize) -> Result<Vec<Source>, BuildError> {
        let stage = &df.stages[i];
        let mut sources = Vec::new();
        match &self.bases[i] {
            Base::Scratch => {}
            Base::Image(req) => sources.push(Source::Image(req.clone())),
            Base::Stage(j) => {
                sources.push(Source::Stage(*j));
                for trigger in stage_triggers(df, *j, stage.line)? {
                    sources.extend(self.command_sources(&trigger)?);
                }
            }
        }
        for command in &stage.commands {
            sources.extend(self.command_sources(command)?);
        }
        Ok(sources)
    }

    /// The stages the target needs, in order, and the images they use.
    pub(crate) fn needed(
        &self,
        df: &Dockerfile,
    ) -> Result<(Vec<usize>, Vec<ImageRequest>), BuildError> {
        let mut seen = vec![false; df.stages.len()];
        let mut stack = vec![self.target];
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            for source in self.stage_sources(df, i)? {
                // A later stage is an error when translating.
                if let Source::Stage(j) = source
                    && j < i
                {
                    stack.push(j);
                }
            }
        }
        let stages: Vec<usize> = (0..seen.len()).filter(|i| seen[*i]).collect();
        let mut images: Vec<ImageRequest> = Vec::new();
        for &i in &stages {
            for source in self.stage_sources(df, i)? {
                if let Source::Image(req) = source
                    && !images.contains(&req)
                {
                    images.push(req);
                }
            }
        }
        Ok((stages, images))
    }
}

/// The ONBUILD triggers stage `j` defines, parsed, as commands at `line`.
pub(crate) fn stage_triggers(
    df: &Dockerfile,
    j: usize,
    line: usize,
) -> Result<Vec<Command>, BuildError> {
    df.stages[j]
        .commands
        .iter()
        .filter_map(|c| match &c.instruction {
            Instruction::OnBuild(expr) => Some(expr),
            _ => None,
        })
        .map(|expr| trigger_command(expr, line))
        .collect()
}

/// An ONBUILD trigger expression as a command at `line`.
pub(crate) fn trigger_command(expression: &str, line: usize) -> Result<Command, BuildError> {
    let instruction = parse_trigger(expression)
        .map_err(|kind| BuildError::at(line, BuildErrorKind::Trigger(kind)))?;
    Ok(Command { line, instruction })
}

/// The index of the last stage before `before` named `name`.
fn find_last(names: &[Option<String>], name: &str, before: usize) -> Option<usize> {
    names[..before.min(names.len())]
        .iter()
        .rposition(|n| n.as_deref() == Some(name))
}

/// Predefined platform args (overridable by build args) and the ARGs before the first FROM.
fn global_args(
    df: &Dockerfile,
    opts: &BuildOptions,
    target_name: &str,
    lex: &Lex,
) -> Result<EnvList, BuildError> {
    let mut env = EnvList::new();
    let (bp, tp) = (&opts.build_platform, &opts.target_platform);
    let variant = |p: &Platform| p.variant.clone().unwrap_or_default();
    let defaults = [
        ("BUILDPLATFORM", bp.to_string()),
        ("BUILDOS", bp.os.clone()),
        ("BUILDOSVERSION", String::new()),
        ("BUILDARCH", bp.architecture.clone()),
        ("BUILDVARIANT", variant(bp)),
        ("TARGETPLATFORM", tp.to_string()),
        ("TARGETOS", tp.os.clone()),
        ("TARGETOSVERSION", String::new()),
        ("TARGETARCH", tp.architecture.clone()),
        ("TARGETVARIANT", variant(tp)),
        ("TARGETSTAGE", target_name.to_owned()),
    ];
    for (name, value) in defaults {
        let value = opts.build_args.get(name).cloned().unwrap_or(value);
        env.set(name, &value);
    }
    for command in &df.meta_args {
        let Instruction::Arg(decls) = &command.instruction else {
            continue;
        };
        for decl in decls {
            let value = match (opts.build_args.get(&decl.name), &decl.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(default)) => {
                    Some(lex.process_word(default, &env).map_err(|source| {
                        BuildError::at(
                            command.line,
                            BuildErrorKind::Expansion {
                                word: default.clone(),
                                source,
                            },
                        )
                    })?)
                }
                (None, None) => None,
            };
            if let Some(v) = value {
                env.set(&decl.name, &v);
            }
        }
    }
    Ok(env)
}

/// The images a build of `df` with `opts` needs (FROM images of the stages the target needs,
/// `COPY --from` and `RUN --mount=from=` images), without duplicates, in order. Resolve them
/// and pass them to [`crate::translate`].
pub fn images_needed(
    df: &Dockerfile,
    opts: &BuildOptions,
) -> Result<Vec<ImageRequest>, BuildError> {
    let plan = Plan::new(df, opts)?;
    Ok(plan.needed(df)?.1)
}
