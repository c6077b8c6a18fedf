use super::*;

fn parse_ok(text: &str) -> Dockerfile {
    match parse(text) {
        Ok(df) => df,
        Err(e) => panic!("{text:?}: {e}"),
    }
}

/// The instructions of the only stage.
fn commands(text: &str) -> Vec<Instruction> {
    let df = parse_ok(text);
    df.stages[0]
        .commands
        .iter()
        .map(|c| c.instruction.clone())
        .collect()
}

fn one(text: &str) -> Instruction {
    let mut all = commands(&format!("FROM scratch\n{text}"));
    assert_eq!(all.len(), 1, "{text}");
    all.remove(0)
}

fn error(text: &str) -> (usize, String) {
    match parse(text) {
        Ok(df) => panic!("{text:?} parsed: {df:?}"),
        Err(e) => (e.line, e.kind.to_string()),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn stages_and_meta_args() {
    let df = parse_ok(
        "# syntax=docker/dockerfile:1\nARG BASE=alpine\nARG A B=2\nfrom --platform=$BUILDPLATFORM ${BASE} AS Build\nRUN x\nFROM build\n",
    );
    assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(df.meta_args.len(), 2);
    assert_eq!(
        df.meta_args[1].instruction,
        Instruction::Arg(vec![
            ArgDecl {
                name: "A".into(),
                default: None
            },
            ArgDecl {
                name: "B".into(),
                default: Some("2".into())
            },
        ])
    );
    assert_eq!(df.stages.len(), 2);
    let s = &df.stages[0];
    assert_eq!(
        (s.line, s.base.as_str(), s.name.as_deref()),
        (4, "${BASE}", Some("build"))
    );
    assert_eq!(s.platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!(s.commands[0].line, 5);
    assert_eq!(df.stages[1].name, None);
}

#[test]
fn from_errors() {
    assert_eq!(
        error("FROM a AS 1x"),
        (
            1,
            "invalid name for build stage: \"1x\", name can't start with a number or contain symbols"
                .into()
        )
    );
    assert_eq!(
        error("FROM a b"),
        (1, "FROM requires either one or three arguments".into())
    );
    assert_eq!(
        error("FROM --plat=x a"),
        (1, "unknown flag --plat for FROM".into())
    );
}

#[test]
fn env_and_label_forms() {
    assert_eq!(
        one("ENV A=1 B=\"two words\" C=x\\ y"),
        Instruction::Env(vec![
            KeyValue {
                key: "A".into(),
                value: "1".into()
            },
            KeyValue {
                key: "B".into(),
                value: "\"two words\"".into()
            },
            KeyValue {
                key: "C".into(),
                value: "x\\ y".into()
            },
        ])
    );
    assert_eq!(
        one("ENV LEGACY value with  spaces"),
        Instruction::Env(vec![KeyValue {
            key: "LEGACY".into(),
            value: "value with  spaces".into()
        }])
    );
    assert_eq!(
        one("LABEL \"com.example.a\"=1"),
        Instruction::Label(vec![KeyValue {
            key: "\"com.example.a\"".into(),
            value: "1".into()
        }])
    );
    assert_eq!(error("FROM a\nENV A").1, "ENV must have two arguments");
    assert_eq!(error("FROM a\nENV A=1 B").0, 2);
    assert_eq!(error("FROM a\nENV =1").1, "ENV names can not be blank");
    assert_eq!(
        error("FROM a\nLABEL").1,
        "LABEL requires at least one argument"
    );
}

#[test]
fn single_argument_instructions() {
    assert_eq!(
        one("WORKDIR /app dir"),
        Instruction::Workdir("/app dir".into())
    );
    assert_eq!(one("USER 1000:1000"), Instruction::User("1000:1000".into()));
    assert_eq!(
        one("STOPSIGNAL SIGTERM"),
        Instruction::StopSignal("SIGTERM".into())
    );
    assert_eq!(
        one("MAINTAINER Jane <j@x>"),
        Instruction::Maintainer("Jane <j@x>".into())
    );
    assert_eq!(
        error("FROM a\n\nWORKDIR"),
        (3, "WORKDIR requires exactly one argument".into())
    );
    assert_eq!(error("FROM a\nUSER --x=1 u").1, "unknown flag --x for USER");
}

#[test]
fn expose_and_volume() {
    assert_eq!(
        one("EXPOSE 80 443/tcp"),
        Instruction::Expose(strings(&["80", "443/tcp"]))
    );
    assert_eq!(
        one("VOLUME /a /b"),
        Instruction::Volume(strings(&["/a", "/b"]))
    );
    assert_eq!(
        one("VOLUME [\"/a b\"]"),
        Instruction::Volume(strings(&["/a b"]))
    );
    assert_eq!(
        error("FROM a\nVOLUME [\"\"]").1,
        "VOLUME specified can not be an empty string"
    );
    assert_eq!(
        error("FROM a\nEXPOSE").1,
        "EXPOSE requires at least one argument"
    );
}

#[test]
fn json_and_shell_forms() {
    let shell = |s: &str| CommandLine {
        args: vec![s.to_owned()],
        exec_form: false,
        heredocs: Vec::new(),
    };
    let exec = |a: &[&str]| CommandLine {
        args: strings(a),
        exec_form: true,
        heredocs: Vec::new(),
    };
    assert_eq!(
        one("CMD [\"nginx\", \"-g\", \"daemon off;\"]"),
        Instruction::Cmd(exec(&["nginx", "-g", "daemon off;"]))
    );
    assert_eq!(
        one("CMD echo \"$HOME\""),
        Instruction::Cmd(shell("echo \"$HOME\""))
    );
    // Invalid JSON falls back to the shell form.
    assert_eq!(one("CMD [\"a\", "), Instruction::Cmd(shell("[\"a\",")));
    assert_eq!(one("ENTRYPOINT []"), Instruction::Entrypoint(exec(&[])));
    assert_eq!(
        one("SHELL [\"bash\", \"-c\"]"),
        Instruction::Shell(strings(&["bash", "-c"]))
    );
    let Instruction::Run(run) = one("RUN [\"echo\", \"hi\"]") else {
        panic!("run")
    };
    assert_eq!(run.command, exec(&["echo", "hi"]));
    assert_eq!(
        error("FROM a\nCMD [1, 2]").1,
        "when using JSON array syntax, arrays must be comprised of strings only"
    );
    assert_eq!(
        error("FROM a\nSHELL bash -c").1,
        "SHELL requires the arguments to be in JSON form"
    );
    assert_eq!(error("FROM a\nRUN").1, "RUN requires at least one argument");
    assert_eq!(
        error("FROM a\nRUN []").1,
        "RUN requires at least one argument"
    );
}

#[test]
fn run_flags() {
    let Instruction::Run(run) = one(
        "RUN --mount=type=cache,target=/x,id=y,sharing=locked --mount=type=secret,id=s --network=none make",
    ) else {
        panic!("run")
    };
    assert_eq!(
        run.mounts,
        strings(&[
            "type=cache,target=/x,id=y,sharing=locked",
            "type=secret,id=s"
        ])
    );
    assert_eq!(run.network, Network::None);
    assert_eq!(run.command.args, strings(&["make"]));
    assert_eq!(
        error("FROM a\nRUN --network=bridge x").1,
        "invalid network mode \"bridge\""
    );
    assert_eq!(
        error("FROM a\nRUN --security=x y").1,
        "security \"x\" is not valid"
    );
    assert_eq!(
        error("FROM a\nRUN --mount x").1,
        "missing a value on flag: --mount"
    );
    assert_eq!(
        error("FROM a\n\nRUN --frobnicate x"),
        (3, "unknown flag --frobnicate for RUN".into())
    );
}

#[test]
fn copy_and_add_flags() {
    let Instruction::Copy(c) = one(
        "COPY --from=build --chown=1:1 --chmod=755 --link --exclude=*.md --exclude=x src/ a.txt /dst/",
    ) else {
        panic!("copy")
    };
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(c.chown.as_deref(), Some("1:1"));
    assert_eq!(c.chmod.as_deref(), Some("755"));
    assert!(c.link);
    assert_eq!(c.exclude, strings(&["*.md", "x"]));
    assert_eq!(c.files.sources, strings(&["src/", "a.txt"]));
    assert_eq!(c.files.dest, "/dst/");
    let Instruction::Copy(c) = one("COPY [\"a b\", \"/c d/\"]") else {
        panic!("copy")
    };
    assert_eq!(
        (c.files.sources, c.files.dest),
        (strings(&["a b"]), "/c d/".to_owned())
    );
    let Instruction::Add(a) =
        one("ADD --checksum=sha256:abc --unpack=false --keep-git-dir https://x/y /z")
    else {
        panic!("add")
    };
    assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
    assert_eq!(a.unpack, Some(false));
    assert_eq!(a.keep_git_dir, Some(true));
    assert_eq!(
        error("FROM a\nCOPY onlyone").1,
        "COPY requires at least two arguments, but only one was provided: the destination could not be determined"
    );
    assert_eq!(
        error("FROM a\nADD --from=x a b").1,
        "unknown flag --from for ADD"
    );
    assert_eq!(
        error("FROM a\nCOPY --link=yes a b").1,
        "expecting boolean value for flag --link, not: yes"
    );
}

#[test]
fn heredoc_sources_and_commands() {
    let Instruction::Copy(c) =
        one("COPY <<a.txt <<-'b.txt' /dir/\nhello $X\na.txt\n\tworld\n\tb.txt")
    else {
        panic!("copy")
    };
    assert!(c.files.sources.is_empty());
    assert_eq!(
        c.files.inline,
        vec![
            InlineFile {
                name: "a.txt".into(),
                data: "hello $X\n".into(),
                expand: true
            },
            InlineFile {
                name: "b.txt".into(),
                data: "world\n".into(),
                expand: false
            },
        ]
    );
    let Instruction::Run(run) = one("RUN <<EOF\necho one\necho two\nEOF") else {
        panic!("run")
    };
    assert_eq!(run.command.args, strings(&["<<EOF"]));
    assert_eq!(run.command.heredocs[0].content, "echo one\necho two\n");
    assert_eq!(
        error("FROM a\nCOPY a <<EOF\nx\nEOF").1,
        "COPY cannot accept a heredoc as a destination"
    );
}

#[test]
fn healthcheck() {
    assert_eq!(
        one("HEALTHCHECK NONE"),
        Instruction::Healthcheck(HealthcheckSpec {
            test: strings(&["NONE"]),
            interval: 0,
            timeout: 0,
            start_period: 0,
            start_interval: 0,
            retries: 0
        })
    );
    assert_eq!(
        one(
            "HEALTHCHECK --interval=30s --timeout=1m --start-period=5s --start-interval=1s --retries=3 CMD curl -f http://x/ || exit 1"
        ),
        Instruction::Healthcheck(HealthcheckSpec {
            test: strings(&["CMD-SHELL", "curl -f http://x/ || exit 1"]),
            interval: 30_000_000_000,
            timeout: 60_000_000_000,
            start_period: 5_000_000_000,
            start_interval: 1_000_000_000,
            retries: 3
        })
    );
    let Instruction::Healthcheck(h) = one("HEALTHCHECK cmd [\"true\"]") else {
        panic!("healthcheck")
    };
    assert_eq!(h.test, strings(&["CMD", "true"]));
    assert_eq!(
        error("FROM a\nHEALTHCHECK NONE x").1,
        "HEALTHCHECK NONE takes no arguments"
    );
    assert_eq!(
        error("FROM a\nHEALTHCHECK CMD").1,
        "missing command after HEALTHCHECK CMD"
    );
    assert_eq!(
        error("FROM a\nHEALTHCHECK PING x").1,
        "unknown type \"PING\" in HEALTHCHECK (try CMD)"
    );
    assert_eq!(
        error("FROM a\nHEALTHCHECK --interval=1us CMD x").1,
        "interval --interval cannot be less than 1ms"
    );
    assert_eq!(
        error("FROM a\nHEALTHCHECK --retries=-1 CMD x").1,
        "--retries cannot be negative (-1)"
    );
    assert_eq!(
        error("FROM a\nHEALTHCHECK --timeout=soon CMD x").1,
        "--timeout: invalid duration \"soon\""
    );
}

#[test]
fn onbuild() {
    assert_eq!(
        one("ONBUILD RUN echo hi"),
        Instruction::OnBuild("RUN echo hi".into())
    );
    assert_eq!(
        one("onbuild COPY <<EOF /x\nbody\nEOF"),
        Instruction::OnBuild("COPY <<EOF /x\nbody\nEOF".into())
    );
    assert_eq!(
        error("FROM a\nONBUILD ONBUILD RUN x").1,
        "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    assert_eq!(
        error("FROM a\nONBUILD FROM b").1,
        "FROM isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        parse_trigger("RUN a"),
        Ok(Instruction::Run(Run {
            command: CommandLine {
                args: strings(&["a"]),
                exec_form: false,
                heredocs: Vec::new()
            },
            mounts: Vec::new(),
            network: Network::Default,
            insecure: false,
            devices: Vec::new()
        }))
    );
}

#[test]
fn keywords_are_case_insensitive() {
    let all = commands("from a\nrun x\nCoPy a b\nEnv A=1");
    assert_eq!(all.len(), 3);
}

#[test]
fn structural_errors_name_the_line() {
    assert_eq!(
        error("FROM a\n\n# c\nFORM b\n"),
        (4, "unknown instruction \"FORM\"".into())
    );
    assert_eq!(
        error("ARG X\nRUN x\nFROM a"),
        (
            2,
            "RUN instruction before the first FROM: only ARG may come before it".into()
        )
    );
    assert_eq!(
        error("ARG X\n"),
        (
            1,
            "dockerfile contains no stages to build (no FROM instruction)".into()
        )
    );
    assert_eq!(error("\n\n# nothing\n").1, "file with no instructions");
    let err = parse("FROM a\nRUN <<EOF\nx").expect_err("unterminated");
    assert_eq!(
        err.to_string(),
        "dockerfile line 2: unterminated heredoc \"EOF\""
    );
}

#[test]
fn escape_directive_in_a_whole_file() {
    let df = parse_ok("# escape=`\nFROM windows\nRUN dir `\n  C:\\\nCOPY a `\n  b");
    assert_eq!(df.escape, '`');
    let cmds: Vec<_> = df.stages[0].commands.iter().map(|c| c.line).collect();
    assert_eq!(cmds, vec![3, 5]);
    let Instruction::Run(run) = &df.stages[0].commands[0].instruction else {
        panic!("run")
    };
    assert_eq!(run.command.args, strings(&["dir   C:\\"]));
}
